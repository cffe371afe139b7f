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
  std::string device = "cpu";          // "cpu" | "cuda" | "auto" (cuda when there is a GPU)
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
  // fp16 copies of the AWQ weights for steps of many tokens (CUDA): "auto" keeps them where they
  // take at most half of the memory the KV pool would get, "on" wherever they fit, "off" never.
  // cuBLASLt on them replaces dequantize + cuBLASLt (or the tile kernels) from 64 tokens on.
  std::string fp16_weight_cache = "auto";
  // Submit step n + 1 before building step n's outputs (detokenization, stop strings), so that
  // host work runs while the GPU computes (docs/ARCHITECTURE.md, "A step").
  bool async_output = true;
  // CUDA, steps of 1-8 tokens on one GPU: o_proj, the norms, gate_up, SiLU and down_proj of a
  // layer as one persistent kernel (kernels/decode_mlp.cuh) where the weights allow it. Off by
  // default: measured 3-20 % slower than the separate kernels on an H200 (docs/PERF.md, runs
  // 51-56). Never in deterministic mode (its split-K differs from the batch-invariant plans).
  bool fused_decode_mlp = false;
  // CUDA, steps of up to 16 tokens on one GPU: the residual add and RMSNorm after o_proj and
  // down_proj folded into those GEMMs and the next (AwqGemmOptions::norm_out, norm_in_sumsq), so
  // no norm kernel runs between a layer's linears (docs/PERF.md runs 118-119). Never in
  // deterministic mode.
  bool fold_norms = true;
  bool profile = false;                // time sampled steps: Engine::profile(), `awqd bench --profile`
  int profile_every = 16;              // with profile: every n-th step after the warm-up
  int profile_warmup = 32;             // steps never sampled at the start (graph captures, first plans)
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

// Where the time of the sampled steps went (EngineConfig::profile), in milliseconds summed over
// them: divide by `steps` (host) or `gpu_steps` (GPU) for means. The host times belong to the
// Engine::step() call that completed a sampled step; with async_output that call also schedules
// and submits the next step, without it the call submitted the sampled step itself.
struct StepTimes {
  std::int64_t steps = 0;      // sampled steps
  std::int64_t sequences = 0;  // summed over them
  std::int64_t tokens = 0;
  double period_ms = 0;      // from the end of the previous step() call to the end of this one
  double caller_ms = 0;      // the part outside step(): the caller's own work
  double wait_ms = 0;        // blocked in Executor::wait while the device finishes the step
  double update_ms = 0;      // commit, append tokens, token-id and length checks, cancellations
  double schedule_ms = 0;    // Scheduler::schedule
  double make_batch_ms = 0;  // Scheduler::make_batch
  double submit_ms = 0;      // Executor::submit: staging and launches (the CPU executor computes here)
  double outputs_ms = 0;     // detokenization, stop strings, RequestOutputs
  std::int64_t gpu_steps = 0;    // sampled steps with GPU timings (CUDA executors)
  std::int64_t graph_steps = 0;  // of them, run as CUDA graphs
  double gpu_step_ms = 0;        // the steps as they ran on the GPU
  std::array<double, kGpuCategories> gpu_ms{};  // their eager replays, per kernel category

  // The host categories above, summed: at most period_ms.
  double host_sum_ms() const {
    return caller_ms + wait_ms + update_ms + schedule_ms + make_batch_ms + submit_ms + outputs_ms;
  }
  void add(const StepTimes& o);
};

struct EngineProfile {
  StepTimes decode;  // steps of one new token per sequence
  StepTimes mixed;   // steps with prompt tokens (prefill chunks, possibly with decodes)
  void add(const EngineProfile& o) {
    decode.add(o.decode);
    mixed.add(o.mixed);
  }
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

  // Runs one scheduler step and returns every request that made progress or finished. With
  // async_output the next step is already running on the device when it returns.
  std::vector<RequestOutput> step();
  bool has_unfinished() const;
  EngineStats stats() const;
  EngineProfile profile() const;  // empty unless config().profile
  // Each GPU's memory, this engine's KV pool and weights on it, and its utilization (`awqd
  // status`); empty on the CPU. KV use is stats().kv_blocks_used / kv_blocks_total on every GPU
  // (tensor-parallel ranks hold the same blocks, each for its own heads).
  std::vector<DeviceStatus> devices() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace awqd
