// SiLU(gate) * up on fp16 values: fp32 arithmetic (SiLU(g) = g / (1 + e^-g)), one rounding to
// fp16. The one definition behind silu_mul (activation.cu), the AWQ stream kernel's fused input
// (awq_gemm_stream.cuh) and the decode MLP kernel (decode_mlp_kernel.cuh), so the fused and the
// separate MLP give identical bits.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

namespace awqd::cuda {

// One value: the GEMM's fp16 gate and up in, fp16 out.
__host__ __device__ __forceinline__ __half silu_mul1(__half gate, __half up) {
  const float g = __half2float(gate), u = __half2float(up);
  return __float2half_rn(g / (1.0f + expf(-g)) * u);
}

__host__ __device__ __forceinline__ uint4 silu_mul8(uint4 gate, uint4 up) {
  const std::uint32_t g[4] = {gate.x, gate.y, gate.z, gate.w};
  const std::uint32_t u[4] = {up.x, up.y, up.z, up.w};
  std::uint32_t r[4];
  for (int i = 0; i < 4; ++i) {
    std::uint32_t out = 0;
    for (int h = 0; h < 2; ++h) {
      __half_raw gr, ur;
      gr.x = static_cast<unsigned short>(g[i] >> (16 * h));
      ur.x = static_cast<unsigned short>(u[i] >> (16 * h));
      const __half_raw o = silu_mul1(__half(gr), __half(ur));
      out |= static_cast<std::uint32_t>(o.x) << (16 * h);
    }
    r[i] = out;
  }
  return make_uint4(r[0], r[1], r[2], r[3]);
}

}  // namespace awqd::cuda
