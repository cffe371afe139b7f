// Perplexity of a token sequence through any Executor (CPU reference or CUDA), the protocol of
// `awqd perplexity` (docs/PERF.md): the ids are cut into non-overlapping windows of `window`
// tokens (the last one may be shorter), nothing is prepended (no BOS), and within each window
// every token after the first is scored given the ones before it. Perplexity is
// exp(total negative log-likelihood / tokens scored), log-softmax computed in double over the
// executor's fp32 logits.
#pragma once

#include <cstdint>
#include <functional>
#include <span>

#include "engine/executor.h"

namespace awqd {

struct PerplexityResult {
  double nll = 0;           // summed negative log-likelihood (nats)
  std::int64_t tokens = 0;  // tokens scored
  int windows = 0;
  double perplexity() const;  // exp(nll / tokens)
};

// Windows per executor step are bounded by the executor's KV blocks and by `max_logits` floats
// of returned logits. progress(windows_done, windows_total) after each step.
PerplexityResult evaluate_perplexity(Executor& executor, int vocab_size,
                                     std::span<const std::int32_t> ids, int window,
                                     std::int64_t max_logits = std::int64_t{64} << 20,
                                     const std::function<void(int, int)>& progress = {});

}  // namespace awqd
