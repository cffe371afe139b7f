// fp16 <-> fp32 packing shared by the kernels (ptx.cuh re-exports it) and by kernels built for
// the AWQ CPU emulation (tests/emu/cuda_emulation.h), which cannot include ptx.cuh's inline PTX.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

namespace awqd::cuda::ptx {

__device__ __forceinline__ std::uint32_t pack_half2(float lo, float hi) {
  const __half2_raw r = __floats2half2_rn(lo, hi);
  return static_cast<std::uint32_t>(r.x) | static_cast<std::uint32_t>(r.y) << 16;
}

__device__ __forceinline__ float2 unpack_half2(std::uint32_t u) {
  __half2_raw r;
  r.x = static_cast<unsigned short>(u & 0xFFFFu);
  r.y = static_cast<unsigned short>(u >> 16);
  return __half22float2(__half2(r));
}

// 8 fp16 in a 16-byte vector <-> 8 floats.
__device__ __forceinline__ void unpack8(const uint4& v, float (&f)[8]) {
  const float2 a = unpack_half2(v.x), b = unpack_half2(v.y), c = unpack_half2(v.z),
               d = unpack_half2(v.w);
  f[0] = a.x, f[1] = a.y, f[2] = b.x, f[3] = b.y, f[4] = c.x, f[5] = c.y, f[6] = d.x, f[7] = d.y;
}
__device__ __forceinline__ uint4 pack8(const float (&f)[8]) {
  return make_uint4(pack_half2(f[0], f[1]), pack_half2(f[2], f[3]), pack_half2(f[4], f[5]),
                    pack_half2(f[6], f[7]));
}

}  // namespace awqd::cuda::ptx
