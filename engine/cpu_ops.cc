#include "engine/cpu_ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numbers>

#include "engine/thread_pool.h"

namespace awqd::cpu {

namespace {

// Dot product with eight independent partial sums (vectorisable without -ffast-math; a fixed
// order, so the result does not depend on threading).
inline float dot(const float* a, const float* b, int n) {
  float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) s[j] += a[i + j] * b[i + j];
  for (; i < n; ++i) s[i & 7] += a[i] * b[i];
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

}  // namespace

void rms_norm(const float* x, const float* w, float* out, int rows, int dim, float eps) {
  ThreadPool::global().parallel_for(rows, [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      const float* xr = x + r * dim;
      double ss = 0;
      for (int i = 0; i < dim; ++i) ss += static_cast<double>(xr[i]) * xr[i];
      const float inv = 1.0f / std::sqrt(static_cast<float>(ss / dim) + eps);
      float* o = out + r * dim;
      for (int i = 0; i < dim; ++i) o[i] = xr[i] * inv * w[i];
    }
  }, std::max(1, 16384 / dim));
}

std::vector<float> rope_inv_freq(const ModelConfig& c) {
  const int half = c.head_dim / 2;
  std::vector<float> inv(half);
  for (int i = 0; i < half; ++i)
    inv[i] = 1.0f / std::pow(c.rope_theta, static_cast<float>(2 * i) / static_cast<float>(c.head_dim));
  const RopeScaling& rs = c.rope_scaling;
  if (rs.type == RopeScaling::Type::kLinear) {
    for (auto& f : inv) f /= rs.factor;
  } else if (rs.type == RopeScaling::Type::kLlama3) {
    // Llama 3.1: long wavelengths are slowed by `factor`, short ones kept, the band between
    // interpolated smoothly.
    const float old_len = static_cast<float>(rs.original_max_position_embeddings);
    const float low_wavelen = old_len / rs.low_freq_factor;
    const float high_wavelen = old_len / rs.high_freq_factor;
    for (auto& f : inv) {
      const float wavelen = 2.0f * std::numbers::pi_v<float> / f;
      if (wavelen > low_wavelen) {
        f = f / rs.factor;
      } else if (wavelen >= high_wavelen) {
        const float smooth = (old_len / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
        f = (1.0f - smooth) * f / rs.factor + smooth * f;
      }
    }
  }
  return inv;
}

void apply_rope(float* x, const std::int32_t* positions, int tokens, int heads, int head_dim,
                const float* inv_freq) {
  const int half = head_dim / 2;
  ThreadPool::global().parallel_for(tokens, [&](std::int64_t t0, std::int64_t t1) {
    for (std::int64_t t = t0; t < t1; ++t) {
      for (int i = 0; i < half; ++i) {
        const float angle = static_cast<float>(positions[t]) * inv_freq[i];
        const float c = std::cos(angle), s = std::sin(angle);
        for (int h = 0; h < heads; ++h) {
          float* v = x + (t * heads + h) * head_dim;
          const float a = v[i], b = v[i + half];
          v[i] = a * c - b * s;
          v[i + half] = b * c + a * s;
        }
      }
    }
  }, 8);
}

namespace {

// Register tile of matmul_nt: MR rows of x against NR rows of W. Each output keeps dot()'s eight
// partial sums (lane j sums elements i with i % 8 == j) and its final reduction, so the result
// is bit-identical to dot() whatever the tile shape or instruction set (no FMA contraction in
// ISO C++ mode). The vector type is 8 floats: one AVX2 register, two SSE registers.
using v8f = float __attribute__((vector_size(32)));

// Out-parameter, not a return value: returning a 32-byte vector from a function compiled
// without AVX (the default clone) is an ABI GCC warns about (-Wpsabi), even inlined.
__attribute__((always_inline)) inline void load8(v8f& v, const float* p) { std::memcpy(&v, p, sizeof v); }

template <int MR, int NR>
__attribute__((always_inline)) inline void tile(const float* x, const float* W, const float* b, float* y, int N, int K,
                                                int m, int n) {
  v8f acc[MR][NR] = {};
  const int k8 = K & ~7;
  for (int i = 0; i < k8; i += 8) {
    v8f wv[NR];
    for (int c = 0; c < NR; ++c) load8(wv[c], W + static_cast<std::int64_t>(n + c) * K + i);
    for (int r = 0; r < MR; ++r) {
      v8f xv;
      load8(xv, x + static_cast<std::int64_t>(m + r) * K + i);
      for (int c = 0; c < NR; ++c) acc[r][c] += xv * wv[c];
    }
  }
  for (int r = 0; r < MR; ++r) {
    for (int c = 0; c < NR; ++c) {
      float s[8];
      std::memcpy(s, &acc[r][c], sizeof s);
      const float* a = x + static_cast<std::int64_t>(m + r) * K;
      const float* w = W + static_cast<std::int64_t>(n + c) * K;
      for (int i = k8; i < K; ++i) s[i & 7] += a[i] * w[i];
      const float d = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
      y[static_cast<std::int64_t>(m + r) * N + n + c] = d + (b ? b[n + c] : 0.0f);
    }
  }
}

// One block of outputs [m0, m1) x [n0, n1), in register tiles of 4 x 2 and 1-wide edges.
__attribute__((target_clones("arch=x86-64-v3", "default")))
void matmul_block(const float* x, const float* W, const float* b, float* y, int N, int K, int m0, int m1,
                  int n0, int n1) {
  int n = n0;
  for (; n + 2 <= n1; n += 2) {
    int m = m0;
    for (; m + 4 <= m1; m += 4) tile<4, 2>(x, W, b, y, N, K, m, n);
    for (; m < m1; ++m) tile<1, 2>(x, W, b, y, N, K, m, n);
  }
  for (; n < n1; ++n)
    for (int m = m0; m < m1; ++m) tile<1, 1>(x, W, b, y, N, K, m, n);
}

}  // namespace

void matmul_nt(const float* x, const float* W, const float* b, float* y, int M, int N, int K) {
  // Blocks of 64 x 64 outputs: a block's rows of x and W (64 K floats each) stay in L2 while
  // it is computed. Parallel over blocks; every output is computed once, in a fixed order.
  // Blocks are numbered column-block major so that a thread's contiguous range shares rows of W.
  constexpr int kBlock = 64;
  const std::int64_t mb = (M + kBlock - 1) / kBlock, nb = (N + kBlock - 1) / kBlock;
  const std::int64_t block_work = static_cast<std::int64_t>(kBlock) * kBlock * K;
  ThreadPool::global().parallel_for(mb * nb, [&](std::int64_t i0, std::int64_t i1) {
    for (std::int64_t i = i0; i < i1; ++i) {
      const int bn = static_cast<int>(i / mb), bm = static_cast<int>(i % mb);
      matmul_block(x, W, b, y, N, K, bm * kBlock, std::min(M, (bm + 1) * kBlock), bn * kBlock,
                   std::min(N, (bn + 1) * kBlock));
    }
  }, std::max<std::int64_t>(1, (std::int64_t{1} << 16) / block_work));
}

void silu_mul(const float* gate, const float* up, float* out, std::int64_t count) {
  ThreadPool::global().parallel_for(count, [&](std::int64_t i0, std::int64_t i1) {
    for (std::int64_t i = i0; i < i1; ++i) {
      const float g = gate[i];
      out[i] = g / (1.0f + std::exp(-g)) * up[i];
    }
  }, 32768);
}

void write_kv(const PagedKv& c, const float* k, const float* v, const std::int32_t* slot_mapping, int tokens) {
  const int hd = c.head_dim;
  for (int t = 0; t < tokens; ++t) {
    const std::int64_t block = slot_mapping[t] / c.block_size, off = slot_mapping[t] % c.block_size;
    for (int h = 0; h < c.num_kv_heads; ++h) {
      const std::int64_t dst = ((block * c.num_kv_heads + h) * c.block_size + off) * hd;
      const std::int64_t src = (static_cast<std::int64_t>(t) * c.num_kv_heads + h) * hd;
      std::copy(k + src, k + src + hd, c.k + dst);
      std::copy(v + src, v + src + hd, c.v + dst);
    }
  }
}

void paged_attention(const float* q, const PagedKv& c, const std::int32_t* cu_seqlens_q,
                     const std::int32_t* positions, const std::int32_t* block_tables,
                     int max_blocks_per_seq, int num_seqs, int num_heads, float* out) {
  const int hd = c.head_dim;
  const int group = num_heads / c.num_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const int total = cu_seqlens_q[num_seqs];
  // Flattened (token, head) work items; each finds its sequence by binary search.
  ThreadPool::global().parallel_for(static_cast<std::int64_t>(total) * num_heads, [&](std::int64_t i0, std::int64_t i1) {
    std::vector<float> scores;
    for (std::int64_t item = i0; item < i1; ++item) {
      const int t = static_cast<int>(item / num_heads), h = static_cast<int>(item % num_heads);
      const int b = static_cast<int>(std::upper_bound(cu_seqlens_q, cu_seqlens_q + num_seqs + 1, t) - cu_seqlens_q) - 1;
      const int ctx = positions[t] + 1;
      const int kvh = h / group;
      const float* qv = q + (static_cast<std::int64_t>(t) * num_heads + h) * hd;
      const std::int32_t* table = block_tables + static_cast<std::int64_t>(b) * max_blocks_per_seq;
      auto row = [&](int p) {
        return ((static_cast<std::int64_t>(table[p / c.block_size]) * c.num_kv_heads + kvh) * c.block_size + p % c.block_size) * hd;
      };
      scores.resize(ctx);
      float mx = -INFINITY;
      for (int p = 0; p < ctx; ++p) {
        scores[p] = dot(qv, c.k + row(p), hd) * scale;
        mx = std::max(mx, scores[p]);
      }
      double denom = 0;
      for (int p = 0; p < ctx; ++p) denom += scores[p] = std::exp(scores[p] - mx);
      float* o = out + (static_cast<std::int64_t>(t) * num_heads + h) * hd;
      std::fill(o, o + hd, 0.0f);
      for (int p = 0; p < ctx; ++p) {
        const float* vrow = c.v + row(p);
        const float w = scores[p];
        for (int i = 0; i < hd; ++i) o[i] += w * vrow[i];
      }
      const float inv = static_cast<float>(1.0 / denom);
      for (int i = 0; i < hd; ++i) o[i] *= inv;
    }
  });
}

}  // namespace awqd::cpu
