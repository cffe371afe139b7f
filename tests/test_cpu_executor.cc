// The CPU reference executor on the trained fixture model: greedy continuations equal HF
// transformers' float32 ids token for token, first-step top-5 logits within 1e-3; and the same
// tokens however the work is scheduled (batch, chunked prefill, prefix cache, preemption).
#include <gtest/gtest.h>

#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "engine/cpu_executor.h"
#include "engine/model_weights.h"
#include "engine/scheduler.h"
#include "tests/model_builder.h"
#include "tests/test_support.h"

namespace awqd {
namespace {

struct Reference {
  std::vector<std::int32_t> prompt_ids;
  std::vector<std::int32_t> greedy_ids;  // float32 run
  std::vector<std::int32_t> top5_ids;
  std::vector<float> top5_logits;
};

std::vector<Reference> load_reference(const std::filesystem::path& dir) {
  nlohmann::json j;
  std::ifstream(dir / "reference-outputs.json") >> j;
  std::vector<Reference> out;
  for (std::size_t i = 0; i < j["prompts"].size(); ++i) {
    Reference r;
    r.prompt_ids = j["prompts"][i]["ids"].get<std::vector<std::int32_t>>();
    r.greedy_ids = j["float32"][i]["greedy_ids"].get<std::vector<std::int32_t>>();
    r.top5_ids = j["float32"][i]["top5_ids"].get<std::vector<std::int32_t>>();
    r.top5_logits = j["float32"][i]["top5_logits"].get<std::vector<float>>();
    out.push_back(r);
  }
  return out;
}

// Drives scheduler + executor to completion; returns each sequence's generated tokens.
std::map<std::string, std::vector<std::int32_t>> run(Executor& ex, const SchedulerConfig& sc,
                                                     const std::vector<std::pair<std::string, std::vector<std::int32_t>>>& prompts,
                                                     const SamplingParams& params, std::int64_t* preemptions = nullptr) {
  Scheduler sched(sc, ex.num_kv_blocks());
  for (const auto& [id, ids] : prompts) {
    auto s = std::make_unique<Sequence>();
    s->id = id;
    s->tokens = ids;
    s->num_prompt = static_cast<int>(ids.size());
    s->params = params;
    sched.add(std::move(s));
  }
  std::map<std::string, std::vector<std::int32_t>> out;
  int guard = 0;
  while (sched.has_unfinished() && ++guard < 100000) {
    const SchedulerOutput so = sched.schedule();
    if (so.empty()) break;
    const StepBatch batch = sched.make_batch(so);
    const StepResult r = ex.execute(batch);
    sched.commit(so);
    std::size_t k = 0;
    for (const auto& s : so.seqs) {
      if (!s.samples) continue;
      s.seq->tokens.push_back(r.samples[k++].token);
      if (s.seq->num_output() >= s.seq->params.max_tokens) {
        out[s.seq->id].assign(s.seq->tokens.begin() + s.seq->num_prompt, s.seq->tokens.end());
        sched.remove(s.seq);
      }
    }
  }
  if (preemptions) *preemptions = sched.total_preemptions();
  return out;
}

SamplingParams greedy(int n) {
  SamplingParams p;
  p.temperature = 0;
  p.max_tokens = n;
  return p;
}

TEST(CpuExecutor, MatchesTransformersFloat32Greedy) {
  AWQD_REQUIRE_FIXTURE(dir, "llama-13m");
  const auto refs = load_reference(dir);
  const auto w = ModelWeights::load(dir);
  CpuExecutor ex(*w, 64 << 20);
  std::vector<std::pair<std::string, std::vector<std::int32_t>>> prompts;
  for (std::size_t i = 0; i < refs.size(); ++i) prompts.push_back({"p" + std::to_string(i), refs[i].prompt_ids});
  const auto got = run(ex, SchedulerConfig{}, prompts, greedy(48));
  for (std::size_t i = 0; i < refs.size(); ++i)
    EXPECT_EQ(got.at("p" + std::to_string(i)), refs[i].greedy_ids) << "prompt " << i;
}

TEST(CpuExecutor, FirstStepTopLogitsWithin1e3) {
  AWQD_REQUIRE_FIXTURE(dir, "llama-13m");
  const auto refs = load_reference(dir);
  const auto w = ModelWeights::load(dir);
  CpuExecutor ex(*w, 16 << 20);
  for (const auto& ref : refs) {
    Scheduler sched(SchedulerConfig{}, ex.num_kv_blocks());
    auto s = std::make_unique<Sequence>();
    s->id = "x";
    s->tokens = ref.prompt_ids;
    s->num_prompt = static_cast<int>(ref.prompt_ids.size());
    s->params = greedy(1);
    sched.add(std::move(s));
    const SchedulerOutput so = sched.schedule();
    StepBatch batch = sched.make_batch(so);
    batch.logits_rows.push_back(batch.num_tokens() - 1);
    const StepResult r = ex.execute(batch);
    ASSERT_EQ(r.logits.size(), 32000u);
    for (std::size_t k = 0; k < ref.top5_ids.size(); ++k)
      EXPECT_NEAR(r.logits[ref.top5_ids[k]], ref.top5_logits[k], 1e-3) << "token " << ref.top5_ids[k];
    // and they are the top 5, in order
    std::vector<std::int32_t> idx(32000);
    for (int i = 0; i < 32000; ++i) idx[i] = i;
    std::partial_sort(idx.begin(), idx.begin() + 5, idx.end(), [&](int a, int b) { return r.logits[a] > r.logits[b]; });
    EXPECT_EQ(std::vector<std::int32_t>(idx.begin(), idx.begin() + 5), ref.top5_ids);
  }
}

TEST(CpuExecutor, SameTokensUnderAnySchedule) {
  // Chunked prefill (tiny budgets), no prefix cache, a shared prefix, a pool so small that
  // sequences are preempted and recomputed: greedy and seeded-sampled tokens never change.
  AWQD_REQUIRE_FIXTURE(dir, "llama-13m");
  const auto refs = load_reference(dir);
  const auto w = ModelWeights::load(dir);
  std::vector<std::pair<std::string, std::vector<std::int32_t>>> prompts;
  for (int copy = 0; copy < 3; ++copy)
    for (std::size_t i = 0; i < refs.size(); ++i) {
      auto ids = refs[i].prompt_ids;
      for (int r = 0; r < copy; ++r) ids.insert(ids.end(), refs[i].prompt_ids.begin() + 1, refs[i].prompt_ids.end());
      prompts.push_back({"c" + std::to_string(copy) + "p" + std::to_string(i), ids});
    }
  SamplingParams sampled;
  sampled.temperature = 0.8f;
  sampled.top_p = 0.9f;
  sampled.seed = 1234;
  sampled.max_tokens = 20;
  for (const SamplingParams& params : {greedy(20), sampled}) {
    CpuExecutor big(*w, 64 << 20);
    const auto base = run(big, SchedulerConfig{}, {prompts[0]}, params);
    std::map<std::string, std::vector<std::int32_t>> alone;
    for (const auto& p : prompts) alone[p.first] = run(big, SchedulerConfig{}, {p}, params).at(p.first);
    SchedulerConfig chunked;
    chunked.max_num_batched_tokens = 7;
    EXPECT_EQ(run(big, chunked, prompts, params), alone);
    SchedulerConfig nocache;
    nocache.enable_prefix_caching = false;
    EXPECT_EQ(run(big, nocache, prompts, params), alone);
    CpuExecutor tiny(*w, 0, /*num_blocks=*/10);
    std::int64_t preempted = 0;
    EXPECT_EQ(run(tiny, SchedulerConfig{}, prompts, params, &preempted), alone);
    EXPECT_GT(preempted, 0);
  }
}

TEST(CpuExecutor, RunsEveryArchitectureAndAwq) {
  // Tiny random models of each architecture (fp16 and AWQ) run end to end with finite logits.
  for (const char* arch : {"LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "MistralForCausalLM"}) {
    for (bool awq : {false, true}) {
      test::TempDir tmp;
      test::TinyModelSpec s;
      s.arch = arch;
      s.awq = awq;
      s.tied = !awq;
      test::write_tiny_model(tmp.path(), s);
      const auto w = ModelWeights::load(tmp.path());
      CpuExecutor ex(*w, 4 << 20);
      Scheduler sched(SchedulerConfig{}, ex.num_kv_blocks());
      auto seq = std::make_unique<Sequence>();
      seq->id = "a";
      seq->tokens = {1, 5, 9, 33, 70};
      seq->num_prompt = 5;
      seq->params = greedy(1);
      sched.add(std::move(seq));
      const SchedulerOutput so = sched.schedule();
      StepBatch batch = sched.make_batch(so);
      batch.logits_rows = {0, 4};
      const StepResult r = ex.execute(batch);
      ASSERT_EQ(r.logits.size(), 2u * s.vocab) << arch;
      for (float v : r.logits) ASSERT_TRUE(std::isfinite(v)) << arch;
      EXPECT_NE(r.logits[0], r.logits[s.vocab]) << arch;
    }
  }
}

}  // namespace
}  // namespace awqd
