// AWQ GEMM instantiation: sm_80+ path (mma.m16n8k16), stream kernel st8w (M <= 8, 16 warps on one
// stripe per block).
#include "kernels/awq_gemm_kernel.cuh"

namespace awqd::cuda::awq_gemm_detail {
AWQD_INSTANTIATE_AWQ_GEMM_STREAM(StreamM8Wide<false>)
}  // namespace awqd::cuda::awq_gemm_detail
