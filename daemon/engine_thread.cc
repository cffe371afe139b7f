#include "daemon/engine_thread.h"

#include <pthread.h>
#include <spdlog/spdlog.h>

#include <chrono>

#include "daemon/record.h"

namespace awqd {

using json = nlohmann::json;

namespace {
constexpr std::int64_t kMinuteMs = 60'000;
}

// A job's output so far, assembled from step outputs.
struct EngineThread::Accumulated {
  JobOutcome outcome;
  bool want_logprobs = false;
};

EngineThread::EngineThread(int replica, RunnerFactory factory, ReportSink sink)
    : replica_(replica),
      sink_(std::move(sink)),
      thread_([this, f = std::move(factory)] { run(f); }) {}

EngineThread::~EngineThread() { stop(); }

RunnerInfo EngineThread::wait_ready() {
  std::unique_lock lock(mutex_);
  wake_.wait(lock, [&] { return ready_ || ready_error_; });
  if (ready_error_) std::rethrow_exception(ready_error_);
  return info_;
}

void EngineThread::add(std::string id, std::shared_ptr<const Job> job, std::uint64_t seed) {
  {
    std::lock_guard lock(mutex_);
    adds_.push_back({std::move(id), std::move(job), seed});
  }
  wake_.notify_all();
}

void EngineThread::cancel(std::string id) {
  {
    std::lock_guard lock(mutex_);
    cancels_.push_back(std::move(id));
  }
  wake_.notify_all();
}

void EngineThread::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void EngineThread::collect(const RequestOutput& out, std::int64_t now,
                           std::vector<EngineEvent>& events) {
  const auto it = jobs_.find(out.id);
  if (it == jobs_.end()) return;
  JobOutcome& o = it->second->outcome;
  if (!out.new_token_ids.empty() && o.first_token_at == 0) {
    o.first_token_at = now;
    events.push_back({EngineEvent::Kind::kFirstToken, out.id, now, {}});
  }
  o.text += out.new_text;
  o.token_ids.insert(o.token_ids.end(), out.new_token_ids.begin(), out.new_token_ids.end());
  if (it->second->want_logprobs) {
    for (const auto& s : out.new_logprobs) {
      json top = json::array();
      for (const auto& t : s.top) top.push_back({{"token", t.token}, {"logprob", t.logprob}});
      o.logprobs.push_back({{"token", s.token}, {"logprob", s.logprob}, {"top", std::move(top)}});
    }
  }
  o.prompt_tokens = out.prompt_tokens;
  o.cached_prompt_tokens = out.cached_prompt_tokens;
  o.completion_tokens = out.completion_tokens;
  if (!out.finished) return;
  o.reason = out.finish_reason;
  o.error = out.error;
  o.finished_at = now;
  events.push_back({EngineEvent::Kind::kFinished, out.id, now, std::move(o)});
  jobs_.erase(it);
}

std::optional<MinuteStats> EngineThread::roll_minute(const EngineStats& before,
                                                     const EngineStats& after, bool stepped,
                                                     std::int64_t now) {
  std::optional<MinuteStats> done;
  const std::int64_t minute = now - now % kMinuteMs;
  if (minute_.minute != minute) {
    if (minute_.steps > 0) done = minute_;
    minute_ = MinuteStats{};
    minute_.minute = minute;
    minute_.max_num_seqs = max_num_seqs_;
  }
  if (stepped) {
    minute_.prompt_tokens += after.prompt_tokens - before.prompt_tokens;
    minute_.generated_tokens += after.generated_tokens - before.generated_tokens;
    minute_.steps += after.steps - before.steps;
    minute_.preemptions += after.preemptions - before.preemptions;
    minute_.seqs_sum += after.last_step_batch;
    minute_.seqs_max = std::max(minute_.seqs_max, after.last_step_batch);
    minute_.kv_blocks_used_sum += after.kv_blocks_used;
    minute_.kv_blocks_used_max = std::max(minute_.kv_blocks_used_max, after.kv_blocks_used);
    minute_.kv_blocks_total = after.kv_blocks_total;
    minute_.step_ms_sum += after.last_step_ms;
  }
  return done;
}

void EngineThread::run(RunnerFactory factory) {
  pthread_setname_np(pthread_self(),
                     ("awqd-engine-" + std::to_string(replica_)).substr(0, 15).c_str());
  std::unique_ptr<Runner> runner;
  try {
    runner = factory(replica_);
    std::lock_guard lock(mutex_);
    info_ = runner->info();
    max_num_seqs_ = info_.max_num_seqs;
    ready_ = true;
  } catch (...) {
    std::lock_guard lock(mutex_);
    ready_error_ = std::current_exception();
  }
  wake_.notify_all();
  if (!runner) return;

  std::vector<Add> adds;
  std::vector<std::string> cancels;
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      // Idle: sleep until work arrives, waking at the next minute boundary to close a rollup.
      const auto has_news = [&] { return stopping_ || !adds_.empty() || !cancels_.empty(); };
      if (!runner->has_unfinished() && !has_news()) {
        const auto next_minute = std::chrono::system_clock::time_point(
            std::chrono::milliseconds(minute_.minute + kMinuteMs + 1));
        if (minute_.steps > 0) {
          wake_.wait_until(lock, next_minute, has_news);
        } else {
          wake_.wait(lock, has_news);
        }
      }
      if (stopping_) break;
      adds.swap(adds_);
      cancels.swap(cancels_);
    }

    EngineReport report;
    report.replica = replica_;
    std::int64_t now = now_ms();
    for (auto& a : adds) {
      try {
        runner->add(a.id, *a.job, a.seed);
        auto acc = std::make_unique<Accumulated>();
        acc->want_logprobs = a.job->params.logprobs > 0;
        if (acc->want_logprobs) acc->outcome.logprobs = json::array();
        jobs_[a.id] = std::move(acc);
      } catch (const JobRejected& e) {
        JobOutcome o;
        o.reason = FinishReason::kError;
        o.reject_code = e.code;
        o.error = e.what();
        o.finished_at = now;
        report.events.push_back({EngineEvent::Kind::kFinished, a.id, now, std::move(o)});
      }
    }
    adds.clear();
    for (const auto& id : cancels) {
      if (jobs_.count(id)) runner->cancel(id);
    }
    cancels.clear();

    const EngineStats before = runner->stats();
    if (runner->has_unfinished()) {
      std::vector<RequestOutput> outputs;
      try {
        outputs = runner->step();
      } catch (const std::exception& e) {
        report.fatal = e.what();
        report.stats = before;
        sink_(std::move(report));
        spdlog::critical("engine[{}]: step failed: {}", replica_, e.what());
        return;
      }
      report.stepped = true;
      now = now_ms();
      for (const auto& out : outputs) collect(out, now, report.events);
    }
    report.stats = runner->stats();
    report.minute = roll_minute(before, report.stats, report.stepped, now);
    if (now - devices_at_ms_ >= 1000) {  // NVML reads cost tens of microseconds
      report.devices = runner->devices();
      devices_at_ms_ = now;
    }
    sink_(std::move(report));
  }
  // Stopping: the partial minute is still worth keeping.
  if (minute_.steps > 0) {
    EngineReport last;
    last.replica = replica_;
    last.stats = runner->stats();
    last.minute = minute_;
    sink_(std::move(last));
  }
}

}  // namespace awqd
