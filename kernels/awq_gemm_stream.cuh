// The AWQ GEMM stream kernel (design: kernels/awq_gemm.cuh), for M <= 16 rows per m-block: the
// decode case, where the GEMM is a pass over the weights and its speed is their bandwidth.
// Included by awq_gemm_kernel.cuh (and so by the instantiation files and the CPU emulation).
//
// Grid: (m-block of StreamConfig::kRows rows, block of kStripes stripes, split of K); m-blocks
// first, so the blocks that read the same weights for other rows run together and mostly find
// them in L2. The stripe's K is cut into
// 128-row batches (8 k16 tiles, 8 x 512 contiguous bytes of the tile layout); split z owns batches
// [z * batches / splits, (z + 1) * batches / splits) and its 4 warps take them round-robin.
// sm_80+: each warp owns a ring of 2 batch slots in shared memory (weights, then the batch's 1 to
// 4 groups of scales and zeros) filled by cp.async, so the next batch streams in while the warp
// computes the current one, and no register holds it (run 36: gate_up at M = 1 29.3 -> 28.0 us,
// down 17.9 -> 16.7, qkv 9.6 -> 8.3 against loads in registers; registers 116 -> 76 for st8).
// The Turing path (no cp.async) loads a batch's 8 x 16 bytes into registers after computing the
// previous one: 4 KB in flight per warp, between computations. Nothing waits on a block barrier
// in the main loop.
//
// Per k16 step the warp dequantizes its 64 columns (4 words per lane) and uses them as the A
// operand of mma.m16n8k16 (16 columns x 16 k), the activation rows as B
// (16 k x 8 rows), so M <= 8 costs 4 mma per step and the accumulator is D[column][row]:
//   A regs {b[0][0], b[1][0], b[0][1], b[1][1]} of word j = columns 16j + g (+8), k 2t.. (+8);
//   B regs b0 = x[row g][k 2t, 2t+1], b1 = x[row g][k 2t+8, 2t+9];
//   D reg r = column 16j + g + 8 (r / 2), row 2t + r % 2.
// sm_80+ (StreamConfig::kExactWeights): the A operand holds the exact integers q - z
// (awq_device::dequant_word_unscaled, 9 instructions per 8 weights instead of 13) and the mma
// accumulate a group's sums apart, which are multiplied by the columns' scales in fp32 at the
// group's end (run 95, H200: gate_up at M = 1 21.5 -> 19.2 us, decode-1 2.31 -> 2.18 ms per
// token; run 37 had measured no gain on the H100 with the 19-instruction dequantization). The
// Turing path multiplies W = fp16((q - z) * s) (awq_device::dequant_word), as the other kernels.
// The activations are staged in shared memory ([rows][x_stride] fp16, x_stride = phase rows + 8
// halves: the 8 rows of a fragment read land in 8 different banks), a phase of up to 1024 rows
// (M = 16) to 16384 rows (M = 1) at a time, between two block barriers.
//
// End: the warps' sums meet in shared memory (added in warp order); with one split the block
// writes y; else it writes fp32 partial sums and the last block of the stripe to arrive adds the
// splits in split order (deterministic), as the tiled kernel does.
//
// Programmatic Dependent Launch (sm_90): the weights of each warp's first C::kPrefetch batches
// (st8: its whole ring) are requested before griddepcontrol.wait, so they stream while the
// previous kernel on the stream finishes; activations, workspace and output are touched only
// after it.
//
// Folded norm (C::kFold, each stream tile's `Folded` instantiation; AwqGemmOptions::norm_out,
// norm_in_sumsq): the residual add and RMSNorm between two linears of a decode step, without a
// kernel of their own. Before the norm, fold_epilogue writes residual += y (fp16, in place),
// y = fp16(residual * weight) and each (row, 64-column stripe)'s sum of residual^2; after it,
// a warp per row adds the row's sums during the epilogue (requested into L1 right after the PDL
// wait) and the outputs are multiplied by rsqrt(sum / K + eps) before the bias. The plain
// instantiations compile as if the fold did not exist (with its code in them they were 2-11 %
// slower: docs/PERF.md run 120).
#pragma once

#include <cuda_fp16.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "kernels/awq_gemm_device.cuh"
#include "kernels/awq_gemm_epilogue.cuh"
#include "kernels/awq_gemm_tiles.cuh"
#include "kernels/half_pack.cuh"
#include "kernels/silu.cuh"

namespace awqd::cuda::awq_gemm_detail {

// r[q] for a run-time q in 0..3 without indexing a register array (which would go to local
// memory).
template <class T>
__device__ __forceinline__ T pick4(const T (&r)[4], int q) {
  const T lo = (q & 1) ? r[1] : r[0];
  const T hi = (q & 1) ? r[3] : r[2];
  return (q & 2) ? hi : lo;
}

// Zeroes a lane's fp32 sums of one stream block ([4 words][MG n8 groups][4 registers]).
template <int MG>
__device__ __forceinline__ void zero_sums(float (&s)[4][MG][4]) {
#pragma unroll
  for (int j = 0; j < 4; ++j)
#pragma unroll
    for (int i = 0; i < MG; ++i)
#pragma unroll
      for (int r = 0; r < 4; ++r) s[j][i][r] = 0.0f;
}

// The stream kernel's end with a folded norm (C::kFold; AwqGemmOptions::norm_out,
// norm_in_sumsq). The block's outputs o = threadIdx.x + i * kThreads are first gathered into
// registers from the warps' sums in `red` and added over the splits as stream_block's split
// paths add them, then stored with the fold's arithmetic by the block that writes y; with
// norm_out, `red` then takes each output's residual^2 and the block adds them per (stripe, row)
// in column order. row_of, column_of, block_sum: stream_block's.
template <class C, class RowOf, class ColumnOf, class BlockSum>
__device__ __forceinline__ void fold_epilogue(const Params& p, const NormFold& f, float* red,
                                              const float* row_scale, int& s_is_last, int m0,
                                              int rows, int n_block, int split, RowOf row_of,
                                              ColumnOf column_of, BlockSum block_sum) {
  using namespace awq_device;
  constexpr int kOutputs = C::kStripes * C::kAcc * 32;
  constexpr int kPerThread = (kOutputs + C::kThreads - 1) / C::kThreads;
  constexpr int kMG = C::kMGroups;
  // This block's sums, then (split-K) the stripe's, as stream_block's split paths add them.
  float vals[kPerThread];
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) {
    const int o = threadIdx.x + i * C::kThreads;
    vals[i] = o < kOutputs ? block_sum(o) : 0.0f;
  }
  bool stores = true;  // this block writes y (with split-K, one block of the stripe does)
  if (p.splits > 1) {
    bool cluster = false;
#ifndef AWQD_KERNEL_EMULATION
    cluster = p.cluster_reduce != 0;
    if (cluster) {  // rank 0 adds the other ranks' sums in rank order
      __syncthreads();  // every warp's sums are read: the space takes the block's
#pragma unroll
      for (int i = 0; i < kPerThread; ++i) {
        const int o = threadIdx.x + i * C::kThreads;
        if (o < kOutputs) red[o] = vals[i];
      }
      cluster_sync();
      if (split == 0) {
#pragma unroll
        for (int i = 0; i < kPerThread; ++i) {
          const int o = threadIdx.x + i * C::kThreads;
          if (o < kOutputs)
            for (int z = 1; z < p.splits; ++z) vals[i] += ld_cluster_f32(smem_addr(red + o), z);
        }
      }
      cluster_sync();  // the other ranks' sums are read: rank 0's shared memory is its own again
      stores = split == 0;
    }
#endif
    if (!cluster) {  // through the workspace: the last block to arrive adds the splits in order
#pragma unroll
      for (int i = 0; i < kPerThread; ++i) {
        const int o = threadIdx.x + i * C::kThreads;
        if (o >= kOutputs) continue;
        const int m = row_of(o), n = column_of(o);
        if (m < p.M && n < p.N) *split_partial(p, split, m, n) = vals[i];
      }
      stores = arrive_last_split(p, s_is_last);
      if (stores) {
#pragma unroll
        for (int i = 0; i < kPerThread; ++i) {
          const int o = threadIdx.x + i * C::kThreads;
          vals[i] = 0.0f;
          if (o >= kOutputs) continue;
          const int m = row_of(o), n = column_of(o);
          if (m < p.M && n < p.N)
            for (int z = 0; z < p.splits; ++z) vals[i] += __ldcg(split_partial(p, z, m, n));
        }
      }
    }
  }
  if (!stores) return;

  const bool fold_out = f.residual != nullptr;
  float square[kPerThread];
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) {
    const int o = threadIdx.x + i * C::kThreads;
    square[i] = 0.0f;
    if (o >= kOutputs) continue;
    const int m = row_of(o), n = column_of(o);
    if (m >= p.M || n >= p.N) continue;
    float v = vals[i];
    if (f.sumsq_in != nullptr) v *= row_scale[m - m0];  // the norm before, folded: its 1 / rms
    if (p.bias != nullptr) v += __half2float(p.bias[n]);
    const std::size_t at = static_cast<std::size_t>(m) * p.N + n;
    if (!fold_out) {
      p.y[at] = __float2half_rn(v);
    } else {
      // add_rmsnorm's arithmetic up to its scale: residual = fp16(residual + fp16(y)), then
      // y = fp16(residual * weight); the 1 / rms multiplies the next linear's sums.
      const __half x_new =
          __float2half_rn(__half2float(f.residual[at]) + __half2float(__float2half_rn(v)));
      f.residual[at] = x_new;
      const float xf = __half2float(x_new);
      p.y[at] = __float2half_rn(xf * __half2float(f.weight[n]));
      square[i] = xf * xf;
    }
  }
  if (!fold_out) return;
  __syncthreads();  // every thread's reads of `red` are done: it takes the squares
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) {
    const int o = threadIdx.x + i * C::kThreads;
    if (o < kOutputs) red[o] = square[i];
  }
  __syncthreads();
  // Per (stripe, row) of the block, the sum of its 64 squares in column order: column
  // 16j + 8h + g of row r is output e = 4 (j kMG + r / 8) + 2h + r % 2 of lane 4g + (r % 8) / 2.
  for (int q = threadIdx.x; q < C::kStripes * rows; q += C::kThreads) {
    const int sl = q / rows, r = q % rows, stripe = n_block * C::kStripes + sl;
    if (stripe >= p.n_stripes) continue;
    float sum = 0.0f;
#pragma unroll 4
    for (int c = 0; c < 64; ++c) {
      const int j = c >> 4, h = (c >> 3) & 1, gg = c & 7;
      const int e = 4 * (j * kMG + (r >> 3)) + 2 * h + (r & 1);
      sum += red[(sl * C::kAcc + e) * 32 + 4 * gg + ((r & 7) >> 1)];
    }
    f.sumsq_out[static_cast<std::size_t>(m0 + r) * p.n_stripes + stripe] = sum;
  }
}

template <class C>
__device__ __forceinline__ void stream_block(const Params& p, const NormFold& f) {
  using namespace awq_device;
#ifndef AWQD_KERNEL_EMULATION
  extern __shared__ __align__(128) std::uint8_t smem[];
  __shared__ int s_is_last;
  __shared__ float s_row_scale[C::kRows];  // f.sumsq_in: each row's 1 / rms
#else
  std::uint8_t* smem = emu::shared_memory();
  static int s_is_last;
  static float s_row_scale[C::kRows];
#endif
  constexpr int kMG = C::kMGroups;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;
  const int warp_k = warp % C::kWarpsK;  // the warp's place in its stripe's round-robin
  const int m_block = blockIdx.x, n_block = blockIdx.y, split = blockIdx.z;
  const int stripe = n_block * C::kStripes + warp / C::kWarpsK;
  const bool stripe_valid = stripe < p.n_stripes;
  const int m0 = m_block * C::kRows;
  const int rows = p.M - m0 < C::kRows ? p.M - m0 : C::kRows;
  const int k16 = p.k_tiles * 4;  // k16 tiles of the stripe
  const int gs = p.group_shift;
  const int b_begin = static_cast<int>(static_cast<long long>(split) * p.batches / p.splits);
  const int b_end = static_cast<int>(static_cast<long long>(split + 1) * p.batches / p.splits);

  allow_dependents_launch();

  // The weights reach the warps one of two ways (C::kRing):
  // - kRing == 0 (the Turing path, which has no cp.async): one batch in registers, 8 x 16 bytes
  //   of int4 and the scales and zeros of its groups, requested after the previous batch is
  //   computed;
  // - kRing >= 2 (sm_80+): a ring of kRing batch slots per warp in shared memory, filled with
  //   cp.async: while a warp computes one batch, the next kRing - 1 are on their way, and no
  //   register holds them; C::kPrefetch of them are requested before griddepcontrol.wait.
  constexpr bool kUseRing = C::kRing > 0;
  const int groups_in_batch = C::kBatchRows >> gs;  // 1, 2 or 4
  uint4 w[C::kSteps];  // (unused with the ring)
  uint4 raw_s[4];
  std::uint32_t raw_z[4];
  // Where batch b's weights start (this lane's first 16 bytes), and the (stripe, group) index of
  // its group q, or -1 past the batch's groups or K.
  auto batch_src = [&](int b) {
    return p.tiles + (static_cast<std::size_t>(stripe) * k16 + b * C::kSteps) * 32 + lane;
  };
  auto stripe_group = [&](int b, int q) -> long long {
    const int group = ((b * C::kSteps * 16) >> gs) + q;
    return q < groups_in_batch && group < p.groups
               ? static_cast<long long>(stripe) * p.groups + group
               : -1;
  };
  auto load_batch = [&](int b) {
    const int kt0 = b * C::kSteps;
    const uint4* src = batch_src(b);
#pragma unroll
    for (int u = 0; u < C::kSteps; ++u)
      w[u] = kt0 + u < k16 ? ldg_stream(src + u * 32) : make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const long long sg = stripe_group(b, q);
      if (sg >= 0) {
        raw_s[q] = __ldg(reinterpret_cast<const uint4*>(p.scales + sg * 64) + g);
        raw_z[q] = __ldg(p.zeros + sg * 8 + g);
      } else {
        raw_s[q] = make_uint4(0, 0, 0, 0);
        raw_z[q] = 0;
      }
    }
  };
  // Ring slot (C::kSlotBytes): the batch's 8 x 32 lanes x 16 bytes of weights, then for each of
  // its up to 4 groups 10 chunks of 16 bytes: the stripe's 64 scales (8 chunks) and 8 zero words
  // (2 chunks), as they lie in memory. A lane copies and later reads its own weight chunks; the
  // scale chunks are shared by the warp (hence the __syncwarp()s).
  uint4* const ring = reinterpret_cast<uint4*>(smem + C::kAreaBytes) +
                      warp * C::kRing * (C::kSlotBytes / 16);
  auto issue_batch = [&](int b, int slot) {
    uint4* dst = ring + slot * (C::kSlotBytes / 16);
    if (b < b_end) {
      const int kt0 = b * C::kSteps;
      const uint4* src = batch_src(b);
#pragma unroll
      for (int u = 0; u < C::kSteps; ++u) {
        const bool ok = kt0 + u < k16;
        cp_async_16(smem_addr(dst + u * 32 + lane), ok ? src + u * 32 : p.tiles, ok);
      }
      for (int c = lane; c < 40; c += 32) {
        const int q = c / 10, r = c - q * 10;
        const long long sg = stripe_group(b, q);
        const void* src_c = sg < 0  ? static_cast<const void*>(p.tiles)
                            : r < 8 ? static_cast<const void*>(p.scales + sg * 64 + r * 8)
                                    : static_cast<const void*>(p.zeros + sg * 8 + (r - 8) * 4);
        cp_async_16(smem_addr(dst + C::kSteps * 32 + c), src_c, sg >= 0);
      }
    }
    cp_async_commit();  // empty past the warp's last batch: every lane commits the same groups
  };
  // A warp past the last stripe computes nothing but meets every barrier.
  int b = stripe_valid ? b_begin + warp_k : b_end;
  int slot = 0;  // ring slot of batch b
  // Weights only: may run before the previous kernel ends (with PDL they stream while the kernel
  // ahead finishes). C::kPrefetch batches: the whole ring (each computed slot is then refilled
  // right after its batch) or all but one slot (refilled before each batch's wait).
  constexpr bool kWholeRing = C::kPrefetch == C::kRing;
  if constexpr (kUseRing) {
#pragma unroll
    for (int d = 0; d < C::kPrefetch; ++d) issue_batch(b + d * C::kWarpsK, d);
  } else {
    if (b < b_end) load_batch(b);
  }

  grid_dependency_wait();
  if constexpr (C::kFold) {
    // A folded norm's lines that the block's end reads (written by the kernels before), requested
    // into L1 now, so that its end does not wait a round trip for them. Threads 0-63: the row
    // sums of squares of the norm before (f.sumsq_in, K / 64 floats per row: 64 lines cover 16
    // rows up to K = 8192); threads 64-127: the residual rows of the block's stripes and their
    // norm weights (f.residual). One line per thread and no loop: a loop here cost st8wd
    // registers.
    static_assert(C::kThreads >= 128 && (C::kRows + 1) * C::kStripes <= 64, "one line per thread");
    if (f.sumsq_in != nullptr && threadIdx.x < 64) {
      // The block's rows are contiguous: rows * K / 64 floats from row m0.
      if (32 * static_cast<int>(threadIdx.x) < rows * (p.K >> 6))
        prefetch_l1(f.sumsq_in + m0 * (p.K >> 6) + 32 * threadIdx.x);
    } else if (f.residual != nullptr && threadIdx.x >= 64 && threadIdx.x < 128) {
      const int q = threadIdx.x - 64, r = q / C::kStripes, st = n_block * C::kStripes + q % C::kStripes;
      if (r <= rows && st < p.n_stripes)
        prefetch_l1(r < rows ? static_cast<const void*>(f.residual + static_cast<std::size_t>(m0 + r) * p.N + st * 64)
                             : static_cast<const void*>(f.weight + st * 64));
    }
  }

  float acc[4][kMG][4];
  zero_sums(acc);

  // The block's batches in phases of p.phase_batches (a multiple of kWarpsK, so a warp keeps its
  // place in the round-robin): the block stages the phase's activations, then each warp computes
  // its batches of the phase, requesting its next batch (of this phase or the next) before it
  // meets the barrier.
  // Direct activations (C::kDirectX): one phase without staging; each lane loads the
  // activations of its fragments itself (row g, k = 16 u + 2t, +1 and +8, +9 of each step u of a
  // batch; zeros past M and K), one batch ahead, into xn (the next batch), which becomes xd (this
  // batch) when the batch before it is done. With the fused SiLU input the lane also loads the
  // up half (xu, K further along the row) and computes SiLU(gate) * up at that hand-over, when
  // the loads have long landed; the lanes of row g compute the SiLU of that row only, so this
  // pays from kDirectXMinRows rows (below, the block's threads share it while staging). Plain
  // (coherent) loads: the previous kernel writes x.
  [[maybe_unused]] std::uint32_t xd[C::kSteps][2], xn[C::kSteps][2], xu[C::kSteps][2];
  auto load_x = [&](int bb) {
    const bool ok = g < rows && bb < b_end;
    const int k0 = bb * C::kBatchRows;
    const __half* xr = p.x + static_cast<std::size_t>(m0 + (ok ? g : 0)) * p.x_ld + k0 + 2 * t;
#pragma unroll
    for (int u = 0; u < C::kSteps; ++u) {
      xn[u][0] = xn[u][1] = xu[u][0] = xu[u][1] = 0;
      if (ok && k0 + u * 16 < p.K) {
        xn[u][0] = *reinterpret_cast<const std::uint32_t*>(xr + u * 16);
        xn[u][1] = *reinterpret_cast<const std::uint32_t*>(xr + u * 16 + 8);
        if (p.silu_mul) {
          xu[u][0] = *reinterpret_cast<const std::uint32_t*>(xr + p.K + u * 16);
          xu[u][1] = *reinterpret_cast<const std::uint32_t*>(xr + p.K + u * 16 + 8);
        }
      }
    }
  };
  auto take_x = [&] {  // xd = the batch loaded into xn (and xu)
#pragma unroll
    for (int u = 0; u < C::kSteps; ++u)
#pragma unroll
      for (int h = 0; h < 2; ++h) xd[u][h] = p.silu_mul ? silu_mul2(xn[u][h], xu[u][h]) : xn[u][h];
  };
  if constexpr (C::kDirectX) {
    load_x(b);
    take_x();
  }
  __half* xs = reinterpret_cast<__half*>(smem);
  const int phase_batches = C::kDirectX ? b_end - b_begin : p.phase_batches;
  for (int phase = b_begin; phase < b_end; phase += phase_batches) {
    const int phase_end = phase + phase_batches < b_end ? phase + phase_batches : b_end;
    if constexpr (!C::kDirectX) {
      if (phase != b_begin) __syncthreads();  // every warp is done with the last phase's x
      // Stage x[m0 .. m0 + rows)[phase rows] (zeros past K) with every load in flight at once:
      // cp.async on sm_80+, rounds of 4 register loads on the Turing path and for the fused SiLU
      // input (x = SiLU(gate) * up of the gate_up projection's output, computed here by silu_mul8,
      // the activation kernel's own arithmetic). Plain (coherent) loads: the previous kernel writes
      // x.
      {
        const int k_lo = phase * C::kBatchRows;
        const int chunks = (phase_end - phase) * (C::kBatchRows / 8);  // 16-byte chunks per row
        const int total = rows * chunks;
        auto chunk = [&](int e, const __half*& src, __half*& dst) {
          const int r = e / chunks, c = e - r * chunks, k = k_lo + c * 8;
          dst = xs + r * p.x_stride + c * 8;
          src = k < p.K ? p.x + static_cast<std::size_t>(m0 + r) * p.x_ld + k : nullptr;
        };
        auto load = [&](const __half* src) {
          const uint4 v = *reinterpret_cast<const uint4*>(src);
          return p.silu_mul ? silu_mul8(v, *reinterpret_cast<const uint4*>(src + p.K)) : v;
        };
        if (!C::kTuring && !p.silu_mul) {
          for (int e = threadIdx.x; e < total; e += C::kThreads) {
            const __half* src;
            __half* dst;
            chunk(e, src, dst);
            cp_async_16(smem_addr(dst), src != nullptr ? src : p.x, src != nullptr);
          }
          cp_async_commit();
          cp_async_wait<0>();
        } else {
          for (int base = threadIdx.x; base < total; base += 4 * C::kThreads) {
            uint4 v[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) {
              const int e = base + i * C::kThreads;
              v[i] = make_uint4(0, 0, 0, 0);
              const __half* src;
              __half* dst;
              if (e < total) {
                chunk(e, src, dst);
                if (src != nullptr) v[i] = load(src);
              }
            }
#pragma unroll
            for (int i = 0; i < 4; ++i) {
              const int e = base + i * C::kThreads;
              const __half* src;
              __half* dst;
              if (e < total) {
                chunk(e, src, dst);
                *reinterpret_cast<uint4*>(dst) = v[i];
              }
            }
          }
        }
      }
      __syncthreads();
    }

    for (; b < phase_end; b += C::kWarpsK) {
      const int kt0 = b * C::kSteps;
      const uint4* wslot = ring + slot * (C::kSlotBytes / 16);
      // Direct activations: the next batch's requested now (latency hidden behind this one).
      if constexpr (C::kDirectX) {
        load_x(b + C::kWarpsK);
      }
      if constexpr (kUseRing) {
        if constexpr (!kWholeRing) {
          // The slot computed last is free once every lane is done with its scales; it takes the
          // batch kRing - 1 ahead.
          __syncwarp();
          issue_batch(b + (C::kRing - 1) * C::kWarpsK, slot == 0 ? C::kRing - 1 : slot - 1);
        }
        // kRing batches are in flight, this one the oldest: its copies are complete after the
        // wait (this lane's) and the __syncwarp (every lane's).
        cp_async_wait<C::kRing - 1>();
        __syncwarp();
      }
      // The batch's 8 k16 steps. kFull128 (a whole batch with G = 128, the common case on sm_80+):
      // no bounds check per step and one group, whose constants are read at step 0.
      // C::kExactWeights (sm_80+): the mma multiply the exact integers q - z
      // (dequant_word_unscaled: no HMUL2) into the group's sums `gsum`, which are scaled by the
      // columns' fp32 scales at the group's end; W = (q - z) * s is never rounded to fp16.
      auto compute = [&](auto full128) {
        constexpr bool kFull128 = decltype(full128)::value;
        constexpr bool kExact = C::kExactWeights;
        GroupConsts consts{};
        float gsum[4][kMG][4];                   // kExact: the current group's sums of x (q - z)
        std::uint32_t gscale[4] = {0, 0, 0, 0};  // kExact: its 8 scales (fp16 pairs 2j, 2j + 1)
        auto flush_group = [&] {                 // acc += s * gsum; gsum = 0
          if constexpr (kExact) {
#pragma unroll
            for (int j = 0; j < 4; ++j) {
              // D reg r of word j is column 16j + g + 8 (r / 2): scale 2j + r / 2 of the lane's 8.
              const float2 sc = ptx::unpack_half2(gscale[j]);
#pragma unroll
              for (int i = 0; i < kMG; ++i)
#pragma unroll
                for (int r = 0; r < 4; ++r)
                  acc[j][i][r] = fmaf(r < 2 ? sc.x : sc.y, gsum[j][i][r], acc[j][i][r]);
            }
            zero_sums(gsum);
          }
        };
        if constexpr (kExact) zero_sums(gsum);
#pragma unroll
        for (int u = 0; u < C::kSteps; ++u) {
          if (kFull128 || kt0 + u < k16) {
            if (kFull128 ? u == 0 : ((u * 16) & ((1 << gs) - 1)) == 0) {  // a group's first step
              const int q = kFull128 ? 0 : (u * 16) >> gs;
              if (u != 0) flush_group();  // the batch's previous group
              uint4 sq_s;
              std::uint32_t sq_z;
              if constexpr (kUseRing) {
                const uint4* sq = wslot + C::kSteps * 32 + q * 10;
                sq_s = sq[g];
                sq_z = reinterpret_cast<const std::uint32_t*>(sq + 8)[g];
              } else {
                sq_s = pick4(raw_s, q);
                sq_z = pick4(raw_z, q);
              }
              load_group_consts(sq_s, sq_z, consts);
              gscale[0] = sq_s.x;
              gscale[1] = sq_s.y;
              gscale[2] = sq_s.z;
              gscale[3] = sq_s.w;
            }
            std::uint32_t xb[kMG][2];
            if constexpr (C::kDirectX) {
              xb[0][0] = xd[u][0];
              xb[0][1] = xd[u][1];
            } else {
              const __half* xb_base = xs + (b - phase) * C::kBatchRows + 2 * t;
#pragma unroll
              for (int i = 0; i < kMG; ++i) {
                const int row = 8 * i + g;
                xb[i][0] = xb[i][1] = 0;
                if (row < rows) {
                  const __half* xr = xb_base + row * p.x_stride + u * 16;
                  xb[i][0] = *reinterpret_cast<const std::uint32_t*>(xr);
                  xb[i][1] = *reinterpret_cast<const std::uint32_t*>(xr + 8);
                }
              }
            }
            uint4 wu;
            if constexpr (kUseRing)
              wu = wslot[u * 32 + lane];
            else
              wu = w[u];
            const std::uint32_t words[4] = {wu.x, wu.y, wu.z, wu.w};
#pragma unroll
            for (int j = 0; j < 4; ++j) {
              std::uint32_t bq[2][2];
              if constexpr (kExact)
                dequant_word_unscaled<!C::kTuring>(words[j], consts, j, bq);
              else
                dequant_word<!C::kTuring>(words[j], consts, j, bq);
              const std::uint32_t a[4] = {bq[0][0], bq[1][0], bq[0][1], bq[1][1]};
#pragma unroll
              for (int i = 0; i < kMG; ++i) {
                float(&d)[4] = kExact ? gsum[j][i] : acc[j][i];
                if constexpr (C::kTuring)
                  mma_m16n8k16_as_2x_k8(d, a, xb[i][0], xb[i][1]);
                else
                  mma_m16n8k16(d, a, xb[i][0], xb[i][1]);
              }
            }
          }
        }
        flush_group();  // the batch's last group (step 0 is always inside K: b < b_end)
      };
      if (kUseRing && gs == 7 && kt0 + C::kSteps <= k16)
        compute(std::true_type{});
      else
        compute(std::false_type{});
      if constexpr (kUseRing) {
        if constexpr (kWholeRing) {
          // The slot is free once every lane is done with its weights and scales; it takes the
          // batch kRing ahead (an empty group past the warp's last: the counts stay even).
          __syncwarp();
          issue_batch(b + C::kRing * C::kWarpsK, slot);
        }
        slot = slot + 1 == C::kRing ? 0 : slot + 1;
      } else if (b + C::kWarpsK < b_end)
        load_batch(b + C::kWarpsK);
      if constexpr (C::kDirectX) take_x();
    }
  }
  __syncthreads();  // the staged activations are dead: the space holds the warps' sums

  float* red = reinterpret_cast<float*>(smem);
  {
    float* dst = red + warp * C::kAcc * 32 + lane;
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int i = 0; i < kMG; ++i)
#pragma unroll
        for (int r = 0; r < 4; ++r) dst[((j * kMG + i) * 4 + r) * 32] = acc[j][i][r];
  }
  if (C::kFold && f.sumsq_in != nullptr) {
    // The norm before this linear, folded (AwqGemmOptions::norm_in_sumsq): a warp per row adds
    // the row's K / 64 sums of squares (lanes strided, then the butterfly: a fixed order).
    const int per_row = p.K >> 6;
    for (int r = warp; r < rows; r += C::kWarps) {
      const float* in = f.sumsq_in + static_cast<std::size_t>(m0 + r) * per_row;
      float sum = 0.0f;
      for (int c = lane; c < per_row; c += 32) sum += in[c];
      sum = warp_sum_f32(sum);
      if (lane == 0) s_row_scale[r] = rsqrtf(sum / static_cast<float>(p.K) + f.eps);
    }
  }
  __syncthreads();

  // Output o = (s * kAcc + e) * 32 + lane: stripe s of the block, accumulator
  // e = (j * kMG + i) * 4 + r of `lane`; the warps of stripe s are s * kWarpsK + 0..kWarpsK-1.
  constexpr int kOutputs = C::kStripes * C::kAcc * 32;
  auto column_of = [&](int o) {
    const int e = (o >> 5) % C::kAcc, ln = o & 31;
    return (n_block * C::kStripes + o / (C::kAcc * 32)) * 64 + 16 * ((e >> 2) / kMG) + (ln >> 2) +
           8 * ((e & 3) >> 1);
  };
  auto row_of = [&](int o) {
    const int e = (o >> 5) % C::kAcc, ln = o & 31;
    return m0 + 8 * ((e >> 2) % kMG) + 2 * (ln & 3) + (e & 1);
  };
  auto block_sum = [&](int o) {
    const int s = o / (C::kAcc * 32), e_lane = o % (C::kAcc * 32);
    float sum = 0.0f;
#pragma unroll
    for (int v = 0; v < C::kWarpsK; ++v) sum += red[(s * C::kWarpsK + v) * C::kAcc * 32 + e_lane];
    return sum;
  };
  auto store_y = [&](int m, int n, float v) {
    if (p.bias != nullptr) v += __half2float(p.bias[n]);
    p.y[static_cast<std::size_t>(m) * p.N + n] = __float2half_rn(v);
  };
  if constexpr (C::kFold) {
    fold_epilogue<C>(p, f, red, s_row_scale, s_is_last, m0, rows, n_block, split, row_of, column_of,
                     block_sum);
    return;
  }

  if (p.splits == 1) {
    for (int o = threadIdx.x; o < kOutputs; o += C::kThreads) {
      const int m = row_of(o), n = column_of(o);
      if (m < p.M && n < p.N) store_y(m, n, block_sum(o));
    }
    return;
  }
#ifndef AWQD_KERNEL_EMULATION
  if (p.cluster_reduce) {
    // The stripe's splits are one cluster (rank = split): each block leaves its sums at the start
    // of its shared memory, rank 0 adds them in rank order (deterministic) and writes y; the
    // second barrier keeps every block's shared memory alive until rank 0 has read it.
    constexpr int kPerThread = (kOutputs + C::kThreads - 1) / C::kThreads;
    float sums[kPerThread];
#pragma unroll
    for (int i = 0; i < kPerThread; ++i) {
      const int o = threadIdx.x + i * C::kThreads;
      sums[i] = o < kOutputs ? block_sum(o) : 0.0f;
    }
    __syncthreads();  // every warp's sums are read: the space takes the block's
#pragma unroll
    for (int i = 0; i < kPerThread; ++i) {
      const int o = threadIdx.x + i * C::kThreads;
      if (o < kOutputs) red[o] = sums[i];
    }
    cluster_sync();
    if (split == 0) {
#pragma unroll
      for (int i = 0; i < kPerThread; ++i) {
        const int o = threadIdx.x + i * C::kThreads;
        if (o >= kOutputs) continue;
        const int m = row_of(o), n = column_of(o);
        if (m >= p.M || n >= p.N) continue;
        float sum = sums[i];
        for (int z = 1; z < p.splits; ++z) sum += ld_cluster_f32(smem_addr(red + o), z);
        store_y(m, n, sum);
      }
    }
    cluster_sync();
    return;
  }
#endif

  for (int o = threadIdx.x; o < kOutputs; o += C::kThreads) {
    const int m = row_of(o), n = column_of(o);
    if (m < p.M && n < p.N) *split_partial(p, split, m, n) = block_sum(o);
  }
  if (!arrive_last_split(p, s_is_last)) return;
  for (int o = threadIdx.x; o < kOutputs; o += C::kThreads) {
    const int m = row_of(o), n = column_of(o);
    if (m >= p.M || n >= p.N) continue;
    float sum = 0.0f;
    for (int z = 0; z < p.splits; ++z) sum += __ldcg(split_partial(p, z, m, n));
    store_y(m, n, sum);
  }
}

}  // namespace awqd::cuda::awq_gemm_detail
