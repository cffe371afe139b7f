// The engine as the daemon's engine thread sees it. The product implements it with awqd::Engine
// (daemon/engine_runner.h); the daemon benchmark (tests/bench_daemon.cc) and the in-process
// tests put doubles in its place, which is how intake and store rates are measured without
// a model. Every method runs on the engine thread that owns the runner.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "daemon/job.h"
#include "engine/engine.h"

namespace awqd {

struct RunnerInfo {
  std::string model;       // the model directory's name
  std::string model_hash;  // identifies the weights (see engine_runner.cc)
  std::string describe;    // one line for logs and `awqd status`: model, device, KV blocks
  ModelLimits limits;      // what the job parser checks against
  int max_num_seqs = 1;    // sequences the runner runs at once: the daemon's admission bound
  std::vector<DeviceStatus> devices;  // its GPUs when it was built (none on the CPU)
};

// Input the engine cannot run: the job fails with `code` (an errc) and is not retried.
struct JobRejected : std::runtime_error {
  JobRejected(std::string code_, const std::string& message)
      : std::runtime_error(message), code(std::move(code_)) {}
  std::string code;
};

class Runner {
 public:
  virtual ~Runner() = default;
  virtual RunnerInfo info() const = 0;
  // Queues `job` under `id` with its seed resolved. Throws JobRejected for input errors.
  virtual void add(const std::string& id, const Job& job, std::uint64_t seed) = 0;
  // A queued or running job finishes with FinishReason::kCancelled at the next step().
  virtual void cancel(const std::string& id) = 0;
  // One engine step; outputs as Engine::step() gives them. Throws on an engine failure, after
  // which the runner is not used again.
  virtual std::vector<RequestOutput> step() = 0;
  virtual bool has_unfinished() const = 0;
  virtual EngineStats stats() const = 0;
  // Each GPU's memory, KV pool and utilization (`awqd status`); none by default.
  virtual std::vector<DeviceStatus> devices() const { return {}; }
};

// Builds replica `replica`'s runner; called on that replica's engine thread.
using RunnerFactory = std::function<std::unique_ptr<Runner>(int replica)>;

}  // namespace awqd
