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
    Layer& out = layers_[i];
    out.weights = cpu::widen_layer(w.layers()[i], c);
    out.k_cache.assign(cache_elems, 0.0f);
    out.v_cache.assign(cache_elems, 0.0f);
  }
}

std::string CpuExecutor::describe() const {
  return std::string("cpu fp32, ") + std::to_string(num_blocks_) + " KV blocks of " +
         std::to_string(kKvBlockSize) + " tokens";
}

void CpuExecutor::submit(const StepBatch& batch) {
  if (pending_) throw std::logic_error("CpuExecutor::submit: the previous step was not waited for");
  pending_ = run(batch);
}

StepResult CpuExecutor::wait() {
  if (!pending_) throw std::logic_error("CpuExecutor::wait: no step was submitted");
  StepResult result = std::move(*pending_);
  pending_.reset();
  return result;
}

StepResult CpuExecutor::run(const StepBatch& batch) {
  const ModelConfig& c = config_;
  const int T = batch.num_tokens(), B = batch.num_seqs();
  const int D = c.hidden_size;
  const int V = c.vocab_size;
  if (T == 0) return {};
  for (int t = 0; t < T; ++t)
    if (batch.token_ids[t] < 0 || batch.token_ids[t] >= V)
      throw std::invalid_argument("token id " + std::to_string(batch.token_ids[t]) + " outside the vocabulary");

  std::vector<float> x(static_cast<std::size_t>(T) * D);
  for (int t = 0; t < T; ++t)
    std::memcpy(&x[static_cast<std::size_t>(t) * D], &embed_[static_cast<std::size_t>(batch.token_ids[t]) * D], D * sizeof(float));

  const cpu::AttentionMeta meta{batch.positions.data(), batch.cu_seqlens_q.data(), batch.slot_mapping.data(),
                                batch.block_tables.data(), batch.max_blocks_per_seq, B};
  for (Layer& L : layers_) {
    const cpu::PagedKv cache{L.k_cache.data(), L.v_cache.data(), c.num_kv_heads, c.head_dim, kKvBlockSize};
    cpu::decoder_layer(c, L.weights, inv_freq_.data(), x.data(), T, cache, meta);
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
