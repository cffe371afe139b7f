// The AWQ GEMM Hopper kernel (sm_90a; design: kernels/awq_gemm.cuh), for 16 < M below the
// dequantize + cuBLASLt threshold: wgmma with the dequantized weights as the A operand, straight
// from registers, so a weight is dequantized once per block and never goes through shared memory
// (the scheme Machete uses in vLLM), and the activations as B from shared memory.
// Included by awq_gemm_kernel.cuh for the instantiation files; code for sm_90a only.
//
// Block: 2 warpgroups (256 threads), output tile of 4 stripes (256 columns) x kBM activation rows,
// k-tiles [kt_begin, kt_end) of its split of K. Warp w of warpgroup h streams stripe w of the
// block and dequantizes words 2h and 2h + 1 of each lane's 16 bytes of every k16 tile: the
// A fragment (16 columns x 16 k, the same registers the stream kernel feeds mma.m16n8k16) of
// rows 16w..16w+15 of wgmma.m64nBMk16. So warpgroup h computes, per k16 step, two wgmma
// (words 2h, 2h + 1) whose 64 rows are 16 columns of each of the 4 stripes:
//   D row 16w + g (+8) of word j = column 64 (stripe w) + 16 j + g (+8),
//   D column = activation row; thread (w, g, t) holds rows g, g + 8 and columns 8i + 2t, +1.
// Shared memory, per stage of one 64-row k-tile (kStages stages, cp.async):
//   X  [kBM rows][128 bytes]: wgmma's K-major layout with the 128-byte swizzle (16-byte chunk c
//      of row r at chunk c ^ (r % 8); the X of every stage is 1024-byte aligned). The descriptor
//      of k16 step s starts 32 s bytes into the stage, stride (8-row groups) 1024 bytes. The
//      first version used the layout without swizzle (8-row x 16-byte core matrices): on the H100
//      it ran at a fifth of the tensor rate, k-tile time independent of M (bank conflicts on B).
//   W  [4 stripes][4 tiles][512 bytes], verbatim from the tile layout.
//   S  [2 group slots][4 stripes][128 bytes scales + 32 bytes zeros] (slot 1 when G = 32).
// Pipeline: k-tile kt + kStages - 2 is requested while kt is computed, into the stage of
// k-tile kt - 2. Per k-tile a warpgroup dequantizes all 4 k16 steps into one of two register
// buffers, then issues its 8 wgmma as one group after one fence; it keeps that group in flight
// and waits for the previous one, so the dequantization of k-tile kt + 1 overlaps the tensor
// cores' work on kt, and by the barrier of k-tile kt every wgmma reading kt - 2's stage (and the
// register buffer it is about to refill) has finished.
// Limits (docs/PERF.md runs 15, 73, 82, 107): one block (8 warps) per SM by registers, ~0.7 us per
// k-tile. Taken apart on the H200 (run 82, gate_up M = 64): the copy pipeline alone is half the
// time (at M >= 64 every block re-reads its activation rows from the L2, as many bytes as its
// weights), and the dequantization and the wgmma add to it rather than hide under it. ncu (run
// 107): ~290 instructions per warp and k-tile (104 of them dequantization) with 2 warps per
// scheduler, so issue and instruction latencies bound it; the tensor cores are busy 40 % of the
// time at M = 64. Measured slower and not kept: 16 warps (run 15), two blocks per SM (75),
// stream-K (79), an L2 evict-first policy for the weights (81), 1D bulk copies of the weights
// (83), a ninth warp issuing every copy (TMA for x, bulk copies, full/empty mbarriers instead of
// the block barrier; runs 108-111: its copies alone are slower than the block's cp.async).
#pragma once

#include <cuda_fp16.h>

#include <climits>
#include <cstddef>
#include <cstdint>

#include "kernels/awq_gemm_device.cuh"
#include "kernels/awq_gemm_epilogue.cuh"
#include "kernels/awq_gemm_tiles.cuh"

namespace awqd::cuda::awq_gemm_detail {

// ---- wgmma (PTX ISA 8.0+, sm_90a) ----
__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int kPending>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
}
// Keeps the compiler from moving accesses of an accumulator across wgmma fences and waits.
__device__ __forceinline__ void fence_operand(float& r) { asm volatile("" : "+f"(r)::"memory"); }

// Shared-memory matrix descriptor of a K-major operand in the 128-byte swizzle layout: start
// address, stride byte offset 1024 (between 8-row groups; the leading byte offset is unused with
// this swizzle), layout type 1 (128-byte swizzle) in bits 62-63; addresses in units of 16 bytes.
__device__ __forceinline__ std::uint64_t smem_desc_sw128(std::uint32_t addr) {
  return static_cast<std::uint64_t>((addr >> 4) & 0x3FFF) | std::uint64_t{1} << 16 |
         std::uint64_t{1024 >> 4} << 32 | std::uint64_t{1} << 62;
}

// D[64 x N] += A[64 x 16] (registers: each warp's 16 rows, mma.m16n8k16 A order) * B[16 x N]
// (shared memory, K-major, b_desc), fp32 accumulators (thread: rows g, g + 8 of its warp's 16,
// columns 8i + 2t, +1 for i < N / 8, as d[4i .. 4i + 3]).
__device__ __forceinline__ void wgmma_m64n64k16(float (&d)[32], const std::uint32_t (&a)[4],
                                                 std::uint64_t b_desc) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
      "}, {%32, %33, %34, %35}, %36, p, 1, 1, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]),
        "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]),
        "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]),
        "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]),
        "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b_desc), "r"(1));
}

__device__ __forceinline__ void wgmma_m64n128k16(float (&d)[64], const std::uint32_t (&a)[4],
                                                 std::uint64_t b_desc) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
      "}, {%64, %65, %66, %67}, %68, p, 1, 1, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]),
        "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]),
        "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]),
        "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]),
        "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]),
        "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]),
        "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]),
        "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]),
        "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b_desc), "r"(1));
}

template <int N>
__device__ __forceinline__ void wgmma_rs(float (&d)[N / 2], const std::uint32_t (&a)[4],
                                         std::uint64_t b_desc) {
  if constexpr (N == 64)
    wgmma_m64n64k16(d, a, b_desc);
  else
    wgmma_m64n128k16(d, a, b_desc);
}

// Group constants of words 2h, 2h + 1 of a lane (columns i = 4h..4h+3 of its 8): entries 0..3 of
// GroupConsts, as dequant_word(w, c, jj) reads them for jj = 0, 1. `scales` holds the 4 fp16
// scales, `zeros` the zero points with nibble 0 = column 4h.
__device__ __forceinline__ void load_half_group_consts(uint2 scales, std::uint32_t zeros,
                                                       awq_device::GroupConsts& c) {
  using awq_device::int4_pair_plus_1024;
  const std::uint32_t sw[2] = {scales.x, scales.y};
#pragma unroll
  for (int a = 0; a < 2; ++a) {
    c.s2[2 * a] = __byte_perm(sw[a], 0, 0x1010);
    c.s2[2 * a + 1] = __byte_perm(sw[a], 0, 0x3232);
  }
#pragma unroll
  for (int a = 0; a < 4; ++a) {
    c.z2[a] = __byte_perm(int4_pair_plus_1024(zeros >> (4 * a)), 0, 0x1010);
    c.nz[a] = awq_device::minus_64_minus_z(c.z2[a]);
  }
}

template <class C>
__device__ __forceinline__ void wgmma_block(const Params& p) {
  using namespace awq_device;
  extern __shared__ __align__(128) std::uint8_t smem[];
  __shared__ int s_is_last;
  constexpr int kAcc = C::kAccPerJ;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int wg = warp >> 2, ws = warp & 3;  // warpgroup (words 2wg, 2wg+1), stripe in the block
  const int g = lane >> 2, t = lane & 3;
  const int n_block = blockIdx.x, m_block = blockIdx.y, split = blockIdx.z;
  const int m0 = m_block * C::kBM;
  const int stripe = n_block * C::kWarpsN + ws;
  const bool g32 = p.group_shift == 5;
  const int kt_begin = static_cast<int>(static_cast<long long>(split) * p.k_tiles / p.splits);
  const int kt_end = static_cast<int>(static_cast<long long>(split + 1) * p.k_tiles / p.splits);

  // Launched with Programmatic Dependent Launch (sm_90), the block may start before the previous
  // kernel on the stream has finished; every load below may depend on it.
  allow_dependents_launch();
  grid_dependency_wait();

  float acc[2][kAcc];
#pragma unroll
  for (int jj = 0; jj < 2; ++jj)
#pragma unroll
    for (int r = 0; r < kAcc; ++r) acc[jj][r] = 0.0f;

  const std::uint32_t raw_base = smem_addr(smem);
  const std::uint32_t x_base = (raw_base + 1023u) & ~1023u;  // X of stage i: + i * kXBytes
  const std::uint32_t ws_base = x_base + C::kStages * C::kXBytes;  // W + S of stage i
  std::uint8_t* const ws_ptr = smem + (ws_base - raw_base);
  // The 16-byte chunks this thread copies for every k-tile. Everything a request needs is carried
  // from one request to the next (source pointers advanced by a k-tile, destinations by a stage,
  // what is left of K per chunk), never recomputed from the thread index: ptxas rematerializes
  // values derived from the thread index in every k-tile rather than keep them in registers
  // (run 73: ~100 of ~310 instructions per warp and k-tile with per-k-tile offsets; run 107: ~56
  // still, with the destinations and bounds derived from it), but it cannot rebuild a value that
  // each iteration updates (run 113: w128 5-7 % faster). Chunks:
  //   activations: row r = c / 8, chunk cc = c % 8 of x[m0 + r][kt * 64 + 8 cc ..] (zeros for
  //     rows >= M and k >= K), at chunk cc ^ (r % 8) of the stage's row r; chunk it of this
  //     thread is row r0 + it * kThreads / 8 (the same r % 8): it * kXItStride bytes further on;
  //   weights: 16 bytes q of the 4 stripes' 2 KB of the k-tile (zeros past the last stripe);
  //   scales/zeros: chunk q of (group slot, stripe), threads < 80.
  constexpr int kXIters = C::kBM * 8 / C::kThreads, kWIters = C::kWBytes / 16 / C::kThreads;
  static_assert(C::kBM * 8 % C::kThreads == 0 && C::kWBytes / 16 % C::kThreads == 0, "chunks");
  constexpr int kXItStride = C::kThreads / 8 * 128, kWItStride = C::kThreads * 16;  // bytes
  static_assert(C::kThreads / 8 % 8 == 0, "chunk it keeps the row's swizzle (r % 8)");
  const __half* x_src[kXIters];  // chunk of k-tile kt_next (rows >= M: p.x, never valid)
  int x_left[kXIters];           // K - (k of the chunk at k-tile kt_next); rows >= M: never > 0
  const int r0 = threadIdx.x >> 3, cc0 = threadIdx.x & 7;
#pragma unroll
  for (int it = 0; it < kXIters; ++it) {
    const int r = r0 + it * (C::kThreads / 8);
    const bool row_ok = m0 + r < p.M;
    x_src[it] = (row_ok ? p.x + static_cast<std::size_t>(m0 + r) * p.K + 8 * cc0 : p.x) + kt_begin * 64;
    x_left[it] = row_ok ? p.K - kt_begin * 64 - 8 * cc0 : INT_MIN / 2;
  }
  const uint4* w_src[kWIters];
  bool w_valid[kWIters];
#pragma unroll
  for (int it = 0; it < kWIters; ++it) {
    const int c = threadIdx.x + it * C::kThreads, st = n_block * C::kWarpsN + (c >> 7);
    w_valid[it] = st < p.n_stripes;
    w_src[it] = p.tiles + (w_valid[it] ? static_cast<std::size_t>(st) * p.k_tiles * 128 : 0) + (c & 127) +
                kt_begin * 128;
  }
  const int s_slot = threadIdx.x / (C::kWarpsN * 10), s_q = threadIdx.x % 10;
  const int s_st = n_block * C::kWarpsN + threadIdx.x % (C::kWarpsN * 10) / 10;
  const bool s_active = threadIdx.x < 2 * C::kWarpsN * 10 && (s_slot == 0 || g32);
  const bool s_valid = s_st < p.n_stripes;
  // Group g's chunk: s_src + g * s_stride bytes (a group's 64 scales or 8 zero words per stripe).
  const std::size_t s_group0 = static_cast<std::size_t>(s_valid ? s_st : 0) * p.groups;
  const char* const s_src = s_q < 8 ? reinterpret_cast<const char*>(p.scales + s_group0 * 64 + s_q * 8)
                                    : reinterpret_cast<const char*>(p.zeros + s_group0 * 8 + (s_q - 8) * 4);
  const int s_stride = s_q < 8 ? 128 : 32;
  // Destinations in the stage the next request fills (carried; stage 0 first).
  std::uint32_t x_dst = x_base + r0 * 128 + ((cc0 ^ (r0 & 7)) << 4);
  std::uint32_t w_dst = ws_base + threadIdx.x * 16;
  std::uint32_t s_dst = ws_base + C::kWBytes +
                        (s_slot * C::kWarpsN + threadIdx.x % (C::kWarpsN * 10) / 10) * C::kSSlotBytes + s_q * 16;
  int kt_next = kt_begin;  // the k-tile the next request fetches
  int stage_f = 0;         // the stage it fills
  auto issue = [&] {
    const int kt = kt_next++;
#pragma unroll
    for (int it = 0; it < kXIters; ++it) {
      const bool valid = x_left[it] > 0;
      cp_async_16(x_dst + it * kXItStride, valid ? x_src[it] : p.x, valid);
      x_src[it] += 64;
      x_left[it] -= 64;
    }
#pragma unroll
    for (int it = 0; it < kWIters; ++it) {
      cp_async_16(w_dst + it * kWItStride, w_src[it], w_valid[it]);
      w_src[it] += 128;
    }
    if (s_active)
      cp_async_16(s_dst, s_src + static_cast<std::size_t>((kt * 64 + 32 * s_slot) >> p.group_shift) * s_stride,
                  s_valid);
    const bool wrap = ++stage_f == C::kStages;
    stage_f = wrap ? 0 : stage_f;
    x_dst += wrap ? -(C::kStages - 1) * C::kXBytes : C::kXBytes;
    w_dst += wrap ? -(C::kStages - 1) * C::kWSBytes : C::kWSBytes;
    s_dst += wrap ? -(C::kStages - 1) * C::kWSBytes : C::kWSBytes;
  };

#pragma unroll
  for (int s = 0; s < C::kStages - 2; ++s) {
    if (kt_begin + s < kt_end) issue();
    cp_async_commit();
  }
  // What this thread reads of the stage computed next (carried, advanced a stage per k-tile):
  // its 8 bytes of each k16 tile of its stripe, and its row's scales (8 bytes) and zero word
  // (shifted to its 4 columns); the stage's activations for the wgmma descriptors.
  const std::uint8_t* w_read = ws_ptr + ws * 4 * awq_layout::kTileBytes + lane * 16 + wg * 8;
  const std::uint8_t* s_read = ws_ptr + C::kWBytes + ws * C::kSSlotBytes + g * 16 + wg * 8;
  std::uint32_t x_read = x_base;
  int stage_c = 0;
  const int z_off = 128 - 12 * g - 8 * wg, z_shift = 16 * wg;  // zeros: s_read + z_off
  // One k-tile: wait for its stage, request k-tile kt + kStages - 2, dequantize the warp's 4 k16
  // steps into `a` (while the previous k-tile's wgmma run), then one fence and 8 wgmma (4 steps x
  // 2 words) as one group; keep that group in flight, wait for the previous one, which frees the
  // other register buffer and (after the next barrier) the stage of k-tile kt - 1.
  auto k_tile = [&](int kt, std::uint32_t (&a)[4][2][4]) {
    cp_async_wait<C::kStages - 3>();  // k-tile kt has landed (this thread's copies)...
    __syncthreads();  // ...and everyone's; the wgmma reading kt - 2's stage are done
    if (kt + C::kStages - 2 < kt_end) issue();
    cp_async_commit();

    const std::uint32_t x_addr = x_read;
    const std::uint8_t* const w_s = w_read;
    const std::uint8_t* const s_s = s_read;
    const bool wrap = ++stage_c == C::kStages;
    stage_c = wrap ? 0 : stage_c;
    x_read += wrap ? -(C::kStages - 1) * C::kXBytes : C::kXBytes;
    w_read += wrap ? -(C::kStages - 1) * C::kWSBytes : C::kWSBytes;
    s_read += wrap ? -(C::kStages - 1) * C::kWSBytes : C::kWSBytes;
    GroupConsts consts;
#pragma unroll
    for (int s = 0; s < 4; ++s) {
      if (s == 0 || (g32 && s == 2)) {
        const std::uint8_t* sp = s_s + (s >> 1) * (g32 ? C::kWarpsN * C::kSSlotBytes : 0);
        load_half_group_consts(*reinterpret_cast<const uint2*>(sp),
                               *reinterpret_cast<const std::uint32_t*>(sp + z_off) >> z_shift,
                               consts);
      }
      const uint2 wv = *reinterpret_cast<const uint2*>(w_s + s * awq_layout::kTileBytes);
      std::uint32_t bq[2][2];
      dequant_word(wv.x, consts, 0, bq);
      a[s][0][0] = bq[0][0], a[s][0][1] = bq[1][0], a[s][0][2] = bq[0][1], a[s][0][3] = bq[1][1];
      dequant_word(wv.y, consts, 1, bq);
      a[s][1][0] = bq[0][0], a[s][1][1] = bq[1][0], a[s][1][2] = bq[0][1], a[s][1][3] = bq[1][1];
    }
    wgmma_fence();
#pragma unroll
    for (int s = 0; s < 4; ++s) {
      const std::uint64_t desc = smem_desc_sw128(x_addr + s * 32);
      wgmma_rs<C::kBM>(acc[0], a[s][0], desc);
      wgmma_rs<C::kBM>(acc[1], a[s][1], desc);
    }
    wgmma_commit();
    wgmma_wait<1>();
  };
  std::uint32_t a0[4][2][4], a1[4][2][4];  // two buffers: one is read by the group in flight
  for (int kt = kt_begin; kt < kt_end; kt += 2) {
    k_tile(kt, a0);
    if (kt + 1 < kt_end) k_tile(kt + 1, a1);
  }
  wgmma_wait<0>();
  cp_async_wait<0>();
#pragma unroll
  for (int jj = 0; jj < 2; ++jj)
#pragma unroll
    for (int r = 0; r < kAcc; ++r) fence_operand(acc[jj][r]);

  // acc[jj][4i + 2h + e]: column 64 stripe + 16 (2 wg + jj) + g + 8h, row m0 + 8i + 2t + e.
  auto for_each_output = [&](auto&& f) {
#pragma unroll
    for (int jj = 0; jj < 2; ++jj)
#pragma unroll
      for (int i = 0; i < C::kBM / 8; ++i)
#pragma unroll
        for (int h = 0; h < 2; ++h)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int col = stripe * 64 + 16 * (2 * wg + jj) + g + 8 * h;
            const int row = m0 + 8 * i + 2 * t + e;
            if (row < p.M && col < p.N) f(row, col, acc[jj][4 * i + 2 * h + e]);
          }
  };
  if (p.splits == 1) {
    for_each_output([&](int row, int col, float v) {
      if (p.bias != nullptr) v += __half2float(p.bias[col]);
      p.y[static_cast<std::size_t>(row) * p.N + col] = __float2half_rn(v);
    });
    return;
  }
  for_each_output([&](int row, int col, float v) { *split_partial(p, split, row, col) = v; });
  finish_split_tile<C>(p, m0, n_block, s_is_last);
}

}  // namespace awqd::cuda::awq_gemm_detail
