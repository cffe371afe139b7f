// `awqd synth` checkpoints (engine/synth.h): every named model's config parses with the real
// model's shapes; the generated tokenizers load, round-trip text and put the special tokens at
// their real ids; the tiny model loads through the normal path and generates 256 tokens with
// finite, fp16-safe logits at every position; seeds are reproducible.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/cpu_executor.h"
#include "engine/engine.h"
#include "engine/model_config.h"
#include "engine/synth.h"
#include "engine/tokenizer.h"
#include "tests/model_builder.h"

namespace awqd {
namespace {

namespace fs = std::filesystem;

TEST(Synth, ConfigsHaveTheRealModelsShapes) {
  struct Want {
    const char* name;
    Arch arch;
    int hidden, inter, layers, heads, kv, vocab;
  };
  for (const Want& w : {Want{"llama3-8b", Arch::kLlama, 4096, 14336, 32, 32, 8, 128256},
                        Want{"llama3-70b", Arch::kLlama, 8192, 28672, 80, 64, 8, 128256},
                        Want{"qwen2.5-7b", Arch::kQwen2, 3584, 18944, 28, 28, 4, 152064},
                        Want{"qwen2.5-14b", Arch::kQwen2, 5120, 13824, 48, 40, 8, 152064},
                        Want{"qwen2.5-32b", Arch::kQwen2, 5120, 27648, 64, 40, 8, 152064},
                        Want{"mistral-7b", Arch::kMistral, 4096, 14336, 32, 32, 8, 32000}}) {
    SCOPED_TRACE(w.name);
    const ModelConfig c = parse_model_config(synth_config(w.name), w.name);
    EXPECT_EQ(c.arch, w.arch);
    EXPECT_EQ(c.hidden_size, w.hidden);
    EXPECT_EQ(c.intermediate_size, w.inter);
    EXPECT_EQ(c.num_layers, w.layers);
    EXPECT_EQ(c.num_heads, w.heads);
    EXPECT_EQ(c.num_kv_heads, w.kv);
    EXPECT_EQ(c.head_dim, 128);
    EXPECT_EQ(c.vocab_size, w.vocab);
    EXPECT_TRUE(c.quant.awq);
    EXPECT_EQ(c.quant.group_size, 128);
    EXPECT_EQ(c.attention_bias, w.arch == Arch::kQwen2);
  }
  const ModelConfig l31 = parse_model_config(synth_config("llama3.1-8b"), "llama3.1-8b");
  EXPECT_EQ(l31.rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_THROW(synth_config("gpt-5"), std::invalid_argument);
}

TEST(Synth, GeneratedTokenizersLoadAndRoundTrip) {
  struct Want {
    const char* name;
    int vocab;  // ids in the tokenizer, added tokens included
    const char* special;
    int special_id;
    bool add_bos;
  };
  for (const Want& w : {Want{"llama3-8b", 128256, "<|eot_id|>", 128009, true},
                        Want{"qwen2.5-7b", 151665, "<|im_start|>", 151644, false},
                        Want{"mistral-7b", 32000, "</s>", 2, true},
                        Want{"tiny", 1024, "<|begin_of_text|>", 768, true}}) {
    SCOPED_TRACE(w.name);
    test::TempDir dir;
    write_synth_tokenizer(dir.path(), w.name);
    const Tokenizer tok = Tokenizer::load(dir.path());
    EXPECT_EQ(tok.vocab_size(), w.vocab);
    EXPECT_EQ(tok.token_to_id(w.special), std::optional<std::int32_t>(w.special_id));
    EXPECT_TRUE(tok.is_special(w.special_id));
    EXPECT_EQ(tok.add_bos(), w.add_bos);
    const std::string text =
        "The quick brown fox, 12345 caf\xC3\xA9 \xF0\x9F\x99\x82 jumps\n\tover.";
    const auto ids = tok.encode(text, false);
    EXPECT_LT(ids.size(), text.size()) << "merges apply";
    EXPECT_EQ(tok.decode(ids), text);
  }
}

TEST(Synth, TinyGeneratesLongWithFiniteFp16SafeLogits) {
  test::TempDir dir;
  SynthOptions o;
  o.like = "tiny";
  o.out = dir.path();
  o.seed = 5;
  const SynthResult r = synth_model(o);
  EXPECT_EQ(r.shards, 1);
  EXPECT_TRUE(fs::exists(dir.path() / "model.safetensors"));

  EngineConfig ec;
  ec.model_dir = dir.path();
  Engine engine(ec);
  GenerationRequest req;
  req.id = "long";
  req.prompt_ids = engine.tokenizer().encode("Once upon a time", true);
  req.params.temperature = 0;
  req.params.max_tokens = 256;
  req.params.ignore_eos = true;
  engine.add_request(req);
  std::vector<std::int32_t> all = req.prompt_ids;
  while (engine.has_unfinished())
    for (const auto& out : engine.step())
      all.insert(all.end(), out.new_token_ids.begin(), out.new_token_ids.end());
  ASSERT_EQ(all.size(), req.prompt_ids.size() + 256);

  // Every position's logits over the whole sequence: finite and inside fp16's range.
  const auto w = ModelWeights::load(dir.path());
  const int T = static_cast<int>(all.size()), V = w->config().vocab_size;
  CpuExecutor ex(*w, 0, (T + kKvBlockSize - 1) / kKvBlockSize);
  StepBatch b;
  b.token_ids = all;
  b.cu_seqlens_q = {0, T};
  b.context_lens = {T};
  b.max_blocks_per_seq = (T + kKvBlockSize - 1) / kKvBlockSize;
  for (int i = 0; i < b.max_blocks_per_seq; ++i) b.block_tables.push_back(i);
  for (int t = 0; t < T; ++t) {
    b.positions.push_back(t);
    b.slot_mapping.push_back(t);
    b.logits_rows.push_back(t);
  }
  const auto logits = ex.execute(b).logits;
  ASSERT_EQ(logits.size(), static_cast<std::size_t>(T) * V);
  float max_abs = 0;
  for (float v : logits) {
    ASSERT_TRUE(std::isfinite(v));
    max_abs = std::max(max_abs, std::fabs(v));
  }
  EXPECT_LT(max_abs, 100.0f) << "far inside fp16's 65504";
  EXPECT_GT(max_abs, 0.5f) << "not degenerate";
}

TEST(Synth, SameSeedSameBytes) {
  test::TempDir a, b, c;
  for (auto [dir, seed] : {std::pair{&a, 1}, {&b, 1}, {&c, 2}}) {
    SynthOptions o;
    o.like = "tiny";
    o.out = dir->path();
    o.seed = seed;
    synth_model(o);
  }
  auto bytes = [](const fs::path& p) {
    std::ifstream in(p / "model.safetensors", std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  EXPECT_EQ(bytes(a.path()), bytes(b.path()));
  EXPECT_NE(bytes(a.path()), bytes(c.path()));
}

}  // namespace
}  // namespace awqd
