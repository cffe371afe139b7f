// A model's architecture and hyper-parameters, read from a Hugging Face `config.json`
// (SPEC section 2). Both config styles are accepted: `rope_theta` + `rope_scaling`
// (transformers 4) and `rope_parameters` (transformers 5); AWQ settings come from
// `quantization_config` or, in older checkpoints, `quant_config.json`.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace awqd {

enum class Arch { kLlama, kQwen2, kQwen3, kMistral };

const char* arch_name(Arch arch);  // the HF class name, e.g. "LlamaForCausalLM"

struct RopeScaling {
  enum class Type { kNone, kLlama3, kLinear };
  Type type = Type::kNone;
  float factor = 1.0f;
  float low_freq_factor = 1.0f;             // llama3
  float high_freq_factor = 4.0f;            // llama3
  int original_max_position_embeddings = 8192;  // llama3
};

struct QuantConfig {
  bool awq = false;       // AWQ GEMM 4-bit; false: unquantized fp16/bf16
  int bits = 4;
  int group_size = 128;   // G: 32, 64 or 128
  bool zero_point = true;
  std::vector<std::string> modules_to_not_convert;  // name fragments left fp16
};

struct ModelConfig {
  Arch arch = Arch::kLlama;
  int hidden_size = 0;          // d_model
  int intermediate_size = 0;    // MLP width
  int num_layers = 0;
  int num_heads = 0;            // query heads
  int num_kv_heads = 0;         // GQA: num_heads % num_kv_heads == 0
  int head_dim = 0;             // 64 or 128 on the GPU path
  int vocab_size = 0;
  int max_position_embeddings = 0;
  float rms_norm_eps = 1e-6f;
  float rope_theta = 10000.0f;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v bias (Qwen2 always)
  bool qk_norm = false;         // Qwen3 per-head RMSNorm on q and k
  int sliding_window = 0;       // Mistral; 0 = none (recorded; full attention is used up to it)
  std::string torch_dtype = "float16";
  std::vector<std::int32_t> eos_token_ids;  // from config.json and generation_config.json
  std::int32_t bos_token_id = -1;
  QuantConfig quant;

  int q_size() const { return num_heads * head_dim; }
  int kv_size() const { return num_kv_heads * head_dim; }
};

// Parses a config.json document; `where` names the file in error messages. Throws
// std::runtime_error with a clear message for unknown architectures and missing or invalid keys.
ModelConfig parse_model_config(const nlohmann::json& config, const std::string& where);

// Reads <dir>/config.json (+ generation_config.json and quant_config.json when present).
ModelConfig load_model_config(const std::filesystem::path& model_dir);

}  // namespace awqd
