// Helpers shared by the client subcommands (status, submit, cancel, results): batch progress
// from Redis, the progress bar, durations.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "daemon/redis.h"

namespace awqd::cli {

// A batch's counters: the hash <prefix>batch:<name>, kept by `awqd submit` (total,
// submitted_at) and by the daemon's publish script (done, failed, cancelled, tokens, times).
struct BatchCounts {
  bool exists = false;
  std::int64_t total = 0;  // 0 when the jobs were not submitted with `awqd submit`
  std::int64_t done = 0, failed = 0, cancelled = 0;
  std::int64_t prompt_tokens = 0, completion_tokens = 0;
  std::int64_t submitted_at = 0, first_finished_at = 0, last_finished_at = 0;  // ms since the epoch

  std::int64_t finished() const { return done + failed + cancelled; }
  bool complete() const { return total > 0 && finished() >= total; }
  double jobs_per_s() const;    // finishing rate, 0 when unknown
  double tokens_per_s() const;  // completion tokens per second over the same span
  double eta_s() const;         // seconds to the end at the current rate; < 0 when unknown
};

BatchCounts read_batch(RedisSync& redis, const RedisKeys& keys, const std::string& batch);
nlohmann::json batch_json(const std::string& name, const BatchCounts& b);

// "[##########----------]  50%  500/1000 done, 3 failed, 0 cancelled  812 tok/s  ETA 4m10s"
std::string progress_line(const BatchCounts& b, int width = 30);
std::string format_duration(double seconds);  // 3725 -> "1h02m05s"
bool is_tty(int fd);

}  // namespace awqd::cli
