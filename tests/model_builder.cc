#include "tests/model_builder.h"

#include <fstream>
#include <unistd.h>

#include "engine/awq.h"

namespace awqd::test {

nlohmann::json tiny_config(const TinyModelSpec& s) {
  nlohmann::json c = {
      {"architectures", {s.arch}},
      {"hidden_size", s.hidden},
      {"intermediate_size", s.intermediate},
      {"num_hidden_layers", s.layers},
      {"num_attention_heads", s.heads},
      {"num_key_value_heads", s.kv_heads},
      {"head_dim", s.head_dim},
      {"vocab_size", s.vocab},
      {"max_position_embeddings", 512},
      {"rms_norm_eps", 1e-5},
      {"rope_theta", 10000.0},
      {"tie_word_embeddings", s.tied},
      {"hidden_act", "silu"},
      {"bos_token_id", 1},
      {"eos_token_id", 2},
      {"torch_dtype", "float16"},
  };
  if (s.awq)
    c["quantization_config"] = {{"quant_method", "awq"}, {"bits", 4}, {"group_size", s.group_size},
                                {"zero_point", true}, {"version", "gemm"}};
  return c;
}

void write_tiny_model(const std::filesystem::path& dir, const TinyModelSpec& s) {
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "config.json") << tiny_config(s).dump(2);
  std::mt19937 rng(s.seed);
  std::normal_distribution<float> nd(0.0f, 0.05f);
  auto randv = [&](std::size_t n, float mean = 0.0f) {
    std::vector<float> v(n);
    for (auto& x : v) x = mean + nd(rng);
    return v;
  };
  CheckpointWriter w;
  const int D = s.hidden, I = s.intermediate, hd = s.head_dim;
  w.add_f16_from_float("model.embed_tokens.weight", {s.vocab, D}, randv(static_cast<std::size_t>(s.vocab) * D));
  w.add_f16_from_float("model.norm.weight", {D}, randv(D, 1.0f));
  if (!s.tied) w.add_f16_from_float("lm_head.weight", {s.vocab, D}, randv(static_cast<std::size_t>(s.vocab) * D));
  const bool qwen2 = s.arch == "Qwen2ForCausalLM", qwen3 = s.arch == "Qwen3ForCausalLM";
  auto linear = [&](const std::string& name, int K, int N, bool bias) {
    if (s.awq) {
      const auto W = randv(static_cast<std::size_t>(K) * N);  // (K, N)
      AwqTensors q = awq_quantize(W.data(), K, N, s.group_size);
      w.add_i32(name + ".qweight", {K, N / 8}, std::move(q.qweight));
      w.add_i32(name + ".qzeros", {K / s.group_size, N / 8}, std::move(q.qzeros));
      w.add_f16(name + ".scales", {K / s.group_size, N}, std::move(q.scales));
    } else {
      w.add_f16_from_float(name + ".weight", {N, K}, randv(static_cast<std::size_t>(N) * K));
    }
    if (bias) w.add_f16_from_float(name + ".bias", {N}, randv(N));
  };
  for (int i = 0; i < s.layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    w.add_f16_from_float(p + "input_layernorm.weight", {D}, randv(D, 1.0f));
    w.add_f16_from_float(p + "post_attention_layernorm.weight", {D}, randv(D, 1.0f));
    if (qwen3) {
      w.add_f16_from_float(p + "self_attn.q_norm.weight", {hd}, randv(hd, 1.0f));
      w.add_f16_from_float(p + "self_attn.k_norm.weight", {hd}, randv(hd, 1.0f));
    }
    linear(p + "self_attn.q_proj", D, s.heads * hd, qwen2);
    linear(p + "self_attn.k_proj", D, s.kv_heads * hd, qwen2);
    linear(p + "self_attn.v_proj", D, s.kv_heads * hd, qwen2);
    linear(p + "self_attn.o_proj", s.heads * hd, D, false);
    linear(p + "mlp.gate_proj", D, I, false);
    linear(p + "mlp.up_proj", D, I, false);
    linear(p + "mlp.down_proj", I, D, false);
  }
  w.write(dir, s.max_shard_bytes);
}

TempDir::TempDir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "awqd-test-XXXXXX").string();
  if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

}  // namespace awqd::test
