// L2 prefetch of read-only memory a later kernel will read (a weight), issued by a kernel that
// leaves device memory idle: at decode, the attention of a layer reads a few MB of KV in ~6-10
// us while the o projection after it then streams its weight from HBM, its first loads paying
// the full DRAM latency. Asking the L2 for that weight from the attention kernel's CTAs lets the
// o projection read it from L2 (bench_awq_gemm's pdl_l2hot column is the ceiling of what that
// gives). sm_90+ only (cp.async.bulk.prefetch.L2: one instruction per chunk, the TMA unit makes
// the requests); a no-op below sm_90 and in the CPU emulation.
//
// A prefetch is a hint: nothing waits for it, nothing depends on it for correctness, and it may
// be issued before griddepcontrol.wait (the memory must not be written by any kernel in flight).
// The L2 is 50 MB on H100/H200: prefetch what the next one or two kernels read, not more.
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__CUDACC__) || defined(AWQD_EMULATE)
#include "kernels/ptx.cuh"
#endif

namespace awqd::cuda {

struct L2PrefetchList {
  static constexpr int kMaxRegions = 6;
  static constexpr std::uint32_t kChunkBytes = 32 << 10;  // per prefetch instruction
  const void* ptr[kMaxRegions] = {};
  std::uint32_t bytes[kMaxRegions] = {};
  int count = 0;

  // Host side: adds [p, p + n), n rounded down to a multiple of 16 (the instruction's unit; the
  // tail of at most 15 bytes is read from HBM as before). p must be 16-byte aligned and n below
  // 4 GiB; returns false (adding nothing) when the list is full or p is null, misaligned, or n
  // too large.
  bool add(const void* p, std::size_t n) {
    if (count == kMaxRegions || p == nullptr || reinterpret_cast<std::uintptr_t>(p) % 16 != 0 ||
        n >= (std::size_t{1} << 32))
      return false;
    ptr[count] = p;
    bytes[count] = static_cast<std::uint32_t>(n / 16 * 16);
    ++count;
    return true;
  }
  std::size_t total_bytes() const {
    std::size_t t = 0;
    for (int i = 0; i < count; ++i) t += bytes[i];
    return t;
  }
};

#if defined(__CUDACC__) || defined(AWQD_EMULATE)
// Issues chunk c of the list from worker c % workers (worker: the calling thread's index among
// `workers` threads spread over the grid, so that the requests come from many SMs' TMA units).
__device__ __forceinline__ void l2_prefetch(const L2PrefetchList& l, int worker, int workers) {
  constexpr std::uint32_t kChunk = L2PrefetchList::kChunkBytes;
  const auto w = static_cast<std::uint32_t>(worker), ws = static_cast<std::uint32_t>(workers);
  std::uint32_t first = 0;  // list-wide index of region r's first chunk
  for (int r = 0; r < l.count; ++r) {
    const std::uint32_t n = (l.bytes[r] + kChunk - 1) / kChunk;
    // The region's chunks c = first + i with c % ws == w: i from (w - first) mod ws.
    for (std::uint32_t i = (w + ws - first % ws) % ws; i < n; i += ws) {
      const std::uint32_t off = i * kChunk, left = l.bytes[r] - off;
      ptx::prefetch_l2_bulk(static_cast<const unsigned char*>(l.ptr[r]) + off,
                            left < kChunk ? left : kChunk);
    }
    first += n;
  }
}
#endif

}  // namespace awqd::cuda
