#include "engine/cpu_layer.h"

#include <algorithm>

namespace awqd::cpu {

namespace {

std::vector<float> widen(const half_bits* src, std::size_t n) {
  std::vector<float> out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = half_to_float(src[i]);
  return out;
}

void append(std::vector<float>& dst, const std::vector<float>& src) {
  dst.insert(dst.end(), src.begin(), src.end());
}

}  // namespace

DecoderLayer widen_layer(const LayerWeights& L, const ModelConfig& c) {
  DecoderLayer out;
  out.input_norm = widen(L.input_norm, c.hidden_size);
  out.post_attn_norm = widen(L.post_attn_norm, c.hidden_size);
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
  return out;
}

void attention_block(const ModelConfig& c, const DecoderLayer& L, const float* inv_freq,
                     const float* h, int T, const PagedKv& cache, const AttentionMeta& meta,
                     float* out, std::vector<float>* o_input) {
  const int D = c.hidden_size, hd = c.head_dim;
  const int qn = c.q_size(), kvn = c.kv_size(), qkv_n = qn + 2 * kvn;
  std::vector<float> qkv(static_cast<std::size_t>(T) * qkv_n);
  std::vector<float> q(static_cast<std::size_t>(T) * qn), k(static_cast<std::size_t>(T) * kvn),
      v(k.size());
  cpu::matmul_nt(h, L.wqkv.data(), L.bqkv.empty() ? nullptr : L.bqkv.data(), qkv.data(), T, qkv_n,
                 D);
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
  cpu::apply_rope(q.data(), meta.positions, T, c.num_heads, hd, inv_freq);
  cpu::apply_rope(k.data(), meta.positions, T, c.num_kv_heads, hd, inv_freq);
  cpu::write_kv(cache, k.data(), v.data(), meta.slot_mapping, T);
  std::vector<float> attn_local;
  std::vector<float>& attn = o_input ? *o_input : attn_local;
  attn.resize(q.size());
  cpu::paged_attention(q.data(), cache, meta.cu_seqlens_q, meta.positions, meta.block_tables,
                       meta.max_blocks_per_seq, meta.num_seqs, c.num_heads, attn.data());
  cpu::matmul_nt(attn.data(), L.wo.data(), nullptr, out, T, D, qn);
}

void mlp_block(const ModelConfig& c, const DecoderLayer& L, const float* h, int T, float* out,
               std::vector<float>* down_input) {
  const int D = c.hidden_size, I = c.intermediate_size;
  std::vector<float> gate_up(static_cast<std::size_t>(T) * 2 * I);
  std::vector<float> act_local;
  std::vector<float>& act = down_input ? *down_input : act_local;
  act.resize(static_cast<std::size_t>(T) * I);
  cpu::matmul_nt(h, L.wgate_up.data(), nullptr, gate_up.data(), T, 2 * I, D);
  for (int t = 0; t < T; ++t) {
    const float* row = &gate_up[static_cast<std::size_t>(t) * 2 * I];
    cpu::silu_mul(row, row + I, &act[static_cast<std::size_t>(t) * I], I);
  }
  cpu::matmul_nt(act.data(), L.wdown.data(), nullptr, out, T, D, I);
}

void decoder_layer(const ModelConfig& c, const DecoderLayer& L, const float* inv_freq, float* x,
                   int T, const PagedKv& cache, const AttentionMeta& meta, LinearInputs* inputs) {
  const std::size_t n = static_cast<std::size_t>(T) * c.hidden_size;
  std::vector<float> h(n), proj(n);
  cpu::rms_norm(x, L.input_norm.data(), h.data(), T, c.hidden_size, c.rms_norm_eps);
  if (inputs) inputs->qkv = h;
  attention_block(c, L, inv_freq, h.data(), T, cache, meta, proj.data(),
                  inputs ? &inputs->o : nullptr);
  for (std::size_t i = 0; i < n; ++i) x[i] += proj[i];
  cpu::rms_norm(x, L.post_attn_norm.data(), h.data(), T, c.hidden_size, c.rms_norm_eps);
  if (inputs) inputs->gate_up = h;
  mlp_block(c, L, h.data(), T, proj.data(), inputs ? &inputs->down : nullptr);
  for (std::size_t i = 0; i < n; ++i) x[i] += proj[i];
}

}  // namespace awqd::cpu
