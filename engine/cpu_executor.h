// The CPU reference executor: the whole forward pass in fp32 (weights widened from fp16 or
// dequantized from AWQ at load), over a paged fp32 KV cache with the same block layout as the
// GPU's. It is the oracle for the CUDA engine and runs the daemon in CI. OpenMP uses every core.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "engine/cpu_layer.h"
#include "engine/executor.h"
#include "engine/model_weights.h"

namespace awqd {

class CpuExecutor : public Executor {
 public:
  // kv_cache_bytes sizes the paged pool (unless num_blocks > 0 forces a count).
  CpuExecutor(const ModelWeights& weights, std::int64_t kv_cache_bytes, int num_blocks = 0);

  // Computes the step (on the thread pool) and keeps the result for wait().
  void submit(const StepBatch& batch) override;
  StepResult wait() override;
  int num_kv_blocks() const override { return num_blocks_; }
  std::string describe() const override;

 private:
  struct Layer {
    cpu::DecoderLayer weights;
    std::vector<float> k_cache, v_cache;  // (blocks, kv_heads, block, head_dim)
  };

  StepResult run(const StepBatch& batch);

  ModelConfig config_;
  std::vector<float> embed_;    // (vocab, hidden)
  std::vector<float> lm_head_;  // (vocab, hidden); empty when tied (embed_ is used)
  std::vector<float> final_norm_;
  std::vector<float> inv_freq_;
  std::vector<Layer> layers_;
  int num_blocks_ = 0;
  std::optional<StepResult> pending_;  // submitted, not yet waited for
};

}  // namespace awqd
