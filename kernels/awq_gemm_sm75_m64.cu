// AWQ GEMM instantiation: Turing path (mma.m16n8k8, register-staged loads), tile m64.
#include "kernels/awq_gemm_kernel.cuh"

namespace awqd::cuda::awq_gemm_detail {
AWQD_INSTANTIATE_AWQ_GEMM(TileM64<true>)
}  // namespace awqd::cuda::awq_gemm_detail
