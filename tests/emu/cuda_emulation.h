// A CPU emulation of the few CUDA features the AWQ GEMM kernel and the decode MLP kernel use, so
// that their real source (kernels/awq_gemm_kernel.cuh, decode_mlp_kernel.cuh, compiled with
// AWQD_KERNEL_EMULATION) runs in CI, which has no GPU. Not a general CUDA emulator: exactly what
// those kernels need, with the semantics that matter for finding indexing and synchronization bugs.
// - A block's threads are fibers (ucontext) run round-robin on one OS thread (run_block; run_grid
//   interleaves the fibers of every block of a grid, for kernels that wait for other blocks);
//   __syncthreads and the warp collectives are barriers at which a fiber yields until all
//   participants arrive. In
//   half the rounds a random subset of warps is not resumed, so warps drift apart between
//   barriers (a missing __syncthreads then corrupts shared memory another warp still reads).
// - ldmatrix and mma.sync exchange the 32 lanes' registers and apply the PTX fragment layouts
//   (mma.m16n8k16: A reg r of lane 4g+t holds row g + 8(r%2), k 2t + 8(r/2) and +1; B reg r holds
//   k 2t + 8r and +1 of column g; C element i holds row g + 8(i/2), column 2t + i%2).
// - cp.async copies are queued per thread and happen only at cp.async.wait_group, so reading a
//   stage before waiting for it reads stale data; shared memory starts as garbage (0xCD).
// - fp16x2 sub/mul round to nearest like the hardware (exact in fp32, then rounded once).
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <random>
#include <vector>

#undef __forceinline__
#define __forceinline__ inline
#undef __device__
#define __device__
#undef __host__
#define __host__

namespace emu {

struct Dim {
  unsigned x, y, z;
};

struct AsyncCopy {
  std::uint32_t dst;  // shared-memory offset
  const void* src;
  bool valid;  // false: write zeros
};

struct Fiber {
  ucontext_t context;
  std::vector<char> stack;
  unsigned tid = 0;
  bool done = false;
  std::vector<AsyncCopy> open_group;
  std::deque<std::vector<AsyncCopy>> committed;
};

struct Block {
  static constexpr int kMaxWarps = 32;
  ucontext_t scheduler;
  Fiber* current = nullptr;
  std::vector<Fiber> fibers;
  Dim index{0, 0, 0}, grid{1, 1, 1};
  std::vector<std::uint8_t> smem = std::vector<std::uint8_t>(232448);
  int threads = 0, barrier_count = 0, barrier_generation = 0;
  int warp_count[kMaxWarps] = {}, warp_generation[kMaxWarps] = {};
  std::function<void()> body;
  std::mt19937 rng{12345};  // warp scheduling (run_block)
  // Warp exchange registers.
  std::uint32_t a[kMaxWarps][32][4], b[kMaxWarps][32][2], row_addr[kMaxWarps][32];
  float f[kMaxWarps][32];
};

// The block whose fiber runs now: the one of run_block, or one of run_grid's (set by
// run_fibers before it resumes a fiber).
inline Block*& current_block() {
  static Block* current = nullptr;
  return current;
}
inline Block& block() { return *current_block(); }
inline std::uint8_t* shared_memory() { return block().smem.data(); }
inline unsigned lane() { return block().current->tid % 32; }
inline unsigned warp() { return block().current->tid / 32; }
inline void yield() {
  Block& b = block();
  swapcontext(&b.current->context, &b.scheduler);
}

inline void sync_block() {
  Block& b = block();
  const int generation = b.barrier_generation;
  if (++b.barrier_count == b.threads) {
    b.barrier_count = 0;
    ++b.barrier_generation;
  } else {
    while (b.barrier_generation == generation) yield();
  }
}

inline void sync_warp() {
  Block& b = block();
  const unsigned w = warp();
  const int generation = b.warp_generation[w];
  if (++b.warp_count[w] == 32) {
    b.warp_count[w] = 0;
    ++b.warp_generation[w];
  } else {
    while (b.warp_generation[w] == generation) yield();
  }
}

inline void fiber_entry() {
  Block& b = block();
  b.body();
  b.current->done = true;
  swapcontext(&b.current->context, &b.scheduler);
}

inline void prepare_block(Block& b, int threads, Dim index, Dim grid,
                          const std::function<void()>& body);
inline void run_fibers(std::vector<Block*>& blocks);

// Runs body() as block `index` of `grid` with `threads` threads; returns when all have finished.
inline void run_block(int threads, Dim index, Dim grid, const std::function<void()>& body) {
  static Block b;
  prepare_block(b, threads, index, grid, body);
  std::vector<Block*> blocks{&b};
  run_fibers(blocks);
}

// Runs every block of a one-dimensional grid at once, their fibers interleaved (a fiber that
// spins on global memory must call yield()), so a kernel may wait for other blocks: a grid
// barrier, as a persistent kernel whose blocks are all resident on the GPU does.
inline void run_grid(int threads, unsigned blocks, const std::function<void()>& body) {
  std::vector<std::unique_ptr<Block>> owned;
  std::vector<Block*> all;
  for (unsigned i = 0; i < blocks; ++i) {
    owned.push_back(std::make_unique<Block>());
    owned.back()->rng.seed(12345 + i);
    prepare_block(*owned.back(), threads, {i, 0, 0}, {blocks, 1, 1}, body);
    all.push_back(owned.back().get());
  }
  run_fibers(all);
}

inline void prepare_block(Block& b, int threads, Dim index, Dim grid,
                          const std::function<void()>& body) {
  b.index = index;
  b.grid = grid;
  b.body = body;
  b.threads = threads;
  b.barrier_count = 0;
  std::memset(b.warp_count, 0, sizeof(b.warp_count));
  std::memset(b.smem.data(), 0xCD, b.smem.size());
  if (static_cast<int>(b.fibers.size()) < threads) b.fibers.resize(threads);
  for (int t = 0; t < threads; ++t) {
    Fiber& f = b.fibers[t];
    f.tid = t;
    f.done = false;
    f.open_group.clear();
    f.committed.clear();
    f.stack.resize(std::size_t{128} << 10);
    getcontext(&f.context);
    f.context.uc_stack.ss_sp = f.stack.data();
    f.context.uc_stack.ss_size = f.stack.size();
    f.context.uc_link = nullptr;
    makecontext(&f.context, fiber_entry, 0);
  }
}

// Each round resumes every unfinished thread up to its next barrier or warp collective, but a
// random half of the warps sit a round out, so warps drift apart as far as the barriers allow
// and a missing __syncthreads shows up as one warp overwriting what another still reads.
inline void run_fibers(std::vector<Block*>& blocks) {
  for (bool running = true; running;) {
    running = false;
    for (Block* bp : blocks) {
      Block& b = *bp;
      current_block() = bp;
      const int warps = (b.threads + 31) / 32;
      const std::uint32_t bits = b.rng();
      const bool skip_some = warps > 1 && (bits >> 31) != 0;
      for (int t = 0; t < b.threads; ++t) {
        if (b.fibers[t].done) continue;
        running = true;
        if (skip_some && ((bits >> (t / 32 % 31)) & 1) != 0) continue;
        b.current = &b.fibers[t];
        swapcontext(&b.scheduler, &b.current->context);
      }
    }
  }
}

inline Dim thread_index() { return {block().current->tid, 0, 0}; }

}  // namespace emu

#undef threadIdx
#undef blockIdx
#undef gridDim
#define threadIdx (emu::thread_index())
#define blockIdx (emu::block().index)
#define gridDim (emu::block().grid)
#undef blockDim
#define blockDim (emu::Dim{static_cast<unsigned>(emu::block().threads), 1, 1})

inline void __syncthreads() { emu::sync_block(); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::sync_warp(); }
inline void __threadfence() {}
inline int atomicAdd(int* p, int v) {  // fibers never interleave inside a call
  const int old = *p;
  *p += v;
  return old;
}
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  const unsigned long long old = *p;
  *p += v;
  return old;
}
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
template <class T>
inline T __ldg(const T* p) {
  return *p;
}
template <class T>
inline T __ldcg(const T* p) {
  return *p;
}
inline std::uint32_t __byte_perm(std::uint32_t x, std::uint32_t y, std::uint32_t s) {
  std::uint8_t bytes[8];
  std::memcpy(bytes, &x, 4);
  std::memcpy(bytes + 4, &y, 4);
  std::uint32_t r = 0;
  for (int i = 0; i < 4; ++i) r |= std::uint32_t{bytes[(s >> (4 * i)) & 7]} << (8 * i);
  return r;
}

namespace awqd::cuda::awq_device {

inline float half_bits_to_float(std::uint32_t h) {
  __half_raw raw;
  raw.x = static_cast<unsigned short>(h);
  return __half2float(__half(raw));
}
inline std::uint32_t float_to_half_bits(float f) {
  const __half_raw raw = __float2half_rn(f);
  return raw.x;
}
inline std::uint32_t hsub2(std::uint32_t a, std::uint32_t b) {
  return float_to_half_bits(half_bits_to_float(a) - half_bits_to_float(b)) |
         float_to_half_bits(half_bits_to_float(a >> 16) - half_bits_to_float(b >> 16)) << 16;
}
inline std::uint32_t hfma2(std::uint32_t a, std::uint32_t b, std::uint32_t c) {
  return float_to_half_bits(std::fma(half_bits_to_float(a), half_bits_to_float(b),
                                     half_bits_to_float(c))) |
         float_to_half_bits(std::fma(half_bits_to_float(a >> 16), half_bits_to_float(b >> 16),
                                     half_bits_to_float(c >> 16)))
             << 16;
}
inline std::uint32_t hmul2(std::uint32_t a, std::uint32_t b) {
  return float_to_half_bits(half_bits_to_float(a) * half_bits_to_float(b)) |
         float_to_half_bits(half_bits_to_float(a >> 16) * half_bits_to_float(b >> 16)) << 16;
}

inline void mma_m16n8k16(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0,
                         std::uint32_t b1) {
  emu::Block& blk = emu::block();
  const unsigned w = emu::warp(), lane = emu::lane();
  for (int r = 0; r < 4; ++r) blk.a[w][lane][r] = a[r];
  blk.b[w][lane][0] = b0;
  blk.b[w][lane][1] = b1;
  emu::sync_warp();
  const unsigned g = lane / 4, t = lane % 4;
  for (int i = 0; i < 4; ++i) {
    const unsigned row = g + 8 * (i / 2), col = 2 * t + i % 2;
    double acc = d[i];
    for (unsigned k = 0; k < 16; ++k) {
      const float av = half_bits_to_float(
          blk.a[w][4 * (row % 8) + (k % 8) / 2][(row >= 8) + 2 * (k >= 8)] >> (16 * (k % 2)));
      const float bv =
          half_bits_to_float(blk.b[w][4 * col + (k % 8) / 2][k >= 8] >> (16 * (k % 2)));
      acc += static_cast<double>(av) * bv;
    }
    d[i] = static_cast<float>(acc);
  }
  emu::sync_warp();
}
// Two m16n8k8 on the same operands compute the same product.
inline void mma_m16n8k16_as_2x_k8(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0,
                                  std::uint32_t b1) {
  mma_m16n8k16(d, a, b0, b1);
}

inline uint4 ldg_stream(const uint4* p) { return *p; }
// One block at a time on the CPU: the previous kernel has always finished.
inline void grid_dependency_wait() {}
inline void allow_dependents_launch() {}
inline void prefetch_l1(const void*) {}

// The device's xor butterfly, step by step over the warp's 32 values.
inline float warp_sum_f32(float v) {
  emu::Block& blk = emu::block();
  const unsigned w = emu::warp(), lane = emu::lane();
  blk.f[w][lane] = v;
  emu::sync_warp();
  float x[32];
  for (int i = 0; i < 32; ++i) x[i] = blk.f[w][i];
  for (int offset = 16; offset > 0; offset >>= 1) {
    float next[32];
    for (int i = 0; i < 32; ++i) next[i] = x[i] + x[i ^ offset];
    for (int i = 0; i < 32; ++i) x[i] = next[i];
  }
  emu::sync_warp();
  return x[lane];
}

inline std::uint32_t smem_addr(const void* p) {
  const auto offset = static_cast<const std::uint8_t*>(p) - emu::shared_memory();
  if (offset < 0 || offset >= static_cast<long>(emu::block().smem.size())) {
    std::fprintf(stderr, "emulation: shared address out of range\n");
    std::abort();
  }
  return static_cast<std::uint32_t>(offset);
}

inline void ldmatrix_x4(std::uint32_t (&r)[4], std::uint32_t addr) {
  emu::Block& blk = emu::block();
  const unsigned w = emu::warp(), lane = emu::lane();
  if (addr % 16 != 0) {
    std::fprintf(stderr, "emulation: ldmatrix row address not 16-byte aligned\n");
    std::abort();
  }
  blk.row_addr[w][lane] = addr;
  emu::sync_warp();
  for (int m = 0; m < 4; ++m)
    std::memcpy(&r[m], blk.smem.data() + blk.row_addr[w][m * 8 + lane / 4] + 4 * (lane % 4), 4);
  emu::sync_warp();
}

inline void cp_async_16(std::uint32_t dst, const void* src, bool valid) {
  if (dst % 16 != 0 || (valid && reinterpret_cast<std::uintptr_t>(src) % 16 != 0)) {
    std::fprintf(stderr, "emulation: cp.async not 16-byte aligned\n");
    std::abort();
  }
  emu::block().current->open_group.push_back({dst, src, valid});
}
inline void cp_async_commit() {
  emu::Fiber& f = *emu::block().current;
  f.committed.push_back(std::move(f.open_group));
  f.open_group.clear();
}
template <int kPending>
inline void cp_async_wait() {
  emu::Fiber& f = *emu::block().current;
  while (static_cast<int>(f.committed.size()) > kPending) {
    for (const emu::AsyncCopy& c : f.committed.front()) {
      if (c.valid)
        std::memcpy(emu::shared_memory() + c.dst, c.src, 16);
      else
        std::memset(emu::shared_memory() + c.dst, 0, 16);
    }
    f.committed.pop_front();
  }
}

}  // namespace awqd::cuda::awq_device

// What the decode MLP kernel (kernels/decode_mlp_kernel.cuh) takes from the hardware: a spinning
// wait yields to the other fibers (of every block of run_grid), shuffles go through the warp's
// exchange registers.
namespace awqd::cuda::decode_mlp_detail {
inline unsigned long long ld_acquire_u64(const unsigned long long* p) { return *p; }
inline void spin_pause() { emu::yield(); }
inline unsigned long long global_ns() { return 0; }
inline std::uint32_t warp_exchange(std::uint32_t v, unsigned src_lane) {
  emu::Block& blk = emu::block();
  const unsigned w = emu::warp(), lane = emu::lane();
  blk.row_addr[w][lane] = v;
  emu::sync_warp();
  const std::uint32_t r = blk.row_addr[w][src_lane];
  emu::sync_warp();
  return r;
}
inline float warp_xor(float v, int mask) {
  std::uint32_t bits;
  std::memcpy(&bits, &v, 4);
  bits = warp_exchange(bits, emu::lane() ^ static_cast<unsigned>(mask));
  std::memcpy(&v, &bits, 4);
  return v;
}
inline int warp_bcast(int v) { return static_cast<int>(warp_exchange(static_cast<std::uint32_t>(v), 0)); }
}  // namespace awqd::cuda::decode_mlp_detail
