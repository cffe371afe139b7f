// SiLU(gate) * up on fp16 values: fp32 arithmetic (SiLU(g) = g / (1 + e^-g)), one rounding to
// fp16. The one definition behind silu_mul (activation.cu), the AWQ stream kernel's fused input
// (awq_gemm_stream.cuh) and the decode MLP kernel (decode_mlp_kernel.cuh), so the fused and the
// separate MLP give identical bits on the GPU. (Host code, the CPU emulation of the kernels and
// the tests' references, computes expf and an IEEE division: the same fp16 result but for rare
// last-bit differences.)
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

namespace awqd::cuda {

// One value: the GEMM's fp16 gate and up in, fp16 out.
// On the GPU with the fast intrinsics (ex2.approx and rcp.approx: 4 instructions instead of ~25
// for expf and the IEEE division; their few-ulp fp32 error is far below the fp16 rounding
// after it): the stream kernel computes it for every activation its blocks stage.
__host__ __device__ __forceinline__ __half silu_mul1(__half gate, __half up) {
  const float g = __half2float(gate), u = __half2float(up);
#ifdef __CUDA_ARCH__
  return __float2half_rn(__fdividef(g, 1.0f + __expf(-g)) * u);
#else
  return __float2half_rn(g / (1.0f + expf(-g)) * u);
#endif
}

// Two values packed as a half2 word (low half first).
__host__ __device__ __forceinline__ std::uint32_t silu_mul2(std::uint32_t gate, std::uint32_t up) {
  std::uint32_t out = 0;
  for (int h = 0; h < 2; ++h) {
    __half_raw gr, ur;
    gr.x = static_cast<unsigned short>(gate >> (16 * h));
    ur.x = static_cast<unsigned short>(up >> (16 * h));
    const __half_raw o = silu_mul1(__half(gr), __half(ur));
    out |= static_cast<std::uint32_t>(o.x) << (16 * h);
  }
  return out;
}

__host__ __device__ __forceinline__ uint4 silu_mul8(uint4 gate, uint4 up) {
  return make_uint4(silu_mul2(gate.x, up.x), silu_mul2(gate.y, up.y), silu_mul2(gate.z, up.z),
                    silu_mul2(gate.w, up.w));
}

}  // namespace awqd::cuda
