// A model's weights, validated against its config and left in the memory-mapped files where
// their dtype allows (fp16 and int32 are used in place; bf16/fp32 tensors are converted to fp16
// once into owned buffers). Executors read from here and build their own layouts (the CPU
// executor widens to fp32, the CUDA executor uploads and repacks).
//
// Tensor names follow Hugging Face's Llama/Qwen2/Qwen3/Mistral checkpoints:
//   model.embed_tokens.weight                       (vocab, hidden)
//   model.layers.{i}.input_layernorm.weight          (hidden)
//   model.layers.{i}.self_attn.{q,k,v,o}_proj.*      see LinearWeight
//   model.layers.{i}.self_attn.{q,k}_norm.weight     (head_dim)            Qwen3
//   model.layers.{i}.post_attention_layernorm.weight (hidden)
//   model.layers.{i}.mlp.{gate,up,down}_proj.*
//   model.norm.weight                                (hidden)
//   lm_head.weight                                   (vocab, hidden)       absent when tied
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "engine/fp16.h"
#include "engine/model_config.h"
#include "engine/safetensors.h"

namespace awqd {

// y[M, N] = x[M, K] W + b. Either AWQ GEMM (SPEC section 2) or dense fp16 in nn.Linear layout.
struct LinearWeight {
  std::string name;  // e.g. "model.layers.0.self_attn.q_proj"
  int K = 0;         // inputs
  int N = 0;         // outputs
  bool quantized = false;
  int group_size = 0;
  const std::int32_t* qweight = nullptr;  // (K, N/8)      quantized
  const std::int32_t* qzeros = nullptr;   // (K/G, N/8)    quantized
  const half_bits* scales = nullptr;      // (K/G, N)      quantized
  const half_bits* weight = nullptr;      // (N, K)        dense
  const half_bits* bias = nullptr;        // (N) or null

  // W as fp32 (N, K) row-major (the nn.Linear layout), dequantized when quantized.
  std::vector<float> dense_nk() const;
};

struct LayerWeights {
  const half_bits* input_norm = nullptr;      // (hidden)
  const half_bits* post_attn_norm = nullptr;  // (hidden)
  const half_bits* q_norm = nullptr;          // (head_dim), Qwen3 only
  const half_bits* k_norm = nullptr;          // (head_dim), Qwen3 only
  LinearWeight q, k, v, o;                    // q: (hidden -> heads*hd), k/v: (hidden -> kv*hd), o: (heads*hd -> hidden)
  LinearWeight gate, up, down;                // gate/up: (hidden -> inter), down: (inter -> hidden)
};

class ModelWeights {
 public:
  // Loads and validates every tensor; throws std::runtime_error naming the file and tensor.
  static std::unique_ptr<ModelWeights> load(const std::filesystem::path& model_dir);

  const ModelConfig& config() const { return config_; }
  const half_bits* embed() const { return embed_; }          // (vocab, hidden)
  const half_bits* final_norm() const { return final_norm_; }  // (hidden)
  const half_bits* lm_head() const { return lm_head_; }      // (vocab, hidden); == embed() when tied
  const std::vector<LayerWeights>& layers() const { return layers_; }
  std::size_t file_bytes() const { return store_->total_bytes(); }

 private:
  ModelWeights() = default;
  const half_bits* fp16_tensor(const std::string& name, std::vector<std::int64_t> shape);
  LinearWeight linear(const std::string& name, int K, int N, bool bias);

  ModelConfig config_;
  std::unique_ptr<TensorStore> store_;
  std::vector<std::vector<half_bits>> converted_;  // bf16/fp32 tensors converted to fp16
  const half_bits* embed_ = nullptr;
  const half_bits* final_norm_ = nullptr;
  const half_bits* lm_head_ = nullptr;
  std::vector<LayerWeights> layers_;
};

}  // namespace awqd
