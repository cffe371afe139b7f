// AWQ GEMM instantiation: Turing path (mma.m16n8k8, register-staged loads), tile l128.
#include "kernels/awq_gemm_kernel.cuh"

namespace awqd::cuda::awq_gemm_detail {
AWQD_INSTANTIATE_AWQ_GEMM(TileL128<true>)
}  // namespace awqd::cuda::awq_gemm_detail
