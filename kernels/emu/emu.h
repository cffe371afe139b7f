// A host emulation of the CUDA execution model, for running awqd's kernels on a machine without
// a GPU (CI, development boxes). Tests only: the production build never defines AWQD_EMULATE.
//
// How: a kernel .cu file is compiled as plain C++ with -DAWQD_EMULATE (tests/CMakeLists.txt
// wraps each one in a generated .cc). Every CUDA thread of a block becomes a fiber on one OS
// thread; blocks run one after another. A fiber runs until it reaches a synchronising operation
// (__syncthreads, __syncwarp, a shuffle, a warp-wide mma/ldmatrix), then yields to the next
// fiber, round robin. So:
//   - `__shared__` is `static`: one instance shared by the block's fibers (blocks never overlap);
//   - warp-collective operations (shuffles, ballots, mma, ldmatrix) exchange values through a
//     per-warp slot array between two warp barriers, and compute what the PTX ISA defines;
//   - atomics are plain read-modify-writes (one OS thread);
//   - cp.async copies at once (its wait is a no-op), fences are no-ops;
//   - dynamic shared memory is filled with 0xFF bytes (NaN in fp16 and fp32) before each block,
//     so a read of shared memory nothing wrote shows up in the results;
//   - a barrier that can never complete (a __syncthreads some threads skip) aborts the process
//     with a message instead of hanging.
// What it does not model: timing, memory-ordering races between warps that do synchronise,
// bank conflicts, hardware rounding of exp/log (host libm is used).
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <type_traits>

#include "kernels/emu/emu_device.h"

// ---- qualifiers ---------------------------------------------------------------------------
#undef __global__
#undef __device__
#undef __host__
#undef __shared__
#undef __forceinline__
#undef __noinline__
#undef __launch_bounds__
#undef __grid_constant__
#define __global__
#define __device__
#define __host__
#define __shared__ static
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __grid_constant__

namespace awqd::emu {

struct EmuThread {
  uint3 tid;
  int lane;
  int warp;
};

// The fiber running now (valid inside a kernel).
const EmuThread& self();
extern uint3 g_block_idx;
extern dim3 g_block_dim;
extern dim3 g_grid_dim;

// Yields to the next fiber (used by the barrier loops).
void yield();
// Block-wide and warp-wide barriers.
void block_barrier();
void warp_barrier();
// A per-warp exchange area of 32 slots x 64 bytes: slot(lane) is where `lane` writes.
unsigned char* warp_slot(int lane);
// Dynamic shared memory of the running block (filled with 0xFF before the block starts).
unsigned char* dynamic_smem();

// Runs `body` as a kernel over grid x block with `smem_bytes` of dynamic shared memory.
void launch(dim3 grid, dim3 block, std::size_t smem_bytes, const std::function<void()>& body);

// Exchanges one value of each lane of the warp; returns the value lane `src` contributed.
template <typename T>
T warp_exchange(T v, int src) {
  static_assert(sizeof(T) <= 64 && std::is_trivially_copyable_v<T>);
  std::memcpy(warp_slot(self().lane), &v, sizeof(T));
  warp_barrier();
  T r;
  std::memcpy(&r, warp_slot(src), sizeof(T));
  warp_barrier();
  return r;
}

// All 32 lanes' values at once (for mma/ldmatrix emulation).
template <typename T>
void warp_gather(const T& v, T (&all)[32]) {
  static_assert(sizeof(T) <= 64 && std::is_trivially_copyable_v<T>);
  std::memcpy(warp_slot(self().lane), &v, sizeof(T));
  warp_barrier();
  for (int l = 0; l < 32; ++l) std::memcpy(&all[l], warp_slot(l), sizeof(T));
  warp_barrier();
}

}  // namespace awqd::emu

// Device code calls min/max unqualified (CUDA's integer overloads).
using std::max;
using std::min;

// ---- built-in variables ---------------------------------------------------------------------
#define threadIdx (::awqd::emu::self().tid)
#define blockIdx (::awqd::emu::g_block_idx)
#define blockDim (::awqd::emu::g_block_dim)
#define gridDim (::awqd::emu::g_grid_dim)

// ---- synchronisation and warp collectives -------------------------------------------------
inline void __syncthreads() { ::awqd::emu::block_barrier(); }
inline void __syncwarp(unsigned = 0xffffffffu) { ::awqd::emu::warp_barrier(); }
inline void __threadfence() {}
inline void __threadfence_block() {}

template <typename T>
T __shfl_sync(unsigned, T v, int src, int width = 32) {
  const int lane = ::awqd::emu::self().lane;
  return ::awqd::emu::warp_exchange(v, (lane & ~(width - 1)) + (src & (width - 1)));
}
template <typename T>
T __shfl_xor_sync(unsigned, T v, int mask, int width = 32) {
  const int lane = ::awqd::emu::self().lane;
  return ::awqd::emu::warp_exchange(v, (lane & ~(width - 1)) | ((lane ^ mask) & (width - 1)));
}
template <typename T>
T __shfl_up_sync(unsigned, T v, unsigned delta, int width = 32) {
  const int lane = ::awqd::emu::self().lane;
  const int in = lane % width - static_cast<int>(delta);
  return ::awqd::emu::warp_exchange(v, in >= 0 ? lane - static_cast<int>(delta) : lane);
}
template <typename T>
T __shfl_down_sync(unsigned, T v, unsigned delta, int width = 32) {
  const int lane = ::awqd::emu::self().lane;
  const int in = lane % width + static_cast<int>(delta);
  return ::awqd::emu::warp_exchange(v, in < width ? lane + static_cast<int>(delta) : lane);
}
inline unsigned __ballot_sync(unsigned, int pred) {
  int all[32];
  ::awqd::emu::warp_gather(pred ? 1 : 0, all);
  unsigned r = 0;
  for (int l = 0; l < 32; ++l) r |= static_cast<unsigned>(all[l] != 0) << l;
  return r;
}
inline int __any_sync(unsigned m, int pred) { return __ballot_sync(m, pred) != 0; }
inline int __all_sync(unsigned m, int pred) { return __ballot_sync(m, pred) == 0xffffffffu; }

// ---- atomics (one OS thread: plain read-modify-write) -----------------------------------------
template <typename T>
T atomicAdd(T* p, T v) {
  const T old = *p;
  *p = old + v;
  return old;
}
template <typename T>
T atomicMax(T* p, T v) {
  const T old = *p;
  *p = old > v ? old : v;
  return old;
}
template <typename T>
T atomicMin(T* p, T v) {
  const T old = *p;
  *p = old < v ? old : v;
  return old;
}
template <typename T>
T atomicExch(T* p, T v) {
  const T old = *p;
  *p = v;
  return old;
}
template <typename T>
T atomicCAS(T* p, T cmp, T v) {
  const T old = *p;
  if (old == cmp) *p = v;
  return old;
}

// ---- loads with cache hints ---------------------------------------------------------------------
template <typename T>
T __ldg(const T* p) {
  return *p;
}
template <typename T>
T __ldcg(const T* p) {
  return *p;
}
template <typename T>
void __stcg(T* p, T v) {
  *p = v;
}

// ---- bit and float intrinsics ---------------------------------------------------------------
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline unsigned __umulhi(unsigned a, unsigned b) {
  return static_cast<unsigned>((static_cast<unsigned long long>(a) * b) >> 32);
}
inline float __uint_as_float(unsigned x) {
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}
inline unsigned __float_as_uint(float f) {
  unsigned x;
  std::memcpy(&x, &f, 4);
  return x;
}
inline float __int_as_float(int x) { return __uint_as_float(static_cast<unsigned>(x)); }
inline int __float_as_int(float f) { return static_cast<int>(__float_as_uint(f)); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __frcp_rn(float a) { return 1.0f / a; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
