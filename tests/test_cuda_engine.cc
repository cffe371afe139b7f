// The CUDA engine on the GPU machine: llama-13m greedy ids against HF transformers' fp16 run
// (up to the first near-tie, where fp16 engines may legitimately differ), schedule independence
// in deterministic mode, CPU/GPU agreement, seeded sampling alone vs batched, and KV-cache
// exhaustion handled by preemption. Skips without a CUDA device.
#include <gtest/gtest.h>

#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "engine/cpu_executor.h"
#include "engine/engine.h"
#include "engine/executor_factory.h"
#include "engine/model_weights.h"
#include "engine/synth.h"
#include "engine/text_corpus.h"
#include "tests/model_builder.h"
#include "tests/test_support.h"

namespace awqd {
namespace {

struct Ref {
  std::string prompt;
  std::vector<std::int32_t> ids, fp16_greedy, fp32_greedy;
  std::vector<float> margins;  // float32 top-2 margins per generated step
};

std::vector<Ref> refs(const std::filesystem::path& dir) {
  nlohmann::json j;
  std::ifstream(dir / "reference-outputs.json") >> j;
  std::vector<Ref> out;
  for (std::size_t i = 0; i < j["prompts"].size(); ++i) {
    Ref r;
    r.prompt = j["prompts"][i]["prompt"];
    r.ids = j["prompts"][i]["ids"].get<std::vector<std::int32_t>>();
    r.fp16_greedy = j["prompts"][i]["greedy_ids"].get<std::vector<std::int32_t>>();
    r.fp32_greedy = j["float32"][i]["greedy_ids"].get<std::vector<std::int32_t>>();
    r.margins = j["float32"][i]["top2_margins"].get<std::vector<float>>();
    out.push_back(r);
  }
  return out;
}

// Steps that must agree: those before the first whose top-2 margin is below 0.05.
std::size_t trusted_prefix(const Ref& r) {
  std::size_t n = 0;
  while (n < r.margins.size() && r.margins[n] >= 0.05f) ++n;
  return n;
}

std::map<std::string, std::vector<std::int32_t>> run_all(Engine& e) {
  std::map<std::string, std::vector<std::int32_t>> out;
  while (e.has_unfinished())
    for (const auto& o : e.step()) out[o.id].insert(out[o.id].end(), o.new_token_ids.begin(), o.new_token_ids.end());
  return out;
}

EngineConfig cuda_config(const std::filesystem::path& dir) {
  EngineConfig c;
  c.model_dir = dir;
  c.device = "cuda";
  c.gpu_memory_utilization = 0.5f;
  return c;
}

GenerationRequest greedy(const std::string& id, std::vector<std::int32_t> ids, int n) {
  GenerationRequest r;
  r.id = id;
  r.prompt_ids = std::move(ids);
  r.params.temperature = 0;
  r.params.max_tokens = n;
  return r;
}

class CudaEngine : public ::testing::Test {
 protected:
  void SetUp() override {
    AWQD_REQUIRE_CUDA();
    dir_ = test::fixture("llama-13m");
    if (dir_.empty()) GTEST_SKIP() << "fixture llama-13m not found under " << test::fixtures_dir();
    refs_ = refs(dir_);
  }
  std::filesystem::path dir_;
  std::vector<Ref> refs_;
};

TEST_F(CudaEngine, GreedyMatchesTransformersUpToNearTies) {
  Engine e(cuda_config(dir_));
  for (std::size_t i = 0; i < refs_.size(); ++i) e.add_request(greedy("p" + std::to_string(i), refs_[i].ids, 48));
  const auto out = run_all(e);
  for (std::size_t i = 0; i < refs_.size(); ++i) {
    const auto& got = out.at("p" + std::to_string(i));
    const std::size_t n = trusted_prefix(refs_[i]);
    ASSERT_GE(got.size(), n);
    EXPECT_EQ(std::vector<std::int32_t>(got.begin(), got.begin() + n),
              std::vector<std::int32_t>(refs_[i].fp16_greedy.begin(), refs_[i].fp16_greedy.begin() + n))
        << "prompt " << i << ": first " << n << " steps have top-2 margin >= 0.05";
    std::size_t same = 0;
    while (same < got.size() && same < refs_[i].fp16_greedy.size() && got[same] == refs_[i].fp16_greedy[same]) ++same;
    std::printf("prompt %zu: %zu of 48 tokens equal HF fp16 (first near-tie at step %zu)\n", i, same, n);
  }
}

// 64 mixed jobs: the reference prompts plus others sharing their prefixes, varied lengths.
std::vector<GenerationRequest> mixed_batch(const std::vector<Ref>& refs) {
  std::vector<GenerationRequest> reqs;
  for (int j = 0; j < 64; ++j) {
    const Ref& r = refs[j % refs.size()];
    auto ids = r.ids;
    for (int extra = 0; extra < j / 3; ++extra) ids.insert(ids.end(), r.ids.begin() + 1, r.ids.end());
    reqs.push_back(greedy("j" + std::to_string(j), ids, 16 + j % 24));
  }
  return reqs;
}

TEST_F(CudaEngine, DeterministicModeIsScheduleIndependent) {
  auto alone_cfg = cuda_config(dir_);
  alone_cfg.deterministic = true;
  const auto reqs = mixed_batch(refs_);
  std::map<std::string, std::vector<std::int32_t>> alone;
  {
    Engine e(alone_cfg);
    for (const auto& r : reqs) {
      e.add_request(r);
      alone[r.id] = run_all(e).at(r.id);
    }
  }
  struct Variant {
    const char* name;
    bool prefix;
    int budget;
  };
  for (const Variant v : {Variant{"batched", true, 8192}, Variant{"no prefix cache", false, 8192},
                          Variant{"chunked 7", true, 7}, Variant{"chunked 61", false, 61}}) {
    auto cfg = alone_cfg;
    cfg.enable_prefix_caching = v.prefix;
    cfg.max_num_batched_tokens = v.budget;
    cfg.max_num_seqs = 64;
    Engine e(cfg);
    for (const auto& r : reqs) e.add_request(r);
    EXPECT_EQ(run_all(e), alone) << v.name;
  }
}

TEST_F(CudaEngine, SeededSamplingAloneEqualsBatched) {
  auto cfg = cuda_config(dir_);
  cfg.deterministic = true;
  auto reqs = mixed_batch(refs_);
  for (std::size_t i = 0; i < reqs.size(); ++i) {
    reqs[i].params.temperature = 0.9f;
    reqs[i].params.top_p = 0.95f;
    reqs[i].params.top_k = 40;
    reqs[i].params.seed = 1000 + i;
  }
  std::map<std::string, std::vector<std::int32_t>> alone;
  {
    Engine e(cfg);
    for (const auto& r : reqs) {
      e.add_request(r);
      alone[r.id] = run_all(e).at(r.id);
    }
  }
  Engine e(cfg);
  for (const auto& r : reqs) e.add_request(r);
  EXPECT_EQ(run_all(e), alone);
}

TEST_F(CudaEngine, AgreesWithCpuExecutorOnTop1) {
  // Greedy continuations of the reference prompts on both executors: equal up to the first
  // near-tie (the CPU computes in fp32, the GPU in fp16).
  auto cpu_cfg = cuda_config(dir_);
  cpu_cfg.device = "cpu";
  Engine gpu(cuda_config(dir_)), cpu(cpu_cfg);
  for (std::size_t i = 0; i < refs_.size(); ++i) {
    gpu.add_request(greedy("p" + std::to_string(i), refs_[i].ids, 48));
    cpu.add_request(greedy("p" + std::to_string(i), refs_[i].ids, 48));
  }
  const auto g = run_all(gpu), c = run_all(cpu);
  for (std::size_t i = 0; i < refs_.size(); ++i) {
    const std::string id = "p" + std::to_string(i);
    const std::size_t n = trusted_prefix(refs_[i]);
    EXPECT_EQ(std::vector<std::int32_t>(g.at(id).begin(), g.at(id).begin() + n),
              std::vector<std::int32_t>(c.at(id).begin(), c.at(id).begin() + n)) << id;
  }
}

TEST_F(CudaEngine, KvExhaustionCompletesEveryJobByPreemption) {
  auto cfg = cuda_config(dir_);
  cfg.num_kv_blocks_override = 24;  // 384 tokens for 16 jobs of ~200
  Engine e(cfg);
  for (int j = 0; j < 16; ++j) {
    auto ids = refs_[j % refs_.size()].ids;
    while (ids.size() < 100) ids.insert(ids.end(), ids.begin() + 1, ids.begin() + 8);
    auto r = greedy("k" + std::to_string(j), ids, 100);
    r.params.ignore_eos = true;
    e.add_request(r);
  }
  const auto out = run_all(e);
  ASSERT_EQ(out.size(), 16u);
  for (const auto& [id, ids] : out) EXPECT_EQ(ids.size(), 100u) << id;
  EXPECT_GT(e.stats().preemptions, 0);
}

// One window of `ids` (positions 0..n-1, blocks 0..) through an executor; logits of every row.
std::vector<float> window_logits(Executor& ex, std::span<const std::int32_t> ids) {
  StepBatch b;
  const int n = static_cast<int>(ids.size());
  b.token_ids.assign(ids.begin(), ids.end());
  b.cu_seqlens_q = {0, n};
  b.context_lens = {n};
  b.max_blocks_per_seq = (n + kKvBlockSize - 1) / kKvBlockSize;
  for (int i = 0; i < b.max_blocks_per_seq; ++i) b.block_tables.push_back(i);
  for (int p = 0; p < n; ++p) {
    b.positions.push_back(p);
    b.slot_mapping.push_back(p);
    b.logits_rows.push_back(p);
  }
  return ex.execute(b).logits;
}

int argmax(const float* v, int n) { return static_cast<int>(std::max_element(v, v + n) - v); }

TEST_F(CudaEngine, TopOneAgreementWithCpuOnHeldOutText) {
  const auto text_path = test::fixture("text/austen-heldout.txt");
  if (text_path.empty()) GTEST_SKIP() << "fixture text/austen-heldout.txt not found";
  std::ifstream in(text_path);
  const std::string text((std::istreambuf_iterator<char>(in)), {});
  const auto weights = ModelWeights::load(dir_);
  const Tokenizer tok = Tokenizer::load(dir_);
  const auto ids = tokenize_paragraphs(tok, text);
  auto cfg = cuda_config(dir_);
  cfg.max_num_batched_tokens = 512;
  auto gpu = make_executor(*weights, cfg);
  CpuExecutor cpu(*weights, 16 << 20);
  const int V = weights->config().vocab_size;
  std::int64_t agree = 0, total = 0;
  for (const auto& w : cut_samples(ids, 24, 512)) {
    const auto g = window_logits(*gpu, w), c = window_logits(cpu, w);
    for (std::size_t r = 0; r < w.size(); ++r) {
      agree += argmax(&g[r * V], V) == argmax(&c[r * V], V);
      ++total;
    }
  }
  const double rate = static_cast<double>(agree) / static_cast<double>(total);
  std::printf("top-1 agreement CUDA (fp16) vs CPU (fp32) on austen-heldout: %lld of %lld positions = %.4f\n",
              static_cast<long long>(agree), static_cast<long long>(total), rate);
  EXPECT_GE(rate, 0.99);
}

// Greedy tokens and their top-2 margins of `prompts` prompts of 80 tokens (12 generated each)
// on an engine configured by `configure`.
struct GreedyRun {
  std::map<std::string, std::vector<std::int32_t>> tokens;
  std::map<std::string, std::vector<float>> margins;
  std::string describe;
};
template <class Configure>
GreedyRun run_greedy(const std::filesystem::path& dir, int prompts, Configure configure) {
  EngineConfig c = cuda_config(dir);
  configure(c);
  Engine e(c);
  GreedyRun out;
  out.describe = e.describe();
  for (int j = 0; j < prompts; ++j) {
    std::vector<std::int32_t> ids;
    for (int t = 0; t < 80; ++t) ids.push_back(3 + (j * 131 + t * 17) % 1000);
    auto r = greedy("w" + std::to_string(j), ids, 12);
    r.params.ignore_eos = true;
    r.params.logprobs = 2;
    e.add_request(r);
  }
  while (e.has_unfinished())
    for (const auto& o : e.step()) {
      out.tokens[o.id].insert(out.tokens[o.id].end(), o.new_token_ids.begin(), o.new_token_ids.end());
      for (const auto& s : o.new_logprobs)
        out.margins[o.id].push_back(s.top.size() == 2 ? s.top[0].logprob - s.top[1].logprob : 1.0f);
    }
  return out;
}

// Greedy tokens of `got` equal `want`'s up to the first step whose top-2 logprob margin (in
// `want`) is below 0.01; returns how many sequences are identical throughout.
int expect_same_up_to_near_ties(const GreedyRun& got, const GreedyRun& want) {
  int identical = 0;
  for (const auto& [id, w] : want.tokens) {
    const auto& g = got.tokens.at(id);
    EXPECT_EQ(g.size(), w.size()) << id;
    if (g.size() != w.size()) continue;
    std::size_t trusted = 0;
    while (trusted < w.size() && want.margins.at(id)[trusted] >= 0.01f) ++trusted;
    EXPECT_EQ(std::vector<std::int32_t>(g.begin(), g.begin() + trusted),
              std::vector<std::int32_t>(w.begin(), w.begin() + trusted))
        << id << ": the first " << trusted << " steps have a top-2 margin >= 0.01";
    identical += g == w;
  }
  return identical;
}

test::TinyModelSpec awq_spec() {
  test::TinyModelSpec spec;
  spec.hidden = 512;
  spec.intermediate = 1536;
  spec.layers = 2;
  spec.heads = 8;
  spec.kv_heads = 2;
  spec.head_dim = 128;
  spec.vocab = 1024;
  spec.awq = true;
  spec.group_size = 128;
  spec.seed = 7;
  return spec;
}

TEST(CudaWeightCache, Fp16CopiesGiveTheAwqKernelsTokensUpToNearTies) {
  // An AWQ model, 64 prompts of 80 tokens: steps of at least the crossover the executor measured
  // for each weight shape at load (17 to 257 rows; prefill, and the 64-sequence decode steps for
  // the linears whose crossover is at most 64) run their linears through cuBLASLt on the fp16
  // copies ("on") or through the AWQ kernels ("off"); the weights are the same fp16 values, only
  // the summation order differs.
  // Greedy tokens must agree up to the first step whose top-2 logprob margin (of the "off" run)
  // is below 0.01.
  AWQD_REQUIRE_CUDA();
  test::TempDir dir;
  test::write_tiny_model(dir.path(), awq_spec());
  write_synth_tokenizer(dir.path(), "tiny");
  const GreedyRun on = run_greedy(dir.path(), 64, [](EngineConfig& c) { c.fp16_weight_cache = "on"; });
  const GreedyRun off = run_greedy(dir.path(), 64, [](EngineConfig& c) { c.fp16_weight_cache = "off"; });
  EXPECT_NE(on.describe.find("fp16 cache"), std::string::npos) << on.describe;
  EXPECT_NE(on.describe.find("rows (measured, "), std::string::npos) << on.describe;
  EXPECT_EQ(off.describe.find("fp16 cache"), std::string::npos) << off.describe;
  const int identical = expect_same_up_to_near_ties(on, off);
  std::printf("fp16 weight cache on vs off: %d of 64 sequences identical over 12 tokens\n", identical);
}

TEST(CudaFusedDecodeMlp, GivesTheSeparateKernelsTokensUpToNearTies) {
  // An AWQ model (q_size 1024 != hidden 512, G = 128), 6 prompts: the decode steps (6 rows) run
  // each layer's MLP half as one kernel (kernels/decode_mlp.cuh) or as the separate GEMM and norm
  // kernels; prefill steps take the separate kernels either way. Same weights and roundings,
  // other fp32 summation orders: greedy tokens agree up to near-ties. Also one prompt alone
  // (1-row steps), and deterministic mode, which must turn the kernel off.
  AWQD_REQUIRE_CUDA();
  test::TempDir dir;
  test::write_tiny_model(dir.path(), awq_spec());
  write_synth_tokenizer(dir.path(), "tiny");
  for (int prompts : {6, 1}) {
    const GreedyRun fused = run_greedy(dir.path(), prompts, [](EngineConfig& c) { c.fused_decode_mlp = true; });
    const GreedyRun separate = run_greedy(dir.path(), prompts, [](EngineConfig& c) { c.fused_decode_mlp = false; });
    EXPECT_NE(fused.describe.find("fused decode MLP on"), std::string::npos) << fused.describe;
    EXPECT_NE(separate.describe.find("fused decode MLP off"), std::string::npos) << separate.describe;
    const int identical = expect_same_up_to_near_ties(fused, separate);
    std::printf("fused decode MLP vs separate kernels, %d prompts: %d identical over 12 tokens\n", prompts, identical);
  }
  const GreedyRun det = run_greedy(dir.path(), 1, [](EngineConfig& c) {
    c.fused_decode_mlp = true;
    c.deterministic = true;
  });
  EXPECT_NE(det.describe.find("fused decode MLP off (deterministic)"), std::string::npos) << det.describe;
}

TEST(CudaFoldedNorms, GiveTheNormKernelsTokensUpToNearTies) {
  // AWQ models (Llama; Qwen2, whose qkv has a bias after the folded scale), 1, 6 and 12 prompts:
  // the decode steps (1-12 rows) fold the residual add and RMSNorm after o_proj and down_proj
  // into the GEMMs around them (EngineConfig::fold_norms, AwqGemmOptions::norm_out) or run them
  // as add_rmsnorm kernels. The residual is the same bits; the 1 / rms is applied to the next
  // GEMM's sums instead of its input, one fp16 rounding moved: greedy tokens agree up to
  // near-ties. Deterministic mode turns the folding off.
  AWQD_REQUIRE_CUDA();
  for (const char* arch : {"LlamaForCausalLM", "Qwen2ForCausalLM"}) {
    test::TempDir dir;
    test::TinyModelSpec spec = awq_spec();
    spec.arch = arch;
    test::write_tiny_model(dir.path(), spec);
    write_synth_tokenizer(dir.path(), "tiny");
    for (int prompts : {1, 6, 12}) {
      const GreedyRun folded = run_greedy(dir.path(), prompts, [](EngineConfig& c) { c.fold_norms = true; });
      const GreedyRun kernels = run_greedy(dir.path(), prompts, [](EngineConfig& c) { c.fold_norms = false; });
      EXPECT_NE(folded.describe.find("norms folded into the GEMMs"), std::string::npos) << folded.describe;
      EXPECT_NE(kernels.describe.find("norms as kernels"), std::string::npos) << kernels.describe;
      const int identical = expect_same_up_to_near_ties(folded, kernels);
      std::printf("%s, folded norms vs kernels, %d prompts: %d identical over 12 tokens\n", arch, prompts, identical);
    }
  }
  test::TempDir dir;
  test::write_tiny_model(dir.path(), awq_spec());
  write_synth_tokenizer(dir.path(), "tiny");
  const GreedyRun det = run_greedy(dir.path(), 1, [](EngineConfig& c) { c.deterministic = true; });
  EXPECT_NE(det.describe.find("norms as kernels"), std::string::npos) << det.describe;
}

TEST(CudaEngineArchs, EveryArchitectureMatchesTheCpuReference) {
  // Tiny random models of each architecture, fp16 and AWQ, head_dim 64 and 128: the GPU's
  // logits (fp16 activations) against the CPU's (fp32) for a 40-token prompt.
  AWQD_REQUIRE_CUDA();
  for (const char* arch : {"LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "MistralForCausalLM"}) {
    for (int hd : {64, 128}) {
      for (bool awq : {false, true}) {
        test::TempDir tmp;
        test::TinyModelSpec s;
        s.arch = arch;
        s.head_dim = hd;
        s.hidden = 256;
        s.intermediate = 512;
        s.heads = 4;
        s.kv_heads = 2;
        s.vocab = 512;
        s.awq = awq;
        s.group_size = 64;
        s.tied = !awq;
        test::write_tiny_model(tmp.path(), s);
        const auto weights = ModelWeights::load(tmp.path());
        EngineConfig cfg = cuda_config(tmp.path());
        cfg.max_num_batched_tokens = 64;
        cfg.max_num_seqs = 8;
        cfg.num_kv_blocks_override = 16;
        auto gpu = make_executor(*weights, cfg);
        CpuExecutor cpu(*weights, 0, 16);
        std::vector<std::int32_t> ids(40);
        for (int i = 0; i < 40; ++i) ids[i] = (i * 37 + 11) % s.vocab;
        const auto g = window_logits(*gpu, ids), c = window_logits(cpu, ids);
        ASSERT_EQ(g.size(), c.size());
        double err = 0, ref = 0;
        for (std::size_t i = 0; i < g.size(); ++i) {
          err += (g[i] - c[i]) * (g[i] - c[i]);
          ref += c[i] * c[i];
        }
        // fp16 activations and weights rounding: relative error of a few 1e-3 at most.
        EXPECT_LT(std::sqrt(err / ref), 1e-2) << arch << " head_dim " << hd << (awq ? " awq" : " fp16");
      }
    }
  }
}

}  // namespace
}  // namespace awqd
