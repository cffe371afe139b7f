// The reference sampler (CPU). See engine/sampling.h for the procedure; the GPU sampler in
// kernels/ follows it step for step.
#include "engine/sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <unordered_set>

namespace awqd {

namespace {

void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument(what);
}

inline void mulhilo(std::uint32_t a, std::uint32_t b, std::uint32_t& hi, std::uint32_t& lo) {
  const std::uint64_t p = static_cast<std::uint64_t>(a) * b;
  hi = static_cast<std::uint32_t>(p >> 32);
  lo = static_cast<std::uint32_t>(p);
}

// log_softmax of the raw logits (before penalties and temperature).
std::vector<float> log_softmax(std::span<const float> logits) {
  float mx = -std::numeric_limits<float>::infinity();
  for (float l : logits) mx = std::max(mx, l);
  double sum = 0;
  for (float l : logits) sum += std::exp(static_cast<double>(l - mx));
  const float lse = mx + static_cast<float>(std::log(sum));
  std::vector<float> out(logits.size());
  for (std::size_t i = 0; i < logits.size(); ++i) out[i] = logits[i] - lse;
  return out;
}

std::int32_t argmax_lowest(std::span<const float> v) {
  std::int32_t best = 0;
  for (std::size_t i = 1; i < v.size(); ++i)
    if (v[i] > v[best]) best = static_cast<std::int32_t>(i);
  return best;
}

void apply_penalties(std::span<float> logits, const SamplingContext& ctx) {
  const SamplingParams& p = *ctx.params;
  const auto vocab = static_cast<std::int32_t>(logits.size());
  if (p.repetition_penalty != 1.0f) {
    std::unordered_set<std::int32_t> seen;
    for (auto t : ctx.prompt) seen.insert(t);
    for (auto t : ctx.output) seen.insert(t);
    for (auto t : seen) {
      if (t < 0 || t >= vocab) continue;
      float& l = logits[t];
      l = l > 0 ? l / p.repetition_penalty : l * p.repetition_penalty;
    }
  }
  if (p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f) {
    std::unordered_map<std::int32_t, int> counts;
    for (auto t : ctx.output) ++counts[t];
    for (auto [t, c] : counts) {
      if (t < 0 || t >= vocab) continue;
      logits[t] -= p.frequency_penalty * static_cast<float>(c) + p.presence_penalty;
    }
  }
}

}  // namespace

void SamplingParams::validate(int vocab_size) const {
  require(max_tokens >= 1, "max_tokens must be >= 1 (got " + std::to_string(max_tokens) + ")");
  require(std::isfinite(temperature) && temperature >= 0.0f,
          "temperature must be >= 0 (got " + std::to_string(temperature) + ")");
  require(std::isfinite(top_p) && top_p > 0.0f && top_p <= 1.0f,
          "top_p must be in (0, 1] (got " + std::to_string(top_p) + ")");
  require(top_k >= -1, "top_k must be >= 1, or 0 or -1 to disable it (got " + std::to_string(top_k) + ")");
  require(std::isfinite(min_p) && min_p >= 0.0f && min_p <= 1.0f,
          "min_p must be in [0, 1] (got " + std::to_string(min_p) + ")");
  require(std::isfinite(repetition_penalty) && repetition_penalty > 0.0f,
          "repetition_penalty must be > 0 (got " + std::to_string(repetition_penalty) + ")");
  require(std::isfinite(presence_penalty) && std::fabs(presence_penalty) <= 2.0f,
          "presence_penalty must be in [-2, 2] (got " + std::to_string(presence_penalty) + ")");
  require(std::isfinite(frequency_penalty) && std::fabs(frequency_penalty) <= 2.0f,
          "frequency_penalty must be in [-2, 2] (got " + std::to_string(frequency_penalty) + ")");
  require(logprobs >= 0 && logprobs <= 20, "logprobs must be in [0, 20] (got " + std::to_string(logprobs) + ")");
  for (const auto& s : stop) require(!s.empty(), "stop strings must not be empty");
  for (auto t : stop_token_ids)
    require(t >= 0 && t < vocab_size, "stop_token_ids: " + std::to_string(t) +
                                          " is outside the vocabulary (size " +
                                          std::to_string(vocab_size) + ")");
}

Philox4 philox4x32_10(std::uint64_t seed, std::uint32_t c0, std::uint32_t c1, std::uint32_t c2,
                      std::uint32_t c3) {
  constexpr std::uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr std::uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  std::uint32_t k0 = static_cast<std::uint32_t>(seed), k1 = static_cast<std::uint32_t>(seed >> 32);
  std::uint32_t x0 = c0, x1 = c1, x2 = c2, x3 = c3;
  for (int round = 0; round < 10; ++round) {
    std::uint32_t hi0, lo0, hi1, lo1;
    mulhilo(kM0, x0, hi0, lo0);
    mulhilo(kM1, x2, hi1, lo1);
    const std::uint32_t y0 = hi1 ^ x1 ^ k0, y1 = lo1, y2 = hi0 ^ x3 ^ k1, y3 = lo0;
    x0 = y0; x1 = y1; x2 = y2; x3 = y3;
    k0 += kW0;
    k1 += kW1;
  }
  return {{x0, x1, x2, x3}};
}

float philox_uniform(std::uint64_t seed, std::uint32_t position, std::uint32_t index) {
  const Philox4 r = philox4x32_10(seed, index / 4, position);
  return static_cast<float>(r.v[index % 4] >> 9) * 0x1p-23f + 0x1p-24f;
}

SampleResult sample_token(std::span<float> logits, const SamplingContext& ctx) {
  const SamplingParams& p = *ctx.params;
  const auto vocab = logits.size();
  SampleResult result;

  std::vector<float> raw_logprobs;
  if (p.logprobs > 0) raw_logprobs = log_softmax(logits);

  if (p.has_penalties()) apply_penalties(logits, ctx);

  if (p.greedy()) {
    result.token = argmax_lowest(logits);
  } else {
    const float inv_t = 1.0f / p.temperature;
    for (auto& l : logits) l *= inv_t;
    const float neg_inf = -std::numeric_limits<float>::infinity();
    if (p.top_k > 0 && static_cast<std::size_t>(p.top_k) < vocab) {
      std::vector<float> tmp(logits.begin(), logits.end());
      std::nth_element(tmp.begin(), tmp.begin() + (p.top_k - 1), tmp.end(), std::greater<float>());
      const float kth = tmp[p.top_k - 1];
      for (auto& l : logits)
        if (l < kth) l = neg_inf;
    }
    // Unnormalised probabilities over the kept tokens; the race is scale-invariant and the
    // top-p / min-p tests below use the normalised values.
    const float mx = *std::max_element(logits.begin(), logits.end());
    std::vector<float> prob(vocab);
    double total = 0;
    for (std::size_t i = 0; i < vocab; ++i) {
      prob[i] = logits[i] == neg_inf ? 0.0f : std::exp(logits[i] - mx);
      total += prob[i];
    }
    const float inv_total = static_cast<float>(1.0 / total);
    for (auto& q : prob) q *= inv_total;
    float threshold = 0.0f;  // keep prob >= threshold (and > 0)
    if (p.top_p < 1.0f) {
      std::vector<float> sorted;
      sorted.reserve(vocab);
      for (float q : prob)
        if (q > 0) sorted.push_back(q);
      std::sort(sorted.begin(), sorted.end(), std::greater<float>());
      double mass = 0;
      for (float q : sorted) {
        mass += q;
        threshold = q;
        if (mass >= p.top_p) break;
      }
    }
    // The most likely token has logit mx, so its normalised probability is inv_total.
    if (p.min_p > 0.0f) threshold = std::max(threshold, p.min_p * inv_total);
    float best = -1.0f;
    for (std::size_t i = 0; i < vocab; ++i) {
      if (prob[i] <= 0.0f || prob[i] < threshold) continue;
      const float u = philox_uniform(p.seed, ctx.position, static_cast<std::uint32_t>(i));
      const float score = prob[i] / -std::log(u);
      if (score > best) {
        best = score;
        result.token = static_cast<std::int32_t>(i);
      }
    }
  }

  if (p.logprobs > 0) {
    result.logprob = raw_logprobs[result.token];
    std::vector<std::int32_t> idx(vocab);
    for (std::size_t i = 0; i < vocab; ++i) idx[i] = static_cast<std::int32_t>(i);
    const auto n = std::min<std::size_t>(p.logprobs, vocab);
    std::partial_sort(idx.begin(), idx.begin() + n, idx.end(), [&](std::int32_t a, std::int32_t b) {
      return raw_logprobs[a] > raw_logprobs[b] || (raw_logprobs[a] == raw_logprobs[b] && a < b);
    });
    for (std::size_t i = 0; i < n; ++i) result.top.push_back({idx[i], raw_logprobs[idx[i]]});
  }
  return result;
}

}  // namespace awqd
