// AWQ GEMM instantiation: sm_80+ path (mma.m16n8k16), stream kernel st16 (M <= 16 rows per
// m-block).
#include "kernels/awq_gemm_kernel.cuh"

namespace awqd::cuda::awq_gemm_detail {
AWQD_INSTANTIATE_AWQ_GEMM_STREAM(StreamM16<false>)
}  // namespace awqd::cuda::awq_gemm_detail
