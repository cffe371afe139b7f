// AWQ GEMM instantiation: Turing path (mma.m16n8k8), stream kernel st8w (M <= 8, 8 warps on one
// stripe per block).
#include "kernels/awq_gemm_kernel.cuh"

namespace awqd::cuda::awq_gemm_detail {
AWQD_INSTANTIATE_AWQ_GEMM_STREAM(StreamM8Wide<true>)
}  // namespace awqd::cuda::awq_gemm_detail
