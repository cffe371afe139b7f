// One decoder layer on the CPU in fp32, built from the reference ops (engine/cpu_ops.h). The CPU
// executor runs it over the paged KV cache of a scheduler step; the quantizer (engine/quantize.h)
// runs it over calibration samples and re-runs its two blocks with candidate weights.
//
//   x += attention_block(rms_norm(x) * input_norm)        q,k,v -> RoPE -> attention -> o
//   x += mlp_block(rms_norm(x) * post_attn_norm)          down(silu(gate) * up)
#pragma once

#include <cstdint>
#include <vector>

#include "engine/cpu_ops.h"
#include "engine/model_config.h"
#include "engine/model_weights.h"

namespace awqd::cpu {

// A layer's weights widened to fp32 (AWQ weights dequantized), in nn.Linear (N, K) layout.
struct DecoderLayer {
  std::vector<float> input_norm, post_attn_norm;  // (hidden)
  std::vector<float> q_norm, k_norm;              // (head_dim), Qwen3 only
  std::vector<float> wqkv;      // (q + 2 kv, hidden): q, k and v stacked (one matmul)
  std::vector<float> bqkv;      // (q + 2 kv) or empty
  std::vector<float> wo;        // (hidden, q)
  std::vector<float> wgate_up;  // (2 * inter, hidden): gate then up
  std::vector<float> wdown;     // (hidden, inter)
};

DecoderLayer widen_layer(const LayerWeights& weights, const ModelConfig& config);

// The attention metadata of a step (the StepBatch fields of the same names).
struct AttentionMeta {
  const std::int32_t* positions = nullptr;     // [T]
  const std::int32_t* cu_seqlens_q = nullptr;  // [num_seqs + 1]
  const std::int32_t* slot_mapping = nullptr;  // [T]
  const std::int32_t* block_tables = nullptr;  // [num_seqs * max_blocks_per_seq]
  int max_blocks_per_seq = 0;
  int num_seqs = 0;
};

// The inputs of each linear group, as a layer forward saw them (for AWQ calibration).
struct LinearInputs {
  std::vector<float> qkv;      // (T, hidden): input_norm output, the input of q, k and v
  std::vector<float> o;        // (T, q): attention output, the input of o
  std::vector<float> gate_up;  // (T, hidden): post_attn_norm output, the input of gate and up
  std::vector<float> down;     // (T, inter): silu(gate) * up, the input of down
};

// out (T, hidden) = o(attention(q, k, v of h)) for normed input h (T, hidden). Writes the new
// tokens' K/V into `cache`. o_input, when given, receives the attention output (T, q).
void attention_block(const ModelConfig& config, const DecoderLayer& layer, const float* inv_freq,
                     const float* h, int T, const PagedKv& cache, const AttentionMeta& meta,
                     float* out, std::vector<float>* o_input = nullptr);

// out (T, hidden) = down(silu(gate(h)) * up(h)). down_input, when given, receives silu * up (T,
// inter).
void mlp_block(const ModelConfig& config, const DecoderLayer& layer, const float* h, int T,
               float* out, std::vector<float>* down_input = nullptr);

// The whole layer in place on the residual stream x (T, hidden). `inputs`, when given, receives
// each linear group's input.
void decoder_layer(const ModelConfig& config, const DecoderLayer& layer, const float* inv_freq,
                   float* x, int T, const PagedKv& cache, const AttentionMeta& meta,
                   LinearInputs* inputs = nullptr);

}  // namespace awqd::cpu
