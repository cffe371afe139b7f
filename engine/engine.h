// The engine: tokenizer + scheduler + executor behind one object the daemon drives from its
// engine thread. Not thread-safe: one thread owns it (docs/ARCHITECTURE.md).
//
//   Engine engine(config);
//   engine.add_request({...});
//   while (engine.has_unfinished()) for (auto& out : engine.step()) ...;
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "engine/executor.h"
#include "engine/model_config.h"
#include "engine/sampling.h"
#include "engine/tokenizer.h"

namespace awqd {

struct EngineConfig {
  std::filesystem::path model_dir;
  std::string device = "cpu";          // "cpu" | "cuda"
  int tensor_parallel = 1;             // GPUs one model is split over (engine/tensor_parallel.h)
  std::vector<int> gpus;               // device ids of this engine (default 0..tp-1)
  bool p2p_all_reduce = true;          // false: NCCL for every all-reduce, as without peer access
  float gpu_memory_utilization = 0.90f;
  std::int64_t cpu_kv_cache_bytes = 256ll << 20;  // KV pool of the CPU executor
  int cpu_threads = 0;                 // 0: all cores
  int max_num_seqs = 256;              // running sequences at most
  int max_num_batched_tokens = 8192;   // token budget per step (decodes + prefill chunks)
  bool enable_prefix_caching = true;
  bool cuda_graphs = true;
  bool deterministic = false;          // batch-invariant logits
  int num_kv_blocks_override = 0;      // tests: force a tiny pool
};

enum class FinishReason { kNone, kStop, kLength, kCancelled, kError };
const char* finish_reason_name(FinishReason r);  // "stop", "length", "cancelled", "error"

struct GenerationRequest {
  std::string id;
  std::vector<std::int32_t> prompt_ids;
  SamplingParams params;
  int priority = 0;  // higher is admitted first
};

// What a step produced for one request.
struct RequestOutput {
  std::string id;
  std::vector<std::int32_t> new_token_ids;
  std::string new_text;                    // text delta: complete UTF-8, stop strings cut
  std::vector<SampleResult> new_logprobs;  // when params.logprobs > 0
  bool finished = false;
  FinishReason finish_reason = FinishReason::kNone;
  std::string error;                       // when finish_reason == kError
  int prompt_tokens = 0;
  int completion_tokens = 0;               // so far
  int cached_prompt_tokens = 0;            // served from the prefix cache
};

struct EngineStats {
  int waiting = 0;
  int running = 0;
  int kv_blocks_total = 0;
  int kv_blocks_used = 0;
  std::int64_t steps = 0;
  std::int64_t preemptions = 0;
  std::int64_t prompt_tokens = 0;      // computed (prefilled) tokens, cumulative
  std::int64_t generated_tokens = 0;   // cumulative
  std::int64_t prefix_hit_tokens = 0;  // cumulative
  std::int64_t prefix_query_tokens = 0;
  double last_step_ms = 0;
  int last_step_batch = 0;             // sequences in the last step
  int last_step_tokens = 0;
};

class Engine {
 public:
  explicit Engine(const EngineConfig& config);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const ModelConfig& model_config() const;
  const Tokenizer& tokenizer() const;
  const EngineConfig& config() const;
  std::string describe() const;  // model, device, KV blocks

  // Queues a request. Throws std::invalid_argument (a user error: the caller reports it) when
  // the prompt is empty, longer than the context, has ids outside the vocabulary, or the params
  // are out of range, or the id is already queued or running.
  void add_request(GenerationRequest request);
  // The checks add_request makes, except the duplicate-id one, without queueing anything. It
  // reads only what is fixed at load (model config, KV pool size), so another thread may call it
  // while this engine steps (EngineGroup checks requests before handing them to a replica).
  void check_request(const GenerationRequest& request) const;
  // Cancels a queued or running request; it finishes with kCancelled at the next step, keeping
  // the text generated so far. Unknown ids are ignored (returns false).
  bool cancel(const std::string& id);

  // Runs one scheduler step and returns every request that made progress or finished.
  std::vector<RequestOutput> step();
  bool has_unfinished() const;
  EngineStats stats() const;
  // Each GPU's memory, this engine's KV pool and weights on it, and its utilization (`awqd
  // status`); empty on the CPU. KV use is stats().kv_blocks_used / kv_blocks_total on every GPU
  // (tensor-parallel ranks hold the same blocks, each for its own heads).
  std::vector<DeviceStatus> devices() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace awqd
