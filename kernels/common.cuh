// Small device utilities shared by the kernels: block-wide reductions and argument checks.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>
#include <string>

#include "kernels/launch.cuh"

namespace awqd::cuda {

inline constexpr int kWarpSize = 32;

// Throws std::invalid_argument naming the launcher and what was wrong.
[[noreturn]] void throw_bad_argument(const char* launcher, const std::string& what);

// Checks `cond`; on failure throws naming the launcher and the condition.
#define AWQD_ARG_CHECK(launcher, cond, detail)                                              \
  do {                                                                                      \
    if (!(cond))                                                                            \
      ::awqd::cuda::throw_bad_argument(launcher, std::string(#cond " (") + (detail) + ")"); \
  } while (0)

inline bool aligned16(const void* p) { return (reinterpret_cast<std::uintptr_t>(p) & 15u) == 0; }

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
  return v;
}

template <typename T>
__device__ __forceinline__ T warp_max(T v) {
#pragma unroll
  for (int m = 16; m > 0; m >>= 1) {
    const T o = __shfl_xor_sync(0xffffffffu, v, m);
    v = o > v ? o : v;
  }
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// `scratch` is 32 floats of shared memory; the function synchronises the block twice.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  const int warps = blockDim.x / kWarpSize;
  v = warp_sum(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float r = lane < warps ? scratch[lane] : 0.0f;
  r = warp_sum(r);
  __syncthreads();  // scratch may be reused right after
  return r;
}

}  // namespace awqd::cuda
