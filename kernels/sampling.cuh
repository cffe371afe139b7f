// Sampling on the GPU: the procedure of engine/sampling.h (CPU reference: engine/sampling.cc),
// step for step and with the same floating-point operations where the choice is made, so that
// the two agree token for token on the same logits.
//
// Per row of fp32 logits (vocab up to a few 100k):
//   1. logprobs > 0: log_softmax of the raw logits (max; sum of exp accumulated in double) and the
//   top-n
//      raw logprobs (n <= 20, ordered by logprob, lowest index first on ties).
//   2. penalties, in place on the listed tokens (the distinct tokens of prompt + output, with
//      their count in the output): l = l > 0 ? l / r : l * r, then l -= f * count + p for
//      tokens with count > 0. Raw values are kept (penalty_raw) for the chosen token's logprob.
//   3. greedy (temperature < 1e-5): argmax, lowest index on ties.
//   4. l *= 1 / temperature; top_k: keep l >= the k-th largest l; probabilities
//      q = exp(l - max) / sum (sum in double); top_p: keep q >= t, the largest q whose mass of
//      q' >= q reaches top_p; min_p: keep q >= min_p * q_max.
//   5. the exponential race: argmax over kept of q / -log(u), u = philox_uniform(seed,
//      position, token) (Philox4x32-10, bit-identical to the CPU's), lowest index on ties.
//
// Design: one CTA of 512 threads per row, so a row's result never depends on its neighbours
// (and reductions have a fixed shape: the same row gives the same bits in any batch). The row
// is streamed with 16-byte loads once per pass; thresholds (k-th largest, top-p threshold,
// top-n) come from a block-wide radix select over 32-bit order-preserving keys (11/11/10-bit
// digits, shared-memory histograms, integer weights: counts, or probability mass in 2^-60
// fixed point, so the sums are exact and order-independent). With top_k <= 1024 the kept tokens
// are gathered into shared memory after the k-th value is known, and softmax, top-p, min-p and
// the race run there: 4 passes over the row. Greedy rows take 1 pass; top-p without top-k about
// 6. Same code on every arch (no tensor cores).
//
// Where the GPU and the CPU can disagree: expf/logf differ from the host libm in the last ulp
// and the sums are taken in another order, so a row whose two best race scores are equal to
// ~1e-7, or whose top-p/min-p boundary falls on a token by ~1e-7, may pick the other of the
// two. tests/test_sampling_gpu.cc checks that every disagreement is such a near tie.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

namespace awqd::cuda {

inline constexpr int kSamplerMaxLogprobs = 20;
inline constexpr float kSamplerGreedyTemperature = 1e-5f;  // == awqd::kGreedyTemperature

// One row's sampling parameters (device memory, one per row).
struct SamplerRowParams {
  float temperature = 1.0f;
  float top_p = 1.0f;
  int top_k = 0;  // <= 0 or >= vocab: off
  float min_p = 0.0f;
  float repetition_penalty = 1.0f;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  int logprobs = 0;  // 0 .. kSamplerMaxLogprobs
  std::uint64_t seed = 0;
  std::uint32_t position = 0;  // index in the sequence of the token being sampled
};

struct SampleArgs {
  float* logits = nullptr;  // [rows, logits_stride], first vocab used; modified (penalties)
  int logits_stride = 0;    // >= vocab rounded up to 4; 16-byte aligned rows
  int vocab = 0;
  int rows = 0;
  const SamplerRowParams* params = nullptr;  // [rows]
  // Penalty lists, CSR: row r owns entries [penalty_offsets[r], penalty_offsets[r + 1]).
  // Tokens are distinct within a row (build_penalty_list); null offsets: no penalties anywhere.
  const int* penalty_offsets = nullptr;  // [rows + 1]
  const int* penalty_tokens = nullptr;   // [entries]
  const int* penalty_counts = nullptr;   // [entries] occurrences in the output (0: prompt only)
  float* penalty_raw = nullptr;          // [entries] scratch: the raw logits of those tokens
  int* out_tokens = nullptr;             // [rows]
  float* out_logprobs = nullptr;         // [rows] chosen token's raw logprob; 0 unless asked
  int* out_top_tokens = nullptr;         // [rows, kSamplerMaxLogprobs]; -1 past logprobs
  float* out_top_logprobs = nullptr;     // [rows, kSamplerMaxLogprobs]; 0 past logprobs
};

void sample(const SampleArgs& args, cudaStream_t stream);

// Appends one row's penalty list: the distinct tokens of prompt and output inside [0, vocab)
// in increasing order, each with its number of occurrences in output.
void build_penalty_list(const std::int32_t* prompt, std::size_t prompt_len,
                        const std::int32_t* output, std::size_t output_len, int vocab,
                        std::vector<int>& tokens, std::vector<int>& counts);

// Philox4x32-10 with key = (seed low, seed high) and the given counter, as the CPU sampler's
// philox4x32_10 (engine/sampling.h); exposed so the tests can compare the two bit for bit.
void philox4x32_10_gpu(const std::uint64_t* seeds, const std::uint32_t* counters /* 4 per */,
                       std::uint32_t* out /* 4 per */, int n, cudaStream_t stream);

}  // namespace awqd::cuda
