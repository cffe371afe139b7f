#include "engine/engine_group.h"

#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>
#include <thread>
#include <unordered_map>

namespace awqd {

// What replica threads and the front share, under `mu`.
struct EngineGroup::Shared {
  std::mutex mu;
  std::condition_variable progress;   // outputs arrived, a replica failed or finished loading
  std::vector<RequestOutput> outbox;  // outputs not yet returned by step()
  std::unordered_map<std::string, std::pair<int, std::int64_t>> active;  // id -> (replica, work)
  std::exception_ptr failure;
  int loaded = 0;
};

struct EngineGroup::Replica {
  int index = 0;
  std::vector<int> gpus;
  // Created, stepped and destroyed on `thread`, and touched by no other thread while it lives:
  // the front hands requests and cancellations over through the inbox, so it never waits for a
  // step (a lock held across steps starves the front: std::mutex is not fair).
  std::unique_ptr<Engine> engine;
  std::mutex inbox_mu;
  std::condition_variable work;              // the inbox got something, or stop
  std::vector<GenerationRequest> inbox;      // under inbox_mu: checked, to be added
  std::vector<std::string> cancels;          // under inbox_mu: ids to cancel (after the adds)
  bool stop = false;                         // under inbox_mu
  std::int64_t load = 0;                     // outstanding work (Shared::mu)
  EngineStats stats;                         // after the last step (Shared::mu)
  EngineProfile profile;                     // after the last step, with config.profile (Shared::mu)
  std::vector<DeviceStatus> devices;         // refreshed about once a second (Shared::mu)
  std::string description;                   // set once loaded (Shared::mu)
  std::thread thread;

  void run(const EngineConfig& config, Shared& shared) {
    try {
      engine = std::make_unique<Engine>(config);
      std::vector<DeviceStatus> devs = engine->devices();
      std::lock_guard<std::mutex> lock(shared.mu);
      description = engine->describe();
      devices = std::move(devs);
    } catch (const std::exception& ex) {
      engine.reset();
      std::string gs;
      for (int g : gpus) gs += (gs.empty() ? "" : ",") + std::to_string(g);
      std::lock_guard<std::mutex> lock(shared.mu);
      if (!shared.failure)
        shared.failure = std::make_exception_ptr(std::runtime_error(
            "replica " + std::to_string(index) + " (GPUs " + gs + "): " + ex.what()));
    }
    {
      std::lock_guard<std::mutex> lock(shared.mu);
      ++shared.loaded;
    }
    shared.progress.notify_all();
    auto devices_at = std::chrono::steady_clock::now();
    bool failed = engine == nullptr;
    for (;;) {
      std::vector<GenerationRequest> adds;
      std::vector<std::string> cancel_ids;
      {
        std::unique_lock<std::mutex> lock(inbox_mu);
        const bool busy = !failed && engine->has_unfinished();
        work.wait(lock, [&] { return stop || busy || !inbox.empty() || !cancels.empty(); });
        if (stop) break;
        adds.swap(inbox);
        cancel_ids.swap(cancels);
      }
      if (failed) continue;  // the front rethrows the failure; wait for stop
      std::vector<RequestOutput> outs;
      for (GenerationRequest& r : adds) {
        const std::string id = r.id;
        try {
          engine->add_request(std::move(r));
        } catch (const std::exception& ex) {  // checked by the front; not expected
          RequestOutput out;
          out.id = id;
          out.finished = true;
          out.finish_reason = FinishReason::kError;
          out.error = ex.what();
          outs.push_back(std::move(out));
        }
      }
      for (const std::string& id : cancel_ids) engine->cancel(id);
      EngineStats st;
      EngineProfile prof;
      try {
        if (engine->has_unfinished()) {
          std::vector<RequestOutput> stepped = engine->step();
          outs.insert(outs.end(), std::make_move_iterator(stepped.begin()),
                      std::make_move_iterator(stepped.end()));
        }
        st = engine->stats();
        if (config.profile) prof = engine->profile();
      } catch (...) {
        failed = true;
        std::lock_guard<std::mutex> g(shared.mu);
        if (!shared.failure) shared.failure = std::current_exception();
        shared.progress.notify_all();
        continue;
      }
      std::vector<DeviceStatus> devs;
      const auto now = std::chrono::steady_clock::now();
      const bool refresh = now - devices_at >= std::chrono::seconds(1);
      if (refresh) {
        devs = engine->devices();
        devices_at = now;
      }
      {
        std::lock_guard<std::mutex> lock(shared.mu);
        stats = st;
        if (config.profile) profile = prof;
        if (refresh) devices = std::move(devs);
        for (const RequestOutput& o : outs) {
          if (!o.finished) continue;
          auto it = shared.active.find(o.id);
          if (it == shared.active.end()) continue;
          load -= it->second.second;
          shared.active.erase(it);
        }
        shared.outbox.insert(shared.outbox.end(), std::make_move_iterator(outs.begin()),
                             std::make_move_iterator(outs.end()));
      }
      shared.progress.notify_all();
    }
    engine.reset();
  }
};

std::vector<std::vector<int>> EngineGroup::consecutive_groups(int replicas, int tensor_parallel) {
  std::vector<std::vector<int>> groups(replicas);
  for (int r = 0; r < replicas; ++r)
    for (int g = 0; g < tensor_parallel; ++g) groups[r].push_back(r * tensor_parallel + g);
  return groups;
}

std::vector<std::vector<int>> EngineGroup::parse_groups(const std::string& text) {
  const std::string shape =
      "GPU groups \"" + text + "\": expected a JSON array of arrays of GPU ids, e.g. [[0,1],[2,3]]";
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception&) {
    throw std::invalid_argument(shape);
  }
  if (!j.is_array() || j.empty()) throw std::invalid_argument(shape);
  std::vector<std::vector<int>> groups;
  std::set<int> seen;
  for (const auto& g : j) {
    if (!g.is_array() || g.empty())
      throw std::invalid_argument(shape + " (every group needs at least one GPU)");
    groups.emplace_back();
    for (const auto& id : g) {
      if (!id.is_number_integer() || id.get<int>() < 0) throw std::invalid_argument(shape);
      if (!seen.insert(id.get<int>()).second)
        throw std::invalid_argument("GPU groups \"" + text + "\": GPU " +
                                    std::to_string(id.get<int>()) +
                                    " is in more than one place; replicas need disjoint GPUs");
      groups.back().push_back(id.get<int>());
    }
  }
  return groups;
}

EngineGroup::EngineGroup(const EngineConfig& config,
                         const std::vector<std::vector<int>>& gpu_groups)
    : shared_(std::make_unique<Shared>()) {
  if (gpu_groups.empty())
    throw std::invalid_argument("an engine group needs at least one GPU group");
  for (std::size_t i = 0; i < gpu_groups.size(); ++i) {
    auto rep = std::make_unique<Replica>();
    rep->index = static_cast<int>(i);
    rep->gpus = gpu_groups[i];
    EngineConfig c = config;
    c.gpus = gpu_groups[i];
    c.tensor_parallel = static_cast<int>(gpu_groups[i].size());
    Replica* p = rep.get();
    rep->thread = std::thread([p, c, s = shared_.get()] { p->run(c, *s); });
    replicas_.push_back(std::move(rep));
  }
  std::unique_lock<std::mutex> lock(shared_->mu);
  shared_->progress.wait(lock,
                         [&] { return shared_->loaded == static_cast<int>(replicas_.size()); });
  if (shared_->failure) {
    const std::exception_ptr failure = shared_->failure;
    lock.unlock();
    stop();  // the replicas that did load unload on their threads
    std::rethrow_exception(failure);
  }
}

EngineGroup::~EngineGroup() { stop(); }

void EngineGroup::stop() {
  for (auto& rep : replicas_) {
    {
      std::lock_guard<std::mutex> lock(rep->inbox_mu);
      rep->stop = true;
    }
    rep->work.notify_all();
  }
  for (auto& rep : replicas_)
    if (rep->thread.joinable()) rep->thread.join();
}

int EngineGroup::size() const { return static_cast<int>(replicas_.size()); }
const ModelConfig& EngineGroup::model_config() const {
  return replicas_[0]->engine->model_config();
}
const Tokenizer& EngineGroup::tokenizer() const { return replicas_[0]->engine->tokenizer(); }

std::string EngineGroup::describe() const {
  std::lock_guard<std::mutex> lock(shared_->mu);
  std::string out;
  for (const auto& rep : replicas_)
    out += (out.empty() ? "" : "\n") + std::string("replica ") + std::to_string(rep->index) + ": " +
           rep->description;
  return out;
}

void EngineGroup::add_request(GenerationRequest request) {
  // Checked here, on the caller's thread, so a bad request is the caller's exception as with one
  // Engine (check_request reads only what is fixed at load; every replica loads the same model).
  replicas_[0]->engine->check_request(request);
  const std::int64_t work =
      static_cast<std::int64_t>(request.prompt_ids.size()) + request.params.max_tokens;
  Replica* target = nullptr;
  {
    std::lock_guard<std::mutex> lock(shared_->mu);
    if (shared_->failure) std::rethrow_exception(shared_->failure);
    if (shared_->active.count(request.id))
      throw std::invalid_argument("request id " + request.id + " is already active");
    for (auto& rep : replicas_)
      if (target == nullptr || rep->load < target->load) target = rep.get();
    // Registered before the replica can finish it, so its output always finds the entry.
    target->load += work;
    shared_->active[request.id] = {target->index, work};
  }
  {
    std::lock_guard<std::mutex> lock(target->inbox_mu);
    target->inbox.push_back(std::move(request));
  }
  target->work.notify_one();
}

bool EngineGroup::cancel(const std::string& id) {
  int index = -1;
  {
    std::lock_guard<std::mutex> lock(shared_->mu);
    auto it = shared_->active.find(id);
    if (it == shared_->active.end()) return false;
    index = it->second.first;
  }
  Replica& rep = *replicas_[index];
  {
    std::lock_guard<std::mutex> lock(rep.inbox_mu);
    rep.cancels.push_back(id);
  }
  rep.work.notify_one();
  return true;
}

std::vector<RequestOutput> EngineGroup::step() {
  std::unique_lock<std::mutex> lock(shared_->mu);
  shared_->progress.wait(lock, [&] {
    return !shared_->outbox.empty() || shared_->active.empty() || shared_->failure;
  });
  if (shared_->failure) std::rethrow_exception(shared_->failure);
  std::vector<RequestOutput> out;
  out.swap(shared_->outbox);
  return out;
}

bool EngineGroup::has_unfinished() const {
  std::lock_guard<std::mutex> lock(shared_->mu);
  return !shared_->active.empty() || !shared_->outbox.empty();
}

std::vector<EngineStats> EngineGroup::stats() const {
  std::lock_guard<std::mutex> lock(shared_->mu);
  std::vector<EngineStats> out;
  for (const auto& rep : replicas_) out.push_back(rep->stats);
  return out;
}

std::vector<std::vector<DeviceStatus>> EngineGroup::devices() const {
  std::lock_guard<std::mutex> lock(shared_->mu);
  std::vector<std::vector<DeviceStatus>> out;
  for (const auto& rep : replicas_) out.push_back(rep->devices);
  return out;
}

std::vector<EngineProfile> EngineGroup::profiles() const {
  std::lock_guard<std::mutex> lock(shared_->mu);
  std::vector<EngineProfile> out;
  for (const auto& rep : replicas_) out.push_back(rep->profile);
  return out;
}

}  // namespace awqd
