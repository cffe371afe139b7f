// AWQ GEMM instantiation: sm_80+ path (mma.m16n8k16), stream kernels st8 and st8w with the lanes'
// own activation loads (StreamConfig::kDirectX; picked by the launcher from 5 rows).
#include "kernels/awq_gemm_kernel.cuh"

namespace awqd::cuda::awq_gemm_detail {
AWQD_INSTANTIATE_AWQ_GEMM_STREAM(StreamM8Direct<false>)
AWQD_INSTANTIATE_AWQ_GEMM_STREAM(StreamM8WideDirect<false>)
}  // namespace awqd::cuda::awq_gemm_detail
