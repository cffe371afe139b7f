// The quantizer (engine/quantize.h) and perplexity (engine/perplexity.h): written checkpoints
// hold exactly the tensors, dtypes, shapes and config keys of SPEC section 2 and load through the
// normal path; fake quantization equals pack + dequantize; perplexity does not depend on how
// windows are batched; and on the trained fixture, AWQ beats RTN (fewer samples than the
// full protocol, whose figures are in docs/PERF.md).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "engine/awq.h"
#include "engine/cpu_executor.h"
#include "engine/perplexity.h"
#include "engine/quantize.h"
#include "engine/safetensors.h"
#include "engine/text_corpus.h"
#include "engine/text_file.h"
#include "engine/tokenizer.h"
#include "tests/model_builder.h"
#include "tests/test_support.h"

namespace awqd {
namespace {

namespace fs = std::filesystem;

std::vector<std::vector<std::int32_t>> random_samples(int n, int len, int vocab, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> d(0, vocab - 1);
  std::vector<std::vector<std::int32_t>> out(n, std::vector<std::int32_t>(len));
  for (auto& s : out)
    for (auto& t : s) t = d(rng);
  return out;
}

// Quantizes `src` into `dst` the way `awqd quantize` does (weights, then config.json).
void quantize_dir(const fs::path& src, const fs::path& dst, QuantizeOptions o,
                  const std::vector<std::vector<std::int32_t>>& samples) {
  const auto w = ModelWeights::load(src);
  CheckpointWriter writer;
  quantize_model(*w, samples, o, writer);
  writer.write(dst, 0);
  nlohmann::json config;
  std::ifstream(src / "config.json") >> config;
  std::ofstream(dst / "config.json") << quantized_config(config, o.group_size).dump(2);
}

double perplexity_of(const fs::path& dir, std::span<const std::int32_t> ids, int window) {
  const auto w = ModelWeights::load(dir);
  CpuExecutor ex(*w, 0, 4 * ((window + kKvBlockSize - 1) / kKvBlockSize));
  return evaluate_perplexity(ex, w->config().vocab_size, ids, window).perplexity();
}

TEST(Quantize, WrittenTensorsFollowSpecSection2) {
  for (const char* arch : {"LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"}) {
    for (QuantMethod method : {QuantMethod::kRtn, QuantMethod::kAwq}) {
      SCOPED_TRACE(std::string(arch) + (method == QuantMethod::kAwq ? " awq" : " rtn"));
      test::TempDir src, dst;
      test::TinyModelSpec s;
      s.arch = arch;
      s.hidden = 64, s.intermediate = 128, s.heads = 4, s.kv_heads = 2, s.head_dim = 16,
      s.vocab = 96;
      test::write_tiny_model(src.path(), s);
      QuantizeOptions o;
      o.method = method;
      o.group_size = 32;
      quantize_dir(src.path(), dst.path(), o, random_samples(3, 40, s.vocab, 7));

      nlohmann::json c;
      std::ifstream(dst.path() / "config.json") >> c;
      const nlohmann::json& q = c.at("quantization_config");
      EXPECT_EQ(q.at("quant_method"), "awq");
      EXPECT_EQ(q.at("bits"), 4);
      EXPECT_EQ(q.at("group_size"), 32);
      EXPECT_EQ(q.at("zero_point"), true);
      EXPECT_EQ(q.at("version"), "gemm");
      EXPECT_EQ(c.at("torch_dtype"), "float16");

      TensorStore store(dst.path());
      const int D = s.hidden, I = s.intermediate, G = 32, qn = s.heads * s.head_dim,
                kvn = s.kv_heads * s.head_dim;
      std::set<std::string> expected;
      auto expect = [&](const std::string& name, DType dtype, std::vector<std::int64_t> shape) {
        expected.insert(name);
        ASSERT_TRUE(store.contains(name)) << name;
        EXPECT_EQ(store.get(name).dtype, dtype) << name;
        EXPECT_EQ(store.get(name).shape, shape) << name;
      };
      auto linear = [&](const std::string& name, int K, int N, bool bias) {
        expect(name + ".qweight", DType::kI32, {K, N / 8});
        expect(name + ".qzeros", DType::kI32, {K / G, N / 8});
        expect(name + ".scales", DType::kF16, {K / G, N});
        if (bias) expect(name + ".bias", DType::kF16, {N});
      };
      const bool qwen2 = std::string(arch) == "Qwen2ForCausalLM",
                 qwen3 = std::string(arch) == "Qwen3ForCausalLM";
      expect("model.embed_tokens.weight", DType::kF16, {s.vocab, D});
      expect("model.norm.weight", DType::kF16, {D});
      expect("lm_head.weight", DType::kF16, {s.vocab, D});
      for (int i = 0; i < s.layers; ++i) {
        const std::string p = "model.layers." + std::to_string(i) + ".";
        expect(p + "input_layernorm.weight", DType::kF16, {D});
        expect(p + "post_attention_layernorm.weight", DType::kF16, {D});
        if (qwen3) {
          expect(p + "self_attn.q_norm.weight", DType::kF16, {s.head_dim});
          expect(p + "self_attn.k_norm.weight", DType::kF16, {s.head_dim});
        }
        linear(p + "self_attn.q_proj", D, qn, qwen2);
        linear(p + "self_attn.k_proj", D, kvn, qwen2);
        linear(p + "self_attn.v_proj", D, kvn, qwen2);
        linear(p + "self_attn.o_proj", qn, D, false);
        linear(p + "mlp.gate_proj", D, I, false);
        linear(p + "mlp.up_proj", D, I, false);
        linear(p + "mlp.down_proj", I, D, false);
      }
      const auto names = store.names();
      EXPECT_EQ(std::set<std::string>(names.begin(), names.end()), expected) << "no other tensors";

      // Loads through the normal path and runs with finite logits near the original model's.
      const auto wq = ModelWeights::load(dst.path());
      const auto wf = ModelWeights::load(src.path());
      CpuExecutor exq(*wq, 0, 8), exf(*wf, 0, 8);
      StepBatch b;
      b.token_ids = {1, 5, 9, 33, 70};
      b.positions = {0, 1, 2, 3, 4};
      b.cu_seqlens_q = {0, 5};
      b.context_lens = {5};
      b.slot_mapping = {0, 1, 2, 3, 4};
      b.block_tables = {0};
      b.max_blocks_per_seq = 1;
      b.logits_rows = {4};
      const auto lq = exq.execute(b).logits, lf = exf.execute(b).logits;
      double err = 0, ref = 0;
      for (std::size_t i = 0; i < lq.size(); ++i) {
        ASSERT_TRUE(std::isfinite(lq[i]));
        err += (lq[i] - lf[i]) * (lq[i] - lf[i]);
        ref += lf[i] * lf[i];
      }
      EXPECT_LT(std::sqrt(err / ref), 0.2) << "4-bit logits stay near the fp16 ones";
    }
  }
}

TEST(Quantize, FakeQuantizationEqualsPackThenDequantize) {
  const int N = 24, K = 96, G = 32;
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.0f, 0.3f);
  std::vector<float> w_nk(N * K), w_kn(K * N), fake(N * K);
  for (int n = 0; n < N; ++n)
    for (int k = 0; k < K; ++k) w_kn[k * N + n] = w_nk[n * K + k] = nd(rng);
  fake_quantize_nk(w_nk.data(), N, K, G, fake.data());
  const AwqTensors t = awq_quantize(w_kn.data(), K, N, G);
  const auto deq = awq_dequantize(t.qweight.data(), t.qzeros.data(), t.scales.data(), K, N, G);
  for (int n = 0; n < N; ++n)
    for (int k = 0; k < K; ++k) ASSERT_EQ(fake[n * K + k], deq[k * N + n]) << n << "," << k;
}

TEST(Quantize, RejectsQuantizedModelsAndBadGroupSizes) {
  test::TempDir src;
  test::TinyModelSpec s;
  s.awq = true;
  test::write_tiny_model(src.path(), s);
  const auto w = ModelWeights::load(src.path());
  CheckpointWriter out;
  EXPECT_THROW(quantize_model(*w, {}, QuantizeOptions{}, out), std::invalid_argument);
  test::TempDir fp;
  s.awq = false;
  test::write_tiny_model(fp.path(), s);  // hidden 64: not a multiple of 128
  const auto w2 = ModelWeights::load(fp.path());
  QuantizeOptions o;
  o.method = QuantMethod::kRtn;
  EXPECT_THROW(quantize_model(*w2, {}, o, out), std::invalid_argument);
}

TEST(Perplexity, SameWhateverTheWindowsPerStep) {
  test::TempDir dir;
  test::TinyModelSpec s;
  test::write_tiny_model(dir.path(), s);
  const auto w = ModelWeights::load(dir.path());
  CpuExecutor ex(*w, 0, 64);
  const auto ids = random_samples(1, 300, s.vocab, 11)[0];
  const PerplexityResult one =
      evaluate_perplexity(ex, s.vocab, ids, 64, /*max_logits=*/64 * s.vocab);
  const PerplexityResult many = evaluate_perplexity(ex, s.vocab, ids, 64);
  EXPECT_EQ(one.windows, 5);
  EXPECT_EQ(one.tokens, 4 * 63 + 43);  // 300 = 4 * 64 + 44: each window scores all but its first
  EXPECT_EQ(many.tokens, one.tokens);
  EXPECT_NEAR(many.nll, one.nll, 1e-9 * one.nll);
  // Near the uniform distribution's perplexity for random weights and ids.
  EXPECT_GT(one.perplexity(), 0.5 * s.vocab);
  EXPECT_LT(one.perplexity(), 2.0 * s.vocab);
}

TEST(Quantize, AwqBeatsRtnOnTrainedFixture) {
  AWQD_REQUIRE_FIXTURE(model, "llama-13m");
  AWQD_REQUIRE_FIXTURE(text, "text");
  const Tokenizer tok = Tokenizer::load(model);
  const auto calib = tokenize_paragraphs(tok, read_file(text / "calibration.txt"));
  const auto heldout = tokenize_paragraphs(tok, read_file(text / "austen-heldout.txt"));
  const std::span<const std::int32_t> eval(heldout.data(), 8 * 512);
  test::TempDir awq, rtn;
  QuantizeOptions o;
  o.method = QuantMethod::kRtn;
  quantize_dir(model, rtn.path(), o, {});
  o.method = QuantMethod::kAwq;
  quantize_dir(model, awq.path(), o, cut_samples(calib, 8, 256));
  const double p_fp16 = perplexity_of(model, eval, 512),
               p_rtn = perplexity_of(rtn.path(), eval, 512),
               p_awq = perplexity_of(awq.path(), eval, 512);
  std::printf("perplexity on %zu austen tokens: fp16 %.3f  rtn %.3f  awq %.3f\n", eval.size(),
              p_fp16, p_rtn, p_awq);
  EXPECT_LT(p_fp16, p_rtn);
  EXPECT_LT(p_awq, p_rtn);
  EXPECT_GT(p_awq, p_fp16);
}

}  // namespace
}  // namespace awqd
