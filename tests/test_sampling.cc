// The CPU sampler: Philox known answers, each filter's semantics, batch independence, and the
// exponential race's distribution.
#include <gtest/gtest.h>

#include <cmath>
#include <algorithm>
#include <map>
#include <set>
#include <random>
#include <vector>

#include "engine/sampling.h"

namespace awqd {
namespace {

TEST(Philox, MatchesRandom123KnownAnswers) {
  const Philox4 a = philox4x32_10(0, 0, 0, 0, 0);
  EXPECT_EQ(a.v[0], 0x6627e8d5u);
  EXPECT_EQ(a.v[1], 0xe169c58du);
  EXPECT_EQ(a.v[2], 0xbc57ac4cu);
  EXPECT_EQ(a.v[3], 0x9b00dbd8u);
  const Philox4 b = philox4x32_10(~0ull, ~0u, ~0u, ~0u, ~0u);
  EXPECT_EQ(b.v[0], 0x408f276du);
  EXPECT_EQ(b.v[3], 0x6d5451fdu);
  const Philox4 c = philox4x32_10(0x299f31d0a4093822ull, 0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344);
  EXPECT_EQ(c.v[0], 0xd16cfe09u);
  EXPECT_EQ(c.v[1], 0x94fdccebu);
  EXPECT_EQ(c.v[2], 0x5001e420u);
  EXPECT_EQ(c.v[3], 0x24126ea1u);
}

TEST(Philox, UniformIsStrictlyInsideUnitInterval) {
  for (std::uint32_t i = 0; i < 100000; ++i) {
    const float u = philox_uniform(123, i % 7, i);
    ASSERT_GT(u, 0.0f);
    ASSERT_LT(u, 1.0f);
  }
}

std::vector<float> random_logits(int vocab, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 3.0f);
  std::vector<float> v(vocab);
  for (auto& x : v) x = d(rng);
  return v;
}

SampleResult sample(std::vector<float> logits, const SamplingParams& p, std::uint32_t pos = 0,
                    std::vector<std::int32_t> prompt = {}, std::vector<std::int32_t> output = {}) {
  SamplingContext ctx{&p, pos, prompt, output};
  return sample_token(logits, ctx);
}

TEST(Sampler, GreedyPicksArgmaxLowestIndexOnTies) {
  SamplingParams p;
  p.temperature = 0.0f;
  std::vector<float> l = {1, 5, 2, 5, -1};
  EXPECT_EQ(sample(l, p).token, 1);
}

TEST(Sampler, RepetitionPenaltyDividesPositiveAndMultipliesNegative) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.repetition_penalty = 2.0f;
  // token 0: 4 -> 2 (seen); token 1: 3 (unseen) wins.
  EXPECT_EQ(sample({4, 3, -1}, p, 0, {0}).token, 1);
  // token 2 negative and seen: -1 -> -2; token 0 unseen stays 4.
  EXPECT_EQ(sample({-0.5f, -0.6f, -0.4f}, p, 0, {}, {2}).token, 0);
}

TEST(Sampler, FrequencyAndPresencePenaltiesCountOutputOnly) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.frequency_penalty = 1.0f;
  // token 0 appears twice in output: 5 - 2 = 3 < 4.
  EXPECT_EQ(sample({5, 4}, p, 0, {}, {0, 0}).token, 1);
  // Prompt occurrences do not count.
  EXPECT_EQ(sample({5, 4}, p, 0, {0, 0, 0}, {}).token, 0);
  SamplingParams q;
  q.temperature = 0.0f;
  q.presence_penalty = 1.5f;
  EXPECT_EQ(sample({5, 4}, q, 0, {}, {0}).token, 1);
}

TEST(Sampler, TopKOneIsGreedy) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_k = 1;
  const auto l = random_logits(1000, 1);
  const std::int32_t want = static_cast<std::int32_t>(std::max_element(l.begin(), l.end()) - l.begin());
  for (std::uint32_t pos = 0; pos < 50; ++pos) {
    p.seed = pos * 7919;
    EXPECT_EQ(sample(l, p, pos).token, want);
  }
}

TEST(Sampler, FiltersKeepOnlyAllowedTokens) {
  const auto l = random_logits(500, 2);
  std::vector<int> order(l.size());
  for (std::size_t i = 0; i < l.size(); ++i) order[i] = static_cast<int>(i);
  std::sort(order.begin(), order.end(), [&](int a, int b) { return l[a] > l[b]; });
  // Probabilities at temperature 0.7 for the top-p and min-p expectations.
  std::vector<double> prob(l.size());
  double z = 0;
  for (std::size_t i = 0; i < l.size(); ++i) z += prob[i] = std::exp((l[i] - l[order[0]]) / 0.7);
  for (auto& q : prob) q /= z;
  std::set<int> top_p_set;
  double mass = 0;
  for (int i : order) {
    top_p_set.insert(i);
    mass += prob[i];
    if (mass >= 0.6) break;
  }
  for (std::uint32_t pos = 0; pos < 300; ++pos) {
    SamplingParams p;
    p.temperature = 0.7f;
    p.seed = 42;
    p.top_k = 5;
    const int t = sample(l, p, pos).token;
    EXPECT_TRUE(std::find(order.begin(), order.begin() + 5, t) != order.begin() + 5) << t;
    p.top_k = 0;
    p.top_p = 0.6f;
    EXPECT_TRUE(top_p_set.count(sample(l, p, pos).token)) << pos;
    p.top_p = 1.0f;
    p.min_p = 0.2f;
    const int m = sample(l, p, pos).token;
    EXPECT_GE(prob[m], 0.2 * prob[order[0]]) << m;
  }
}

TEST(Sampler, SameSeedAndPositionGiveSameToken) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.seed = 99;
  const auto l = random_logits(32000, 3);
  const int a = sample(l, p, 17).token;
  EXPECT_EQ(sample(l, p, 17).token, a);
  int differ = 0;
  for (std::uint32_t pos = 0; pos < 20; ++pos) differ += sample(l, p, pos).token != a;
  EXPECT_GT(differ, 10);  // other positions draw other numbers
}

TEST(Sampler, ExponentialRaceMatchesSoftmaxDistribution) {
  const std::vector<float> l = {0.0f, 1.0f, 2.0f, -1.0f};
  std::vector<double> want(l.size());
  double z = 0;
  for (std::size_t i = 0; i < l.size(); ++i) z += want[i] = std::exp(l[i]);
  SamplingParams p;
  p.temperature = 1.0f;
  p.seed = 5;
  std::map<int, int> counts;
  const int n = 40000;
  for (int pos = 0; pos < n; ++pos) ++counts[sample(l, p, static_cast<std::uint32_t>(pos)).token];
  for (std::size_t i = 0; i < l.size(); ++i) {
    const double freq = counts[static_cast<int>(i)] / static_cast<double>(n);
    const double sigma = std::sqrt(want[i] / z * (1 - want[i] / z) / n);
    EXPECT_NEAR(freq, want[i] / z, 5 * sigma) << "token " << i;
  }
}

TEST(Sampler, LogprobsAreRawLogSoftmax) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.logprobs = 3;
  p.repetition_penalty = 2.0f;  // penalties must not change reported logprobs
  const std::vector<float> l = {1.0f, 3.0f, 2.0f, 0.5f};
  const auto r = sample(l, p, 0, {1});
  double z = 0;
  for (float x : l) z += std::exp(x);
  ASSERT_EQ(r.top.size(), 3u);
  EXPECT_EQ(r.top[0].token, 1);
  EXPECT_EQ(r.top[1].token, 2);
  EXPECT_EQ(r.top[2].token, 0);
  EXPECT_NEAR(r.top[0].logprob, 3.0 - std::log(z), 1e-5);
  EXPECT_EQ(r.token, 2);  // token 1 penalised to 3 / 2 = 1.5 < 2
  EXPECT_NEAR(r.logprob, 2.0 - std::log(z), 1e-5);
}

TEST(SamplingParams, ValidateRejectsOutOfRange) {
  SamplingParams p;
  EXPECT_NO_THROW(p.validate(100));
  auto bad = [](auto mutate) {
    SamplingParams q;
    mutate(q);
    EXPECT_THROW(q.validate(100), std::invalid_argument);
  };
  bad([](SamplingParams& q) { q.max_tokens = 0; });
  bad([](SamplingParams& q) { q.temperature = -1; });
  bad([](SamplingParams& q) { q.top_p = 0; });
  bad([](SamplingParams& q) { q.top_p = 1.5f; });
  bad([](SamplingParams& q) { q.top_k = -2; });
  bad([](SamplingParams& q) { q.min_p = 2; });
  bad([](SamplingParams& q) { q.repetition_penalty = 0; });
  bad([](SamplingParams& q) { q.presence_penalty = 3; });
  bad([](SamplingParams& q) { q.logprobs = 21; });
  bad([](SamplingParams& q) { q.stop_token_ids = {100}; });
  bad([](SamplingParams& q) { q.stop = {""}; });
  bad([](SamplingParams& q) { q.temperature = NAN; });
}

}  // namespace
}  // namespace awqd
