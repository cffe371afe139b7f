// One job as the daemon records it: what was asked and what came of it. The same record is the
// Redis result document (SPEC section 4, result_json) and the SQLite row (SPEC section 5,
// daemon/store.cc), so the two cannot drift apart.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/job.h"

namespace awqd {

enum class JobStatus { kQueued, kRunning, kDone, kFailed, kCancelled };
const char* status_name(JobStatus status);  // "queued", "running", "done", "failed", "cancelled"
std::optional<JobStatus> parse_status(std::string_view name);
inline bool is_final(JobStatus s) {
  return s == JobStatus::kDone || s == JobStatus::kFailed || s == JobStatus::kCancelled;
}

struct JobRecord {
  // Identity and delivery.
  std::string id;        // the caller's id, else the stream entry id
  std::string stream;    // stream key it came from
  std::string entry_id;  // stream entry of this delivery
  std::string batch;     // "" when none
  std::string instance;  // consumer name of the daemon that ran it
  JobStatus status = JobStatus::kQueued;
  int priority = 0;
  int attempts = 0;  // the stream's delivery count

  // The request (empty/null when the job document could not be parsed).
  PromptKind prompt_kind = PromptKind::kText;
  bool has_request = false;  // prompt_kind/prompt/params are meaningful
  std::string prompt;        // prompt_for_store()
  nlohmann::json params;     // params_to_json(), as run
  nlohmann::json metadata;   // echoed back; null when none
  std::uint64_t seed = 0;

  // The outcome.
  std::string text;
  std::vector<std::int32_t> token_ids;
  nlohmann::json logprobs;    // null unless the job asked for logprobs
  std::string finish_reason;  // stop | length | cancelled | error; "" while unfinished
  std::string error_code;     // errc::*, when failed
  std::string error_message;
  int prompt_tokens = 0;
  int cached_prompt_tokens = 0;
  int completion_tokens = 0;

  // Times, ms since the epoch; 0 = did not happen.
  std::int64_t queued_at = 0;   // XADD time, from the entry id
  std::int64_t started_at = 0;  // admitted to the engine
  std::int64_t first_token_at = 0;
  std::int64_t finished_at = 0;

  std::string model;  // model directory name
  std::string model_hash;
  std::string engine_version;
};

// The result document of SPEC section 4:
//   {id, status, text, token_ids, finish_reason, usage {prompt_tokens, completion_tokens,
//    cached_prompt_tokens}, timings {queued_ms, ttft_ms, total_ms}, finished_at, logprobs?,
//    error {code, message}?, metadata?, batch?, model, model_hash, engine_version, seed,
//    attempts, instance, entry}
// Durations of steps that did not happen (a job cancelled before it started) are null.
nlohmann::json result_json(const JobRecord& record);
std::string result_text(const JobRecord& record);  // result_json() as compact text

// Reads a result document back (the Redis result key) into the outcome fields of `record`. The
// delivery (stream, entry_id) and the request (prompt, params) are left as they are: the record
// stays this delivery's. False when the text is not a result document.
bool merge_result(std::string_view result_json_text, JobRecord& record);

// Milliseconds since the Unix epoch, now.
std::int64_t now_ms();

}  // namespace awqd
