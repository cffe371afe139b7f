// AWQ GEMM instantiation: Hopper path (wgmma, A from registers; sm_90a code only), tile w128.
#include "kernels/awq_gemm_kernel.cuh"

namespace awqd::cuda::awq_gemm_detail {
AWQD_INSTANTIATE_AWQ_GEMM(TileW128)
}  // namespace awqd::cuda::awq_gemm_detail
