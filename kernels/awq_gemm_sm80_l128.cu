// AWQ GEMM instantiation: sm_80+ path (mma.m16n8k16, ldmatrix, cp.async, 4 stages), tile l128.
#include "kernels/awq_gemm_kernel.cuh"

namespace awqd::cuda::awq_gemm_detail {
AWQD_INSTANTIATE_AWQ_GEMM(TileL128<false>)
}  // namespace awqd::cuda::awq_gemm_detail
