// Data-parallel replicas (SPEC section 7): several Engines of one model in one process, each on
// its own group of GPUs ({{0}, {1}, {2}}: three one-GPU replicas; {{0, 1}, {2, 3}}: two
// tensor-parallel pairs) and stepped by its own thread, behind one front. A request goes to the
// replica with the least outstanding work (prompt + max_tokens of its unfinished requests), so
// replicas finish a bulk run together.
//
//   EngineGroup group(config, {{0}, {1}});
//   group.add_request({...});
//   while (group.has_unfinished()) for (auto& out : group.step()) ...;
//
// Threading: the group itself is driven by one thread, like an Engine. Replica i's Engine is
// created, stepped and destroyed by replica i's thread (so its GPUs' work always comes from that
// thread, and only that thread touches it); add_request checks the request on the caller's thread,
// then hands it to the replica through an inbox that its thread drains before each step, so the
// front never waits for a step. cancel goes through the same inbox.
// `awqd bench --replicas` uses it; the daemon runs one engine thread per replica of its own
// (daemon/engine_runner.*) and can use this class in place of them.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/engine.h"

namespace awqd {

class EngineGroup {
 public:
  // config.tensor_parallel and config.gpus are set per replica from its group. Replicas load in
  // parallel; the first failure is rethrown (std::runtime_error naming the replica's GPUs).
  EngineGroup(const EngineConfig& config, const std::vector<std::vector<int>>& gpu_groups);
  ~EngineGroup();
  EngineGroup(const EngineGroup&) = delete;
  EngineGroup& operator=(const EngineGroup&) = delete;

  // Groups of `tensor_parallel` consecutive GPUs: replica r gets r * tp .. (r + 1) * tp - 1.
  static std::vector<std::vector<int>> consecutive_groups(int replicas, int tensor_parallel);
  // GPU groups written as a JSON array of arrays of device ids, e.g. "[[0],[1],[2]]" or
  // "[[0,1],[2,3]]" (the config key `gpu_groups`). Throws std::invalid_argument saying what is
  // wrong: not that shape, an empty group, a negative or repeated id.
  static std::vector<std::vector<int>> parse_groups(const std::string& text);

  int size() const;
  const ModelConfig& model_config() const;  // replica 0's (all load the same model)
  const Tokenizer& tokenizer() const;
  std::string describe() const;  // one line per replica

  // Queues the request on the least loaded replica; throws what Engine::add_request throws, and
  // std::invalid_argument for an id already active in the group.
  void add_request(GenerationRequest request);
  // True when the id is active in the group: its replica cancels it before its next step (it
  // finishes kCancelled, or normally if it finished first).
  bool cancel(const std::string& id);

  // Waits until some replica has made progress (or no request is left) and returns every
  // output produced since the last call. Rethrows a replica's failure.
  std::vector<RequestOutput> step();
  bool has_unfinished() const;
  std::vector<EngineStats> stats() const;                  // per replica, as of its last step
  std::vector<std::vector<DeviceStatus>> devices() const;  // per replica, at most ~1 s old
  std::vector<EngineProfile> profiles() const;              // per replica, as of its last step

 private:
  void stop();  // stops and joins the replica threads (each unloads its engine)

  struct Replica;
  struct Shared;
  std::unique_ptr<Shared> shared_;
  std::vector<std::unique_ptr<Replica>> replicas_;
};

}  // namespace awqd
