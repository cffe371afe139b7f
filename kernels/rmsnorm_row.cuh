// RMSNorm arithmetic on 8 fp16 values at a time: the one definition behind the norm kernels
// (norm.cu) and the AWQ stream kernel's fused norm input (awq_gemm_stream.cuh), so the fused and
// the separate paths compute every element the same way:
//   v = fp16(x + residual)            (add8: what the residual stream holds)
//   sum_sq += v^2 in fp32             (sum_sq8)
//   out = fp16(v * inv_rms * weight)  (norm8), inv_rms = rsqrt(sum_sq / hidden + eps)
// (The sum's order, and so its last bits, belongs to each kernel's reduction.)
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

namespace awqd::cuda {

__host__ __device__ __forceinline__ void rms_unpack8(uint4 v, float (&f)[8]) {
  const std::uint32_t w[4] = {v.x, v.y, v.z, v.w};
  for (int i = 0; i < 4; ++i) {
    __half2_raw h;
    h.x = static_cast<unsigned short>(w[i] & 0xFFFFu);
    h.y = static_cast<unsigned short>(w[i] >> 16);
    const float2 p = __half22float2(__half2(h));
    f[2 * i] = p.x;
    f[2 * i + 1] = p.y;
  }
}

__host__ __device__ __forceinline__ uint4 rms_pack8(const float (&f)[8]) {
  std::uint32_t w[4];
  for (int i = 0; i < 4; ++i) {
    const __half2_raw h = __floats2half2_rn(f[2 * i], f[2 * i + 1]);
    w[i] = static_cast<std::uint32_t>(h.x) | static_cast<std::uint32_t>(h.y) << 16;
  }
  return make_uint4(w[0], w[1], w[2], w[3]);
}

// fp16(a + b), elementwise, the sum in fp32.
__host__ __device__ __forceinline__ uint4 add8(uint4 a, uint4 b) {
  float fa[8], fb[8];
  rms_unpack8(a, fa);
  rms_unpack8(b, fb);
  for (int i = 0; i < 8; ++i) fa[i] += fb[i];
  return rms_pack8(fa);
}

__host__ __device__ __forceinline__ float sum_sq8(uint4 v) {
  float f[8];
  rms_unpack8(v, f);
  float s = 0.0f;
  for (int i = 0; i < 8; ++i) s += f[i] * f[i];
  return s;
}

__host__ __device__ __forceinline__ uint4 norm8(uint4 v, float inv_rms, uint4 weight) {
  float f[8], w[8];
  rms_unpack8(v, f);
  rms_unpack8(weight, w);
  for (int i = 0; i < 8; ++i) f[i] = f[i] * inv_rms * w[i];
  return rms_pack8(f);
}

}  // namespace awqd::cuda
