#include "engine/engine_group.h"

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
  std::unique_ptr<Engine> engine;  // created and destroyed on `thread`
  std::mutex mu;                   // guards engine; held by `thread` during a step
  std::condition_variable work;    // a request was added or cancelled, or stop
  bool stop = false;               // under mu
  std::int64_t load = 0;           // outstanding work (Shared::mu)
  EngineStats stats;               // after the last step (Shared::mu)
  std::thread thread;

  void run(const EngineConfig& config, Shared& shared) {
    try {
      auto e = std::make_unique<Engine>(config);
      std::lock_guard<std::mutex> lock(mu);
      engine = std::move(e);
    } catch (const std::exception& ex) {
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
    for (;;) {
      std::vector<RequestOutput> outs;
      EngineStats st;
      {
        std::unique_lock<std::mutex> lock(mu);
        work.wait(lock, [&] { return stop || (engine && engine->has_unfinished()); });
        if (stop) break;
        try {
          outs = engine->step();
        } catch (...) {
          std::lock_guard<std::mutex> g(shared.mu);
          if (!shared.failure) shared.failure = std::current_exception();
          shared.progress.notify_all();
          work.wait(lock, [&] { return stop; });
          break;
        }
        st = engine->stats();
      }
      {
        std::lock_guard<std::mutex> lock(shared.mu);
        stats = st;
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
    std::lock_guard<std::mutex> lock(mu);
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
      std::lock_guard<std::mutex> lock(rep->mu);
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
  std::string out;
  for (const auto& rep : replicas_) {
    std::lock_guard<std::mutex> lock(rep->mu);
    out += (out.empty() ? "" : "\n") + std::string("replica ") + std::to_string(rep->index) + ": " +
           rep->engine->describe();
  }
  return out;
}

void EngineGroup::add_request(GenerationRequest request) {
  const std::int64_t work =
      static_cast<std::int64_t>(request.prompt_ids.size()) + request.params.max_tokens;
  Replica* target = nullptr;
  {
    std::lock_guard<std::mutex> lock(shared_->mu);
    if (shared_->active.count(request.id))
      throw std::invalid_argument("request id " + request.id + " is already active");
    for (auto& rep : replicas_)
      if (target == nullptr || rep->load < target->load) target = rep.get();
    // Registered before the replica can step it (it cannot before we release its lock below).
    target->load += work;
    shared_->active[request.id] = {target->index, work};
  }
  const std::string id = request.id;
  try {
    std::lock_guard<std::mutex> lock(target->mu);
    target->engine->add_request(std::move(request));
  } catch (...) {
    std::lock_guard<std::mutex> lock(shared_->mu);
    target->load -= work;
    shared_->active.erase(id);
    throw;
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
  bool cancelled = false;
  {
    std::lock_guard<std::mutex> lock(rep.mu);
    cancelled = rep.engine->cancel(id);
  }
  rep.work.notify_one();
  return cancelled;
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
  std::vector<std::vector<DeviceStatus>> out;
  for (const auto& rep : replicas_) {
    std::lock_guard<std::mutex> lock(rep->mu);
    out.push_back(rep->engine ? rep->engine->devices() : std::vector<DeviceStatus>{});
  }
  return out;
}

}  // namespace awqd
