#include "engine/model_config.h"

#include <algorithm>
#include <cctype>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>

namespace awqd {

using nlohmann::json;

const char* arch_name(Arch arch) {
  switch (arch) {
    case Arch::kLlama: return "LlamaForCausalLM";
    case Arch::kQwen2: return "Qwen2ForCausalLM";
    case Arch::kQwen3: return "Qwen3ForCausalLM";
    case Arch::kMistral: return "MistralForCausalLM";
  }
  return "?";
}

namespace {

[[noreturn]] void fail(const std::string& where, const std::string& what) {
  throw std::runtime_error(where + ": " + what);
}

int get_int(const json& j, const char* key, const std::string& where, int fallback = -1) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (fallback >= 0) return fallback;
    fail(where, std::string("missing required key \"") + key + "\"");
  }
  if (!it->is_number_integer() || it->get<long long>() <= 0 || it->get<long long>() > (1ll << 30))
    fail(where, std::string("\"") + key + "\" must be a positive integer (got " + it->dump() + ")");
  return it->get<int>();
}

float get_float(const json& j, const char* key, float fallback, const std::string& where) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number()) fail(where, std::string("\"") + key + "\" must be a number (got " + it->dump() + ")");
  return it->get<float>();
}

std::string get_string(const json& j, const char* key, const std::string& fallback, const std::string& where) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_string()) fail(where, std::string("\"") + key + "\" must be a string (got " + it->dump() + ")");
  return it->get<std::string>();
}

bool get_bool(const json& j, const char* key, bool fallback, const std::string& where) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) fail(where, std::string("\"") + key + "\" must be true or false");
  return it->get<bool>();
}

void add_ids(const json& value, std::vector<std::int32_t>& out) {
  auto add = [&](const json& v) {
    if (v.is_number_integer()) {
      const auto id = v.get<std::int32_t>();
      if (std::find(out.begin(), out.end(), id) == out.end()) out.push_back(id);
    }
  };
  if (value.is_array()) {
    for (const auto& v : value) add(v);
  } else {
    add(value);
  }
}

RopeScaling parse_rope_scaling(const json& rs, const std::string& where) {
  RopeScaling out;
  if (rs.is_null()) return out;
  if (!rs.is_object()) fail(where, "rope_scaling must be an object or null");
  const std::string type = get_string(rs, "rope_type", get_string(rs, "type", "default", where), where);
  if (type == "default") return out;
  if (type == "llama3") {
    out.type = RopeScaling::Type::kLlama3;
    out.factor = get_float(rs, "factor", 8.0f, where);
    out.low_freq_factor = get_float(rs, "low_freq_factor", 1.0f, where);
    out.high_freq_factor = get_float(rs, "high_freq_factor", 4.0f, where);
    out.original_max_position_embeddings = get_int(rs, "original_max_position_embeddings", where, 8192);
    if (!(out.high_freq_factor > out.low_freq_factor) || out.factor <= 0)
      fail(where, "llama3 rope_scaling needs factor > 0 and high_freq_factor > low_freq_factor");
    return out;
  }
  if (type == "linear") {
    out.type = RopeScaling::Type::kLinear;
    out.factor = get_float(rs, "factor", 1.0f, where);
    if (out.factor <= 0) fail(where, "linear rope_scaling needs factor > 0");
    return out;
  }
  fail(where, "unsupported rope scaling type \"" + type + "\" (supported: default, llama3, linear)");
}

QuantConfig parse_quant(const json& q, const std::string& where) {
  QuantConfig out;
  const std::string method = get_string(q, "quant_method", "awq", where);
  if (method != "awq") fail(where, "unsupported quantization method \"" + method + "\" (awqd loads AWQ or unquantized fp16/bf16)");
  out.awq = true;
  out.bits = q.contains("bits") ? get_int(q, "bits", where) : get_int(q, "w_bit", where, 4);
  out.group_size = q.contains("group_size") ? get_int(q, "group_size", where)
                                            : get_int(q, "q_group_size", where, 128);
  out.zero_point = get_bool(q, "zero_point", true, where);
  const std::string version = get_string(q, "version", "gemm", where);
  std::string v = version;
  for (auto& c : v) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (v != "gemm") fail(where, "unsupported AWQ version \"" + version + "\" (only the GEMM format is supported)");
  if (out.bits != 4) fail(where, "unsupported AWQ bits " + std::to_string(out.bits) + " (only 4)");
  if (out.group_size != 32 && out.group_size != 64 && out.group_size != 128)
    fail(where, "unsupported AWQ group size " + std::to_string(out.group_size) + " (32, 64 or 128)");
  if (!out.zero_point) fail(where, "AWQ without zero points is not supported");
  if (auto it = q.find("modules_to_not_convert"); it != q.end() && it->is_array())
    for (const auto& m : *it)
      if (m.is_string()) out.modules_to_not_convert.push_back(m.get<std::string>());
  return out;
}

}  // namespace

ModelConfig parse_model_config(const json& j, const std::string& where) {
  if (!j.is_object()) fail(where, "not a JSON object");
  ModelConfig c;
  const auto archs = j.find("architectures");
  if (archs == j.end() || !archs->is_array() || archs->empty() || !(*archs)[0].is_string())
    fail(where, "missing \"architectures\" (expected e.g. [\"LlamaForCausalLM\"])");
  const std::string arch = (*archs)[0].get<std::string>();
  if (arch == "LlamaForCausalLM") c.arch = Arch::kLlama;
  else if (arch == "Qwen2ForCausalLM") c.arch = Arch::kQwen2;
  else if (arch == "Qwen3ForCausalLM") c.arch = Arch::kQwen3;
  else if (arch == "MistralForCausalLM") c.arch = Arch::kMistral;
  else fail(where, "unknown architecture \"" + arch + "\" (supported: LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, MistralForCausalLM)");

  c.hidden_size = get_int(j, "hidden_size", where);
  c.intermediate_size = get_int(j, "intermediate_size", where);
  c.num_layers = get_int(j, "num_hidden_layers", where);
  c.num_heads = get_int(j, "num_attention_heads", where);
  c.num_kv_heads = get_int(j, "num_key_value_heads", where, c.num_heads);
  if (c.hidden_size % c.num_heads != 0 && !j.contains("head_dim"))
    fail(where, "hidden_size is not a multiple of num_attention_heads and head_dim is not given");
  c.head_dim = get_int(j, "head_dim", where, c.hidden_size / c.num_heads);
  c.vocab_size = get_int(j, "vocab_size", where);
  c.max_position_embeddings = get_int(j, "max_position_embeddings", where, 4096);
  c.rms_norm_eps = get_float(j, "rms_norm_eps", 1e-6f, where);
  if (c.num_heads % c.num_kv_heads != 0)
    fail(where, "num_attention_heads (" + std::to_string(c.num_heads) +
                    ") must be a multiple of num_key_value_heads (" + std::to_string(c.num_kv_heads) + ")");
  if (c.head_dim % 2 != 0) fail(where, "head_dim must be even (rotary embedding)");

  // transformers 5 folds rope_theta and rope_scaling into rope_parameters.
  if (auto rp = j.find("rope_parameters"); rp != j.end() && rp->is_object()) {
    c.rope_theta = get_float(*rp, "rope_theta", 10000.0f, where);
    c.rope_scaling = parse_rope_scaling(*rp, where);
  } else {
    c.rope_theta = get_float(j, "rope_theta", 10000.0f, where);
    if (auto rs = j.find("rope_scaling"); rs != j.end()) c.rope_scaling = parse_rope_scaling(*rs, where);
  }
  if (!(c.rope_theta > 0)) fail(where, "rope_theta must be > 0");

  c.tie_word_embeddings = get_bool(j, "tie_word_embeddings", false, where);
  c.attention_bias = c.arch == Arch::kQwen2 ? true : get_bool(j, "attention_bias", false, where);
  c.qk_norm = c.arch == Arch::kQwen3;
  if (auto sw = j.find("sliding_window"); sw != j.end() && sw->is_number_integer())
    c.sliding_window = sw->get<int>();
  if (const std::string act = get_string(j, "hidden_act", "silu", where); act != "silu")
    fail(where, "unsupported hidden_act \"" + act + "\" (only silu)");
  c.torch_dtype = get_string(j, "torch_dtype", get_string(j, "dtype", "float16", where), where);
  if (auto it = j.find("eos_token_id"); it != j.end()) add_ids(*it, c.eos_token_ids);
  if (auto it = j.find("bos_token_id"); it != j.end() && it->is_number_integer()) c.bos_token_id = it->get<int>();
  if (auto q = j.find("quantization_config"); q != j.end() && q->is_object()) c.quant = parse_quant(*q, where);
  return c;
}

namespace {
json read_json(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(path.string() + ": cannot open");
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    throw std::runtime_error(path.string() + ": invalid JSON: " + e.what());
  }
}
}  // namespace

ModelConfig load_model_config(const std::filesystem::path& dir) {
  const auto path = dir / "config.json";
  if (!std::filesystem::exists(path))
    throw std::runtime_error(dir.string() + ": not a model directory (no config.json)");
  ModelConfig c = parse_model_config(read_json(path), path.string());
  if (!c.quant.awq && std::filesystem::exists(dir / "quant_config.json")) {
    c.quant = parse_quant(read_json(dir / "quant_config.json"), (dir / "quant_config.json").string());
  }
  if (const auto gen = dir / "generation_config.json"; std::filesystem::exists(gen)) {
    const json g = read_json(gen);
    if (auto it = g.find("eos_token_id"); it != g.end()) add_ids(*it, c.eos_token_ids);
  }
  return c;
}

}  // namespace awqd
