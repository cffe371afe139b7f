// The GPU sampler against the CPU reference sampler (engine/sampling.cc) on the same logits.
//
// What must match, and how closely:
//   - Philox4x32-10: bit for bit.
//   - greedy rows: the token, exactly (penalties are the same IEEE operations on both sides).
//   - sampled rows: the token. The two sides compute the probabilities with different exp/log
//     implementations (last-ulp differences) and sum them in a different order, so the choice
//     can legitimately differ when it is a near tie: the two best race scores within 1e-5 of
//     each other, or a chosen token's probability within 1e-5 (relative) of the top-p / min-p
//     threshold. Every disagreement must be such a tie (recomputed in double precision), and
//     they must be rare (at most 1 in 200 rows; in practice none).
//   - logprobs: within 1e-4 absolute (float sums over the vocabulary in another order); the
//     top-n list must be a valid top-n: each GPU entry's CPU logprob equals the CPU's entry at
//     that rank within 1e-5.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "engine/sampling.h"
#include "kernels/sampling.cuh"
#include "tests/kernel_test_util.h"

namespace awqd {
namespace {

using test::KernelBuffer;

static_assert(cuda::kSamplerGreedyTemperature == kGreedyTemperature);

TEST(SamplerPhilox, BitIdenticalToCpu) {
  AWQD_KERNEL_TEST_PRELUDE();
  std::mt19937_64 rng(5);
  const int n = 4096;
  std::vector<std::uint64_t> seeds(n);
  std::vector<std::uint32_t> counters(4 * n);
  for (int i = 0; i < n; ++i) {
    seeds[i] = i < 4 ? static_cast<std::uint64_t>(i) * 0xFFFFFFFFull : rng();
    for (int k = 0; k < 4; ++k)
      counters[4 * i + k] = i % 3 == 0 && k >= 2 ? 0u : static_cast<std::uint32_t>(rng());
  }
  KernelBuffer<std::uint64_t> dseeds(seeds);
  KernelBuffer<std::uint32_t> dcounters(counters), dout(4 * n);
  cuda::philox4x32_10_gpu(dseeds.get(), dcounters.get(), dout.get(), n, nullptr);
  const auto got = dout.download();
  int wrong = 0;
  for (int i = 0; i < n; ++i) {
    const Philox4 ref = philox4x32_10(seeds[i], counters[4 * i], counters[4 * i + 1],
                                      counters[4 * i + 2], counters[4 * i + 3]);
    for (int k = 0; k < 4; ++k) wrong += got[4 * i + k] != ref.v[k];
  }
  EXPECT_EQ(wrong, 0);
}

struct Row {
  SamplingParams params;
  std::uint32_t position = 0;
  std::vector<std::int32_t> prompt, output;
};

std::string describe(const Row& r, int vocab) {
  const auto& p = r.params;
  return "vocab=" + std::to_string(vocab) + " T=" + std::to_string(p.temperature) +
         " top_k=" + std::to_string(p.top_k) + " top_p=" + std::to_string(p.top_p) +
         " min_p=" + std::to_string(p.min_p) + " rep=" + std::to_string(p.repetition_penalty) +
         " pres=" + std::to_string(p.presence_penalty) +
         " freq=" + std::to_string(p.frequency_penalty) +
         " logprobs=" + std::to_string(p.logprobs) + " seed=" + std::to_string(p.seed) +
         " pos=" + std::to_string(r.position);
}

Row random_row(int vocab, std::mt19937_64& rng) {
  auto pick = [&](std::initializer_list<float> v) { return *(v.begin() + rng() % v.size()); };
  Row r;
  auto& p = r.params;
  p.temperature = pick({0.0f, 0.3f, 0.7f, 1.0f, 1.0f, 1.5f});
  p.top_k = static_cast<int>(pick({0, 0, 1, 5, 50, 1000, -1}));
  if (rng() % 8 == 0) p.top_k = vocab;  // "off" by size
  p.top_p = pick({1.0f, 1.0f, 0.95f, 0.9f, 0.5f, 0.05f});
  p.min_p = pick({0.0f, 0.0f, 0.05f, 0.2f});
  p.repetition_penalty = pick({1.0f, 1.0f, 1.3f, 0.8f});
  p.presence_penalty = pick({0.0f, 0.0f, 0.5f, -0.3f});
  p.frequency_penalty = pick({0.0f, 0.0f, 0.7f});
  p.logprobs = static_cast<int>(pick({0, 0, 1, 5, 20}));
  p.seed = rng();
  r.position = static_cast<std::uint32_t>(rng() % 100000);
  const int np = static_cast<int>(rng() % 40), no = static_cast<int>(rng() % 30);
  for (int i = 0; i < np; ++i)
    r.prompt.push_back(static_cast<std::int32_t>(rng() % (vocab + 2)) - 1);
  for (int i = 0; i < no; ++i)
    r.output.push_back(static_cast<std::int32_t>(rng() % std::min(vocab, 50)));
  return r;
}

std::vector<float> random_logits(int vocab, std::mt19937_64& rng) {
  std::vector<float> l(vocab);
  const int kind = static_cast<int>(rng() % 6);
  const float sigma = kind == 0 ? 1.0f : kind == 1 ? 8.0f : 3.0f;
  std::normal_distribution<float> normal(0.0f, sigma);
  for (auto& x : l) x = normal(rng);
  if (kind == 3) {
    for (auto& x : l) x = std::round(x * 2.0f) / 2.0f;  // many exact ties
  } else if (kind == 4) {
    for (int i = 0; i < vocab; i += 3) l[i] = -std::numeric_limits<float>::infinity();
  } else if (kind == 5 && rng() % 2 == 0) {
    std::fill(l.begin(), l.end(), 0.25f);  // every logit equal
  }
  return l;
}

// Why a GPU token may differ from the CPU's: recomputes the CPU's decision quantities in double
// from the processed logits (after penalties, temperature and top-k, as the CPU leaves them).
bool near_tie(const std::vector<float>& processed, const Row& row, int a, int b, std::string& why) {
  const auto& p = row.params;
  const double neg_inf = -std::numeric_limits<double>::infinity();
  double mx = neg_inf;
  for (float l : processed) mx = std::max(mx, static_cast<double>(l));
  std::vector<double> q(processed.size());
  double total = 0;
  for (std::size_t i = 0; i < q.size(); ++i) {
    q[i] =
        processed[i] == -std::numeric_limits<float>::infinity() ? 0.0 : std::exp(processed[i] - mx);
    total += q[i];
  }
  for (auto& x : q) x /= total;
  double t = 0;
  if (p.top_p < 1.0f) {
    std::vector<double> sorted;
    for (double x : q)
      if (x > 0) sorted.push_back(x);
    std::sort(sorted.begin(), sorted.end(), std::greater<>());
    double mass = 0;
    for (double x : sorted) {
      mass += x;
      t = x;
      if (mass >= p.top_p) break;
    }
  }
  const double t_min = p.min_p > 0 ? p.min_p * (1.0 / total) : 0.0;
  auto close = [](double x, double y) {
    return std::fabs(x - y) <= 1e-5 * std::max(std::fabs(x), std::fabs(y));
  };
  for (int tok : {a, b}) {
    if (tok < 0) continue;
    if (close(q[tok], t) || close(q[tok], t_min)) {
      why = "token " + std::to_string(tok) + " sits on the top-p/min-p threshold";
      return true;
    }
  }
  if (a < 0 || b < 0) return false;
  auto score = [&](int i) {
    return q[i] / -std::log(static_cast<double>(philox_uniform(p.seed, row.position, i)));
  };
  if (close(score(a), score(b))) {
    why = "race scores " + std::to_string(score(a)) + " and " + std::to_string(score(b)) + " tie";
    return true;
  }
  why = "no near tie: q " + std::to_string(q[a]) + " vs " + std::to_string(q[b]) + ", scores " +
        std::to_string(score(a)) + " vs " + std::to_string(score(b)) + ", thresholds " +
        std::to_string(t) + " / " + std::to_string(t_min);
  return false;
}

// Equal (infinities included) or within atol + 1e-5 relative.
bool close_logprob(double got, double ref, double atol) {
  return got == ref || std::fabs(got - ref) <= atol + 1e-5 * std::fabs(ref);
}

void run_batch(int vocab, int rows, std::mt19937_64& rng, int& ties_explained) {
  const int stride = (vocab + 3) / 4 * 4 + (rng() % 2 ? 4 : 0);
  std::vector<Row> batch(rows);
  std::vector<float> logits(static_cast<std::size_t>(rows) * stride, 0.0f);
  std::vector<cuda::SamplerRowParams> params(rows);
  std::vector<int> offsets = {0}, tokens, counts;
  for (int r = 0; r < rows; ++r) {
    batch[r] = random_row(vocab, rng);
    const auto l = random_logits(vocab, rng);
    std::copy(l.begin(), l.end(), logits.begin() + static_cast<std::size_t>(r) * stride);
    const auto& p = batch[r].params;
    auto& g = params[r];
    g.temperature = p.temperature, g.top_p = p.top_p, g.top_k = p.top_k, g.min_p = p.min_p;
    g.repetition_penalty = p.repetition_penalty, g.presence_penalty = p.presence_penalty;
    g.frequency_penalty = p.frequency_penalty, g.logprobs = p.logprobs, g.seed = p.seed;
    g.position = batch[r].position;
    cuda::build_penalty_list(batch[r].prompt.data(), batch[r].prompt.size(), batch[r].output.data(),
                             batch[r].output.size(), vocab, tokens, counts);
    offsets.push_back(static_cast<int>(tokens.size()));
  }
  KernelBuffer<float> dlogits(logits), draw(std::max<std::size_t>(tokens.size(), 1)), dout_lp(rows),
      dtop_lp(static_cast<std::size_t>(rows) * cuda::kSamplerMaxLogprobs);
  KernelBuffer<cuda::SamplerRowParams> dparams(params);
  KernelBuffer<int> doffsets(offsets), dtokens(tokens.empty() ? std::vector<int>{0} : tokens),
      dcounts(counts.empty() ? std::vector<int>{0} : counts), dout(rows),
      dtop(static_cast<std::size_t>(rows) * cuda::kSamplerMaxLogprobs);
  cuda::SampleArgs a;
  a.logits = dlogits.get();
  a.logits_stride = stride;
  a.vocab = vocab;
  a.rows = rows;
  a.params = dparams.get();
  a.penalty_offsets = doffsets.get();
  a.penalty_tokens = dtokens.get();
  a.penalty_counts = dcounts.get();
  a.penalty_raw = draw.get();
  a.out_tokens = dout.get();
  a.out_logprobs = dout_lp.get();
  a.out_top_tokens = dtop.get();
  a.out_top_logprobs = dtop_lp.get();
  cuda::sample(a, nullptr);
  const auto got = dout.download(), got_lp_top_tok = dtop.download();
  const auto got_lp = dout_lp.download(), got_top_lp = dtop_lp.download();

  int mismatches = 0;
  for (int r = 0; r < rows; ++r) {
    const Row& row = batch[r];
    std::vector<float> raw(logits.begin() + static_cast<std::size_t>(r) * stride,
                           logits.begin() + static_cast<std::size_t>(r) * stride + vocab);
    std::vector<float> cpu_logits = raw;
    SamplingContext ctx;
    ctx.params = &row.params;
    ctx.position = row.position;
    ctx.prompt = row.prompt;
    ctx.output = row.output;
    const SampleResult ref = sample_token(cpu_logits, ctx);
    const std::string what = "row " + std::to_string(r) + " " + describe(row, vocab);
    if (got[r] != ref.token) {
      std::string why;
      const bool tie = !row.params.greedy() && near_tie(cpu_logits, row, ref.token, got[r], why);
      EXPECT_TRUE(tie) << what << ": GPU token " << got[r] << ", CPU token " << ref.token << " ("
                       << why << ")";
      ++mismatches;
      if (tie) ++ties_explained;
      continue;
    }
    const int n = std::min(row.params.logprobs, vocab);
    if (n == 0) {
      EXPECT_EQ(got_lp[r], 0.0f) << what;
      continue;
    }
    EXPECT_TRUE(close_logprob(got_lp[r], ref.logprob, 1e-4))
        << what << ": GPU logprob " << got_lp[r] << ", CPU " << ref.logprob;
    // The CPU's log_softmax of every raw logit, to judge the GPU's top-n.
    double mx = -std::numeric_limits<double>::infinity(), sum = 0;
    for (float x : raw) mx = std::max(mx, static_cast<double>(x));
    for (float x : raw) sum += std::exp(x - mx);
    const double lse = mx + std::log(sum);
    std::vector<bool> seen(vocab, false);
    for (int k = 0; k < cuda::kSamplerMaxLogprobs; ++k) {
      const int tok = got_lp_top_tok[static_cast<std::size_t>(r) * cuda::kSamplerMaxLogprobs + k];
      const float lp = got_top_lp[static_cast<std::size_t>(r) * cuda::kSamplerMaxLogprobs + k];
      if (k >= n) {
        EXPECT_EQ(tok, -1) << what << " rank " << k;
        continue;
      }
      ASSERT_TRUE(tok >= 0 && tok < vocab && !seen[tok])
          << what << " rank " << k << " token " << tok;
      seen[tok] = true;
      EXPECT_TRUE(close_logprob(raw[tok] - lse, ref.top[k].logprob, 1e-5))
          << what << " rank " << k << ": GPU token " << tok << " (CPU logprob " << raw[tok] - lse
          << "), CPU token " << ref.top[k].token << " (" << ref.top[k].logprob << ")";
      EXPECT_TRUE(close_logprob(lp, ref.top[k].logprob, 1e-4))
          << what << " rank " << k << ": GPU " << lp << ", CPU " << ref.top[k].logprob;
    }
  }
  EXPECT_LE(mismatches * 200, rows + 199) << "vocab=" << vocab << ": " << mismatches << " of "
                                          << rows << " rows disagree (near ties, but too many)";
}

TEST(GpuSampler, MatchesCpuSampler) {
  AWQD_KERNEL_TEST_PRELUDE();
  std::mt19937_64 rng(6);
  int ties = 0;
  std::vector<std::pair<int, int>> shapes = {{7, 40}, {13, 40}, {1000, 60}, {4099, 20}};
  if (!test::quick()) {
    shapes.insert(shapes.end(),
                  {{32000, 256}, {128256, 64}, {151936, 256}, {151936, 1}, {50, 1000}});
  } else {
    shapes.push_back({50000, 3});
  }
  for (const auto& [vocab, rows] : shapes) run_batch(vocab, rows, rng, ties);
  std::printf("GpuSampler: %d disagreement(s), all explained as near ties\n", ties);
}

TEST(GpuSampler, SameRowSameTokenInAnyBatch) {
  AWQD_KERNEL_TEST_PRELUDE();
  // One row sampled alone and inside a batch of different rows: identical outputs.
  std::mt19937_64 rng(7);
  const int vocab = test::quick() ? 3001 : 151936, stride = (vocab + 3) / 4 * 4;
  const int rows = test::quick() ? 5 : 64;
  std::vector<float> logits(static_cast<std::size_t>(rows) * stride);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  for (auto& x : logits) x = normal(rng);
  std::vector<cuda::SamplerRowParams> params(rows);
  for (auto& p : params) {
    p.temperature = 0.8f, p.top_p = 0.9f, p.top_k = 40, p.logprobs = 3;
    p.seed = rng(), p.position = 17;
  }
  auto run = [&](int first, int count) {
    std::vector<float> l(logits.begin() + static_cast<std::size_t>(first) * stride,
                         logits.begin() + static_cast<std::size_t>(first + count) * stride);
    std::vector<cuda::SamplerRowParams> pr(params.begin() + first, params.begin() + first + count);
    KernelBuffer<float> dl(l), dlp(count),
        dtlp(static_cast<std::size_t>(count) * cuda::kSamplerMaxLogprobs);
    KernelBuffer<cuda::SamplerRowParams> dp(pr);
    KernelBuffer<int> dt(count), dtt(static_cast<std::size_t>(count) * cuda::kSamplerMaxLogprobs);
    cuda::SampleArgs a;
    a.logits = dl.get(), a.logits_stride = stride, a.vocab = vocab, a.rows = count;
    a.params = dp.get(), a.out_tokens = dt.get(), a.out_logprobs = dlp.get();
    a.out_top_tokens = dtt.get(), a.out_top_logprobs = dtlp.get();
    cuda::sample(a, nullptr);
    return std::make_pair(dt.download(), dlp.download());
  };
  const auto all = run(0, rows);
  for (int r : {0, rows / 2, rows - 1}) {
    const auto one = run(r, 1);
    EXPECT_EQ(one.first[0], all.first[r]) << "row " << r;
    EXPECT_EQ(one.second[0], all.second[r]) << "row " << r << " logprob bits";
  }
}

}  // namespace
}  // namespace awqd
