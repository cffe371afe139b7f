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

// One step of an online softmax over mma accumulator tiles (attention kernels): a lane holds rows
// g and g + 8 of the tile, and the 4 lanes of a quad share a row. mx: this tile's row maxima of
// the lane's scores, made the quad's here; m_run / l_run: the running max and (per lane) sum,
// rescaled to the new max; alpha: the factor the row's earlier sums were rescaled by (1 while
// the row's max is still -inf, i.e. no key seen yet).
__device__ __forceinline__ void online_softmax_step(float (&mx)[2], float (&m_run)[2],
                                                    float (&l_run)[2], float (&alpha)[2]) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
    mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
    const float m_new = fmaxf(m_run[r], mx[r]);
    alpha[r] = m_new == -INFINITY ? 1.0f : exp2f(m_run[r] - m_new);
    m_run[r] = m_new;
    l_run[r] *= alpha[r];
  }
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
