// Decode attention, head_dim 128: the sm_80+ and sm_75 variants (one file per head size so the
// instantiations compile in parallel).
#include "kernels/attention_decode_kernel.cuh"

namespace awqd::cuda::decode {

template void launch_decode<128, false>(const Params&, dim3, bool, cudaStream_t);
template void launch_decode<128, true>(const Params&, dim3, bool, cudaStream_t);

}  // namespace awqd::cuda::decode
