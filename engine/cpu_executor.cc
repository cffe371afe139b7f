#include "engine/cpu_executor.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "engine/thread_pool.h"

namespace awqd {

namespace {

std::vector<float> widen(const half_bits* src, std::size_t n) {
  std::vector<float> out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = half_to_float(src[i]);
  return out;
}

void append(std::vector<float>& dst, const std::vector<float>& src) { dst.insert(dst.end(), src.begin(), src.end()); }

}  // namespace

CpuExecutor::CpuExecutor(const ModelWeights& w, std::int64_t kv_cache_bytes, int num_blocks)
    : config_(w.config()) {
  const ModelConfig& c = config_;
  const std::size_t D = c.hidden_size, V = c.vocab_size;
  embed_ = widen(w.embed(), V * D);
  if (!c.tie_word_embeddings) lm_head_ = widen(w.lm_head(), V * D);
  final_norm_ = widen(w.final_norm(), D);
  inv_freq_ = cpu::rope_inv_freq(c);

  const std::int64_t block_bytes = 2ll * c.num_layers * c.num_kv_heads * kKvBlockSize * c.head_dim * sizeof(float);
  num_blocks_ = num_blocks > 0 ? num_blocks : static_cast<int>(kv_cache_bytes / block_bytes);
  if (num_blocks_ < 1)
    throw std::runtime_error("CPU KV cache of " + std::to_string(kv_cache_bytes) +
                             " bytes holds no block (one block needs " + std::to_string(block_bytes) + ")");
  const std::size_t cache_elems = static_cast<std::size_t>(num_blocks_) * c.num_kv_heads * kKvBlockSize * c.head_dim;

  layers_.resize(c.num_layers);
  for (int i = 0; i < c.num_layers; ++i) {
    const LayerWeights& L = w.layers()[i];
    Layer& out = layers_[i];
    out.input_norm = widen(L.input_norm, D);
    out.post_attn_norm = widen(L.post_attn_norm, D);
    if (c.qk_norm) {
      out.q_norm = widen(L.q_norm, c.head_dim);
      out.k_norm = widen(L.k_norm, c.head_dim);
    }
    out.wqkv = L.q.dense_nk();
    append(out.wqkv, L.k.dense_nk());
    append(out.wqkv, L.v.dense_nk());
    if (c.attention_bias) {
      out.bqkv = widen(L.q.bias, L.q.N);
      append(out.bqkv, widen(L.k.bias, L.k.N));
      append(out.bqkv, widen(L.v.bias, L.v.N));
    }
    out.wo = L.o.dense_nk();
    out.wgate_up = L.gate.dense_nk();
    append(out.wgate_up, L.up.dense_nk());
    out.wdown = L.down.dense_nk();
    out.k_cache.assign(cache_elems, 0.0f);
    out.v_cache.assign(cache_elems, 0.0f);
  }
}

std::string CpuExecutor::describe() const {
  return std::string("cpu fp32, ") + std::to_string(num_blocks_) + " KV blocks of " +
         std::to_string(kKvBlockSize) + " tokens";
}

StepResult CpuExecutor::execute(const StepBatch& batch) {
  const ModelConfig& c = config_;
  const int T = batch.num_tokens(), B = batch.num_seqs();
  const int D = c.hidden_size, I = c.intermediate_size, hd = c.head_dim;
  const int qn = c.q_size(), kvn = c.kv_size(), qkv_n = qn + 2 * kvn;
  const int V = c.vocab_size;
  if (T == 0) return {};
  for (int t = 0; t < T; ++t)
    if (batch.token_ids[t] < 0 || batch.token_ids[t] >= V)
      throw std::invalid_argument("token id " + std::to_string(batch.token_ids[t]) + " outside the vocabulary");

  std::vector<float> x(static_cast<std::size_t>(T) * D), h(x.size());
  for (int t = 0; t < T; ++t)
    std::memcpy(&x[static_cast<std::size_t>(t) * D], &embed_[static_cast<std::size_t>(batch.token_ids[t]) * D], D * sizeof(float));

  std::vector<float> qkv(static_cast<std::size_t>(T) * qkv_n);
  std::vector<float> q(static_cast<std::size_t>(T) * qn), k(static_cast<std::size_t>(T) * kvn), v(k.size());
  std::vector<float> attn(q.size()), proj(x.size());
  std::vector<float> gate_up(static_cast<std::size_t>(T) * 2 * I), act(static_cast<std::size_t>(T) * I);

  for (int li = 0; li < c.num_layers; ++li) {
    Layer& L = layers_[li];
    cpu::rms_norm(x.data(), L.input_norm.data(), h.data(), T, D, c.rms_norm_eps);
    cpu::matmul_nt(h.data(), L.wqkv.data(), L.bqkv.empty() ? nullptr : L.bqkv.data(), qkv.data(), T, qkv_n, D);
    for (int t = 0; t < T; ++t) {
      const float* row = &qkv[static_cast<std::size_t>(t) * qkv_n];
      std::copy(row, row + qn, &q[static_cast<std::size_t>(t) * qn]);
      std::copy(row + qn, row + qn + kvn, &k[static_cast<std::size_t>(t) * kvn]);
      std::copy(row + qn + kvn, row + qkv_n, &v[static_cast<std::size_t>(t) * kvn]);
    }
    if (c.qk_norm) {
      cpu::rms_norm(q.data(), L.q_norm.data(), q.data(), T * c.num_heads, hd, c.rms_norm_eps);
      cpu::rms_norm(k.data(), L.k_norm.data(), k.data(), T * c.num_kv_heads, hd, c.rms_norm_eps);
    }
    cpu::apply_rope(q.data(), batch.positions.data(), T, c.num_heads, hd, inv_freq_.data());
    cpu::apply_rope(k.data(), batch.positions.data(), T, c.num_kv_heads, hd, inv_freq_.data());
    const cpu::PagedKv cache{L.k_cache.data(), L.v_cache.data(), c.num_kv_heads, hd, kKvBlockSize};
    cpu::write_kv(cache, k.data(), v.data(), batch.slot_mapping.data(), T);
    cpu::paged_attention(q.data(), cache, batch.cu_seqlens_q.data(), batch.positions.data(),
                         batch.block_tables.data(), batch.max_blocks_per_seq, B, c.num_heads, attn.data());
    cpu::matmul_nt(attn.data(), L.wo.data(), nullptr, proj.data(), T, D, qn);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] += proj[i];

    cpu::rms_norm(x.data(), L.post_attn_norm.data(), h.data(), T, D, c.rms_norm_eps);
    cpu::matmul_nt(h.data(), L.wgate_up.data(), nullptr, gate_up.data(), T, 2 * I, D);
    for (int t = 0; t < T; ++t) {
      const float* row = &gate_up[static_cast<std::size_t>(t) * 2 * I];
      cpu::silu_mul(row, row + I, &act[static_cast<std::size_t>(t) * I], I);
    }
    cpu::matmul_nt(act.data(), L.wdown.data(), nullptr, proj.data(), T, D, I);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] += proj[i];
  }

  // Logits only for the rows that need them: each sampling sequence's last token, then the
  // explicitly requested rows.
  std::vector<std::int32_t> rows;
  for (int b : batch.sample_seqs) rows.push_back(batch.cu_seqlens_q[b + 1] - 1);
  rows.insert(rows.end(), batch.logits_rows.begin(), batch.logits_rows.end());
  const int R = static_cast<int>(rows.size());
  std::vector<float> hr(static_cast<std::size_t>(R) * D), logits(static_cast<std::size_t>(R) * V);
  for (int r = 0; r < R; ++r)
    std::memcpy(&hr[static_cast<std::size_t>(r) * D], &x[static_cast<std::size_t>(rows[r]) * D], D * sizeof(float));
  cpu::rms_norm(hr.data(), final_norm_.data(), hr.data(), R, D, c.rms_norm_eps);
  cpu::matmul_nt(hr.data(), lm_head_.empty() ? embed_.data() : lm_head_.data(), nullptr, logits.data(), R, V, D);

  StepResult result;
  const std::size_t S = batch.sample_seqs.size();
  result.samples.resize(S);
  ThreadPool::global().parallel_for(static_cast<std::int64_t>(S), [&](std::int64_t s0, std::int64_t s1) {
    for (std::int64_t s = s0; s < s1; ++s) {
      std::span<float> row(&logits[s * V], V);
      result.samples[s] = sample_token(row, batch.sample_contexts[s]);
    }
  });
  result.logits.assign(logits.begin() + static_cast<std::ptrdiff_t>(S * V), logits.end());
  return result;
}

}  // namespace awqd
