// The executor runs the model's forward pass over one scheduler step and samples the next tokens.
// Two implementations: CpuExecutor (fp32 reference, engine/cpu_executor.*) and CudaExecutor
// (engine/cuda_executor.*). The scheduler turns a step into the flat metadata below (the same
// for both), in the manner of vLLM/nano-vllm's model runner.
//
// Paged KV cache layout (both executors, every layer, K and V in separate pools):
//   cache[num_blocks][num_kv_heads][kKvBlockSize][head_dim]
// A token at position p of a sequence lives in block block_table[p / kKvBlockSize] at offset
// p % kKvBlockSize; its "slot" is block * kKvBlockSize + offset. One (block, head) slice is
// kKvBlockSize * head_dim contiguous elements (4 KiB for head_dim 128 in fp16), so a decode
// kernel's loads for one KV head are long and coalesced.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "engine/sampling.h"

namespace awqd {

inline constexpr int kKvBlockSize = 16;  // tokens per KV block

// One step's input: B sequences, T new tokens in all.
struct StepBatch {
  std::vector<std::int32_t> token_ids;     // [T] new tokens, sequence after sequence
  std::vector<std::int32_t> positions;     // [T] position of each new token in its sequence
  std::vector<std::int32_t> cu_seqlens_q;  // [B + 1] sequence b's new tokens: [cu[b], cu[b+1])
  std::vector<std::int32_t> context_lens;  // [B] tokens in the cache once this step's are written
  std::vector<std::int32_t> slot_mapping;  // [T] cache slot each new token's K/V is written to
  std::vector<std::int32_t> block_tables;  // [B * max_blocks_per_seq], unused entries -1
  int max_blocks_per_seq = 0;

  // Sequences that sample a token this step (their last new token is the end of their prompt or
  // a decode step), with their sampling state. A prefill chunk that does not reach the end of
  // its prompt samples nothing.
  std::vector<int> sample_seqs;                 // indices b
  std::vector<SamplingContext> sample_contexts;  // one per entry of sample_seqs

  // Token rows whose full logits are returned (perplexity, tests); usually empty.
  std::vector<std::int32_t> logits_rows;

  // Measure this step on the GPU (StepResult::gpu_profile); only an executor built with
  // EngineConfig::profile can.
  bool profile = false;

  int num_seqs() const { return static_cast<int>(cu_seqlens_q.size()) - 1; }
  int num_tokens() const { return static_cast<int>(token_ids.size()); }
};

// Kernel categories of a step's GPU time (`awqd bench --profile`).
enum class GpuCategory : int {
  kGemm,           // the layers' linears: AWQ GEMMs, or cuBLASLt for unquantized weights
  kAttention,      // paged decode or varlen prefill attention
  kOther,          // embedding, RMSNorms + residual adds, qk-norm + RoPE + KV write, SiLU-mul, row gather
  kLmHead,         // lm_head (fp32 logits of the sampled rows)
  kSampler,        // the GPU sampler
  kCommunication,  // tensor parallelism: all-reduces (with the fused add + RMSNorm) and the logits gather
};
inline constexpr int kGpuCategories = 6;
inline const char* gpu_category_name(GpuCategory c) {
  static constexpr const char* kNames[kGpuCategories] = {"gemm", "attention", "other", "lm_head", "sampler",
                                                         "communication"};
  return kNames[static_cast<int>(c)];
}

// One step measured on the GPU (rank 0 under tensor parallelism), in milliseconds.
struct GpuStepProfile {
  double step_ms = 0;   // the step as it ran (CUDA graph or eager): events around all its GPU work
  bool graph = false;   // it ran as a CUDA graph
  // An eager replay of the same step, after it completed, with events between the kernel
  // categories; it writes no KV cache and its results are dropped.
  std::array<double, kGpuCategories> category_ms{};
  double replay_host_ms = 0;  // host time the replay took inside wait(): not part of the step
};

struct StepResult {
  std::vector<SampleResult> samples;  // one per sample_seqs entry, same order
  std::vector<float> logits;          // [logits_rows.size(), vocab] when asked
  std::optional<GpuStepProfile> gpu_profile;  // when the batch asked and the executor measures GPUs
};

// One GPU of an engine, for `awqd status`.
struct DeviceStatus {
  int gpu = 0;                   // CUDA device id
  std::string name;
  std::size_t memory_used = 0;   // bytes in use on the whole device (every process)
  std::size_t memory_total = 0;
  std::size_t kv_bytes = 0;      // this engine's KV pool on the device
  std::size_t weight_bytes = 0;  // this engine's weights on the device
  int utilization = -1;          // percent of the last sample period a kernel ran; -1 unknown
};

// A step is submit() then wait(). The CUDA executors' submit() stages the metadata and enqueues
// the whole step on the GPU, then returns, so the engine can prepare the next step and build the
// previous step's outputs while the GPU runs; the CPU executor computes in submit(). submit()
// reads the batch and the sequences its sampling contexts point into; wait() reads neither. At
// most one step is in flight: wait() for it before the next submit().
class Executor {
 public:
  virtual ~Executor() = default;
  virtual void submit(const StepBatch& batch) = 0;
  virtual StepResult wait() = 0;
  StepResult execute(const StepBatch& batch) {
    submit(batch);
    return wait();
  }
  virtual int num_kv_blocks() const = 0;      // size of the paged pool, fixed at construction
  virtual std::string describe() const = 0;   // one line for logs and `awqd status`
  virtual std::vector<DeviceStatus> devices() const { return {}; }  // GPUs it runs on (none: CPU)
};

}  // namespace awqd
