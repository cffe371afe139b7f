// Prefill attention, head_dim 64: the sm_80+ and sm_75 variants (one file per head size so the
// instantiations compile in parallel).
#include "kernels/attention_prefill_kernel.cuh"

namespace awqd::cuda::prefill {

template void launch_prefill<64, false>(const Params&, dim3, cudaStream_t);
template void launch_prefill<64, true>(const Params&, dim3, cudaStream_t);

}  // namespace awqd::cuda::prefill
