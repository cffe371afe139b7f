// The prefill-attention kernel template (design: kernels/attention_prefill.cuh). Included by the
// per-variant instantiation files attention_prefill_hd{64,128}.cu and the launcher.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/common.cuh"
#include "kernels/kv_cache.cuh"
#include "kernels/ptx.cuh"

namespace awqd::cuda::prefill {

inline constexpr int kWarps = 4;
inline constexpr int kThreads = kWarps * kWarpSize;
inline constexpr int kRowsPerCta = 64;  // (token, query head) rows; 16 per warp
inline constexpr int kKeysPerTile = 64;

struct Params {
  __half* out;
  int out_stride;
  const __half* q;
  int q_stride;
  const __half* k_cache;
  const __half* v_cache;
  const int* cu_seqlens_q;
  const int* positions;
  const int* block_tables;
  int max_blocks_per_seq;
  int num_seqs;
  int num_kv_heads;
  int ratio;         // query heads per KV head
  float scale_log2;  // log2(e) / sqrt(head_dim)
};

template <int kHeadDim, bool kSm75>
struct Config {
  static constexpr int kChunks = kHeadDim / 8;                // 16-byte chunks per row
  static constexpr int kTileElems = kKeysPerTile * kHeadDim;  // one K (or V, or Q) tile
  static constexpr int kStages = kSm75 ? 1 : 2;
  static constexpr int kCopies = kKeysPerTile * kChunks / kThreads;  // per thread per tile
  static constexpr int kSmemBytes = kStages * 2 * kTileElems * 2;
  static_assert(kRowsPerCta == kKeysPerTile, "Q is staged in a K tile's place");
};

// Shared-memory tiles are [rows][head_dim] fp16 with 16-byte chunk c of row r stored at chunk
// c ^ (r % 8): the 8 rows an ldmatrix reads then hit 8 different bank groups.
template <int kHeadDim>
__device__ __forceinline__ int swz(int row, int chunk) {
  return row * kHeadDim + ((chunk ^ (row & 7)) << 3);
}

// ldmatrix addressing without per-load index math: a lane reads row r8 (+ multiples of 8) and
// chunk 2s + b, whose swizzled offset is lane_base(row, b) ^ (16 s) (2s + b == 2s ^ b, and the
// XOR stays inside the row because 16 s < head_dim).
template <int kHeadDim>
__device__ __forceinline__ int ldsm_lane_base(int row, int b) {
  return row * kHeadDim + 8 * (b ^ (row & 7));
}

template <int kHeadDim, bool kSm75>
__global__ void __launch_bounds__(kThreads, 2) prefill_attention_kernel(const Params p) {
  using C = Config<kHeadDim, kSm75>;
  AWQD_DYNAMIC_SMEM(__half, smem);
  __shared__ int seq_s, tile_s;
  __shared__ int max_pos_s[kWarps];

  const int tid = threadIdx.x, warp = tid / kWarpSize, lane = tid % kWarpSize;
  const int g = lane / 4, t = lane % 4;
  const int mi = lane / 8, r8 = lane % 8;  // ldmatrix: which matrix / row this lane addresses
  const int kvh = blockIdx.y;
  const int tile_id = blockIdx.x;

  // ---- which sequence and which of its 64-row tiles this CTA computes ----
  if (tid == 0) seq_s = -1;
  __syncthreads();
  if (warp == 0) {
    int done = 0;  // tiles of the sequences before this group of 32
    for (int base = 0; base < p.num_seqs; base += kWarpSize) {
      const int b = base + lane;
      const int n =
          b < p.num_seqs
              ? ((p.cu_seqlens_q[b + 1] - p.cu_seqlens_q[b]) * p.ratio + kRowsPerCta - 1) /
                    kRowsPerCta
              : 0;
      int incl = n;
#pragma unroll
      for (int o = 1; o < kWarpSize; o <<= 1) {
        const int v = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += v;
      }
      if (n > 0 && tile_id >= done + incl - n && tile_id < done + incl) {
        seq_s = b;
        tile_s = tile_id - (done + incl - n);
      }
      done += __shfl_sync(0xffffffffu, incl, kWarpSize - 1);
    }
  }
  __syncthreads();
  const int seq = seq_s;
  if (seq < 0) return;  // past the last tile (the grid is an upper bound)
  const int tile = tile_s;
  const int tok0 = p.cu_seqlens_q[seq];
  const int q_len = p.cu_seqlens_q[seq + 1] - tok0;
  const int* table = p.block_tables + static_cast<std::size_t>(seq) * p.max_blocks_per_seq;

  // Row r of the CTA is (token, head) = divmod(tile * 64 + r, ratio); invalid past q_len.
  auto row_token = [&](int r) { return (tile * kRowsPerCta + r) / p.ratio; };
  auto row_head = [&](int r) { return (tile * kRowsPerCta + r) % p.ratio; };
  // This thread's two rows (g and g + 8 of its warp): the last key each may see. Rows past the
  // sequence see key 0 only (finite softmax; never stored).
  int lim[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int i = row_token(warp * 16 + g + 8 * r);
    lim[r] = i < q_len ? p.positions[tok0 + i] : 0;
  }
  int warp_max = max(lim[0], lim[1]);
#pragma unroll
  for (int m = 16; m > 0; m >>= 1)
    warp_max = max(warp_max, __shfl_xor_sync(0xffffffffu, warp_max, m));
  if (lane == 0) max_pos_s[warp] = warp_max;
  __syncthreads();
  int kv_len = 0;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) kv_len = max(kv_len, max_pos_s[w] + 1);
  const int ntiles = (kv_len + kKeysPerTile - 1) / kKeysPerTile;

  __half* q_tile = smem + (C::kStages - 1) * 2 * C::kTileElems;  // the last stage's K area
  auto q_src = [&](int r, int chunk) -> const __half* {
    const int i = row_token(r);
    if (i >= q_len) return nullptr;
    return p.q + static_cast<std::size_t>(tok0 + i) * p.q_stride +
           static_cast<std::size_t>(kvh * p.ratio + row_head(r)) * kHeadDim + chunk * 8;
  };
  auto kv_src = [&](int key, int chunk, const __half* cache) -> const __half* {
    if (key >= kv_len) return nullptr;
    return cache +
           kv_cache_offset(table[key / kKvCacheBlockSize], kvh, key % kKvCacheBlockSize,
                           p.num_kv_heads, kHeadDim) +
           chunk * 8;
  };

  std::uint32_t qa[kHeadDim / 16][4];
  auto load_q_fragments = [&]() {
#pragma unroll
    for (int ks = 0; ks < kHeadDim / 16; ++ks) {
      ptx::ldmatrix_x4(qa[ks],
                       q_tile + swz<kHeadDim>(warp * 16 + (mi % 2) * 8 + r8, 2 * ks + mi / 2));
    }
  };

  float o[kHeadDim / 8][4];
#pragma unroll
  for (int n = 0; n < kHeadDim / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  float m_run[2] = {-INFINITY, -INFINITY};
  float l_run[2] = {0.0f, 0.0f};

  auto compute = [&](int st, int j) {
    if (j * kKeysPerTile > warp_max) return;  // every key of the tile is in this warp's future
    const __half* k_tile = smem + st * 2 * C::kTileElems;
    const __half* v_tile = k_tile + C::kTileElems;
    const int k_lane = ldsm_lane_base<kHeadDim>((mi / 2) * 8 + r8, mi % 2);
    const int v_lane = ldsm_lane_base<kHeadDim>((mi % 2) * 8 + r8, mi / 2);
    float s[8][4];
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
    for (int ks = 0; ks < kHeadDim / 16; ++ks) {
#pragma unroll
      for (int np = 0; np < 4; ++np) {
        std::uint32_t kb[4];
        ptx::ldmatrix_x4(kb, k_tile + np * 16 * kHeadDim + (k_lane ^ (16 * ks)));
        ptx::mma_16816<kSm75>(s[2 * np], qa[ks], kb[0], kb[1]);
        ptx::mma_16816<kSm75>(s[2 * np + 1], qa[ks], kb[2], kb[3]);
      }
    }
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = j * kKeysPerTile + nt * 8 + 2 * t + (e % 2);
        s[nt][e] = key <= lim[e / 2] ? s[nt][e] * p.scale_log2 : -INFINITY;
        mx[e / 2] = fmaxf(mx[e / 2], s[nt][e]);
      }
    }
    float alpha[2];
    online_softmax_step(mx, m_run, l_run, alpha);  // m_run finite: key 0 is in every row's tile 0
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[nt][e] = m_run[e / 2] == -INFINITY ? 0.0f : exp2f(s[nt][e] - m_run[e / 2]);
        l_run[e / 2] += s[nt][e];
      }
    }
#pragma unroll
    for (int n = 0; n < kHeadDim / 8; ++n) {
      o[n][0] *= alpha[0], o[n][1] *= alpha[0], o[n][2] *= alpha[1], o[n][3] *= alpha[1];
    }
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {  // 16 keys per step
      const std::uint32_t pa[4] = {ptx::pack_half2(s[2 * kk][0], s[2 * kk][1]),
                                   ptx::pack_half2(s[2 * kk][2], s[2 * kk][3]),
                                   ptx::pack_half2(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                   ptx::pack_half2(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int np = 0; np < kHeadDim / 16; ++np) {
        std::uint32_t vb[4];
        ptx::ldmatrix_x4_trans(vb, v_tile + kk * 16 * kHeadDim + (v_lane ^ (16 * np)));
        ptx::mma_16816<kSm75>(o[2 * np], pa, vb[0], vb[1]);
        ptx::mma_16816<kSm75>(o[2 * np + 1], pa, vb[2], vb[3]);
      }
    }
  };

  if constexpr (!kSm75) {
#if AWQD_SM80_CODE
    auto issue_kv = [&](int j) {
      __half* k_tile = smem + (j % C::kStages) * 2 * C::kTileElems;
#pragma unroll
      for (int i = 0; i < C::kCopies; ++i) {
        const int c = tid + i * kThreads, row = c / C::kChunks, chunk = c % C::kChunks;
        const __half* ks = kv_src(j * kKeysPerTile + row, chunk, p.k_cache);
        const __half* vs = kv_src(j * kKeysPerTile + row, chunk, p.v_cache);
        ptx::cp_async_16(k_tile + swz<kHeadDim>(row, chunk), ks ? ks : p.k_cache, ks != nullptr);
        ptx::cp_async_16(k_tile + C::kTileElems + swz<kHeadDim>(row, chunk), vs ? vs : p.v_cache,
                         vs != nullptr);
      }
    };
#pragma unroll
    for (int i = 0; i < C::kCopies; ++i) {
      const int c = tid + i * kThreads, row = c / C::kChunks, chunk = c % C::kChunks;
      const __half* src = q_src(row, chunk);
      ptx::cp_async_16(q_tile + swz<kHeadDim>(row, chunk), src ? src : p.q, src != nullptr);
    }
    ptx::cp_async_commit();
    issue_kv(0);  // stage 0; Q sits in stage 1
    ptx::cp_async_commit();
    ptx::cp_async_wait<1>();
    __syncthreads();
    load_q_fragments();
    __syncthreads();  // stage 1 is free for tile 1
    for (int j = 0; j < ntiles; ++j) {
      if (j + 1 < ntiles) issue_kv(j + 1);
      ptx::cp_async_commit();
      ptx::cp_async_wait<1>();
      __syncthreads();
      compute(j % C::kStages, j);
      __syncthreads();
    }
#endif
  } else {
#pragma unroll
    for (int i = 0; i < C::kCopies; ++i) {
      const int c = tid + i * kThreads, row = c / C::kChunks, chunk = c % C::kChunks;
      const __half* src = q_src(row, chunk);
      *reinterpret_cast<uint4*>(q_tile + swz<kHeadDim>(row, chunk)) =
          src ? *reinterpret_cast<const uint4*>(src) : make_uint4(0, 0, 0, 0);
    }
    __syncthreads();
    load_q_fragments();
    for (int j = 0; j < ntiles; ++j) {
      __syncthreads();  // the previous tile (and Q's staging) is no longer read
      // K, then V, through registers (half the registers of loading both before storing).
#pragma unroll
      for (int kv = 0; kv < 2; ++kv) {
        uint4 r[C::kCopies];
#pragma unroll
        for (int i = 0; i < C::kCopies; ++i) {
          const int c = tid + i * kThreads, row = c / C::kChunks, chunk = c % C::kChunks;
          const __half* src = kv_src(j * kKeysPerTile + row, chunk, kv ? p.v_cache : p.k_cache);
          r[i] = src ? *reinterpret_cast<const uint4*>(src) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int i = 0; i < C::kCopies; ++i) {
          const int c = tid + i * kThreads, row = c / C::kChunks, chunk = c % C::kChunks;
          *reinterpret_cast<uint4*>(smem + kv * C::kTileElems + swz<kHeadDim>(row, chunk)) = r[i];
        }
      }
      __syncthreads();
      compute(0, j);
    }
  }

  // ---- normalise and store this thread's two rows ----
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 1);
    l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 2);
    const int row = warp * 16 + g + 8 * r;
    const int i = row_token(row);
    if (i >= q_len) continue;
    const float inv = 1.0f / l_run[r];
    __half* dst = p.out + static_cast<std::size_t>(tok0 + i) * p.out_stride +
                  static_cast<std::size_t>(kvh * p.ratio + row_head(row)) * kHeadDim + 2 * t;
#pragma unroll
    for (int n = 0; n < kHeadDim / 8; ++n) {
      *reinterpret_cast<std::uint32_t*>(dst + n * 8) =
          ptx::pack_half2(o[n][2 * r] * inv, o[n][2 * r + 1] * inv);
    }
  }
}

template <int kHeadDim, bool kSm75>
void launch_prefill(const Params& p, dim3 grid, cudaStream_t stream) {
  launch(prefill_attention_kernel<kHeadDim, kSm75>, grid, dim3(kThreads),
         Config<kHeadDim, kSm75>::kSmemBytes, stream, p);
}

// Instantiated once each, in attention_prefill_hd{64,128}.cu (parallel compilation).
extern template void launch_prefill<64, false>(const Params&, dim3, cudaStream_t);
extern template void launch_prefill<64, true>(const Params&, dim3, cudaStream_t);
extern template void launch_prefill<128, false>(const Params&, dim3, cudaStream_t);
extern template void launch_prefill<128, true>(const Params&, dim3, cudaStream_t);

}  // namespace awqd::cuda::prefill
