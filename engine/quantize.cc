#include "engine/quantize.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "engine/awq.h"
#include "engine/cpu_layer.h"
#include "engine/executor.h"
#include "engine/thread_pool.h"

namespace awqd {

namespace {

using Clock = std::chrono::steady_clock;

void check_linear(const std::string& name, int K, int N, int G) {
  if (K % G != 0)
    throw std::invalid_argument(name + " has K = " + std::to_string(K) +
                                " inputs, not a multiple of the group size " + std::to_string(G) +
                                " (pick --group-size that divides it)");
  if (N % 8 != 0)
    throw std::invalid_argument(name + " has N = " + std::to_string(N) +
                                " outputs, not a multiple of 8");
}

// Adds W (N, K) quantized to the AWQ GEMM tensors <name>.qweight/.qzeros/.scales (+ .bias).
void add_quantized(CheckpointWriter& out, const std::string& name, const float* W, int N, int K,
                   int G, const float* bias) {
  std::vector<float> w_kn(static_cast<std::size_t>(K) * N);
  for (int k = 0; k < K; ++k)
    for (int n = 0; n < N; ++n)
      w_kn[static_cast<std::size_t>(k) * N + n] = W[static_cast<std::size_t>(n) * K + k];
  AwqTensors q = awq_quantize(w_kn.data(), K, N, G);
  out.add_i32(name + ".qweight", {K, N / 8}, std::move(q.qweight));
  out.add_i32(name + ".qzeros", {K / G, N / 8}, std::move(q.qzeros));
  out.add_f16(name + ".scales", {K / G, N}, std::move(q.scales));
  if (bias) out.add_f16_from_float(name + ".bias", {N}, std::vector<float>(bias, bias + N));
}

// The rows [row0, row0 + rows) of one of a layer's stacked (N, K) matrices: one linear.
struct RowRange {
  std::vector<float> cpu::DecoderLayer::*matrix;
  int row0, rows;
};

// The calibration samples cut into chunks of whole samples, with their attention metadata and a
// KV cache big enough for a chunk (each sample its own blocks, identity block tables).
class Chunks {
 public:
  Chunks(int num_samples, int seq_len, int chunk_tokens, const ModelConfig& c)
      : num_samples_(num_samples), seq_len_(seq_len) {
    per_chunk_ = std::max(1, chunk_tokens / seq_len);
    blocks_per_seq_ = (seq_len + kKvBlockSize - 1) / kKvBlockSize;
    const std::size_t cache =
        static_cast<std::size_t>(per_chunk_) * blocks_per_seq_ * kKvBlockSize * c.kv_size();
    k_.resize(cache);
    v_.resize(cache);
    kv_heads_ = c.num_kv_heads;
    head_dim_ = c.head_dim;
    positions_.resize(static_cast<std::size_t>(per_chunk_) * seq_len);
    slots_.resize(positions_.size());
    cu_.resize(per_chunk_ + 1);
    tables_.resize(static_cast<std::size_t>(per_chunk_) * blocks_per_seq_);
    for (int b = 0; b < per_chunk_; ++b) {
      cu_[b + 1] = (b + 1) * seq_len;
      for (int j = 0; j < blocks_per_seq_; ++j)
        tables_[static_cast<std::size_t>(b) * blocks_per_seq_ + j] = b * blocks_per_seq_ + j;
      for (int p = 0; p < seq_len; ++p) {
        positions_[static_cast<std::size_t>(b) * seq_len + p] = p;
        slots_[static_cast<std::size_t>(b) * seq_len + p] =
            (b * blocks_per_seq_ + p / kKvBlockSize) * kKvBlockSize + p % kKvBlockSize;
      }
    }
  }
  int count() const { return (num_samples_ + per_chunk_ - 1) / per_chunk_; }
  std::int64_t first_token(int chunk) const {
    return static_cast<std::int64_t>(chunk) * per_chunk_ * seq_len_;
  }
  int tokens(int chunk) const { return samples(chunk) * seq_len_; }
  cpu::AttentionMeta meta(int chunk) const {
    return {positions_.data(), cu_.data(),      slots_.data(),
            tables_.data(),    blocks_per_seq_, samples(chunk)};
  }
  cpu::PagedKv cache() { return {k_.data(), v_.data(), kv_heads_, head_dim_, kKvBlockSize}; }

 private:
  int samples(int chunk) const { return std::min(per_chunk_, num_samples_ - chunk * per_chunk_); }
  int num_samples_, seq_len_, per_chunk_, blocks_per_seq_, kv_heads_ = 0, head_dim_ = 0;
  std::vector<float> k_, v_;
  std::vector<std::int32_t> positions_, slots_, cu_, tables_;
};

// Runs `block(input_rows, T, out_rows, chunk)` chunk by chunk over all tokens: out = block(in).
template <typename Block>
void over_chunks(Chunks& chunks, const std::vector<float>& in, int in_dim, std::vector<float>& out,
                 int out_dim, Block&& block) {
  out.resize(in.size() / in_dim * out_dim);
  for (int ch = 0; ch < chunks.count(); ++ch) {
    const std::int64_t t0 = chunks.first_token(ch);
    block(in.data() + t0 * in_dim, chunks.tokens(ch), out.data() + t0 * out_dim, ch);
  }
}

// Sums f(i0, i1) over kSumChunks fixed slices of [0, n), in parallel, then in slice order: the
// same result on any thread count, so searches choose the same scales everywhere.
constexpr int kSumChunks = 64;
template <typename F>
double parallel_sum(std::int64_t n, F f) {
  std::vector<double> part(kSumChunks, 0.0);
  ThreadPool::global().parallel_for(kSumChunks, [&](std::int64_t c0, std::int64_t c1) {
    for (std::int64_t c = c0; c < c1; ++c)
      part[c] = f(n * c / kSumChunks, n * (c + 1) / kSumChunks);
  });
  double s = 0;
  for (double p : part) s += p;
  return s;
}

double mse(const std::vector<float>& a, const std::vector<float>& b) {
  const double s =
      parallel_sum(static_cast<std::int64_t>(a.size()), [&](std::int64_t i0, std::int64_t i1) {
        double local = 0;
        for (std::int64_t i = i0; i < i1; ++i) {
          const double d = static_cast<double>(a[i]) - b[i];
          local += d * d;
        }
        return local;
      });
  return s / static_cast<double>(a.size());
}

// Mean |x| per channel over all tokens of x (T, K).
std::vector<float> mean_abs_per_channel(const std::vector<float>& x, int K) {
  const std::int64_t T = static_cast<std::int64_t>(x.size()) / K;
  std::vector<double> sum(K, 0.0);
  ThreadPool::global().parallel_for(K, [&](std::int64_t k0, std::int64_t k1) {
    for (std::int64_t t = 0; t < T; ++t)
      for (std::int64_t k = k0; k < k1; ++k) sum[k] += std::fabs(x[t * K + k]);
  });
  std::vector<float> out(K);
  for (int k = 0; k < K; ++k) out[k] = static_cast<float>(sum[k] / static_cast<double>(T));
  return out;
}

// Mean over the rows of the group's linears of |w| / max |w| of its quantization group.
std::vector<float> mean_normalised_weight(const cpu::DecoderLayer& layer,
                                          const std::vector<RowRange>& linears, int K, int G) {
  std::vector<double> sum(K, 0.0);
  std::int64_t rows = 0;
  for (const RowRange& r : linears) {
    for (int n = r.row0; n < r.row0 + r.rows; ++n) {
      const float* w = (layer.*r.matrix).data() + static_cast<std::size_t>(n) * K;
      for (int g = 0; g < K; g += G) {
        float mx = 0;
        for (int k = g; k < g + G; ++k) mx = std::max(mx, std::fabs(w[k]));
        for (int k = g; k < g + G; ++k) sum[k] += std::fabs(w[k]) / (mx + 1e-6f);
      }
    }
    rows += r.rows;
  }
  std::vector<float> out(K);
  for (int k = 0; k < K; ++k) out[k] = static_cast<float>(sum[k] / static_cast<double>(rows));
  return out;
}

// The candidate scales for grid point a.
std::vector<float> candidate_scales(const std::vector<float>& x_mean,
                                    const std::vector<float>& w_mean, float a, bool duo) {
  const std::size_t K = x_mean.size();
  std::vector<float> s(K);
  for (std::size_t k = 0; k < K; ++k) {
    const float v = duo ? std::pow(x_mean[k], a) / (std::pow(w_mean[k], 1.0f - a) + 1e-4f)
                        : std::pow(x_mean[k], a);
    s[k] = std::max(v, 1e-4f);
  }
  const auto [mn, mx] = std::minmax_element(s.begin(), s.end());
  const float norm = std::sqrt(*mx * *mn);
  for (auto& v : s) {
    v /= norm;
    if (!std::isfinite(v)) v = 1.0f;
  }
  return s;
}

// Rows [row0, row0+rows) of W (N, K) replaced by Q(W s) / s.
void scale_fake_quantize(std::vector<float>& W, int row0, int rows, int K, int G,
                         const std::vector<float>& s) {
  std::vector<float> tmp(static_cast<std::size_t>(rows) * K);
  float* w = W.data() + static_cast<std::size_t>(row0) * K;
  for (int n = 0; n < rows; ++n)
    for (int k = 0; k < K; ++k)
      tmp[static_cast<std::size_t>(n) * K + k] = w[static_cast<std::size_t>(n) * K + k] * s[k];
  fake_quantize_nk(tmp.data(), rows, K, G, tmp.data());
  for (int n = 0; n < rows; ++n)
    for (int k = 0; k < K; ++k)
      w[static_cast<std::size_t>(n) * K + k] = tmp[static_cast<std::size_t>(n) * K + k] / s[k];
}

struct SearchResult {
  std::vector<float> scales;
  float alpha = 0;
  double loss = 0, loss_no_scale = 0;  // block-output MSE at the best s and with plain RTN
};

// Grid search of one group. `run_block(layer, out)` computes the block output over all tokens
// with the given layer weights; `linears` name the group's rows inside `layer`.
template <typename RunBlock>
SearchResult search_scales(const cpu::DecoderLayer& layer, const std::vector<RowRange>& linears,
                           const std::vector<float>& x_mean, int K, const QuantizeOptions& o,
                           RunBlock&& run_block) {
  std::vector<float> reference, out;
  run_block(layer, reference);
  auto trial_loss = [&](const std::vector<float>& s) {
    cpu::DecoderLayer trial = layer;
    for (const RowRange& r : linears)
      scale_fake_quantize(trial.*r.matrix, r.row0, r.rows, K, o.group_size, s);
    run_block(trial, out);
    return mse(out, reference);
  };
  const std::vector<float> w_mean = mean_normalised_weight(layer, linears, K, o.group_size);
  SearchResult best;
  best.loss_no_scale = trial_loss(std::vector<float>(K, 1.0f));
  best.loss = o.scale_grid > 0 ? INFINITY : best.loss_no_scale;  // no grid: s = 1
  best.scales.assign(K, 1.0f);
  for (int i = 0; i < o.scale_grid; ++i) {
    const float a = static_cast<float>(i) / static_cast<float>(o.scale_grid);
    std::vector<float> s = candidate_scales(x_mean, w_mean, a, o.duo_scaling);
    const double loss = trial_loss(s);
    if (loss < best.loss) {
      best.loss = loss;
      best.alpha = a;
      best.scales = std::move(s);
    }
  }
  return best;
}

// Clip search for W (N, K) with inputs x (T, K): the max |w| per (row, group) to clamp to.
std::vector<float> search_clip(const float* W, int N, int K, const std::vector<float>& x,
                               const QuantizeOptions& o) {
  const int G = o.group_size, groups = K / G;
  const std::int64_t T = static_cast<std::int64_t>(x.size()) / K;
  const std::int64_t step = std::max<std::int64_t>(1, T / o.clip_tokens);
  std::vector<float> xs;  // the kept tokens (Ts, K)
  for (std::int64_t t = 0; t < T; t += step)
    xs.insert(xs.end(), x.begin() + t * K, x.begin() + (t + 1) * K);
  const int Ts = static_cast<int>(xs.size() / K);
  const int steps = static_cast<int>(o.clip_max_shrink * static_cast<float>(o.clip_grid));
  std::vector<float> best_max(static_cast<std::size_t>(N) * groups);
  ThreadPool::global().parallel_for(N, [&](std::int64_t n0, std::int64_t n1) {
    std::vector<float> q(G), diff(G);
    for (std::int64_t n = n0; n < n1; ++n) {
      for (int g = 0; g < groups; ++g) {
        const float* w = W + static_cast<std::size_t>(n) * K + static_cast<std::size_t>(g) * G;
        float org_max = 0;
        for (int k = 0; k < G; ++k) org_max = std::max(org_max, std::fabs(w[k]));
        double best_err = INFINITY;
        float best = org_max;
        for (int i = 0; i < steps; ++i) {
          const float mx =
              org_max * (1.0f - static_cast<float>(i) / static_cast<float>(o.clip_grid));
          float lo = INFINITY, hi = -INFINITY;
          for (int k = 0; k < G; ++k) {
            q[k] = std::clamp(w[k], -mx, mx);
            lo = std::min(lo, q[k]);
            hi = std::max(hi, q[k]);
          }
          const AwqGroupParams p = awq_group_params(lo, hi);
          for (int k = 0; k < G; ++k)
            diff[k] =
                (static_cast<float>(awq_quantize_value(q[k], p)) - static_cast<float>(p.zero)) *
                    p.scale -
                w[k];
          double err = 0;
          for (int t = 0; t < Ts; ++t) {
            const float* xr =
                xs.data() + static_cast<std::size_t>(t) * K + static_cast<std::size_t>(g) * G;
            float d = 0;
            for (int k = 0; k < G; ++k) d += xr[k] * diff[k];
            err += static_cast<double>(d) * d;
          }
          if (err < best_err) {
            best_err = err;
            best = mx;
          }
        }
        best_max[static_cast<std::size_t>(n) * groups + g] = best;
      }
    }
  });
  return best_max;
}

void apply_clip(std::vector<float>& W, int row0, int rows, int K, int G,
                const std::vector<float>& max_abs) {
  const int groups = K / G;
  for (int n = 0; n < rows; ++n)
    for (int k = 0; k < K; ++k) {
      const float m = max_abs[static_cast<std::size_t>(n) * groups + k / G];
      float& w = W[static_cast<std::size_t>(row0 + n) * K + k];
      w = std::clamp(w, -m, m);
    }
}

void scale_columns(std::vector<float>& W, int row0, int rows, int K, const std::vector<float>& s) {
  for (int n = row0; n < row0 + rows; ++n)
    for (int k = 0; k < K; ++k) W[static_cast<std::size_t>(n) * K + k] *= s[k];
}

void divide_rows(std::vector<float>& W, int row0, int K, const std::vector<float>& s) {
  for (std::size_t r = 0; r < s.size(); ++r)
    for (int k = 0; k < K; ++k) W[(row0 + r) * K + k] /= s[r];
}

void divide_inputs(std::vector<float>& x, const std::vector<float>& s) {
  const std::int64_t K = static_cast<std::int64_t>(s.size());
  ThreadPool::global().parallel_for(
      static_cast<std::int64_t>(x.size()) / K,
      [&](std::int64_t t0, std::int64_t t1) {
        for (std::int64_t t = t0; t < t1; ++t)
          for (std::int64_t k = 0; k < K; ++k) x[t * K + k] /= s[k];
      },
      64);
}

}  // namespace

void fake_quantize_nk(const float* W, int N, int K, int G, float* out) {
  ThreadPool::global().parallel_for(
      N,
      [&](std::int64_t n0, std::int64_t n1) {
        for (std::int64_t n = n0; n < n1; ++n) {
          for (int g = 0; g < K; g += G) {
            const float* w = W + n * K + g;
            float* o = out + n * K + g;
            const auto [lo, hi] = std::minmax_element(w, w + G);
            const AwqGroupParams p = awq_group_params(*lo, *hi);
            for (int k = 0; k < G; ++k)
              o[k] =
                  (static_cast<float>(awq_quantize_value(w[k], p)) - static_cast<float>(p.zero)) *
                  p.scale;
          }
        }
      },
      std::max(1, 65536 / K));
}

nlohmann::json quantized_config(const nlohmann::json& original, int group_size) {
  nlohmann::json c = original;
  c["quantization_config"] = {{"quant_method", "awq"},    {"bits", 4},
                              {"group_size", group_size}, {"zero_point", true},
                              {"version", "gemm"},        {"modules_to_not_convert", nullptr}};
  c["torch_dtype"] = "float16";
  return c;
}

void quantize_model(const ModelWeights& weights,
                    const std::vector<std::vector<std::int32_t>>& samples, const QuantizeOptions& o,
                    CheckpointWriter& out,
                    const std::function<void(const QuantizeProgress&)>& progress) {
  const ModelConfig& c = weights.config();
  const int D = c.hidden_size, I = c.intermediate_size, V = c.vocab_size;
  const int qn = c.q_size(), kvn = c.kv_size(), G = o.group_size;
  if (c.quant.awq)
    throw std::invalid_argument(
        "the model is already AWQ-quantized; quantize needs fp16, bf16 or fp32 weights");
  if (G != 32 && G != 64 && G != 128)
    throw std::invalid_argument("group size " + std::to_string(G) + " is not one of 32, 64, 128");
  check_linear("q_proj", D, qn, G);
  check_linear("k_proj/v_proj", D, kvn, G);
  check_linear("o_proj", qn, D, G);
  check_linear("gate_proj/up_proj", D, I, G);
  check_linear("down_proj", I, D, G);
  const bool awq = o.method == QuantMethod::kAwq;
  if (awq && samples.empty()) throw std::invalid_argument("AWQ needs calibration samples");
  const int seq_len = samples.empty() ? 0 : static_cast<int>(samples[0].size());
  for (const auto& s : samples) {
    if (static_cast<int>(s.size()) != seq_len || seq_len == 0)
      throw std::invalid_argument("calibration samples must all have the same, non-zero length");
    for (auto t : s)
      if (t < 0 || t >= V)
        throw std::invalid_argument("calibration token id " + std::to_string(t) +
                                    " outside the vocabulary");
  }

  const auto start = Clock::now();
  out.add_f16(
      "model.embed_tokens.weight", {V, D},
      std::vector<half_bits>(weights.embed(), weights.embed() + static_cast<std::size_t>(V) * D));

  // The residual stream of every calibration token, (T, hidden), in fp16 precision.
  const std::int64_t T = static_cast<std::int64_t>(samples.size()) * seq_len;
  std::vector<float> x(static_cast<std::size_t>(T) * D);
  for (std::size_t s = 0; s < samples.size(); ++s)
    for (int p = 0; p < seq_len; ++p) {
      const half_bits* e = weights.embed() + static_cast<std::size_t>(samples[s][p]) * D;
      float* dst = &x[(s * seq_len + p) * D];
      for (int i = 0; i < D; ++i) dst[i] = half_to_float(e[i]);
    }
  Chunks chunks(static_cast<int>(samples.size()), std::max(seq_len, 1), o.chunk_tokens, c);
  const std::vector<float> inv_freq = cpu::rope_inv_freq(c);

  for (int li = 0; li < c.num_layers; ++li) {
    cpu::DecoderLayer L = cpu::widen_layer(weights.layers()[li], c);
    std::string detail;
    if (awq) {
      // 1. The original layer over all samples, keeping each group's input.
      cpu::LinearInputs in, part;
      in.qkv.reserve(static_cast<std::size_t>(T) * D);
      in.o.reserve(static_cast<std::size_t>(T) * qn);
      in.gate_up.reserve(static_cast<std::size_t>(T) * D);
      in.down.reserve(static_cast<std::size_t>(T) * I);
      for (int ch = 0; ch < chunks.count(); ++ch) {
        float* xc = x.data() + chunks.first_token(ch) * D;
        cpu::decoder_layer(c, L, inv_freq.data(), xc, chunks.tokens(ch), chunks.cache(),
                           chunks.meta(ch), &part);
        in.qkv.insert(in.qkv.end(), part.qkv.begin(), part.qkv.end());
        in.o.insert(in.o.end(), part.o.begin(), part.o.end());
        in.gate_up.insert(in.gate_up.end(), part.gate_up.begin(), part.gate_up.end());
        in.down.insert(in.down.end(), part.down.begin(), part.down.end());
      }
      for (auto& v : x) v = round_to_half(v);

      // 2. Scale search, every group against the original layer.
      auto attention = [&](const cpu::DecoderLayer& l, std::vector<float>& y) {
        over_chunks(chunks, in.qkv, D, y, D, [&](const float* h, int n, float* dst, int ch) {
          cpu::attention_block(c, l, inv_freq.data(), h, n, chunks.cache(), chunks.meta(ch), dst);
        });
      };
      auto o_proj = [&](const cpu::DecoderLayer& l, std::vector<float>& y) {
        over_chunks(chunks, in.o, qn, y, D, [&](const float* h, int n, float* dst, int) {
          cpu::matmul_nt(h, l.wo.data(), nullptr, dst, n, D, qn);
        });
      };
      auto mlp = [&](const cpu::DecoderLayer& l, std::vector<float>& y) {
        over_chunks(chunks, in.gate_up, D, y, D, [&](const float* h, int n, float* dst, int) {
          cpu::mlp_block(c, l, h, n, dst);
        });
      };
      auto down = [&](const cpu::DecoderLayer& l, std::vector<float>& y) {
        over_chunks(chunks, in.down, I, y, D, [&](const float* h, int n, float* dst, int) {
          cpu::matmul_nt(h, l.wdown.data(), nullptr, dst, n, D, I);
        });
      };
      using M = cpu::DecoderLayer;
      const bool scale_o =
          kvn == D && qn == D;  // v's weight (kv, hidden) has o's shape (hidden, q)
      const SearchResult s_qkv = search_scales(L, {{&M::wqkv, 0, qn + 2 * kvn}},
                                               mean_abs_per_channel(in.qkv, D), D, o, attention);
      SearchResult s_o;
      if (scale_o)
        s_o = search_scales(L, {{&M::wo, 0, D}}, mean_abs_per_channel(in.o, qn), qn, o, o_proj);
      const SearchResult s_mlp = search_scales(L, {{&M::wgate_up, 0, 2 * I}},
                                               mean_abs_per_channel(in.gate_up, D), D, o, mlp);
      const SearchResult s_down =
          search_scales(L, {{&M::wdown, 0, D}}, mean_abs_per_channel(in.down, I), I, o, down);

      // 3. Fold 1/s into what precedes each group.
      for (int k = 0; k < D; ++k) L.input_norm[k] /= s_qkv.scales[k];
      scale_columns(L.wqkv, 0, qn + 2 * kvn, D, s_qkv.scales);
      divide_inputs(in.qkv, s_qkv.scales);
      if (scale_o) {
        divide_rows(L.wqkv, qn + kvn, D, s_o.scales);
        if (!L.bqkv.empty())
          for (int r = 0; r < kvn; ++r) L.bqkv[qn + kvn + r] /= s_o.scales[r];
        scale_columns(L.wo, 0, D, qn, s_o.scales);
        divide_inputs(in.o, s_o.scales);
      }
      for (int k = 0; k < D; ++k) L.post_attn_norm[k] /= s_mlp.scales[k];
      scale_columns(L.wgate_up, 0, 2 * I, D, s_mlp.scales);
      divide_inputs(in.gate_up, s_mlp.scales);
      divide_rows(L.wgate_up, I, D, s_down.scales);
      scale_columns(L.wdown, 0, D, I, s_down.scales);
      divide_inputs(in.down, s_down.scales);

      // 4. Clip search for every linear but q and k.
      auto clip = [&](std::vector<float>& W, int row0, int rows, int K,
                      const std::vector<float>& x_in) {
        const std::vector<float> m =
            search_clip(W.data() + static_cast<std::size_t>(row0) * K, rows, K, x_in, o);
        apply_clip(W, row0, rows, K, G, m);
      };
      clip(L.wqkv, qn + kvn, kvn, D, in.qkv);
      clip(L.wo, 0, D, qn, in.o);
      clip(L.wgate_up, 0, I, D, in.gate_up);
      clip(L.wgate_up, I, I, D, in.gate_up);
      clip(L.wdown, 0, D, I, in.down);

      // What was chosen, and the block-output MSE relative to plain RTN's.
      auto describe = [&detail](const char* group, const SearchResult& r) {
        char buf[64];
        std::snprintf(buf, sizeof buf, "%s%s a=%.2f mse x%.2f", detail.empty() ? "" : ", ", group,
                      r.alpha, r.loss_no_scale > 0 ? r.loss / r.loss_no_scale : 1.0);
        detail += buf;
      };
      describe("qkv", s_qkv);
      if (scale_o) describe("o", s_o);
      describe("gate_up", s_mlp);
      describe("down", s_down);
    }

    // 5. Quantize and pack, in the order Hugging Face writes a layer.
    const std::string p = "model.layers." + std::to_string(li) + ".";
    const float* b = L.bqkv.empty() ? nullptr : L.bqkv.data();
    add_quantized(out, p + "self_attn.q_proj", L.wqkv.data(), qn, D, G, b);
    add_quantized(out, p + "self_attn.k_proj", L.wqkv.data() + static_cast<std::size_t>(qn) * D,
                  kvn, D, G, b ? b + qn : nullptr);
    add_quantized(out, p + "self_attn.v_proj",
                  L.wqkv.data() + static_cast<std::size_t>(qn + kvn) * D, kvn, D, G,
                  b ? b + qn + kvn : nullptr);
    add_quantized(out, p + "self_attn.o_proj", L.wo.data(), D, qn, G, nullptr);
    if (c.qk_norm) {
      out.add_f16_from_float(p + "self_attn.q_norm.weight", {c.head_dim}, L.q_norm);
      out.add_f16_from_float(p + "self_attn.k_norm.weight", {c.head_dim}, L.k_norm);
    }
    add_quantized(out, p + "mlp.gate_proj", L.wgate_up.data(), I, D, G, nullptr);
    add_quantized(out, p + "mlp.up_proj", L.wgate_up.data() + static_cast<std::size_t>(I) * D, I, D,
                  G, nullptr);
    add_quantized(out, p + "mlp.down_proj", L.wdown.data(), D, I, G, nullptr);
    out.add_f16_from_float(p + "input_layernorm.weight", {D}, L.input_norm);
    out.add_f16_from_float(p + "post_attention_layernorm.weight", {D}, L.post_attn_norm);

    if (progress) {
      QuantizeProgress pr;
      pr.layer = li + 1;
      pr.num_layers = c.num_layers;
      pr.elapsed_s = std::chrono::duration<double>(Clock::now() - start).count();
      pr.eta_s = pr.elapsed_s / pr.layer * (pr.num_layers - pr.layer);
      pr.detail = detail;
      progress(pr);
    }
  }
  out.add_f16("model.norm.weight", {D},
              std::vector<half_bits>(weights.final_norm(), weights.final_norm() + D));
  if (!c.tie_word_embeddings)
    out.add_f16("lm_head.weight", {V, D},
                std::vector<half_bits>(weights.lm_head(),
                                       weights.lm_head() + static_cast<std::size_t>(V) * D));
}

}  // namespace awqd
