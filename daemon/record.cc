#include "daemon/record.h"

#include <chrono>

namespace awqd {

using json = nlohmann::json;

const char* status_name(JobStatus status) {
  switch (status) {
    case JobStatus::kQueued:
      return "queued";
    case JobStatus::kRunning:
      return "running";
    case JobStatus::kDone:
      return "done";
    case JobStatus::kFailed:
      return "failed";
    case JobStatus::kCancelled:
      return "cancelled";
  }
  return "queued";
}

std::optional<JobStatus> parse_status(std::string_view name) {
  for (auto s : {JobStatus::kQueued, JobStatus::kRunning, JobStatus::kDone, JobStatus::kFailed,
                 JobStatus::kCancelled}) {
    if (name == status_name(s)) return s;
  }
  return std::nullopt;
}

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

namespace {

// end - start when both happened, else null.
json span_ms(std::int64_t start, std::int64_t end) {
  if (start == 0 || end == 0) return nullptr;
  return end - start;
}

template <typename T>
T field(const json& doc, const char* key, T fallback) {
  const auto it = doc.find(key);
  if (it == doc.end() || it->is_null()) return fallback;
  try {
    return it->get<T>();
  } catch (const json::exception&) {
    return fallback;
  }
}

}  // namespace

json result_json(const JobRecord& r) {
  json doc = {
      {"id", r.id},
      {"status", status_name(r.status)},
      {"text", r.text},
      {"token_ids", r.token_ids},
      {"finish_reason", r.finish_reason.empty() ? json(nullptr) : json(r.finish_reason)},
      {"usage",
       {{"prompt_tokens", r.prompt_tokens},
        {"completion_tokens", r.completion_tokens},
        {"cached_prompt_tokens", r.cached_prompt_tokens}}},
      {"timings",
       {{"queued_ms", span_ms(r.queued_at, r.started_at)},
        {"ttft_ms", span_ms(r.started_at, r.first_token_at)},
        {"total_ms", span_ms(r.queued_at, r.finished_at)}}},
      {"finished_at", r.finished_at},
      {"model", r.model},
      {"model_hash", r.model_hash},
      {"engine_version", r.engine_version},
      {"seed", r.seed},
      {"attempts", r.attempts},
      {"instance", r.instance},
      {"entry", r.entry_id},
  };
  if (!r.batch.empty()) doc["batch"] = r.batch;
  if (!r.logprobs.is_null()) doc["logprobs"] = r.logprobs;
  if (r.status == JobStatus::kFailed)
    doc["error"] = {{"code", r.error_code}, {"message", r.error_message}};
  if (!r.metadata.is_null()) doc["metadata"] = r.metadata;
  return doc;
}

std::string result_text(const JobRecord& record) {
  // Texts are valid UTF-8 from the engine, but messages may quote cut-off caller input.
  return result_json(record).dump(-1, ' ', false, json::error_handler_t::replace);
}

bool merge_result(std::string_view text, JobRecord& r) {
  const json doc = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (!doc.is_object()) return false;
  const auto status = parse_status(field<std::string>(doc, "status", ""));
  if (!status) return false;
  r.status = *status;
  r.id = field<std::string>(doc, "id", r.id);
  r.text = field<std::string>(doc, "text", "");
  r.token_ids = field<std::vector<std::int32_t>>(doc, "token_ids", {});
  r.finish_reason = field<std::string>(doc, "finish_reason", "");
  const json usage = field<json>(doc, "usage", json::object());
  r.prompt_tokens = field<int>(usage, "prompt_tokens", 0);
  r.completion_tokens = field<int>(usage, "completion_tokens", 0);
  r.cached_prompt_tokens = field<int>(usage, "cached_prompt_tokens", 0);
  r.finished_at = field<std::int64_t>(doc, "finished_at", 0);
  const json timings = field<json>(doc, "timings", json::object());
  if (const auto total = field<std::int64_t>(timings, "total_ms", -1);
      total >= 0 && r.finished_at) {
    r.queued_at = r.finished_at - total;
  }
  if (const auto queued = field<std::int64_t>(timings, "queued_ms", -1);
      queued >= 0 && r.queued_at) {
    r.started_at = r.queued_at + queued;
  }
  if (const auto ttft = field<std::int64_t>(timings, "ttft_ms", -1); ttft >= 0 && r.started_at) {
    r.first_token_at = r.started_at + ttft;
  }
  r.logprobs = field<json>(doc, "logprobs", nullptr);
  const json error = field<json>(doc, "error", json::object());
  r.error_code = field<std::string>(error, "code", "");
  r.error_message = field<std::string>(error, "message", "");
  r.metadata = field<json>(doc, "metadata", nullptr);
  r.batch = field<std::string>(doc, "batch", r.batch);
  r.model = field<std::string>(doc, "model", "");
  r.model_hash = field<std::string>(doc, "model_hash", "");
  r.engine_version = field<std::string>(doc, "engine_version", "");
  r.seed = field<std::uint64_t>(doc, "seed", 0);
  r.attempts = field<int>(doc, "attempts", r.attempts);
  r.instance = field<std::string>(doc, "instance", "");
  return true;
}

}  // namespace awqd
