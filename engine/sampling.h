// Sampling parameters and the reference (CPU) sampler. The GPU sampler (kernels/sampling.cu)
// implements exactly the same procedure; the two must agree token for token on the same logits.
//
// The procedure, for one sequence with fp32 logits l[V]:
//   1. logprobs (when asked) are log_softmax(l) of the raw logits, before any processing.
//   2. Penalties. repetition_penalty r over every distinct token of prompt + output:
//      l = l > 0 ? l / r : l * r. frequency f and presence p over output tokens with count c > 0:
//      l -= f * c + p.
//   3. temperature < kGreedyTemperature: argmax (lowest index on ties). Done.
//   4. l /= temperature. top_k > 0: keep tokens with l >= the k-th largest l (ties kept).
//      probs = softmax over kept tokens. top_p < 1: keep tokens with prob >= t, where t is the
//      largest probability such that the mass of tokens with prob >= t reaches top_p.
//      min_p > 0: keep tokens with prob >= min_p * max prob.
//   5. The "exponential race": choose argmax over kept tokens of prob_i / E_i, E_i = -log(u_i),
//      u_i = philox_uniform(seed, position, i) in (0, 1). This is an exact sample from the kept
//      distribution and needs no sort; the lowest index wins a tie.
// Every random number is a pure function of (seed, position, token index), so a sequence's
// tokens do not depend on its batch neighbours, batch size, or a preemption and recompute.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace awqd {

inline constexpr float kGreedyTemperature = 1e-5f;

struct SamplingParams {
  int max_tokens = 256;
  float temperature = 1.0f;
  float top_p = 1.0f;
  int top_k = 0;  // <= 0: off (-1 accepted, as vLLM spells it)
  float min_p = 0.0f;
  float repetition_penalty = 1.0f;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  std::uint64_t seed = 0;
  std::vector<std::string> stop;
  std::vector<std::int32_t> stop_token_ids;
  bool ignore_eos = false;
  int logprobs = 0;  // top-n logprobs per generated token, 0..20

  bool greedy() const { return temperature < kGreedyTemperature; }
  bool has_penalties() const {
    return repetition_penalty != 1.0f || presence_penalty != 0.0f || frequency_penalty != 0.0f;
  }
  // Throws std::invalid_argument naming the first out-of-range field.
  void validate(int vocab_size) const;
};

// Philox4x32-10 (Salmon et al., SC'11): a counter-based RNG. Key = (seed low, seed high),
// counter = (c0, c1, c2, c3). The sampler uses counter (index / 4, position, 0, 0).
struct Philox4 {
  std::uint32_t v[4];
};
Philox4 philox4x32_10(std::uint64_t seed, std::uint32_t c0, std::uint32_t c1,
                      std::uint32_t c2 = 0, std::uint32_t c3 = 0);

// u in (0, 1) for token index i at sequence position `position`: word i % 4 of
// philox(seed, counter = (i / 4, position)), as (word >> 9) * 2^-23 + 2^-24: 23 random bits,
// every value exact in fp32, the largest 1 - 2^-24 (24 bits would round the top value to 1.0).
float philox_uniform(std::uint64_t seed, std::uint32_t position, std::uint32_t index);

struct TokenLogprob {
  std::int32_t token = -1;
  float logprob = 0.0f;
};

struct SampleResult {
  std::int32_t token = -1;
  float logprob = 0.0f;                 // of the chosen token (raw log_softmax); 0 unless asked
  std::vector<TokenLogprob> top;        // top-n by raw logprob, descending, when logprobs > 0
};

// What the sampler needs to know about one sequence besides its logits.
struct SamplingContext {
  const SamplingParams* params = nullptr;
  std::uint32_t position = 0;             // index in the sequence of the token being sampled
  std::span<const std::int32_t> prompt;   // for repetition_penalty
  std::span<const std::int32_t> output;   // generated so far: all penalties
};

// Samples one token from logits [vocab]; `logits` is used as scratch and modified.
SampleResult sample_token(std::span<float> logits, const SamplingContext& ctx);

}  // namespace awqd
