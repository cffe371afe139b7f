// Model files: config.json in both styles, safetensors validation (truncated, corrupt,
// overlapping, mismatched), shards with an index, and the AWQ round trip through a checkpoint.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <random>

#include <nlohmann/json.hpp>

#include "engine/awq.h"
#include "engine/model_config.h"
#include "engine/model_weights.h"
#include "engine/safetensors.h"
#include "tests/model_builder.h"
#include "tests/test_support.h"

namespace awqd {
namespace {

using nlohmann::json;
using test::TempDir;
using test::TinyModelSpec;

// Runs fn and returns the exception message ("" if nothing was thrown).
template <typename F>
std::string error_of(F&& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(ModelConfig, ParsesFixtureLlama) {
  AWQD_REQUIRE_FIXTURE(dir, "llama-13m");
  const ModelConfig c = load_model_config(dir);
  EXPECT_EQ(c.arch, Arch::kLlama);
  EXPECT_EQ(c.hidden_size, 256);
  EXPECT_EQ(c.num_layers, 6);
  EXPECT_EQ(c.num_heads, 4);
  EXPECT_EQ(c.num_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.vocab_size, 32000);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_FLOAT_EQ(c.rms_norm_eps, 1e-5f);
  EXPECT_EQ(c.eos_token_ids, std::vector<std::int32_t>{2});
  EXPECT_FALSE(c.quant.awq);
}

TEST(ModelConfig, AcceptsBothRopeStyles) {
  json v4 = test::tiny_config({});
  v4["rope_theta"] = 500000.0;
  v4["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                        {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  json v5 = test::tiny_config({});
  v5.erase("rope_theta");
  v5["rope_parameters"] = {{"rope_type", "llama3"}, {"rope_theta", 500000.0}, {"factor", 8.0},
                           {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                           {"original_max_position_embeddings", 8192}};
  for (const json& j : {v4, v5}) {
    const ModelConfig c = parse_model_config(j, "config.json");
    EXPECT_FLOAT_EQ(c.rope_theta, 500000.0f);
    EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::kLlama3);
    EXPECT_FLOAT_EQ(c.rope_scaling.factor, 8.0f);
  }
}

TEST(ModelConfig, ArchitectureSpecifics) {
  TinyModelSpec s;
  s.arch = "Qwen2ForCausalLM";
  EXPECT_TRUE(parse_model_config(test::tiny_config(s), "c").attention_bias);
  s.arch = "Qwen3ForCausalLM";
  EXPECT_TRUE(parse_model_config(test::tiny_config(s), "c").qk_norm);
  s.arch = "MistralForCausalLM";
  EXPECT_EQ(parse_model_config(test::tiny_config(s), "c").arch, Arch::kMistral);
}

TEST(ModelConfig, ClearErrors) {
  json j = test::tiny_config({});
  j["architectures"] = {"GPT2LMHeadModel"};
  EXPECT_NE(error_of([&] { parse_model_config(j, "m/config.json"); }).find("unknown architecture \"GPT2LMHeadModel\""), std::string::npos);
  j = test::tiny_config({});
  j.erase("hidden_size");
  EXPECT_NE(error_of([&] { parse_model_config(j, "m/config.json"); }).find("missing required key \"hidden_size\""), std::string::npos);
  j = test::tiny_config({});
  j["num_key_value_heads"] = 3;
  EXPECT_NE(error_of([&] { parse_model_config(j, "c"); }).find("multiple of num_key_value_heads"), std::string::npos);
  j = test::tiny_config({});
  j["rope_scaling"] = {{"type", "yarn"}, {"factor", 4.0}};
  EXPECT_NE(error_of([&] { parse_model_config(j, "c"); }).find("unsupported rope scaling type \"yarn\""), std::string::npos);
  j = test::tiny_config({});
  j["quantization_config"] = {{"quant_method", "awq"}, {"bits", 4}, {"group_size", 100}, {"version", "gemm"}};
  EXPECT_NE(error_of([&] { parse_model_config(j, "c"); }).find("group size 100"), std::string::npos);
  j["quantization_config"] = {{"quant_method", "gptq"}};
  EXPECT_NE(error_of([&] { parse_model_config(j, "c"); }).find("gptq"), std::string::npos);
  // Wrong JSON types are configuration errors too, not crashes (found by fuzz_model_config).
  j = test::tiny_config({});
  j["hidden_act"] = 7;
  EXPECT_NE(error_of([&] { parse_model_config(j, "c"); }).find("\"hidden_act\" must be a string"), std::string::npos);
  j = test::tiny_config({});
  j["rope_scaling"] = {{"type", 3}};
  EXPECT_NE(error_of([&] { parse_model_config(j, "c"); }).find("\"type\" must be a string"), std::string::npos);
}

TEST(ModelConfig, OldQuantConfigJson) {
  TempDir tmp;
  std::ofstream(tmp.path() / "config.json") << test::tiny_config({}).dump();
  std::ofstream(tmp.path() / "quant_config.json") << R"({"zero_point": true, "q_group_size": 64, "w_bit": 4, "version": "GEMM"})";
  const ModelConfig c = load_model_config(tmp.path());
  EXPECT_TRUE(c.quant.awq);
  EXPECT_EQ(c.quant.group_size, 64);
}

// A valid two-tensor file to corrupt in the tests below.
std::vector<char> valid_file(std::string header_override = "") {
  std::string header = header_override.empty()
      ? R"({"a":{"dtype":"F16","shape":[2,3],"data_offsets":[0,12]},"b":{"dtype":"I32","shape":[2],"data_offsets":[12,20]}})"
      : header_override;
  std::vector<char> f(8 + header.size() + 20, 7);
  const std::uint64_t n = header.size();
  std::memcpy(f.data(), &n, 8);
  std::memcpy(f.data() + 8, header.data(), header.size());
  return f;
}

std::string load_error(const std::vector<char>& bytes) {
  TempDir tmp;
  const auto p = tmp.path() / "x.safetensors";
  std::ofstream(p, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return error_of([&] { SafetensorsFile f(p); });
}

TEST(Safetensors, ValidFileLoads) {
  EXPECT_EQ(load_error(valid_file()), "");
}

TEST(Safetensors, TruncatedAndCorruptFilesGiveClearErrors) {
  auto f = valid_file();
  f.resize(f.size() - 4);  // data cut short
  EXPECT_NE(load_error(f).find("outside the file"), std::string::npos) << load_error(f);
  EXPECT_NE(load_error({1, 2, 3}).find("truncated"), std::string::npos);
  auto huge = valid_file();
  const std::uint64_t n = 1ull << 40;
  std::memcpy(huge.data(), &n, 8);
  EXPECT_NE(load_error(huge).find("header length"), std::string::npos);
  EXPECT_NE(load_error(valid_file(R"({"a":{"dtype":"F16","shape":[2,3],"data_offsets":[0,12]})")).find("invalid JSON"), std::string::npos);
  EXPECT_NE(load_error(valid_file(R"({"a":{"dtype":"F16","shape":[2,3],"data_offsets":[0,10]}})")).find("need 12"), std::string::npos);
  EXPECT_NE(load_error(valid_file(R"({"a":{"dtype":"F16","shape":[2,3],"data_offsets":[0,12]},"b":{"dtype":"I32","shape":[2],"data_offsets":[8,16]}})")).find("overlap"), std::string::npos);
  EXPECT_NE(load_error(valid_file(R"({"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,1]}})")).find("unsupported dtype"), std::string::npos);
  EXPECT_NE(load_error(valid_file(R"({"a":{"dtype":"F16","shape":[-2],"data_offsets":[0,4]}})")).find("non-negative"), std::string::npos);
  EXPECT_NE(load_error(valid_file(R"({"a":{"dtype":"F16","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,4]}})")).find("overflow"), std::string::npos);
}

TEST(Safetensors, WriteThenReadRoundTrip) {
  TempDir tmp;
  std::vector<half_bits> a = {1, 2, 3, 4, 5, 6};
  std::vector<std::int32_t> b = {-7, 1 << 30};
  TensorView ta{"a", DType::kF16, {2, 3}, reinterpret_cast<const std::byte*>(a.data()), 12, ""};
  TensorView tb{"b", DType::kI32, {2}, reinterpret_cast<const std::byte*>(b.data()), 8, ""};
  write_safetensors(tmp.path() / "m.safetensors", {ta, tb}, {{"format", "pt"}});
  SafetensorsFile f(tmp.path() / "m.safetensors");
  ASSERT_EQ(f.tensors().size(), 2u);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  const auto& rb = f.tensors().at("b");
  EXPECT_EQ(rb.shape, std::vector<std::int64_t>{2});
  EXPECT_EQ(rb.as<std::int32_t>()[0], -7);
  EXPECT_EQ(rb.as<std::int32_t>()[1], 1 << 30);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(rb.data) % 4, 0u);  // header padded: aligned data
}

TEST(ModelWeights, LoadsShardedFixture) {
  AWQD_REQUIRE_FIXTURE(dir, "llama-13m");
  const auto w = ModelWeights::load(dir);
  EXPECT_EQ(w->layers().size(), 6u);
  EXPECT_EQ(w->lm_head(), w->embed());  // tied
  EXPECT_EQ(w->layers()[5].down.K, 768);
  EXPECT_FALSE(w->layers()[0].q.quantized);
  EXPECT_GT(w->file_bytes(), 25000000u);  // 12.9 M fp16 parameters
}

TEST(ModelWeights, AwqRoundTripIsExact) {
  // Random weights quantized, packed per SPEC section 2, written as a sharded checkpoint, loaded:
  // dequantization by the loader equals (q - z) * s computed here from the SPEC's formula.
  for (int G : {32, 64, 128}) {
    TempDir tmp;
    TinyModelSpec s;
    s.awq = true;
    s.group_size = G;
    s.hidden = 128;
    s.intermediate = 256;
    s.head_dim = 32;
    s.max_shard_bytes = 64 << 10;
    test::write_tiny_model(tmp.path(), s);
    ASSERT_TRUE(std::filesystem::exists(tmp.path() / "model.safetensors.index.json"));
    const auto w = ModelWeights::load(tmp.path());
    const LinearWeight& lin = w->layers()[1].gate;
    ASSERT_TRUE(lin.quantized);
    ASSERT_EQ(lin.K, 128);
    ASSERT_EQ(lin.N, 256);
    const auto dense = lin.dense_nk();  // (N, K)
    constexpr int kReverse[8] = {0, 4, 1, 5, 2, 6, 3, 7};
    int nonzero = 0;
    for (int k = 0; k < lin.K; ++k) {
      for (int n = 0; n < lin.N; ++n) {
        const auto word = static_cast<std::uint32_t>(lin.qweight[k * (lin.N / 8) + n / 8]);
        const auto zword = static_cast<std::uint32_t>(lin.qzeros[(k / G) * (lin.N / 8) + n / 8]);
        const float q = static_cast<float>((word >> (4 * kReverse[n % 8])) & 0xF);
        const float z = static_cast<float>((zword >> (4 * kReverse[n % 8])) & 0xF);
        const float sc = half_to_float(lin.scales[(k / G) * lin.N + n]);
        ASSERT_EQ(dense[static_cast<std::size_t>(n) * lin.K + k], (q - z) * sc) << "k=" << k << " n=" << n;
        nonzero += dense[static_cast<std::size_t>(n) * lin.K + k] != 0.0f;
      }
    }
    EXPECT_GT(nonzero, lin.K * lin.N / 2);
  }
}

TEST(Awq, PackOrderMatchesSpec) {
  // Column 8c+j lives at nibble [0,4,1,5,2,6,3,7][j]: pack 0..7 and read the word.
  const std::uint8_t q[8] = {0, 1, 2, 3, 4, 5, 6, 7};
  const auto packed = awq_pack(q, 1, 8);
  // nibbles 0..7 hold columns 0,2,4,6,1,3,5,7
  EXPECT_EQ(static_cast<std::uint32_t>(packed[0]), 0x75316420u);
  std::mt19937 rng(3);
  std::vector<std::uint8_t> vals(16 * 64);
  for (auto& v : vals) v = static_cast<std::uint8_t>(rng() & 0xF);
  EXPECT_EQ(awq_unpack_all(awq_pack(vals.data(), 16, 64).data(), 16, 64), vals);
}

TEST(ModelWeights, MismatchedShapesAndMissingTensorsAreNamed) {
  TempDir tmp;
  test::write_tiny_model(tmp.path(), {});
  json c = test::tiny_config({});
  c["intermediate_size"] = 96;  // the file holds 128
  std::ofstream(tmp.path() / "config.json") << c.dump();
  std::string err = error_of([&] { ModelWeights::load(tmp.path()); });
  EXPECT_NE(err.find("model.layers.0.mlp.gate_proj.weight\" has shape (128, 64), expected (96, 64)"), std::string::npos) << err;

  TinyModelSpec s;
  s.awq = true;
  TempDir tmp2;
  test::write_tiny_model(tmp2.path(), s);
  c = test::tiny_config(s);
  c["num_hidden_layers"] = 3;  // the file has 2 layers
  std::ofstream(tmp2.path() / "config.json") << c.dump();
  err = error_of([&] { ModelWeights::load(tmp2.path()); });
  EXPECT_NE(err.find("model.layers.2."), std::string::npos) << err;
}

TEST(ModelWeights, BrokenShardIndex) {
  TempDir tmp;
  TinyModelSpec s;
  s.max_shard_bytes = 16 << 10;
  test::write_tiny_model(tmp.path(), s);
  json index;
  std::ifstream(tmp.path() / "model.safetensors.index.json") >> index;
  index["weight_map"]["model.norm.weight"] = "model-00009-of-00009.safetensors";
  std::ofstream(tmp.path() / "model.safetensors.index.json") << index.dump();
  const std::string err = error_of([&] { ModelWeights::load(tmp.path()); });
  EXPECT_NE(err.find("model-00009-of-00009.safetensors which does not exist"), std::string::npos) << err;
}

TEST(ModelWeights, Bf16AndFp32TensorsAreConverted) {
  TempDir tmp;
  TinyModelSpec s;
  test::write_tiny_model(tmp.path(), s);
  // Rewrite the final norm as bf16 into an extra shard-less file set: simplest is a new model.
  CheckpointWriter w;
  {
    SafetensorsFile f(tmp.path() / "model.safetensors");
    for (const auto& [name, t] : f.tensors()) {
      if (name == "model.norm.weight") {
        std::vector<std::uint16_t> bf(static_cast<std::size_t>(t.numel()), 0x3FC0);  // 1.5
        w.add_bf16(name, t.shape, bf);
      } else if (name == "lm_head.weight") {
        std::vector<float> f32(static_cast<std::size_t>(t.numel()), 0.25f);
        w.add_f32(name, t.shape, f32);
      } else {
        std::vector<half_bits> h(t.as<half_bits>(), t.as<half_bits>() + t.numel());
        w.add_f16(name, t.shape, h);
      }
    }
  }
  w.write(tmp.path());
  const auto m = ModelWeights::load(tmp.path());
  EXPECT_EQ(half_to_float(m->final_norm()[3]), 1.5f);
  EXPECT_EQ(half_to_float(m->lm_head()[7]), 0.25f);
}

}  // namespace
}  // namespace awqd
