#include <algorithm>
#include <climits>
#include <string>
#include <unordered_map>

#include "kernels/common.cuh"
#include "kernels/sampling.cuh"

namespace awqd::cuda {

namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / kWarpSize;
constexpr int kMaxBins = 2048;  // radix digits of 11, 11 and 10 bits
// top_k <= kFastTopK: the kept tokens (<= kCandidates, ties included) are gathered into shared
// memory once and the rest of the procedure runs there instead of over the whole row.
constexpr int kFastTopK = 1024;
constexpr int kCandidates = 2048;

using u64 = unsigned long long;

// ---- Philox4x32-10 (as engine/sampling.cc) --------------------------------------------------

struct Philox4 {
  std::uint32_t v[4];
};

__device__ __forceinline__ Philox4 philox4x32_10(std::uint64_t seed, std::uint32_t c0,
                                                 std::uint32_t c1, std::uint32_t c2,
                                                 std::uint32_t c3) {
  constexpr std::uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr std::uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  std::uint32_t k0 = static_cast<std::uint32_t>(seed), k1 = static_cast<std::uint32_t>(seed >> 32);
#pragma unroll
  for (int round = 0; round < 10; ++round) {
    const std::uint32_t hi0 = __umulhi(kM0, c0), lo0 = kM0 * c0;
    const std::uint32_t hi1 = __umulhi(kM1, c2), lo1 = kM1 * c2;
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += kW0;
    k1 += kW1;
  }
  return {{c0, c1, c2, c3}};
}

// philox_uniform's mapping of one word to (0, 1): (word >> 9) * 2^-23 + 2^-24, exact in fp32.
__device__ __forceinline__ float philox_word_to_uniform(std::uint32_t w) {
  return __fadd_rn(__fmul_rn(static_cast<float>(w >> 9), 0x1p-23f), 0x1p-24f);
}

// ---- keys and block reductions --------------------------------------------------------------

// An order-preserving map of floats to uint32 (-0 folded into +0, as float comparison does).
__device__ __forceinline__ std::uint32_t ordered_key(float f) {
  const std::uint32_t u = __float_as_uint(f == 0.0f ? 0.0f : f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float from_ordered_key(std::uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7FFFFFFFu) : ~k);
}

struct Best {  // argmax state: the largest value, lowest index on ties
  float v;
  int i;
};
__device__ __forceinline__ Best better(Best a, Best b) {
  return (b.v > a.v || (b.v == a.v && b.i < a.i)) ? b : a;
}

struct Smem {
  union {  // radix histograms: counts (32-bit atomics) or probability mass (64-bit)
    u64 hist[kMaxBins];
    unsigned hist32[kMaxBins];
  };
  int cand_idx[kCandidates];
  float cand_val[kCandidates];  // raw (penalised) logits of the candidates
  int cand_count;
  u64 red_u64[kWarps];
  double red_d[kWarps];
  float red_f[kWarps];
  int red_i[kWarps];
  Best red_best[kWarps];
  int top_tok[kSamplerMaxLogprobs];
  float top_raw[kSamplerMaxLogprobs];
  int top_count;
  int sel_digit;
  u64 sel_above;
  float chosen_raw;
};

// Reduces over the block with `op` in a fixed order (deterministic); every thread gets it.
template <typename T, typename Op>
__device__ __forceinline__ T block_reduce(T v, Op op, T* scratch) {
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
#pragma unroll
  for (int m = 16; m > 0; m >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, m));
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  T r = scratch[0];
  for (int w = 1; w < kWarps; ++w) r = op(r, scratch[w]);
  __syncthreads();
  return r;
}

__device__ __forceinline__ Best block_argmax(Best b, Best* scratch) {
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
#pragma unroll
  for (int m = 16; m > 0; m >>= 1) {
    const Best o{__shfl_xor_sync(0xffffffffu, b.v, m), __shfl_xor_sync(0xffffffffu, b.i, m)};
    b = better(b, o);
  }
  if (lane == 0) scratch[warp] = b;
  __syncthreads();
  Best r = scratch[0];
  for (int w = 1; w < kWarps; ++w) r = better(r, scratch[w]);
  __syncthreads();
  return r;
}

// Sum of v over the threads after this one (higher threadIdx.x).
__device__ __forceinline__ u64 block_suffix_exclusive(u64 v, u64* scratch) {
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  u64 incl = v;
#pragma unroll
  for (int o = 1; o < kWarpSize; o <<= 1) {
    const u64 t = __shfl_down_sync(0xffffffffu, incl, o);
    if (lane + o < kWarpSize) incl += t;
  }
  if (lane == 0) scratch[warp] = incl;
  __syncthreads();
  u64 after = incl - v;
  for (int w = warp + 1; w < kWarps; ++w) after += scratch[w];
  __syncthreads();
  return after;
}

// Calls f(c, v) for every 4-element group c of the row (v = elements 4c .. 4c+3, some past the
// vocabulary in the last group). Loads are issued kUnroll groups ahead of their use: one CTA
// streams a whole row, so its passes are latency bound unless many loads are in flight.
template <typename F>
__device__ __forceinline__ void for_each_group(const float* row, int vocab, F f) {
  constexpr int kUnroll = 8;
  const int groups = (vocab + 3) / 4;
  const float4* r4 = reinterpret_cast<const float4*>(row);
  int c = threadIdx.x;
  for (; c + (kUnroll - 1) * kThreads < groups; c += kUnroll * kThreads) {
    float4 v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) v[u] = r4[c + u * kThreads];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) f(c + u * kThreads, v[u]);
  }
  for (; c < groups; c += kThreads) f(c, r4[c]);
}

// Calls f(index, value) for every element of the row.
template <typename F>
__device__ __forceinline__ void for_each_logit(const float* row, int vocab, F f) {
  for_each_group(row, vocab, [&](int c, float4 v) {
    const float x[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      if (4 * c + e < vocab) f(4 * c + e, x[e]);
    }
  });
}

// Radix select: the largest 32-bit key K such that the weight of included elements with
// key >= K reaches `target`; when the total weight is below it, the smallest included key.
// source(f) calls f(index, value) for every element; fn(index, value, &key, &weight) returns
// whether the element is included. kCounts: every weight is 1 (fn's weight is ignored), and the
// histogram takes 32-bit shared-memory atomics: logits of similar magnitude hit the same few
// bins of the first digit, where the 64-bit ones were the slow part of a pass (H100, one row of
// 128k: top_k 50 + top_p 434 -> 84 us with 32-bit counts; docs/PERF.md run 22).
template <bool kCounts, typename Source, typename Fn>
__device__ std::uint32_t radix_select(Source source, Fn fn, u64 target, Smem& s) {
  std::uint32_t prefix = 0, mask = 0;
  u64 above = 0;  // weight of included keys above the current prefix
  for (int pass = 0; pass < 3; ++pass) {
    const int shift = pass == 0 ? 21 : pass == 1 ? 10 : 0;
    const int nbins = pass == 2 ? 1024 : 2048;
    for (int b = threadIdx.x; b < nbins; b += kThreads) s.hist[b] = 0;
    __syncthreads();
    source([&](int idx, float x) {
      std::uint32_t key;
      u64 w;
      if (fn(idx, x, key, w) && (key & mask) == prefix) {
        const int bin = static_cast<int>((key >> shift) & (nbins - 1));
        if constexpr (kCounts)
          atomicAdd(&s.hist32[bin], 1u);
        else
          atomicAdd(&s.hist[bin], w);
      }
    });
    __syncthreads();
    auto hist = [&](int b) -> u64 { return kCounts ? s.hist32[b] : s.hist[b]; };
    const int per = nbins / kThreads;
    const int first = threadIdx.x * per;
    u64 local = 0;
    for (int k = 0; k < per; ++k) local += hist(first + k);
    u64 run = above + block_suffix_exclusive(local, s.red_u64);
    int cand = -1, lowest = INT_MAX;
    u64 cand_above = 0, lowest_above = 0;
    for (int k = per - 1; k >= 0; --k) {  // from the top: run = weight above bin d
      const u64 h = hist(first + k);
      if (cand < 0 && run + h >= target) cand = first + k, cand_above = run;
      if (h > 0) lowest = first + k, lowest_above = run;
      run += h;
    }
    const int best = block_reduce(
        cand, [](int a, int b) { return a > b ? a : b; }, s.red_i);
    if (best >= 0) {
      if (cand == best) s.sel_digit = best, s.sel_above = cand_above;
    } else {
      const int low = block_reduce(
          lowest, [](int a, int b) { return a < b ? a : b; }, s.red_i);
      if (low == INT_MAX) {
        if (threadIdx.x == 0) s.sel_digit = 0, s.sel_above = above;
      } else if (lowest == low) {
        s.sel_digit = low, s.sel_above = lowest_above;
      }
    }
    __syncthreads();
    prefix |= static_cast<std::uint32_t>(s.sel_digit) << shift;
    mask |= static_cast<std::uint32_t>(nbins - 1) << shift;
    above = s.sel_above;
    __syncthreads();
  }
  return prefix;
}

struct KernelArgs {
  float* logits;
  int logits_stride;
  int vocab;
  const SamplerRowParams* params;
  const int* penalty_offsets;
  const int* penalty_tokens;
  const int* penalty_counts;
  float* penalty_raw;
  int* out_tokens;
  float* out_logprobs;
  int* out_top_tokens;
  float* out_top_logprobs;
};

__global__ void __launch_bounds__(kThreads, 1) sample_kernel(const KernelArgs a) {
  __shared__ Smem s;
  const int tid = threadIdx.x;
  const int row_index = blockIdx.x;
  const SamplerRowParams P = a.params[row_index];
  float* row = a.logits + static_cast<std::size_t>(row_index) * a.logits_stride;
  const int vocab = a.vocab;
  auto fmax_op = [](float x, float y) { return fmaxf(x, y); };

  // ---- 1. raw log-softmax statistics and the top-n raw logprobs ----
  const int n_top = min(P.logprobs, vocab);
  float lse = 0.0f;
  if (n_top > 0) {
    float m = -INFINITY;
    for_each_logit(row, vocab, [&](int, float x) { m = fmaxf(m, x); });
    m = block_reduce(m, fmax_op, s.red_f);
    double sum = 0.0;
    for_each_logit(row, vocab, [&](int, float x) { sum += static_cast<double>(expf(x - m)); });
    sum = block_reduce(
        sum, [](double x, double y) { return x + y; }, s.red_d);
    lse = m + static_cast<float>(log(sum));

    const std::uint32_t kth = radix_select<true>([&](auto f) { for_each_logit(row, vocab, f); },
                                           [](int, float x, std::uint32_t& key, u64& w) {
                                             key = ordered_key(x), w = 1;
                                             return true;
                                           },
                                           static_cast<u64>(n_top), s);
    if (tid == 0) s.top_count = 0;
    __syncthreads();
    for_each_logit(row, vocab, [&](int idx, float x) {
      if (ordered_key(x) > kth) {
        const int slot = atomicAdd(&s.top_count, 1);
        s.top_tok[slot] = idx, s.top_raw[slot] = x;
      }
    });
    __syncthreads();
    // The rest are ties at the threshold: lowest indices first, one pass each (rare).
    int last = -1;
    for (int k = s.top_count; k < n_top; ++k) {
      int mine = INT_MAX;
      for_each_logit(row, vocab, [&](int idx, float x) {
        if (ordered_key(x) == kth && idx > last && idx < mine) mine = idx;
      });
      last = block_reduce(
          mine, [](int x, int y) { return x < y ? x : y; }, s.red_i);
      if (tid == 0) s.top_tok[k] = last, s.top_raw[k] = row[last];
    }
    __syncthreads();
  }

  // ---- 2. penalties, in place ----
  const int pen_begin = a.penalty_offsets ? a.penalty_offsets[row_index] : 0;
  const int pen_end = a.penalty_offsets ? a.penalty_offsets[row_index + 1] : 0;
  const bool repetition = P.repetition_penalty != 1.0f;
  const bool additive = P.frequency_penalty != 0.0f || P.presence_penalty != 0.0f;
  const bool penalised = (repetition || additive) && pen_end > pen_begin;
  if (penalised) {
    for (int j = pen_begin + tid; j < pen_end; j += kThreads) {
      const int tok = a.penalty_tokens[j];
      if (tok < 0 || tok >= vocab) continue;
      const float raw = row[tok];
      a.penalty_raw[j] = raw;
      float l = raw;
      if (repetition) {
        l = l > 0.0f ? __fdiv_rn(l, P.repetition_penalty) : __fmul_rn(l, P.repetition_penalty);
      }
      const int count = a.penalty_counts[j];
      if (additive && count > 0) {
        l = __fsub_rn(l, __fadd_rn(__fmul_rn(P.frequency_penalty, static_cast<float>(count)),
                                   P.presence_penalty));
      }
      row[tok] = l;
    }
    __syncthreads();
  }

  int token;
  if (P.temperature < kSamplerGreedyTemperature) {
    // ---- 3. greedy ----
    Best b{-INFINITY, INT_MAX};
    for_each_logit(row, vocab, [&](int idx, float x) { b = better(b, Best{x, idx}); });
    b = block_argmax(b, s.red_best);
    token = b.i == INT_MAX ? 0 : b.i;  // all -inf or NaN: the CPU's argmax keeps index 0
  } else {
    // ---- 4. temperature, top-k, softmax, top-p, min-p ----
    const float inv_t = __fdiv_rn(1.0f, P.temperature);
    auto scaled = [inv_t](float x) { return __fmul_rn(x, inv_t); };
    float kth = -INFINITY;  // keep scaled >= kth
    const bool top_k = P.top_k > 0 && P.top_k < vocab;
    if (top_k) {
      kth = from_ordered_key(radix_select<true>([&](auto f) { for_each_logit(row, vocab, f); },
                                          [&](int, float x, std::uint32_t& key, u64& w) {
                                            key = ordered_key(scaled(x)), w = 1;
                                            return true;
                                          },
                                          static_cast<u64>(P.top_k), s));
    }
    // Small top_k: gather the kept tokens; every later pass reads shared memory.
    bool fast = false;
    if (top_k && P.top_k <= kFastTopK) {
      if (tid == 0) s.cand_count = 0;
      __syncthreads();
      for_each_logit(row, vocab, [&](int idx, float x) {
        if (scaled(x) >= kth) {
          const int slot = atomicAdd(&s.cand_count, 1);
          if (slot < kCandidates) s.cand_idx[slot] = idx, s.cand_val[slot] = x;
        }
      });
      __syncthreads();
      fast = s.cand_count <= kCandidates;  // else (many ties at the k-th value) the whole row
    }
    const int candidates = fast ? s.cand_count : 0;
    auto kept = [&](auto f) {  // f(index, raw value) for every token that survived top-k
      if (fast) {
        for (int i = tid; i < candidates; i += kThreads) f(s.cand_idx[i], s.cand_val[i]);
      } else {
        for_each_logit(row, vocab, [&](int idx, float x) {
          if (scaled(x) >= kth) f(idx, x);
        });
      }
    };
    float mx = -INFINITY;
    kept([&](int, float x) { mx = fmaxf(mx, scaled(x)); });
    mx = block_reduce(mx, fmax_op, s.red_f);
    // prob = exp(l - mx) for kept tokens (0 for -inf), as the CPU computes it.
    auto prob = [&](float x) {
      const float l = scaled(x);
      return (l >= kth && l != -INFINITY) ? expf(__fsub_rn(l, mx)) : 0.0f;
    };
    // Their sum, in an order-independent way: in double over the row (fixed thread mapping), or,
    // for candidates gathered in arbitrary order, exactly in 2^-52 fixed point (<= 2^63).
    double total;
    if (fast) {
      u64 fixed = 0;
      kept([&](int, float x) { fixed += static_cast<u64>(static_cast<double>(prob(x)) * 0x1p52); });
      total = static_cast<double>(block_reduce(
                  fixed, [](u64 x, u64 y) { return x + y; }, s.red_u64)) *
              0x1p-52;
    } else {
      double sum = 0.0;
      kept([&](int, float x) { sum += static_cast<double>(prob(x)); });
      total = block_reduce(
          sum, [](double x, double y) { return x + y; }, s.red_d);
    }
    const float inv_total = static_cast<float>(1.0 / total);
    auto q_of = [&](float x) { return __fmul_rn(prob(x), inv_total); };
    float threshold = 0.0f;  // keep q >= threshold (and q > 0)
    if (P.top_p < 1.0f) {
      const u64 target = static_cast<u64>(static_cast<double>(P.top_p) * 0x1p60);
      threshold = __uint_as_float(radix_select<false>(
          kept,
          [&](int, float x, std::uint32_t& key, u64& w) {
            const float q = q_of(x);
            key = __float_as_uint(q);
            w = static_cast<u64>(static_cast<double>(q) * 0x1p60);
            return q > 0.0f;
          },
          target, s));
    }
    if (P.min_p > 0.0f) threshold = fmaxf(threshold, __fmul_rn(P.min_p, inv_total));

    // ---- 5. the exponential race ----
    Best b{-1.0f, INT_MAX};
    auto race = [&](int idx, float q, std::uint32_t word) {
      if (q <= 0.0f || q < threshold) return;
      b = better(b, Best{__fdiv_rn(q, -logf(philox_word_to_uniform(word))), idx});
    };
    if (fast) {
      kept([&](int idx, float x) {
        const Philox4 r =
            philox4x32_10(P.seed, static_cast<std::uint32_t>(idx / 4), P.position, 0, 0);
        race(idx, q_of(x), r.v[idx % 4]);
      });
    } else {
      for_each_group(row, vocab, [&](int c, float4 v) {
        const float x[4] = {v.x, v.y, v.z, v.w};
        float q[4];
        bool any = false;
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          q[e] = 4 * c + e < vocab ? q_of(x[e]) : 0.0f;
          any |= q[e] > 0.0f && q[e] >= threshold;
        }
        if (!any) return;
        const Philox4 r = philox4x32_10(P.seed, static_cast<std::uint32_t>(c), P.position, 0, 0);
#pragma unroll
        for (int e = 0; e < 4; ++e) race(4 * c + e, q[e], r.v[e]);
      });
    }
    b = block_argmax(b, s.red_best);
    token = b.i == INT_MAX ? -1 : b.i;
  }

  // ---- outputs ----
  if (n_top > 0 && token >= 0) {
    if (tid == 0) s.chosen_raw = row[token];
    __syncthreads();
    if (penalised) {  // the chosen token's raw value, if the penalties changed it
      for (int j = pen_begin + tid; j < pen_end; j += kThreads) {
        if (a.penalty_tokens[j] == token) s.chosen_raw = a.penalty_raw[j];
      }
      __syncthreads();
    }
  }
  if (tid == 0) {
    a.out_tokens[row_index] = token;
    a.out_logprobs[row_index] = n_top > 0 && token >= 0 ? s.chosen_raw - lse : 0.0f;
    // Top-n by logprob (raw - lse), lowest index first on ties: insertion sort of <= 20.
    int tok[kSamplerMaxLogprobs];
    float lp[kSamplerMaxLogprobs];
    for (int k = 0; k < n_top; ++k) {
      int t = s.top_tok[k];
      float v = s.top_raw[k] - lse;
      int j = k;
      for (; j > 0 && (lp[j - 1] < v || (lp[j - 1] == v && tok[j - 1] > t)); --j) {
        tok[j] = tok[j - 1], lp[j] = lp[j - 1];
      }
      tok[j] = t, lp[j] = v;
    }
    int* out_tok = a.out_top_tokens + static_cast<std::size_t>(row_index) * kSamplerMaxLogprobs;
    float* out_lp = a.out_top_logprobs + static_cast<std::size_t>(row_index) * kSamplerMaxLogprobs;
    for (int k = 0; k < kSamplerMaxLogprobs; ++k) {
      out_tok[k] = k < n_top ? tok[k] : -1;
      out_lp[k] = k < n_top ? lp[k] : 0.0f;
    }
  }
}

__global__ void philox_kernel(const std::uint64_t* seeds, const std::uint32_t* counters,
                              std::uint32_t* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const std::uint32_t* c = counters + 4 * i;
  const Philox4 r = philox4x32_10(seeds[i], c[0], c[1], c[2], c[3]);
  for (int k = 0; k < 4; ++k) out[4 * i + k] = r.v[k];
}

}  // namespace

void sample(const SampleArgs& a, cudaStream_t stream) {
  constexpr const char* kName = "sample";
  AWQD_ARG_CHECK(kName, a.rows >= 0 && a.vocab > 0,
                 "rows=" + std::to_string(a.rows) + " vocab=" + std::to_string(a.vocab));
  AWQD_ARG_CHECK(kName, a.logits_stride >= (a.vocab + 3) / 4 * 4 && a.logits_stride % 4 == 0,
                 "logits_stride=" + std::to_string(a.logits_stride));
  if (a.rows == 0) return;
  AWQD_ARG_CHECK(kName,
                 a.logits && a.params && a.out_tokens && a.out_logprobs && a.out_top_tokens &&
                     a.out_top_logprobs,
                 "null pointer");
  AWQD_ARG_CHECK(kName, aligned16(a.logits), "logits must be 16-byte aligned");
  AWQD_ARG_CHECK(kName,
                 !a.penalty_offsets || (a.penalty_tokens && a.penalty_counts && a.penalty_raw),
                 "penalty lists need tokens, counts and the raw scratch");
  KernelArgs k{a.logits,          a.logits_stride,  a.vocab,          a.params,
               a.penalty_offsets, a.penalty_tokens, a.penalty_counts, a.penalty_raw,
               a.out_tokens,      a.out_logprobs,   a.out_top_tokens, a.out_top_logprobs};
  launch(sample_kernel, dim3(a.rows), dim3(kThreads), 0, stream, k);
}

void build_penalty_list(const std::int32_t* prompt, std::size_t prompt_len,
                        const std::int32_t* output, std::size_t output_len, int vocab,
                        std::vector<int>& tokens, std::vector<int>& counts) {
  std::unordered_map<int, int> count;  // token -> occurrences in output
  for (std::size_t i = 0; i < prompt_len; ++i) {
    if (prompt[i] >= 0 && prompt[i] < vocab) count.emplace(prompt[i], 0);
  }
  for (std::size_t i = 0; i < output_len; ++i) {
    if (output[i] >= 0 && output[i] < vocab) ++count[output[i]];
  }
  const std::size_t first = tokens.size();
  for (const auto& [t, c] : count) tokens.push_back(t);
  std::sort(tokens.begin() + static_cast<std::ptrdiff_t>(first), tokens.end());
  for (std::size_t i = first; i < tokens.size(); ++i) counts.push_back(count[tokens[i]]);
}

void philox4x32_10_gpu(const std::uint64_t* seeds, const std::uint32_t* counters,
                       std::uint32_t* out, int n, cudaStream_t stream) {
  AWQD_ARG_CHECK("philox4x32_10_gpu", n >= 0, "n=" + std::to_string(n));
  if (n == 0) return;
  launch(philox_kernel, dim3((n + 255) / 256), dim3(256), 0, stream, seeds, counters, out, n);
}

}  // namespace awqd::cuda
