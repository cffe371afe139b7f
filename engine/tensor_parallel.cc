#include "engine/tensor_parallel.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <stdexcept>

namespace awqd {

namespace {

// Splits [0, n) into `parts` contiguous spans whose inner boundaries are multiples of `unit`
// (n itself need not be), as evenly as whole units allow; the first spans take the extra units.
// Empty when there are fewer units than parts.
std::vector<Span> split(int n, int unit, int parts) {
  const int units = (n + unit - 1) / unit;
  if (units < parts) return {};
  std::vector<Span> out;
  int at = 0;
  for (int r = 0; r < parts; ++r) {
    const int take = units / parts + (r < units % parts ? 1 : 0);
    const int end = std::min(n, (at / unit + take) * unit);
    out.push_back({at, end});
    at = end;
  }
  return out;
}

// Smallest count of `item`-sized pieces whose total is a multiple of `align`.
int unit_for(int item, int align) { return align / std::gcd(item, align); }

std::string sizes(const std::vector<RankShard>& ranks, Span RankShard::*field) {
  std::string s;
  for (const RankShard& r : ranks) s += (s.empty() ? "" : "/") + std::to_string((r.*field).size());
  return s;
}

// The plan, or an empty plan with `why` set.
TensorParallelPlan try_plan(const ModelConfig& c, int tp, std::string& why) {
  TensorParallelPlan plan;
  plan.tp = tp;
  const int H = c.num_heads, KV = c.num_kv_heads, hd = c.head_dim, g = H / KV;
  // Row shards (o_proj, down_proj) start on a group boundary: G rows quantized, 8 rows fp16.
  const int align = c.quant.awq ? c.quant.group_size : 8;
  const std::string align_what = c.quant.awq ? "the AWQ group size " + std::to_string(align)
                                             : std::string("8 (fp16 alignment)");

  std::vector<Span> kv_spans = split(KV, unit_for(g * hd, align), tp);
  if (!kv_spans.empty()) {
    for (const Span& kv : kv_spans) {
      RankShard s;
      s.kv_heads = kv;
      s.q_heads = {kv.begin * g, kv.end * g};
      plan.ranks.push_back(s);
    }
  } else if (tp > KV) {
    // Fewer KV heads than ranks: the ranks rank_groups[k] share KV head k and split its g query
    // heads.
    plan.kv_replicated = true;
    const int q_unit = unit_for(hd, align);
    const std::vector<Span> rank_groups = split(tp, 1, KV);
    for (int k = 0; k < KV; ++k) {
      const std::vector<Span> q = split(g, q_unit, rank_groups[k].size());
      if (q.empty()) {
        why = std::to_string(rank_groups[k].size()) + " GPUs share KV head " + std::to_string(k) +
              ", but its " + std::to_string(g) + " query heads of head_dim " + std::to_string(hd) +
              " cannot be split on o_proj rows that are multiples of " + align_what;
        return {};
      }
      if (k > 0 && (k * g * hd) % align != 0) {
        why = "KV head " + std::to_string(k) + "'s query heads start at o_proj row " +
              std::to_string(k * g * hd) + ", not a multiple of " + align_what;
        return {};
      }
      for (const Span& part : q) {
        RankShard s;
        s.kv_heads = {k, k + 1};
        s.q_heads = {k * g + part.begin, k * g + part.end};
        plan.ranks.push_back(s);
      }
    }
  } else {
    why = "its " + std::to_string(KV) + " KV heads (" + std::to_string(g) +
          " query heads of head_dim " + std::to_string(hd) + " each) cannot be split into " +
          std::to_string(tp) + " ranges whose o_proj rows start at multiples of " + align_what;
    return {};
  }

  const std::vector<Span> inter = split(c.intermediate_size, align, tp);
  if (inter.empty()) {
    why = "its intermediate_size " + std::to_string(c.intermediate_size) + " has fewer than " +
          std::to_string(tp) + " multiples of " + align_what;
    return {};
  }
  const std::vector<Span> vocab = split(c.vocab_size, 8, tp);
  if (vocab.empty()) {
    why = "its vocabulary of " + std::to_string(c.vocab_size) + " is too small";
    return {};
  }
  for (int r = 0; r < tp; ++r) {
    plan.ranks[r].inter = inter[r];
    plan.ranks[r].vocab = vocab[r];
  }
  return plan;
}

}  // namespace

std::string TensorParallelPlan::describe() const {
  return "tp " + std::to_string(tp) + ": q heads " + sizes(ranks, &RankShard::q_heads) +
         ", kv heads " + sizes(ranks, &RankShard::kv_heads) +
         (kv_replicated ? " (replicated)" : "") + ", intermediate " +
         sizes(ranks, &RankShard::inter) + ", vocab " + sizes(ranks, &RankShard::vocab);
}

TensorParallelPlan plan_tensor_parallel(const ModelConfig& c, int tp) {
  if (tp < 1)
    throw std::runtime_error("tensor_parallel must be at least 1 (got " + std::to_string(tp) + ")");
  if (c.num_kv_heads <= 0 || c.num_heads % c.num_kv_heads != 0)
    throw std::runtime_error("num_attention_heads " + std::to_string(c.num_heads) +
                             " is not a multiple of num_key_value_heads " +
                             std::to_string(c.num_kv_heads));
  std::string why;
  TensorParallelPlan plan = try_plan(c, tp, why);
  if (!plan.ranks.empty()) return plan;
  std::string ok;
  for (int t = 1; t <= 8; ++t) {
    std::string ignored;
    if (!try_plan(c, t, ignored).ranks.empty()) ok += (ok.empty() ? "" : ", ") + std::to_string(t);
  }
  throw std::runtime_error("tensor_parallel = " + std::to_string(tp) +
                           " cannot split this model: " + why +
                           ". Degrees that can: " + (ok.empty() ? "none up to 8" : ok) + ".");
}

ModelConfig rank_config(const ModelConfig& c, const RankShard& s) {
  ModelConfig r = c;
  r.num_heads = s.q_heads.size();
  r.num_kv_heads = s.kv_heads.size();
  r.intermediate_size = s.inter.size();
  return r;
}

LinearShard column_shard(const LinearWeight& w, Span n) {
  if (n.begin % 8 != 0 || (n.end % 8 != 0 && n.end != w.N) || n.begin < 0 || n.end > w.N ||
      n.size() <= 0)
    throw std::logic_error(w.name + ": bad column shard [" + std::to_string(n.begin) + ", " +
                           std::to_string(n.end) + ")");
  LinearShard s;
  s.weight = w;
  s.weight.N = n.size();
  if (n.size() == w.N) return s;
  const std::size_t cols = static_cast<std::size_t>(n.size());
  if (w.quantized) {
    const int groups = w.K / w.group_size;
    const std::size_t words = cols / 8, src_words = static_cast<std::size_t>(w.N) / 8;
    s.qweight.resize(static_cast<std::size_t>(w.K) * words);
    for (int k = 0; k < w.K; ++k)
      std::memcpy(&s.qweight[k * words], w.qweight + k * src_words + n.begin / 8, words * 4);
    s.qzeros.resize(static_cast<std::size_t>(groups) * words);
    s.scales.resize(static_cast<std::size_t>(groups) * cols);
    for (int gi = 0; gi < groups; ++gi) {
      std::memcpy(&s.qzeros[gi * words], w.qzeros + gi * src_words + n.begin / 8, words * 4);
      std::memcpy(&s.scales[gi * cols], w.scales + static_cast<std::size_t>(gi) * w.N + n.begin,
                  cols * 2);
    }
    s.weight.qweight = s.qweight.data();
    s.weight.qzeros = s.qzeros.data();
    s.weight.scales = s.scales.data();
  } else {
    s.weight.weight = w.weight + static_cast<std::size_t>(n.begin) * w.K;  // rows of (N, K)
  }
  if (w.bias) s.weight.bias = w.bias + n.begin;
  return s;
}

LinearShard row_shard(const LinearWeight& w, Span k, bool keep_bias) {
  const int align = w.quantized ? w.group_size : 8;
  if (k.begin % align != 0 || (k.end % align != 0 && k.end != w.K) || k.begin < 0 || k.end > w.K ||
      k.size() <= 0)
    throw std::logic_error(w.name + ": bad row shard [" + std::to_string(k.begin) + ", " +
                           std::to_string(k.end) + ")");
  LinearShard s;
  s.weight = w;
  s.weight.K = k.size();
  if (!keep_bias) s.weight.bias = nullptr;
  if (k.size() == w.K) return s;
  if (w.quantized) {
    const std::size_t words = static_cast<std::size_t>(w.N) / 8,
                      g0 = static_cast<std::size_t>(k.begin / w.group_size);
    s.weight.qweight = w.qweight + static_cast<std::size_t>(k.begin) * words;
    s.weight.qzeros = w.qzeros + g0 * words;
    s.weight.scales = w.scales + g0 * w.N;
  } else {
    const std::size_t rows = static_cast<std::size_t>(k.size());
    s.dense.resize(static_cast<std::size_t>(w.N) * rows);
    for (int n = 0; n < w.N; ++n)
      std::memcpy(&s.dense[n * rows], w.weight + static_cast<std::size_t>(n) * w.K + k.begin,
                  rows * 2);
    s.weight.weight = s.dense.data();
  }
  return s;
}

LayerShard shard_layer(const LayerWeights& L, const ModelConfig& c, const RankShard& s,
                       bool rank0) {
  const int hd = c.head_dim;
  LayerShard out;
  out.q = column_shard(L.q, {s.q_heads.begin * hd, s.q_heads.end * hd});
  out.k = column_shard(L.k, {s.kv_heads.begin * hd, s.kv_heads.end * hd});
  out.v = column_shard(L.v, {s.kv_heads.begin * hd, s.kv_heads.end * hd});
  out.o = row_shard(L.o, {s.q_heads.begin * hd, s.q_heads.end * hd}, rank0);
  out.gate = column_shard(L.gate, s.inter);
  out.up = column_shard(L.up, s.inter);
  out.down = row_shard(L.down, s.inter, rank0);
  out.weights = L;
  out.weights.q = out.q.weight;
  out.weights.k = out.k.weight;
  out.weights.v = out.v.weight;
  out.weights.o = out.o.weight;
  out.weights.gate = out.gate.weight;
  out.weights.up = out.up.weight;
  out.weights.down = out.down.weight;
  return out;
}

}  // namespace awqd
