// Data-parallel replicas (engine/engine_group.h) on the CPU executor: outputs equal one Engine's,
// work spreads over the replicas, cancellation and bad requests behave as on an Engine. On a
// machine with 2+ GPUs the same checks run with one CUDA replica per GPU.
#include <gtest/gtest.h>

#include <map>

#include "engine/engine.h"
#include "engine/engine_group.h"
#include "engine/synth.h"
#include "tests/model_builder.h"
#include "tests/test_support.h"

namespace awqd {
namespace {

using Outputs = std::map<std::string, std::vector<std::int32_t>>;

std::vector<GenerationRequest> requests(int n) {
  std::vector<GenerationRequest> out;
  for (int i = 0; i < n; ++i) {
    GenerationRequest r;
    r.id = "r" + std::to_string(i);
    for (int t = 0; t < 4 + i % 7; ++t) r.prompt_ids.push_back(3 + (i * 31 + t * 7) % 90);
    r.params.temperature = 0;
    r.params.max_tokens = 6 + i % 5;
    r.params.ignore_eos = true;
    out.push_back(r);
  }
  return out;
}

template <typename E>
Outputs run_all(E& e) {
  Outputs out;
  while (e.has_unfinished())
    for (const auto& o : e.step())
      out[o.id].insert(out[o.id].end(), o.new_token_ids.begin(), o.new_token_ids.end());
  return out;
}

class EngineGroupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    test::TinyModelSpec spec;
    spec.vocab = 1024;
    spec.head_dim = 64;  // the CUDA executor's smallest
    test::write_tiny_model(dir_.path(), spec);
    write_synth_tokenizer(dir_.path(), "tiny");
    config_.model_dir = dir_.path();
    config_.device = "cpu";
    config_.cpu_kv_cache_bytes = 16 << 20;
  }
  test::TempDir dir_;
  EngineConfig config_;
};

TEST_F(EngineGroupTest, ReplicasGiveOneEnginesOutputs) {
  Outputs want;
  {
    Engine e(config_);
    for (const auto& r : requests(24)) e.add_request(r);
    want = run_all(e);
  }
  EngineGroup group(config_, EngineGroup::consecutive_groups(3, 1));
  EXPECT_EQ(group.size(), 3);
  for (const auto& r : requests(24)) group.add_request(r);
  EXPECT_EQ(run_all(group), want);
  int busy = 0;
  for (const EngineStats& s : group.stats()) busy += s.steps > 0;
  EXPECT_EQ(busy, 3) << "every replica took work";
}

TEST_F(EngineGroupTest, RejectsBadAndDuplicateRequestsAndCancels) {
  EngineGroup group(config_, {{0}, {1}});
  GenerationRequest bad;
  bad.id = "bad";
  EXPECT_THROW(group.add_request(bad), std::invalid_argument);  // empty prompt
  auto reqs = requests(2);
  reqs[0].params.max_tokens = 480;  // hundreds of steps: still running when cancelled below
  group.add_request(reqs[0]);
  EXPECT_THROW(group.add_request(reqs[0]), std::invalid_argument);  // id already active
  EXPECT_TRUE(group.cancel(reqs[0].id));
  group.add_request(reqs[1]);
  EXPECT_FALSE(group.cancel("unknown"));
  std::map<std::string, FinishReason> reason;
  while (group.has_unfinished())
    for (const auto& o : group.step())
      if (o.finished) reason[o.id] = o.finish_reason;
  EXPECT_EQ(reason.at(reqs[0].id), FinishReason::kCancelled);
  EXPECT_EQ(reason.at(reqs[1].id), FinishReason::kLength);
}

TEST_F(EngineGroupTest, AddingDoesNotWaitForSteps) {
  // Replicas busy with long requests: the front's adds go through the inbox and do not wait for
  // a step each (a replica lock held across steps made 2000 bulk adds take minutes).
  EngineGroup group(config_, {{0}, {1}});
  auto longs = requests(2);
  for (auto& r : longs) {
    r.id += "-long";
    r.params.max_tokens = 400;
    group.add_request(r);
  }
  std::int64_t before = 0, after = 0;
  for (const EngineStats& s : group.stats()) before += s.steps;
  auto many = requests(200);
  for (auto& r : many) group.add_request(r);
  for (const EngineStats& s : group.stats()) after += s.steps;
  EXPECT_LT(after - before, 100) << "steps taken while 200 requests were added";
  const Outputs got = run_all(group);
  EXPECT_EQ(got.size(), 202u);
  EXPECT_EQ(got.at(longs[0].id).size(), 400u);
}

TEST(EngineGroupConfig, ParsesGpuGroups) {
  using G = std::vector<std::vector<int>>;
  EXPECT_EQ(EngineGroup::parse_groups("[[0],[1],[2]]"), (G{{0}, {1}, {2}}));
  EXPECT_EQ(EngineGroup::parse_groups(" [[0, 1], [2, 3]] "), (G{{0, 1}, {2, 3}}));
  EXPECT_EQ(EngineGroup::consecutive_groups(2, 2), (G{{0, 1}, {2, 3}}));
  for (const char* bad : {"", "[]", "[[]]", "[0,1]", "[[0],[0]]", "[[-1]]", "[[0.5]]", "[[0],[1]"})
    EXPECT_THROW(EngineGroup::parse_groups(bad), std::invalid_argument) << bad;
  try {
    EngineGroup::parse_groups("[[0,1],[1,2]]");
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("GPU 1 is in more than one place"), std::string::npos)
        << e.what();
  }
}

TEST_F(EngineGroupTest, CudaReplicasOnePerGpu) {
  AWQD_REQUIRE_GPUS(2);
  auto cfg = config_;
  cfg.device = "cuda";
  cfg.num_kv_blocks_override = 256;
  Outputs want;
  {
    Engine e(cfg);
    for (const auto& r : requests(32)) e.add_request(r);
    want = run_all(e);
  }
  EngineGroup group(cfg, EngineGroup::consecutive_groups(test::cuda_devices(), 1));
  std::printf("%s\n", group.describe().c_str());
  for (const auto& r : requests(32)) group.add_request(r);
  const Outputs got = run_all(group);
  // Same kernels and shapes on identical GPUs, but batches differ between replicas: compare ids
  // up to fp16 batch effects by counting only.
  ASSERT_EQ(got.size(), want.size());
  int equal = 0;
  for (const auto& [id, ids] : want) {
    EXPECT_EQ(got.at(id).size(), ids.size()) << id;
    equal += got.at(id) == ids;
  }
  std::printf("%d of %zu continuations equal one engine's\n", equal, want.size());
  EXPECT_GE(equal, static_cast<int>(want.size()) * 3 / 4);
}

}  // namespace
}  // namespace awqd
