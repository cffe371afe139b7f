// The job document callers put on the stream (SPEC section 4), parsed and validated.
//
//   XADD awqd:jobs * job '{"id": "...", "prompt": "...", "params": {...}, ...}'
//
// Parsing is strict: unknown fields, wrong types and out-of-range values are errors, each with a
// stable error code (below) that ends up in the job's `failed` result. Nothing here throws on bad
// input; the parser is fuzzed (tests/fuzz_job.cc).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "engine/sampling.h"
#include "engine/tokenizer.h"

namespace awqd {

// Error codes of failed jobs. Input errors are final (no retry); kEngineError is transient.
namespace errc {
inline constexpr const char* kInvalidJson =
    "invalid_json";  // not JSON, not an object, too deep or large
inline constexpr const char* kMissingJob = "missing_job";      // stream entry without a `job` field
inline constexpr const char* kUnknownField = "unknown_field";  // a field the schema does not have
inline constexpr const char* kInvalidField = "invalid_field";  // wrong type or format
inline constexpr const char* kInvalidParam = "invalid_param";  // sampling parameter out of range
inline constexpr const char* kMissingPrompt =
    "missing_prompt";  // none of prompt/messages/prompt_token_ids
inline constexpr const char* kMultiplePrompts = "multiple_prompts";
inline constexpr const char* kUnknownToken = "unknown_token";  // a token id outside the vocabulary
inline constexpr const char* kPromptTooLong = "prompt_too_long";  // prompt does not fit the context
inline constexpr const char* kInvalidRequest = "invalid_request";  // other rejection by the engine
inline constexpr const char* kEngineError = "engine_error";        // transient: retried
inline constexpr const char* kMaxAttempts =
    "max_attempts_exceeded";  // moved to the dead-letter stream
}  // namespace errc

struct JobError {
  std::string code;     // one of errc
  std::string message;  // for people: what was wrong and where
  std::string id;       // the document's `id` when it has a usable one, so the caller hears back
};

enum class PromptKind { kText, kMessages, kTokenIds };
const char* prompt_kind_name(PromptKind kind);  // "text", "messages", "token_ids"

struct Job {
  std::string id;  // the caller's id; empty when absent (the stream entry id is used)
  PromptKind prompt_kind = PromptKind::kText;
  std::string prompt;                          // kText
  std::vector<ChatMessage> messages;           // kMessages
  std::vector<std::int32_t> prompt_token_ids;  // kTokenIds
  SamplingParams params;
  bool seed_given = false;  // else the daemon picks one and reports it
  int priority = 0;         // higher is admitted first
  std::string batch;        // "" when absent
  nlohmann::json metadata;  // null when absent; echoed in the result
};

// What the parser needs to know about the model; 0 means unknown (that check is skipped).
struct ModelLimits {
  int vocab_size = 0;
  int max_context = 0;  // prompt tokens must be fewer than this
};

inline constexpr std::size_t kMaxJobBytes = 8u << 20;  // a job document of at most 8 MiB
inline constexpr int kMaxJobDepth = 64;                // JSON nesting (metadata included)
inline constexpr std::size_t kMaxIdBytes = 512;        // id and batch names

using ParsedJob = std::variant<Job, JobError>;

// Parses one job document. Never throws for bad input.
ParsedJob parse_job(std::string_view text, const ModelLimits& limits);

// The job's prompt as stored: the text, or compact JSON of the messages or token ids.
std::string prompt_for_store(const Job& job);

// Sampling parameters as a JSON object (every field, as run).
nlohmann::json params_to_json(const SamplingParams& params);

}  // namespace awqd
