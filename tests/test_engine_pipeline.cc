// The engine's step pipeline on the CPU executor (llama-13m): with async_output the next step is
// submitted before the previous step's outputs are built, so a stop string can finish a sequence
// that is already in the step in flight. Every request must return exactly what it returns with
// async_output off: the same chunks, text, token ids, logprobs, finish reasons and usage, with
// stop strings, cancellations, preemption, prefix caching and chunked prefill in play. Also the
// step profile (EngineConfig::profile) and `awqd bench --profile`.
#include <gtest/gtest.h>

#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "tests/test_support.h"

namespace awqd {
namespace {

// Everything a request returned, chunk by chunk.
struct Record {
  std::vector<std::vector<std::int32_t>> chunk_ids;
  std::vector<std::string> chunk_text;
  std::vector<float> logprobs;
  std::vector<std::int32_t> top_tokens;
  int finished = 0;  // outputs with finished set (must be 1)
  FinishReason reason = FinishReason::kNone;
  int prompt_tokens = 0, completion_tokens = 0, cached_prompt_tokens = 0;

  std::vector<std::int32_t> ids() const {
    std::vector<std::int32_t> all;
    for (const auto& c : chunk_ids) all.insert(all.end(), c.begin(), c.end());
    return all;
  }
  std::string text() const {
    std::string all;
    for (const auto& t : chunk_text) all += t;
    return all;
  }
};

void expect_same(const Record& a, const Record& b, const std::string& id) {
  EXPECT_EQ(a.chunk_ids, b.chunk_ids) << id;
  EXPECT_EQ(a.chunk_text, b.chunk_text) << id;
  EXPECT_EQ(a.logprobs, b.logprobs) << id;
  EXPECT_EQ(a.top_tokens, b.top_tokens) << id;
  EXPECT_EQ(a.finished, 1) << id;
  EXPECT_EQ(b.finished, 1) << id;
  EXPECT_EQ(a.reason, b.reason) << id;
  EXPECT_EQ(a.prompt_tokens, b.prompt_tokens) << id;
  EXPECT_EQ(a.completion_tokens, b.completion_tokens) << id;
  EXPECT_EQ(static_cast<std::size_t>(a.completion_tokens), a.ids().size()) << id;
}

void collect(const std::vector<RequestOutput>& outs, std::map<std::string, Record>& records) {
  for (const auto& o : outs) {
    Record& r = records[o.id];
    ASSERT_EQ(r.finished, 0) << o.id << ": output after the request finished";
    r.chunk_ids.push_back(o.new_token_ids);
    r.chunk_text.push_back(o.new_text);
    for (const auto& lp : o.new_logprobs) {
      r.logprobs.push_back(lp.logprob);
      for (const auto& t : lp.top) r.top_tokens.push_back(t.token);
    }
    if (o.finished) {
      ++r.finished;
      r.reason = o.finish_reason;
    }
    r.prompt_tokens = o.prompt_tokens;
    r.completion_tokens = o.completion_tokens;
    r.cached_prompt_tokens = o.cached_prompt_tokens;
  }
}

std::map<std::string, Record> run_all(Engine& e) {
  std::map<std::string, Record> records;
  while (e.has_unfinished()) collect(e.step(), records);
  return records;
}

class EnginePipeline : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = test::fixture("llama-13m");
    if (dir_.empty()) GTEST_SKIP() << "fixture llama-13m not found under " << test::fixtures_dir();
  }
  EngineConfig config(bool async) const {
    EngineConfig c;
    c.model_dir = dir_;
    c.device = "cpu";
    c.cpu_kv_cache_bytes = 32 << 20;
    c.async_output = async;
    return c;
  }
  // The CUDA engine on `tp` GPUs; deterministic mode makes a sequence's logits independent of
  // its batch, so runs that schedule differently must still agree token for token.
  EngineConfig cuda_config(bool async, int tp, bool deterministic) const {
    EngineConfig c = config(async);
    c.device = "cuda";
    c.tensor_parallel = tp;
    c.gpu_memory_utilization = 0.5f;
    c.deterministic = deterministic;
    return c;
  }
  static GenerationRequest request(const Engine& e, const std::string& id,
                                   const std::string& prompt, int max_tokens) {
    GenerationRequest r;
    r.id = id;
    r.prompt_ids = e.tokenizer().encode(prompt, true);
    r.params.temperature = 0;
    r.params.max_tokens = max_tokens;
    return r;
  }
  std::filesystem::path dir_;
};

const char* const kPrompts[] = {
    "It is a truth universally acknowledged, that",
    "The Python interpreter is",
    "Elizabeth looked at Mr. Darcy and",
    "def main():\n    ",
    "Once upon a time",
};

TEST_F(EnginePipeline, StopStringsGiveTheSameOutputsWithOverlapOnAndOff) {
  // The greedy continuations first, to cut stop strings out of them at several depths: each
  // stop string finishes its sequence while async_output already has it in the next step.
  std::map<std::string, std::string> greedy;
  {
    Engine e(config(false));
    for (int i = 0; i < 5; ++i) e.add_request(request(e, "g" + std::to_string(i), kPrompts[i], 40));
    for (const auto& [id, rec] : run_all(e)) greedy[id] = rec.text();
  }
  auto add_all = [&](Engine& e) {
    for (int i = 0; i < 5; ++i) {
      const std::string& text = greedy.at("g" + std::to_string(i));
      ASSERT_GT(text.size(), 30u) << i;
      for (std::size_t depth : {3u, 11u, 24u}) {
        auto r = request(e, "s" + std::to_string(i) + "_" + std::to_string(depth), kPrompts[i], 40);
        r.params.stop = {text.substr(depth, 3 + i % 3), "\x01never"};
        e.add_request(r);
      }
      // Neighbours that run on: a plain one and one with a stop string that never matches.
      e.add_request(request(e, "p" + std::to_string(i), kPrompts[i], 30 + i));
      auto r = request(e, "n" + std::to_string(i), kPrompts[i], 20);
      r.params.stop = {"\x02"};
      e.add_request(r);
    }
  };
  Engine off(config(false)), on(config(true));
  add_all(off);
  add_all(on);
  const auto a = run_all(off), b = run_all(on);
  ASSERT_EQ(a.size(), b.size());
  int stopped = 0;
  for (const auto& [id, rec] : a) {
    ASSERT_TRUE(b.count(id)) << id;
    expect_same(rec, b.at(id), id);
    if (id[0] == 's') {
      stopped += rec.reason == FinishReason::kStop;
      EXPECT_LT(rec.completion_tokens, 40) << id;
    }
  }
  EXPECT_EQ(stopped, 15);
  // The dropped tokens of the sequences that were already in the next step count nowhere, and
  // every block went back.
  EXPECT_EQ(off.stats().generated_tokens, on.stats().generated_tokens);
  EXPECT_EQ(on.stats().kv_blocks_used, 0);
  EXPECT_EQ(on.stats().running + on.stats().waiting, 0);
}

TEST_F(EnginePipeline, CancellationMidRunIsTheSameWithOverlapOnAndOff) {
  // No stop strings here, so both engines schedule identically and run call by call in lockstep.
  Engine off(config(false)), on(config(true));
  for (Engine* e : {&off, &on}) {
    e->add_request(request(*e, "early", kPrompts[0], 100));
    e->add_request(request(*e, "late", kPrompts[1], 100));
    e->add_request(request(*e, "short", kPrompts[2], 3));  // finished before its cancel
    e->add_request(request(*e, "keep", kPrompts[3], 25));
    auto r = request(*e, "logprobs", kPrompts[4], 100);
    r.params.logprobs = 3;
    e->add_request(r);
  }
  std::map<std::string, Record> ra, rb;
  const std::map<int, std::vector<std::string>> cancels = {
      {0, {"early"}}, {4, {"short", "logprobs"}}, {9, {"late", "nope"}}};
  for (int call = 0; off.has_unfinished() || on.has_unfinished(); ++call) {
    ASSERT_LT(call, 200);
    if (cancels.count(call)) {
      for (const auto& id : cancels.at(call))
        EXPECT_EQ(off.cancel(id), on.cancel(id)) << id << " at call " << call;
    }
    const auto oa = off.step(), ob = on.step();
    ASSERT_EQ(oa.size(), ob.size()) << "call " << call;
    for (std::size_t i = 0; i < oa.size(); ++i) {
      EXPECT_EQ(oa[i].id, ob[i].id) << "call " << call;
      EXPECT_EQ(oa[i].new_token_ids, ob[i].new_token_ids) << "call " << call;
      EXPECT_EQ(oa[i].finish_reason, ob[i].finish_reason) << "call " << call;
    }
    collect(oa, ra);
    collect(ob, rb);
  }
  for (const auto& [id, rec] : ra) expect_same(rec, rb.at(id), id);
  EXPECT_EQ(ra.at("early").reason, FinishReason::kCancelled);
  EXPECT_EQ(ra.at("early").completion_tokens, 0);
  EXPECT_EQ(ra.at("logprobs").reason, FinishReason::kCancelled);
  EXPECT_EQ(ra.at("logprobs").completion_tokens, 4);
  EXPECT_EQ(ra.at("late").reason, FinishReason::kCancelled);
  EXPECT_EQ(ra.at("late").completion_tokens, 9);
  EXPECT_EQ(ra.at("short").reason, FinishReason::kLength);
  EXPECT_EQ(ra.at("keep").reason, FinishReason::kLength);
  EXPECT_EQ(on.stats().kv_blocks_used, 0);
  EXPECT_EQ(off.stats().generated_tokens, on.stats().generated_tokens);
}

// 36 requests: sampling of every kind (seeded, so batch-independent), stop strings and ids,
// priorities, prompts sharing prefixes.
void add_mixed_requests(Engine& e) {
  for (int j = 0; j < 36; ++j) {
    std::string prompt = kPrompts[j % 5];
    for (int k = 0; k < j / 6; ++k) prompt += std::string(" ") + kPrompts[(j + k) % 5];
    GenerationRequest r;
    r.id = "m" + std::to_string(j);
    r.prompt_ids = e.tokenizer().encode(prompt, true);
    SamplingParams& p = r.params;
    p.max_tokens = 8 + (j * 7) % 40;
    p.temperature = 0;
    p.seed = 1000 + j;
    switch (j % 6) {
      case 0:
        break;  // greedy
      case 1:
        p.temperature = 0.8f;
        p.top_k = 20;
        break;
      case 2:
        p.temperature = 1.0f;
        p.top_p = 0.9f;
        p.logprobs = 2;
        break;
      case 3:
        p.temperature = 0.7f;
        p.min_p = 0.05f;
        p.repetition_penalty = 1.3f;
        p.stop = {"e ", "\n"};
        break;
      case 4:
        p.temperature = 0.9f;
        p.presence_penalty = 0.5f;
        p.frequency_penalty = 0.3f;
        p.stop_token_ids = {13, 29889};
        break;
      case 5:
        p.stop = {"the"};
        p.ignore_eos = true;
        break;
    }
    r.priority = j % 3 == 0 ? 1 : 0;
    e.add_request(r);
  }
}

// A KV pool and token budget small enough to force chunked prefill and preemption.
EngineConfig tight(EngineConfig c) {
  c.num_kv_blocks_override = 20;  // 320 tokens for 12 running requests of up to ~100 each
  c.max_num_seqs = 12;
  c.max_num_batched_tokens = 48;
  return c;
}

// Runs the mixed requests with async_output off and on and expects the same outputs.
void expect_mixed_same_on_and_off(const EngineConfig& off_config, const EngineConfig& on_config) {
  Engine off(off_config), on(on_config);
  add_mixed_requests(off);
  add_mixed_requests(on);
  const auto a = run_all(off), b = run_all(on);
  ASSERT_EQ(a.size(), 36u);
  ASSERT_EQ(b.size(), 36u);
  std::int64_t completion = 0;
  std::map<FinishReason, int> reasons;
  for (const auto& [id, rec] : a) {
    expect_same(rec, b.at(id), id);
    completion += rec.completion_tokens;
    ++reasons[rec.reason];
  }
  EXPECT_GT(reasons[FinishReason::kStop], 5);
  EXPECT_GT(reasons[FinishReason::kLength], 5);
  EXPECT_GT(on.stats().preemptions, 0);
  EXPECT_EQ(on.stats().generated_tokens, completion);
  EXPECT_EQ(off.stats().generated_tokens, completion);
  EXPECT_EQ(on.stats().kv_blocks_used, 0);
}

TEST_F(EnginePipeline, ManyMixedRequestsGiveIdenticalStreamsOnAndOff) {
  expect_mixed_same_on_and_off(tight(config(false)), tight(config(true)));
}

TEST_F(EnginePipeline, ProfileFillsHostTimingsThatAddUp) {
  for (bool async : {false, true}) {
    EngineConfig c = config(async);
    c.profile = true;
    c.profile_every = 1;
    c.profile_warmup = 0;
    Engine e(c);
    for (int i = 0; i < 5; ++i)
      e.add_request(request(e, "r" + std::to_string(i), kPrompts[i], 12 + i));
    run_all(e);
    const EngineProfile p = e.profile();
    EXPECT_EQ(p.decode.steps + p.mixed.steps, e.stats().steps) << async;  // every step sampled
    EXPECT_GT(p.decode.steps, 0) << async;
    EXPECT_GT(p.mixed.steps, 0) << async;
    for (const StepTimes* t : {&p.decode, &p.mixed}) {
      for (double v : {t->period_ms, t->caller_ms, t->wait_ms, t->update_ms, t->schedule_ms,
                       t->make_batch_ms, t->submit_ms, t->outputs_ms})
        EXPECT_GE(v, 0.0) << async;
      EXPECT_LE(t->host_sum_ms(), t->period_ms * 1.0001 + 1e-6) << async;
      EXPECT_GT(t->submit_ms, 0.0) << async;  // the CPU executor computes in submit()
      EXPECT_GT(t->period_ms, 0.0) << async;
      EXPECT_EQ(t->gpu_steps, 0) << async;  // no GPU categories on the CPU
      EXPECT_EQ(t->gpu_step_ms, 0.0) << async;
      for (double v : t->gpu_ms) EXPECT_EQ(v, 0.0) << async;
    }
    EXPECT_EQ(p.decode.tokens, p.decode.sequences) << async;
    EXPECT_GT(p.mixed.tokens, p.mixed.sequences) << async;
  }
  // Sampling: every 4th step after 3.
  EngineConfig c = config(true);
  c.profile = true;
  c.profile_every = 4;
  c.profile_warmup = 3;
  Engine e(c);
  e.add_request(request(e, "one", kPrompts[0], 20));  // 20 steps: 3, 7, 11, 15, 19 sampled
  run_all(e);
  EXPECT_EQ(e.stats().steps, 20);
  EXPECT_EQ(e.profile().decode.steps + e.profile().mixed.steps, 5);
  // Off: nothing recorded.
  Engine quiet(config(true));
  quiet.add_request(request(quiet, "one", kPrompts[0], 5));
  run_all(quiet);
  EXPECT_EQ(quiet.profile().decode.steps + quiet.profile().mixed.steps, 0);
}

// The CUDA executors' submit() returns before the GPU has finished; in deterministic mode the
// outputs must still equal those of async_output off, on one GPU and under tensor parallelism.
TEST_F(EnginePipeline, CudaManyMixedRequestsGiveIdenticalStreamsOnAndOff) {
  AWQD_REQUIRE_CUDA();
  expect_mixed_same_on_and_off(tight(cuda_config(false, 1, true)),
                               tight(cuda_config(true, 1, true)));
}

TEST_F(EnginePipeline, CudaTensorParallelManyMixedRequestsGiveIdenticalStreamsOnAndOff) {
  AWQD_REQUIRE_GPUS(2);
  expect_mixed_same_on_and_off(tight(cuda_config(false, 2, true)),
                               tight(cuda_config(true, 2, true)));
}

// GPU profiling: every step measured, each category filled, and the eager replay (which writes
// no KV cache) changes no output: the same schedule gives the same tokens with profiling off.
void expect_cuda_profile(const EngineConfig& base, bool graphs) {
  EngineConfig quiet = base, loud = base;
  quiet.cuda_graphs = loud.cuda_graphs = graphs;
  loud.profile = true;
  loud.profile_every = 1;
  loud.profile_warmup = 0;
  Engine a(quiet), b(loud);
  add_mixed_requests(a);
  add_mixed_requests(b);
  const auto ra = run_all(a), rb = run_all(b);
  for (const auto& [id, rec] : ra) expect_same(rec, rb.at(id), id);
  const EngineProfile p = b.profile();
  EXPECT_EQ(p.decode.steps + p.mixed.steps, b.stats().steps);
  for (const StepTimes* t : {&p.decode, &p.mixed}) {
    ASSERT_GT(t->steps, 0);
    EXPECT_EQ(t->gpu_steps, t->steps);
    EXPECT_GT(t->gpu_step_ms, 0.0);
    EXPECT_LE(t->host_sum_ms(), t->period_ms * 1.0001 + 1e-6);
    for (GpuCategory c : {GpuCategory::kGemm, GpuCategory::kAttention, GpuCategory::kOther,
                          GpuCategory::kLmHead, GpuCategory::kSampler})
      EXPECT_GT(t->gpu_ms[static_cast<int>(c)], 0.0) << gpu_category_name(c);
    const double comm = t->gpu_ms[static_cast<int>(GpuCategory::kCommunication)];
    if (base.tensor_parallel > 1) {
      EXPECT_GT(comm, 0.0);
    } else {
      EXPECT_EQ(comm, 0.0);
    }
    std::printf("%s steps %lld: as run %.3f ms/step (%lld graphs), replay:",
                t == &p.decode ? "decode" : "mixed", static_cast<long long>(t->steps),
                t->gpu_step_ms / static_cast<double>(t->steps),
                static_cast<long long>(t->graph_steps));
    for (int c = 0; c < kGpuCategories; ++c)
      std::printf(" %s %.3f", gpu_category_name(static_cast<GpuCategory>(c)),
                  t->gpu_ms[c] / static_cast<double>(t->steps));
    std::printf("\n");
  }
  if (graphs) {
    EXPECT_GT(p.decode.graph_steps, 0);
  } else {
    EXPECT_EQ(p.decode.graph_steps, 0);
  }
}

TEST_F(EnginePipeline, CudaProfileFillsEveryCategoryAndChangesNoOutput) {
  AWQD_REQUIRE_CUDA();
  for (bool graphs : {true, false}) expect_cuda_profile(tight(cuda_config(true, 1, false)), graphs);
}

TEST_F(EnginePipeline, CudaTensorParallelProfile) {
  AWQD_REQUIRE_GPUS(2);
  for (bool graphs : {true, false}) expect_cuda_profile(tight(cuda_config(true, 2, false)), graphs);
}

#ifdef AWQD_BINARY
TEST_F(EnginePipeline, BenchProfilePrintsABreakdown) {
  AWQD_REQUIRE_BINARY(awqd, AWQD_BINARY);
  const std::string cmd =
      awqd + " bench --device cpu --model '" + dir_.string() +
      "' --workload custom --num-prompts 3 --input-len 24 --output-len 24 --profile "
      "--profile-every 2 --profile-warmup 2 --json --quiet";
  std::string out;
  ASSERT_EQ(test::run_command(cmd, out), 0) << out;
  const auto j = nlohmann::json::parse(out);
  ASSERT_TRUE(j.contains("profile")) << out;
  const auto& prof = j["profile"];
  EXPECT_EQ(prof["every"], 2);
  EXPECT_EQ(prof["warmup"], 2);
  const auto& d = prof["decode"];
  EXPECT_GT(d["steps"].get<int>(), 5);
  const auto& host = d["host_ms"];
  double sum = 0;
  for (const char* k :
       {"caller", "wait", "update", "schedule", "make_batch", "submit", "outputs", "other"}) {
    ASSERT_TRUE(host.contains(k)) << k;
    EXPECT_GE(host[k].get<double>(), 0.0) << k;
    sum += host[k].get<double>();
  }
  EXPECT_NEAR(sum, host["period"].get<double>(), 1e-6 + 1e-6 * sum);
  EXPECT_FALSE(d.contains("gpu_ms"));  // CPU executor
}
#endif

}  // namespace
}  // namespace awqd
