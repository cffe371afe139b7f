// One engine replica on its own thread. The thread builds the Runner (so CUDA state is created
// on the thread that uses it), owns it, and runs step() in a loop while there is work. Other
// threads talk to it only through add()/cancel()/stop() (a locked inbox) and hear back through
// the report callback, which runs on the engine thread once per loop turn; the daemon posts the
// report to its io_context. docs/ARCHITECTURE.md, "Daemon threads", has the whole contract.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "daemon/runner.h"
#include "daemon/store.h"

namespace awqd {

// What became of a job the engine ran.
struct JobOutcome {
  FinishReason reason = FinishReason::kNone;  // kStop, kLength, kCancelled, kError
  std::string reject_code;                    // set when the runner rejected the input (errc)
  std::string error;                          // reject or engine error message
  std::string text;
  std::vector<std::int32_t> token_ids;
  nlohmann::json logprobs;  // [{token, logprob, top: [{token, logprob}]}] when asked, else null
  int prompt_tokens = 0;
  int cached_prompt_tokens = 0;
  int completion_tokens = 0;
  std::int64_t first_token_at = 0;  // ms since the epoch
  std::int64_t finished_at = 0;
};

struct EngineEvent {
  enum class Kind { kFirstToken, kFinished };
  Kind kind = Kind::kFinished;
  std::string id;
  std::int64_t at_ms = 0;
  JobOutcome outcome;  // kFinished
};

// One loop turn's news, delivered on the engine thread.
struct EngineReport {
  int replica = 0;
  std::vector<EngineEvent> events;
  EngineStats stats;                  // after this turn
  bool stepped = false;               // stats.last_step_ms is this turn's step
  std::optional<MinuteStats> minute;  // a finished minute's rollup
  std::string fatal;                  // the engine failed: the replica has stopped
  // Its GPUs (Runner::devices), at most once a second.
  std::optional<std::vector<DeviceStatus>> devices;
};

class EngineThread {
 public:
  using ReportSink = std::function<void(EngineReport)>;

  EngineThread(int replica, RunnerFactory factory, ReportSink sink);
  ~EngineThread();  // stop()
  EngineThread(const EngineThread&) = delete;
  EngineThread& operator=(const EngineThread&) = delete;

  // Blocks until the runner is built; rethrows what its construction threw (a bad model dir...).
  RunnerInfo wait_ready();

  // Thread-safe. The job is shared, not copied: the daemon keeps it for a retry.
  void add(std::string id, std::shared_ptr<const Job> job, std::uint64_t seed);
  void cancel(std::string id);  // thread-safe
  void stop();  // ends the thread after the current step; unfinished jobs are abandoned

 private:
  struct Accumulated;
  void run(RunnerFactory factory);
  void collect(const RequestOutput& out, std::int64_t now, std::vector<EngineEvent>& events);
  std::optional<MinuteStats> roll_minute(const EngineStats& before, const EngineStats& after,
                                         bool stepped, std::int64_t now);

  const int replica_;
  ReportSink sink_;
  std::mutex mutex_;
  std::condition_variable wake_;
  struct Add {
    std::string id;
    std::shared_ptr<const Job> job;
    std::uint64_t seed;
  };
  std::vector<Add> adds_;
  std::vector<std::string> cancels_;
  bool stopping_ = false;
  bool ready_ = false;
  std::exception_ptr ready_error_;
  RunnerInfo info_;

  // Engine-thread state.
  std::unordered_map<std::string, std::unique_ptr<Accumulated>> jobs_;
  MinuteStats minute_;
  int max_num_seqs_ = 1;
  std::int64_t devices_at_ms_ = 0;  // when report.devices was last filled

  std::thread thread_;
};

}  // namespace awqd
