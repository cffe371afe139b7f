// AWQ GEMM instantiation: sm_80+ path (mma.m16n8k16, ldmatrix, cp.async, 4 stages), tile s16.
#include "kernels/awq_gemm_kernel.cuh"

namespace awqd::cuda::awq_gemm_detail {
AWQD_INSTANTIATE_AWQ_GEMM(TileS16<false>)
}  // namespace awqd::cuda::awq_gemm_detail
