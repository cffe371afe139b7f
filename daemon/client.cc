#include "daemon/client.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "daemon/record.h"

namespace awqd::cli {

double BatchCounts::jobs_per_s() const {
  const std::int64_t start = submitted_at ? submitted_at : first_finished_at;
  const double span = (last_finished_at - start) / 1000.0;
  return span > 0 ? finished() / span : 0;
}

double BatchCounts::tokens_per_s() const {
  const std::int64_t start = submitted_at ? submitted_at : first_finished_at;
  const double span = (last_finished_at - start) / 1000.0;
  return span > 0 ? completion_tokens / span : 0;
}

double BatchCounts::eta_s() const {
  const double rate = jobs_per_s();
  if (total <= 0 || rate <= 0) return -1;
  return std::max<double>(0, total - finished()) / rate;
}

BatchCounts read_batch(RedisSync& redis, const RedisKeys& keys, const std::string& batch) {
  const RedisReply r = redis.command({"HGETALL", keys.batch(batch)});
  BatchCounts b;
  for (std::size_t i = 0; i + 1 < r.elements.size(); i += 2) {
    const std::string& k = r.elements[i].str;
    const long long v = r.elements[i + 1].as_int();
    b.exists = true;
    if (k == "total")
      b.total = v;
    else if (k == "done")
      b.done = v;
    else if (k == "failed")
      b.failed = v;
    else if (k == "cancelled")
      b.cancelled = v;
    else if (k == "prompt_tokens")
      b.prompt_tokens = v;
    else if (k == "completion_tokens")
      b.completion_tokens = v;
    else if (k == "submitted_at")
      b.submitted_at = v;
    else if (k == "first_finished_at")
      b.first_finished_at = v;
    else if (k == "last_finished_at")
      b.last_finished_at = v;
  }
  return b;
}

nlohmann::json batch_json(const std::string& name, const BatchCounts& b) {
  const double eta = b.eta_s();
  return {{"batch", name},
          {"total", b.total > 0 ? nlohmann::json(b.total) : nlohmann::json(nullptr)},
          {"done", b.done},
          {"failed", b.failed},
          {"cancelled", b.cancelled},
          {"finished", b.finished()},
          {"complete", b.complete()},
          {"prompt_tokens", b.prompt_tokens},
          {"completion_tokens", b.completion_tokens},
          {"jobs_per_s", b.jobs_per_s()},
          {"tokens_per_s", b.tokens_per_s()},
          {"eta_s", eta >= 0 ? nlohmann::json(eta) : nlohmann::json(nullptr)}};
}

std::string format_duration(double seconds) {
  if (seconds < 0 || !std::isfinite(seconds)) return "?";
  const long s = std::lround(seconds);
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof(buf), "%ldh%02ldm%02lds", s / 3600, s / 60 % 60, s % 60);
  } else if (s >= 60) {
    std::snprintf(buf, sizeof(buf), "%ldm%02lds", s / 60, s % 60);
  } else {
    std::snprintf(buf, sizeof(buf), "%lds", s);
  }
  return buf;
}

std::string progress_line(const BatchCounts& b, int width) {
  const double fraction = b.total > 0 ? std::min(1.0, double(b.finished()) / double(b.total)) : 0.0;
  const int filled = static_cast<int>(fraction * width);
  std::string bar(static_cast<std::size_t>(width + 2), '-');
  bar.front() = '[';
  bar.back() = ']';
  std::fill_n(bar.begin() + 1, filled, '#');
  char text[256];
  if (b.total > 0) {
    std::snprintf(text, sizeof(text),
                  " %3.0f%%  %lld/%lld done, %lld failed, %lld cancelled  %.0f tok/s  ETA %s",
                  fraction * 100, static_cast<long long>(b.done), static_cast<long long>(b.total),
                  static_cast<long long>(b.failed), static_cast<long long>(b.cancelled),
                  b.tokens_per_s(), b.complete() ? "done" : format_duration(b.eta_s()).c_str());
  } else {
    std::snprintf(text, sizeof(text),
                  " ?  %lld done, %lld failed, %lld cancelled (total unknown)  %.0f tok/s",
                  static_cast<long long>(b.done), static_cast<long long>(b.failed),
                  static_cast<long long>(b.cancelled), b.tokens_per_s());
  }
  return bar + text;
}

bool is_tty(int fd) { return isatty(fd) == 1; }

}  // namespace awqd::cli
