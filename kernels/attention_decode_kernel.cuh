// The decode-attention kernel template (design: kernels/attention_decode.cuh). Included by the
// per-variant instantiation files attention_decode_hd{64,128}.cu only.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/common.cuh"
#include "kernels/kv_cache.cuh"
#include "kernels/ptx.cuh"

namespace awqd::cuda::decode {

inline constexpr int kWarps = 4;
inline constexpr int kThreads = kWarps * kWarpSize;
inline constexpr int kRows = 16;  // query heads per work unit (the mma M dimension)
inline constexpr int kMaxSplits = 64;
inline constexpr int kMergeBatch = 16;  // splits whose partials the merge requests together

// Everything the kernel reads, resolved by the launcher.
struct Params {
  __half* out;
  int out_stride;
  const __half* q;
  int q_stride;
  const __half* k_cache;
  const __half* v_cache;
  const int* context_lens;
  const int* block_tables;
  int max_blocks_per_seq;
  int num_kv_heads;
  int ratio;         // query heads per KV head
  int groups;        // ceil(ratio / 16)
  int split_blocks;  // KV blocks per split
  float scale_log2;  // log2(e) / sqrt(head_dim)
  float* part_o;     // [slots, 16, head_dim]
  float* part_m;     // [slots, 16]
  float* part_l;     // [slots, 16]
  int* counters;     // [units]
};

// Running merge of split partials: max m of the scaled scores, sum l of exp2(score - m) and
// acc = sum of exp2(score - m) * v.
struct MergeState {
  float m, l;
  float4 acc;
};

template <int kHeadDim, bool kSm75>
struct Config {
  static constexpr int kChunks = kHeadDim / 8;                     // 16-byte chunks per row
  static constexpr int kTileElems = kKvCacheBlockSize * kHeadDim;  // one block's K (or V) slice
  static constexpr int kStages = kSm75 ? 1 : 3;
  static constexpr int kCopies = kKvCacheBlockSize * kChunks / kWarpSize;  // per lane per tile
  static constexpr int kWarpSmemElems = kStages * 2 * kTileElems;
  static constexpr int kStageBytes = kWarps * kWarpSmemElems * 2;
  static constexpr int kMergeBytes = kWarps * kRows * kHeadDim * 4;
  static constexpr int kSmemBytes = kStageBytes > kMergeBytes ? kStageBytes : kMergeBytes;
  // The split merge reuses the space: one MergeState per thread.
  static_assert(sizeof(MergeState) * kThreads <= kSmemBytes);
};

// Offset (in fp16 elements) of 16-byte chunk `chunk` of row `row` in a swizzled tile: chunk c
// of row r is stored at chunk c ^ (r % 8), so the 8 rows an ldmatrix reads hit 8 bank groups.
template <int kHeadDim>
__device__ __forceinline__ int swz(int row, int chunk) {
  return row * kHeadDim + ((chunk ^ (row & 7)) << 3);
}

// ldmatrix addressing without per-load index math: a lane reads row `row` and chunk 2s + b,
// whose swizzled offset is lane_base(row, b) ^ (16 s) (2s + b == 2s ^ b; 16 s < head_dim).
template <int kHeadDim>
__device__ __forceinline__ int ldsm_lane_base(int row, int b) {
  return row * kHeadDim + 8 * (b ^ (row & 7));
}

// One 16-token block of K and V in shared memory (swizzled tiles): S = Q K^T, online softmax,
// O += P V, for the unit's 16 query rows (Q as A fragments in qa). `valid` keys of the block are
// inside the context; the rest are masked (their V rows are zero-filled).
template <int kHeadDim, bool kSm75>
__device__ __forceinline__ void block_attention(const __half* ks_tile, const __half* vs_tile,
                                                const std::uint32_t (&qa)[kHeadDim / 16][4],
                                                float (&o)[kHeadDim / 8][4], float (&m_run)[2],
                                                float (&l_run)[2], int valid, float scale_log2,
                                                int lane) {
  const int t = lane % 4;
  float s[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
  const int mi = lane / 8, r8 = lane % 8;
  const int k_lane = ldsm_lane_base<kHeadDim>((mi / 2) * 8 + r8, mi % 2);
  const int v_lane = ldsm_lane_base<kHeadDim>((mi % 2) * 8 + r8, mi / 2);
#pragma unroll
  for (int ks = 0; ks < kHeadDim / 16; ++ks) {
    std::uint32_t kb[4];  // (keys 0-7, d lo) (keys 0-7, d hi) (keys 8-15, d lo) (keys 8-15, d hi)
    ptx::ldmatrix_x4(kb, ks_tile + (k_lane ^ (16 * ks)));
    ptx::mma_16816<kSm75>(s[0], qa[ks], kb[0], kb[1]);
    ptx::mma_16816<kSm75>(s[1], qa[ks], kb[2], kb[3]);
  }
  float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
  for (int j = 0; j < 2; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int key = j * 8 + 2 * t + (e % 2);
      s[j][e] = key < valid ? s[j][e] * scale_log2 : -INFINITY;
      mx[e / 2] = fmaxf(mx[e / 2], s[j][e]);
    }
  }
  float alpha[2];
  online_softmax_step(mx, m_run, l_run, alpha);  // m_run finite after: every block has a key
#pragma unroll
  for (int j = 0; j < 2; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      s[j][e] = exp2f(s[j][e] - m_run[e / 2]);
      l_run[e / 2] += s[j][e];
    }
  }
#pragma unroll
  for (int n = 0; n < kHeadDim / 8; ++n) {
    o[n][0] *= alpha[0], o[n][1] *= alpha[0], o[n][2] *= alpha[1], o[n][3] *= alpha[1];
  }
  const std::uint32_t pa[4] = {
      ptx::pack_half2(s[0][0], s[0][1]), ptx::pack_half2(s[0][2], s[0][3]),
      ptx::pack_half2(s[1][0], s[1][1]), ptx::pack_half2(s[1][2], s[1][3])};
#pragma unroll
  for (int np = 0; np < kHeadDim / 16; ++np) {
    std::uint32_t vb[4];  // (keys 0-7, d tile 2np) (keys 8-15, 2np) (0-7, 2np+1) (8-15, 2np+1)
    ptx::ldmatrix_x4_trans(vb, vs_tile + (v_lane ^ (16 * np)));
    ptx::mma_16816<kSm75>(o[2 * np], pa, vb[0], vb[1]);
    ptx::mma_16816<kSm75>(o[2 * np + 1], pa, vb[2], vb[3]);
  }
}

// What a CTA works on: its unit (sequence, KV head, group of <= 16 query heads) and its split's
// range of KV blocks. Splits this sequence uses: should max_context_len have been too small for
// it, the grid's last split takes the remainder (slower, still correct); splits past the
// sequence's have no blocks.
struct UnitWork {
  int seq, kvh, head0, nrows, ctx, nblocks, nsplits, split, blk_begin, blk_end;
  const int* table;
  // Blocks of warp w: blk_begin + w + kWarps * i for i < warp_blocks(w).
  __device__ __forceinline__ int warp_blocks(int w) const {
    return blk_begin + w < blk_end ? (blk_end - blk_begin - w + kWarps - 1) / kWarps : 0;
  }
  // Keys of warp w's i-th block inside the context (1..16).
  __device__ __forceinline__ int rows_valid(int w, int i) const {
    return ctx - (blk_begin + w + kWarps * i) * kKvCacheBlockSize;
  }
  // Element offset of row 0 of that block's slice in a cache pool (one block-table read).
  __device__ __forceinline__ std::size_t block_offset(int w, int i, int num_kv_heads,
                                                      int head_dim) const {
    return kv_cache_offset(table[blk_begin + w + kWarps * i], kvh, 0, num_kv_heads, head_dim);
  }
};

__device__ __forceinline__ UnitWork unit_work(const Params& p) {
  UnitWork u;
  u.seq = blockIdx.z;
  u.kvh = blockIdx.y / p.groups;
  const int grp = blockIdx.y % p.groups;
  u.head0 = u.kvh * p.ratio + grp * kRows;
  u.nrows = min(kRows, p.ratio - grp * kRows);
  u.ctx = p.context_lens[u.seq];
  u.nblocks = (u.ctx + kKvCacheBlockSize - 1) / kKvCacheBlockSize;
  u.nsplits = min(static_cast<int>(gridDim.x),
                  max(1, (u.nblocks + p.split_blocks - 1) / p.split_blocks));
  u.split = blockIdx.x;
  u.blk_begin = u.split * p.split_blocks;
  u.blk_end = u.split == u.nsplits - 1 ? u.nblocks : min(u.nblocks, u.blk_begin + p.split_blocks);
  u.table = p.block_tables + static_cast<std::size_t>(u.seq) * p.max_blocks_per_seq;
  return u;
}

// Q as A fragments: rows = the unit's query heads (zero past nrows), k = head_dim.
template <int kHeadDim>
__device__ __forceinline__ void load_q_frags(std::uint32_t (&qa)[kHeadDim / 16][4], const Params& p,
                                             const UnitWork& u, int lane) {
  const int g = lane / 4, t = lane % 4;
  const __half* qrow = p.q + static_cast<std::size_t>(u.seq) * p.q_stride +
                       static_cast<std::size_t>(u.head0) * kHeadDim;
#pragma unroll
  for (int ks = 0; ks < kHeadDim / 16; ++ks) {
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int row = g + (r % 2) * 8, col = ks * 16 + (r / 2) * 8 + 2 * t;
      qa[ks][r] =
          row < u.nrows ? *reinterpret_cast<const std::uint32_t*>(qrow + row * kHeadDim + col) : 0u;
    }
  }
}

// The CTA's warps' (max, sum, O) merged: emit(row, d, acc, sum, max) for every row < nrows and
// d < head_dim, spread over the CTA's threads, where acc / sum is the CTA's output and max its
// running max. o_s: kWarps x kRows x head_dim floats of shared memory the KV tiles no longer
// use. Every thread of the CTA calls it (two __syncthreads()).
template <int kHeadDim, class Emit>
__device__ __forceinline__ void merge_warps(float* o_s, float (&m_s)[kWarps][kRows],
                                            float (&l_s)[kWarps][kRows],
                                            const float (&o)[kHeadDim / 8][4],
                                            const float (&m_run)[2], float (&l_run)[2], int nrows,
                                            int lane, Emit&& emit) {
  const int warp = threadIdx.x / kWarpSize, g = lane / 4, t = lane % 4;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 1);
    l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 2);
  }
  __syncthreads();
  {
    float* ow = o_s + warp * kRows * kHeadDim;
#pragma unroll
    for (int n = 0; n < kHeadDim / 8; ++n) {
      *reinterpret_cast<float2*>(ow + g * kHeadDim + n * 8 + 2 * t) = make_float2(o[n][0], o[n][1]);
      *reinterpret_cast<float2*>(ow + (g + 8) * kHeadDim + n * 8 + 2 * t) =
          make_float2(o[n][2], o[n][3]);
    }
    if (t == 0) {
      m_s[warp][g] = m_run[0], m_s[warp][g + 8] = m_run[1];
      l_s[warp][g] = l_run[0], l_s[warp][g + 8] = l_run[1];
    }
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < nrows * kHeadDim; idx += kThreads) {
    const int row = idx / kHeadDim, d = idx % kHeadDim;
    float mmax = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) mmax = fmaxf(mmax, m_s[w][row]);
    float acc = 0.0f, sum = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float f = m_s[w][row] == -INFINITY ? 0.0f : exp2f(m_s[w][row] - mmax);
      acc += o_s[(w * kRows + row) * kHeadDim + d] * f;
      sum += l_s[w][row] * f;
    }
    emit(row, d, acc, sum, mmax);
  }
}

// The unit's output from its splits' partials: item = (row, 4 columns), nrows x head_dim / 4 of
// them over the CTA's threads. A thread merges its item over splits first, first + step, ... in
// that order as a MergeState, kMergeBatch splits' partials requested together (one round trip
// per kMergeBatch splits): load(row, c4, split, m, l, v) gives a split's partial. With fewer
// items than threads, `step` threads share an item and st_s (one state per thread of shared
// memory) combines theirs in a fixed order, so the result depends only on nsplits.
// store(row, c4, o) takes the normalised output. Splits without keys (m = -inf) add nothing.
template <int kHeadDim, class Load, class Store>
__device__ __forceinline__ void merge_splits(int nrows, int nsplits, MergeState* st_s, Load&& load,
                                             Store&& store) {
  constexpr int kCols4 = kHeadDim / 4;
  const int items = nrows * kCols4;
  const int step = items >= kThreads ? 1 : kThreads / items;
  auto merge_item = [&](int item, int first) {
    const int row = item / kCols4, c4 = item % kCols4;
    MergeState st{-INFINITY, 0.0f, make_float4(0.0f, 0.0f, 0.0f, 0.0f)};
    for (int base = first; base < nsplits; base += kMergeBatch * step) {
      float m[kMergeBatch], l[kMergeBatch];
      float4 v[kMergeBatch];
#pragma unroll
      for (int j = 0; j < kMergeBatch; ++j) {
        const int sp = base + j * step;
        m[j] = -INFINITY, l[j] = 0.0f, v[j] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (sp < nsplits) load(row, c4, sp, m[j], l[j], v[j]);
      }
      float mx = st.m;
#pragma unroll
      for (int j = 0; j < kMergeBatch; ++j) mx = fmaxf(mx, m[j]);
      if (mx == -INFINITY) continue;  // no keys so far
      const float r = exp2f(st.m - mx);
      st.m = mx;
      st.l *= r, st.acc.x *= r, st.acc.y *= r, st.acc.z *= r, st.acc.w *= r;
#pragma unroll
      for (int j = 0; j < kMergeBatch; ++j) {
        const float f = exp2f(m[j] - mx);
        st.l += l[j] * f;
        st.acc.x += v[j].x * f, st.acc.y += v[j].y * f, st.acc.z += v[j].z * f,
            st.acc.w += v[j].w * f;
      }
    }
    return st;
  };
  auto finish = [&](int item, const MergeState& st) {
    const float inv = st.l > 0.0f ? 1.0f / st.l : 0.0f;
    store(item / kCols4, item % kCols4,
          make_float4(st.acc.x * inv, st.acc.y * inv, st.acc.z * inv, st.acc.w * inv));
  };
  if (step == 1) {
    for (int item = threadIdx.x; item < items; item += kThreads) finish(item, merge_item(item, 0));
    return;
  }
  const int item = threadIdx.x % items, sg = threadIdx.x / items;
  if (sg < step) st_s[threadIdx.x] = merge_item(item, sg);
  __syncthreads();
  if (static_cast<int>(threadIdx.x) < items) {
    MergeState st = st_s[threadIdx.x];
    for (int gi = 1; gi < step; ++gi) {
      const MergeState o2 = st_s[gi * items + threadIdx.x];
      const float mx = fmaxf(st.m, o2.m);
      if (mx == -INFINITY) continue;
      const float a = exp2f(st.m - mx), b = exp2f(o2.m - mx);
      st.m = mx;
      st.l = st.l * a + o2.l * b;
      st.acc = make_float4(st.acc.x * a + o2.acc.x * b, st.acc.y * a + o2.acc.y * b,
                           st.acc.z * a + o2.acc.z * b, st.acc.w * a + o2.acc.w * b);
    }
    finish(threadIdx.x, st);
  }
}

// Four output values of query head `head`, columns 4 c4 .. 4 c4 + 3, as fp16.
template <int kHeadDim>
__device__ __forceinline__ void store_out4(const Params& p, int seq, int head, int c4, float4 v) {
  __half* dst = p.out + static_cast<std::size_t>(seq) * p.out_stride + head * kHeadDim + c4 * 4;
  *reinterpret_cast<uint2*>(dst) =
      make_uint2(ptx::pack_half2(v.x, v.y), ptx::pack_half2(v.z, v.w));
}

template <int kHeadDim, bool kSm75>
__global__ void __launch_bounds__(kThreads, 2) decode_attention_kernel(const Params p) {
  using C = Config<kHeadDim, kSm75>;
  AWQD_DYNAMIC_SMEM(__half, smem);
  __shared__ float m_s[kWarps][kRows];
  __shared__ float l_s[kWarps][kRows];
  __shared__ int last_s;

  ptx::launch_dependents();  // the o projection may start streaming its weights
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const UnitWork u = unit_work(p);
  if (u.split >= u.nsplits) return;
  const int seq = u.seq, head0 = u.head0, nrows = u.nrows;
  const int nsplits = u.nsplits, split = u.split;
  // This warp's blocks: u.blk_begin + warp + kWarps * i for i < my_count.
  const int my_count = u.warp_blocks(warp);

  // Q as A fragments, loaded after grid_dependency_wait (the kernel before this one writes q).
  std::uint32_t qa[kHeadDim / 16][4];
  auto load_q = [&] { load_q_frags<kHeadDim>(qa, p, u, lane); };

  __half* wsmem = smem + warp * C::kWarpSmemElems;  // this warp's stages: [stage][K, V][tile]
  float o[kHeadDim / 8][4];
#pragma unroll
  for (int n = 0; n < kHeadDim / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  float m_run[2] = {-INFINITY, -INFINITY};  // running max of the scaled scores, rows g and g+8
  float l_run[2] = {0.0f, 0.0f};            // running sum (this thread's columns only)

  // Where lane copies chunk i of a tile: row and chunk within the row.
  auto copy_row = [&](int i) { return (lane + i * kWarpSize) / C::kChunks; };
  auto copy_chunk = [&](int i) { return (lane + i * kWarpSize) % C::kChunks; };
  auto block_base = [&](int i) { return u.block_offset(warp, i, p.num_kv_heads, kHeadDim); };
  auto rows_valid = [&](int i) { return u.rows_valid(warp, i); };

  // One 16-token block from stage `st`: scores, online softmax, O update.
  auto compute = [&](int st, int i_block) {
    const __half* ks_tile = wsmem + st * 2 * C::kTileElems;
    block_attention<kHeadDim, kSm75>(ks_tile, ks_tile + C::kTileElems, qa, o, m_run, l_run,
                                            rows_valid(i_block), p.scale_log2, lane);
  };

  if constexpr (!kSm75) {
#if AWQD_SM80_CODE
    auto issue = [&](int i_block) {
      __half* ks_tile = wsmem + (i_block % C::kStages) * 2 * C::kTileElems;
      const int valid = rows_valid(i_block);
      const std::size_t base = block_base(i_block);
#pragma unroll
      for (int i = 0; i < C::kCopies; ++i) {
        const int row = copy_row(i), chunk = copy_chunk(i);
        const bool ok = row < valid;
        // A zero-filled copy still names a valid address (row 0 of the block).
        const std::size_t src = base + (ok ? row : 0) * kHeadDim + chunk * 8;
        ptx::cp_async_16(ks_tile + swz<kHeadDim>(row, chunk), p.k_cache + src, ok);
        ptx::cp_async_16(ks_tile + C::kTileElems + swz<kHeadDim>(row, chunk), p.v_cache + src, ok);
      }
    };
    // The first kStages - 1 blocks go out before grid_dependency_wait (with PDL, while the
    // kernel before this one - the one writing this step's K/V - still runs), except the
    // sequence's last block, which holds this step's token: that one is issued after the wait,
    // in a group of its own (empty for the other warps). Group accounting: the prologue is
    // groups 0..S-2, the late group S-1, iteration i's refill group S+i. Block i sits in group i
    // (i <= S-2) or i+1 (refilled), so iteration i waits until at most S-1 (i <= S-2) or S-2
    // groups are pending; the warp's final iteration waits for all, which covers the late block
    // (necessarily the warp's last).
    const int last_block = u.nblocks - 1;
    int late = -1;
#pragma unroll
    for (int st = 0; st < C::kStages - 1; ++st) {
      if (st < my_count) {
        if (u.blk_begin + warp + kWarps * st == last_block)
          late = st;
        else
          issue(st);
      }
      ptx::cp_async_commit();
    }
    ptx::grid_dependency_wait();
    load_q();
    if (late >= 0) issue(late);
    ptx::cp_async_commit();
    for (int i = 0; i < my_count; ++i) {
      if (i == my_count - 1)
        ptx::cp_async_wait<0>();
      else if (i <= C::kStages - 2)
        ptx::cp_async_wait<C::kStages - 1>();
      else
        ptx::cp_async_wait<C::kStages - 2>();
      __syncwarp();
      if (i + C::kStages - 1 < my_count) issue(i + C::kStages - 1);
      ptx::cp_async_commit();
      compute(i % C::kStages, i);
    }
    ptx::cp_async_wait<0>();
#endif
  } else {
    ptx::grid_dependency_wait();
    load_q();
    uint4 kr[C::kCopies], vr[C::kCopies];
    auto load = [&](int i_block) {
      const int valid = rows_valid(i_block);
      const std::size_t base = block_base(i_block);
#pragma unroll
      for (int i = 0; i < C::kCopies; ++i) {
        const int row = copy_row(i), chunk = copy_chunk(i);
        const std::size_t src = base + row * kHeadDim + chunk * 8;
        const bool ok = row < valid;
        kr[i] = ok ? *reinterpret_cast<const uint4*>(p.k_cache + src) : make_uint4(0, 0, 0, 0);
        vr[i] = ok ? *reinterpret_cast<const uint4*>(p.v_cache + src) : make_uint4(0, 0, 0, 0);
      }
    };
    if (my_count > 0) load(0);
    for (int i = 0; i < my_count; ++i) {
      __syncwarp();  // the previous block's ldmatrix reads are done
#pragma unroll
      for (int c = 0; c < C::kCopies; ++c) {
        const int off = swz<kHeadDim>(copy_row(c), copy_chunk(c));
        *reinterpret_cast<uint4*>(wsmem + off) = kr[c];
        *reinterpret_cast<uint4*>(wsmem + C::kTileElems + off) = vr[c];
      }
      __syncwarp();
      if (i + 1 < my_count) load(i + 1);
      compute(0, i);
    }
  }

  // ---- merge the 4 warps (shared memory now free for fp32 O) ----
  const int unit = seq * gridDim.y + blockIdx.y;
  const std::size_t slot = static_cast<std::size_t>(unit) * gridDim.x + split;
  merge_warps<kHeadDim>(reinterpret_cast<float*>(smem), m_s, l_s, o, m_run, l_run, nrows, lane,
                        [&](int row, int d, float acc, float sum, float mmax) {
                          if (nsplits == 1) {
                            p.out[static_cast<std::size_t>(seq) * p.out_stride +
                                  (head0 + row) * kHeadDim + d] =
                                __float2half_rn(sum > 0.0f ? acc / sum : 0.0f);
                          } else {
                            p.part_o[(slot * kRows + row) * kHeadDim + d] = acc;
                            if (d == 0) {
                              p.part_m[slot * kRows + row] = mmax;
                              p.part_l[slot * kRows + row] = sum;
                            }
                          }
                        });
  if (nsplits == 1) return;

  // ---- the last CTA of the unit merges every split ----
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) last_s = atomicAdd(p.counters + unit, 1) == nsplits - 1;
  __syncthreads();
  if (!last_s) return;
  __threadfence();
  const std::size_t slot0 = static_cast<std::size_t>(unit) * gridDim.x;
  merge_splits<kHeadDim>(
      nrows, nsplits, reinterpret_cast<MergeState*>(smem),
      [&](int row, int c4, int sp, float& m, float& l, float4& v) {
        const std::size_t s = (slot0 + sp) * kRows + row;
        m = __ldcg(p.part_m + s);
        l = __ldcg(p.part_l + s);
        v = __ldcg(reinterpret_cast<const float4*>(p.part_o + s * kHeadDim) + c4);
      },
      [&](int row, int c4, float4 v) { store_out4<kHeadDim>(p, seq, head0 + row, c4, v); });
  if (threadIdx.x == 0) p.counters[unit] = 0;  // ready for the next launch
}

template <int kHeadDim, bool kSm75>
void launch_decode(const Params& p, dim3 grid, bool pdl, cudaStream_t stream) {
  launch_pdl(pdl, decode_attention_kernel<kHeadDim, kSm75>, grid, dim3(kThreads),
             Config<kHeadDim, kSm75>::kSmemBytes, stream, p);
}

// Instantiated once each, in attention_decode_hd{64,128}.cu (parallel compilation).
extern template void launch_decode<64, false>(const Params&, dim3, bool, cudaStream_t);
extern template void launch_decode<64, true>(const Params&, dim3, bool, cudaStream_t);
extern template void launch_decode<128, false>(const Params&, dim3, bool, cudaStream_t);
extern template void launch_decode<128, true>(const Params&, dim3, bool, cudaStream_t);

}  // namespace awqd::cuda::decode
