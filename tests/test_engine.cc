// The Engine end to end on the CPU executor: text prompts through the tokenizer, streaming text,
// stop strings and ids, max_tokens, cancellation, bad requests; the imported llama2.c model; and
// the `awqd generate` command against HF transformers' float32 reference.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "engine/engine.h"
#include "engine/llama2c.h"
#include "tests/model_builder.h"
#include "tests/test_support.h"

namespace awqd {
namespace {

struct Finished {
  std::string text;
  std::vector<std::int32_t> ids;
  FinishReason reason = FinishReason::kNone;
  int steps_with_text = 0;
};

std::map<std::string, Finished> run_all(Engine& e) {
  std::map<std::string, Finished> out;
  while (e.has_unfinished()) {
    for (const auto& o : e.step()) {
      Finished& f = out[o.id];
      f.text += o.new_text;
      f.ids.insert(f.ids.end(), o.new_token_ids.begin(), o.new_token_ids.end());
      f.steps_with_text += !o.new_text.empty();
      if (o.finished) f.reason = o.finish_reason;
    }
  }
  return out;
}

EngineConfig cpu_config(const std::filesystem::path& dir) {
  EngineConfig c;
  c.model_dir = dir;
  c.device = "cpu";
  c.cpu_kv_cache_bytes = 32 << 20;
  return c;
}

TEST(Engine, ImportedStories260KGreedyFromBos) {
  AWQD_REQUIRE_FIXTURE(dir, "stories260K");
  test::TempDir tmp;
  import_llama2c(dir / "stories260K.bin", dir / "tok512.bin", tmp.path() / "m");
  Engine e(cpu_config(tmp.path() / "m"));
  GenerationRequest r;
  r.id = "s";
  r.prompt_ids = {1};
  r.params.temperature = 0;
  r.params.max_tokens = 60;
  e.add_request(r);
  const auto out = run_all(e);
  const std::string want =
      "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. "
      "One day, she saw a big, red ball";
  EXPECT_EQ(out.at("s").text.substr(0, want.size()), want);
  // The imported tokenizer round-trips its own text.
  EXPECT_EQ(e.tokenizer().decode(e.tokenizer().encode(want, false)), want);
}

class LlamaEngine : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = test::fixture("llama-13m");
    if (dir_.empty()) GTEST_SKIP() << "fixture llama-13m not found under " << test::fixtures_dir();
    engine_ = std::make_unique<Engine>(cpu_config(dir_));
  }
  GenerationRequest request(const std::string& id, const std::string& prompt, int max_tokens) {
    GenerationRequest r;
    r.id = id;
    r.prompt_ids = engine_->tokenizer().encode(prompt, true);
    r.params.temperature = 0;
    r.params.max_tokens = max_tokens;
    return r;
  }
  std::filesystem::path dir_;
  std::unique_ptr<Engine> engine_;
};

TEST_F(LlamaEngine, StreamedTextEqualsDecodeAndReference) {
  nlohmann::json ref;
  std::ifstream(dir_ / "reference-outputs.json") >> ref;
  for (std::size_t i = 0; i < ref["prompts"].size(); ++i) {
    const auto& p = ref["prompts"][i];
    auto r = request("r" + std::to_string(i), p["prompt"].get<std::string>(), 48);
    EXPECT_EQ(r.prompt_ids, p["ids"].get<std::vector<std::int32_t>>());
    engine_->add_request(r);
  }
  const auto out = run_all(*engine_);
  for (std::size_t i = 0; i < ref["prompts"].size(); ++i) {
    const Finished& f = out.at("r" + std::to_string(i));
    EXPECT_EQ(f.ids, ref["float32"][i]["greedy_ids"].get<std::vector<std::int32_t>>());
    // The streamed text continues the prompt (it keeps the leading space that decoding the
    // generated ids alone would strip): prompt text + streamed text = decode(prompt + output).
    auto all = ref["prompts"][i]["ids"].get<std::vector<std::int32_t>>();
    const std::string prompt_text = engine_->tokenizer().decode(all, true);
    all.insert(all.end(), f.ids.begin(), f.ids.end());
    EXPECT_EQ(prompt_text + f.text, engine_->tokenizer().decode(all, true));
    EXPECT_EQ(f.reason, FinishReason::kLength);
    EXPECT_GT(f.steps_with_text, 20);  // streamed, not all at the end
  }
}

TEST_F(LlamaEngine, StopStringCutsTextAndFinishes) {
  // Greedy text of prompt 0 is " I am sure I\nshould not be very much obliged ..."
  auto r = request("a", "It is a truth universally acknowledged, that", 48);
  r.params.stop = {"very much", "zzz"};
  engine_->add_request(r);
  const auto out = run_all(*engine_);
  EXPECT_EQ(out.at("a").text, " I am sure I\nshould not be ");
  EXPECT_EQ(out.at("a").reason, FinishReason::kStop);
}

TEST_F(LlamaEngine, StopTokenIdAndEos) {
  auto r = request("a", "It is a truth universally acknowledged, that", 48);
  r.params.stop_token_ids = {13};  // "\n": the fifth greedy token
  engine_->add_request(r);
  const auto out = run_all(*engine_);
  EXPECT_EQ(out.at("a").ids, (std::vector<std::int32_t>{315, 837, 1864, 315, 13}));
  EXPECT_EQ(out.at("a").text, " I am sure I");
  EXPECT_EQ(out.at("a").reason, FinishReason::kStop);
}

TEST_F(LlamaEngine, CancelKeepsPartialOutput) {
  engine_->add_request(request("run", "The Python interpreter is", 200));
  engine_->add_request(request("queued", "Elizabeth looked at Mr. Darcy and", 200));
  for (int i = 0; i < 5; ++i) engine_->step();
  EXPECT_TRUE(engine_->cancel("run"));
  EXPECT_FALSE(engine_->cancel("nope"));
  const auto outs = engine_->step();
  bool saw = false;
  for (const auto& o : outs)
    if (o.id == "run") {
      saw = true;
      EXPECT_TRUE(o.finished);
      EXPECT_EQ(o.finish_reason, FinishReason::kCancelled);
      EXPECT_GE(o.completion_tokens, 4);
    }
  EXPECT_TRUE(saw);
  const auto rest = run_all(*engine_);
  EXPECT_EQ(rest.at("queued").reason, FinishReason::kLength);
  EXPECT_EQ(rest.count("run"), 0u);
}

TEST_F(LlamaEngine, BadRequestsAreRejectedClearly) {
  auto expect_error = [&](GenerationRequest r, const std::string& needle) {
    try {
      engine_->add_request(std::move(r));
      ADD_FAILURE() << "accepted; expected an error containing: " << needle;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  auto r = request("x", "hello", 4);
  r.prompt_ids.clear();
  expect_error(r, "empty");
  r = request("x", "hello", 4);
  r.prompt_ids.push_back(32000);
  expect_error(r, "outside the vocabulary");
  r = request("x", "hello", 4);
  r.prompt_ids.assign(1024, 5);
  expect_error(r, "the model's context is 1024");
  r = request("x", "hello", 4);
  r.params.top_p = 0;
  expect_error(r, "top_p");
  engine_->add_request(request("dup", "hello", 4));
  expect_error(request("dup", "hello", 4), "already active");
}

TEST_F(LlamaEngine, LengthCapAtContext) {
  auto r = request("long", "hello", 5000);
  r.prompt_ids.resize(1020, 5);
  r.params.ignore_eos = true;
  engine_->add_request(r);
  const auto out = run_all(*engine_);
  EXPECT_EQ(out.at("long").ids.size(), 4u);  // 1020 + 4 = the 1024-token context
  EXPECT_EQ(out.at("long").reason, FinishReason::kLength);
}

#ifdef AWQD_BINARY
TEST(GenerateCommand, ReproducesFloat32GreedyIds) {
  AWQD_REQUIRE_FIXTURE(dir, "llama-13m");
  AWQD_REQUIRE_BINARY(awqd, AWQD_BINARY);
  nlohmann::json ref;
  std::ifstream(dir / "reference-outputs.json") >> ref;
  for (std::size_t i = 0; i < ref["prompts"].size(); ++i) {
    const std::string prompt = ref["prompts"][i]["prompt"];
    const std::string cmd = awqd + " generate --device cpu --model '" + dir.string() +
                            "' --temperature 0 --max-tokens 48 --json --prompt '" + prompt + "'";
    std::string out;
    ASSERT_EQ(test::run_command(cmd, out), 0) << out;
    const auto j = nlohmann::json::parse(out);
    EXPECT_EQ(j["token_ids"].get<std::vector<std::int32_t>>(), ref["float32"][i]["greedy_ids"].get<std::vector<std::int32_t>>());
    EXPECT_EQ(j["finish_reason"], "length");
  }
}
#endif

}  // namespace
}  // namespace awqd
