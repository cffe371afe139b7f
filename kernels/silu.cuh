// SiLU(gate) * up on 8 fp16 values: fp32 arithmetic (SiLU(g) = g / (1 + e^-g)), one rounding to
// fp16. The one definition behind both silu_mul (activation.cu) and the AWQ stream kernel's fused
// input (awq_gemm_stream.cuh), so the fused and the separate MLP give identical bits.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

namespace awqd::cuda {

__host__ __device__ __forceinline__ uint4 silu_mul8(uint4 gate, uint4 up) {
  const std::uint32_t g[4] = {gate.x, gate.y, gate.z, gate.w};
  const std::uint32_t u[4] = {up.x, up.y, up.z, up.w};
  std::uint32_t r[4];
  for (int i = 0; i < 4; ++i) {
    __half2_raw gr, ur;
    gr.x = static_cast<unsigned short>(g[i] & 0xFFFFu);
    gr.y = static_cast<unsigned short>(g[i] >> 16);
    ur.x = static_cast<unsigned short>(u[i] & 0xFFFFu);
    ur.y = static_cast<unsigned short>(u[i] >> 16);
    const float2 gf = __half22float2(__half2(gr)), uf = __half22float2(__half2(ur));
    const __half2_raw o = __floats2half2_rn(gf.x / (1.0f + expf(-gf.x)) * uf.x,
                                            gf.y / (1.0f + expf(-gf.y)) * uf.y);
    r[i] = static_cast<std::uint32_t>(o.x) | static_cast<std::uint32_t>(o.y) << 16;
  }
  return make_uint4(r[0], r[1], r[2], r[3]);
}

}  // namespace awqd::cuda
