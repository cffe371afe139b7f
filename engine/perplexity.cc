#include "engine/perplexity.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/thread_pool.h"

namespace awqd {

double PerplexityResult::perplexity() const {
  return tokens > 0 ? std::exp(nll / static_cast<double>(tokens)) : NAN;
}

PerplexityResult evaluate_perplexity(Executor& ex, int V, std::span<const std::int32_t> ids,
                                     int window, std::int64_t max_logits,
                                     const std::function<void(int, int)>& progress) {
  if (window < 2) throw std::invalid_argument("perplexity window must be at least 2 tokens");
  const std::int64_t n = static_cast<std::int64_t>(ids.size());
  const int total = static_cast<int>((n + window - 1) / window);
  const int blocks_per_window = (window + kKvBlockSize - 1) / kKvBlockSize;
  if (ex.num_kv_blocks() < blocks_per_window)
    throw std::runtime_error("the executor's KV cache holds " + std::to_string(ex.num_kv_blocks()) +
                             " blocks, a window of " + std::to_string(window) + " tokens needs " +
                             std::to_string(blocks_per_window));
  const int per_step = static_cast<int>(std::max<std::int64_t>(
      1, std::min<std::int64_t>(ex.num_kv_blocks() / blocks_per_window,
                                max_logits / (static_cast<std::int64_t>(window) * V))));

  PerplexityResult result;
  for (int w0 = 0; w0 < total; w0 += per_step) {
    StepBatch b;
    b.max_blocks_per_seq = blocks_per_window;
    b.cu_seqlens_q.push_back(0);
    std::vector<std::int32_t> targets;  // the token each logits row predicts
    for (int w = w0; w < std::min(total, w0 + per_step); ++w) {
      const int seq = w - w0;
      const std::int64_t begin = static_cast<std::int64_t>(w) * window;
      const int len = static_cast<int>(std::min<std::int64_t>(window, n - begin));
      for (int j = 0; j < blocks_per_window; ++j)
        b.block_tables.push_back(seq * blocks_per_window + j);
      for (int p = 0; p < len; ++p) {
        b.token_ids.push_back(ids[begin + p]);
        b.positions.push_back(p);
        b.slot_mapping.push_back((seq * blocks_per_window + p / kKvBlockSize) * kKvBlockSize +
                                 p % kKvBlockSize);
        if (p + 1 < len) {
          b.logits_rows.push_back(b.cu_seqlens_q.back() + p);
          targets.push_back(ids[begin + p + 1]);
        }
      }
      b.context_lens.push_back(len);
      b.cu_seqlens_q.push_back(b.cu_seqlens_q.back() + len);
      ++result.windows;
    }
    const StepResult r = ex.execute(b);
    const std::size_t R = targets.size();
    if (r.logits.size() != R * V)
      throw std::runtime_error("the executor returned logits of the wrong size");
    std::vector<double> nll(R);
    ThreadPool::global().parallel_for(
        static_cast<std::int64_t>(R), [&](std::int64_t i0, std::int64_t i1) {
          for (std::int64_t i = i0; i < i1; ++i) {
            const float* row = &r.logits[static_cast<std::size_t>(i) * V];
            const float mx = *std::max_element(row, row + V);
            double sum = 0;  // terms in float (exp(<= 0) is exact enough), summed in double
            for (int v = 0; v < V; ++v) sum += std::exp(row[v] - mx);
            nll[i] = std::log(sum) + mx - row[targets[i]];
          }
        });
    for (double v : nll) result.nll += v;  // in row order: the same sum on any thread count
    result.tokens += static_cast<std::int64_t>(R);
    if (progress) progress(result.windows, total);
  }
  return result;
}

}  // namespace awqd
