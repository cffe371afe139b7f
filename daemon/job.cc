#include "daemon/job.h"

#include <climits>
#include <cmath>
#include <limits>
#include <stdexcept>

namespace awqd {
namespace {

using json = nlohmann::json;

// Thrown inside the parser only, turned into a JobError at the top.
struct Reject {
  const char* code;
  std::string message;
};

[[noreturn]] void reject(const char* code, std::string message) {
  throw Reject{code, std::move(message)};
}

std::string type_of(const json& v) { return v.type_name(); }

// A caller-supplied name inside an error message, cut short so that messages stay readable.
std::string shorten(const std::string& s) { return s.size() <= 64 ? s : s.substr(0, 64) + "..."; }

std::int64_t get_int(const json& v, const std::string& where, std::int64_t lo, std::int64_t hi) {
  if (!v.is_number_integer()) {
    reject(errc::kInvalidField, where + " must be an integer (got " + type_of(v) + ")");
  }
  if (v.is_number_unsigned()) {
    const auto u = v.get<std::uint64_t>();
    if (u > static_cast<std::uint64_t>(hi)) {
      reject(errc::kInvalidParam, where + " must be at most " + std::to_string(hi));
    }
    return static_cast<std::int64_t>(u);
  }
  const auto i = v.get<std::int64_t>();
  if (i < lo || i > hi) {
    reject(errc::kInvalidParam, where + " must be in [" + std::to_string(lo) + ", " +
                                    std::to_string(hi) + "] (got " + std::to_string(i) + ")");
  }
  return i;
}

float get_float(const json& v, const std::string& where) {
  if (!v.is_number())
    reject(errc::kInvalidField, where + " must be a number (got " + type_of(v) + ")");
  const double d = v.get<double>();
  if (!std::isfinite(d) || std::fabs(d) > 1e30) {
    reject(errc::kInvalidParam, where + " must be a finite number");
  }
  return static_cast<float>(d);
}

const std::string& get_string(const json& v, const std::string& where) {
  if (!v.is_string())
    reject(errc::kInvalidField, where + " must be a string (got " + type_of(v) + ")");
  return v.get_ref<const std::string&>();
}

std::string get_name(const json& v, const std::string& where) {
  const std::string& s = get_string(v, where);
  if (s.empty()) reject(errc::kInvalidField, where + " must not be empty");
  if (s.size() > kMaxIdBytes) {
    reject(errc::kInvalidField,
           where + " is longer than " + std::to_string(kMaxIdBytes) + " bytes");
  }
  return s;
}

std::int32_t get_token(const json& v, const std::string& where, const ModelLimits& limits) {
  if (!v.is_number_integer()) {
    reject(errc::kInvalidField, where + " must be an integer token id (got " + type_of(v) + ")");
  }
  const bool negative =
      v.is_number_integer() && !v.is_number_unsigned() && v.get<std::int64_t>() < 0;
  const std::uint64_t u = negative ? 0 : v.get<std::uint64_t>();
  const std::uint64_t vocab = limits.vocab_size > 0 ? limits.vocab_size : INT32_MAX;
  if (negative || u >= vocab) {
    reject(errc::kUnknownToken,
           where + ": " + v.dump() + " is not a token id of this model (vocabulary " +
               (limits.vocab_size > 0 ? "size " + std::to_string(limits.vocab_size)
                                      : std::string("ids are 0..2^31-2")) +
               ")");
  }
  return static_cast<std::int32_t>(u);
}

void parse_params(const json& p, Job& job, const ModelLimits& limits) {
  if (!p.is_object())
    reject(errc::kInvalidField, "params must be an object (got " + type_of(p) + ")");
  SamplingParams& sp = job.params;
  for (const auto& [key, v] : p.items()) {
    const std::string where = "params." + shorten(key);
    if (key == "max_tokens") {
      sp.max_tokens = static_cast<int>(get_int(v, where, 1, INT32_MAX));
    } else if (key == "temperature") {
      sp.temperature = get_float(v, where);
    } else if (key == "top_p") {
      sp.top_p = get_float(v, where);
    } else if (key == "top_k") {
      sp.top_k = static_cast<int>(get_int(v, where, -1, INT32_MAX));
    } else if (key == "min_p") {
      sp.min_p = get_float(v, where);
    } else if (key == "repetition_penalty") {
      sp.repetition_penalty = get_float(v, where);
    } else if (key == "presence_penalty") {
      sp.presence_penalty = get_float(v, where);
    } else if (key == "frequency_penalty") {
      sp.frequency_penalty = get_float(v, where);
    } else if (key == "seed") {
      sp.seed = static_cast<std::uint64_t>(get_int(v, where, 0, INT64_MAX));
      job.seed_given = true;
    } else if (key == "stop") {
      sp.stop.clear();
      if (v.is_string()) {
        sp.stop.push_back(v.get<std::string>());
      } else if (v.is_array()) {
        if (v.size() > 64) reject(errc::kInvalidParam, where + " has more than 64 strings");
        for (std::size_t i = 0; i < v.size(); ++i) {
          sp.stop.push_back(get_string(v[i], where + "[" + std::to_string(i) + "]"));
        }
      } else {
        reject(errc::kInvalidField, where + " must be a string or an array of strings");
      }
    } else if (key == "stop_token_ids") {
      if (!v.is_array()) reject(errc::kInvalidField, where + " must be an array of token ids");
      if (v.size() > 1024) reject(errc::kInvalidParam, where + " has more than 1024 ids");
      sp.stop_token_ids.clear();
      for (std::size_t i = 0; i < v.size(); ++i) {
        sp.stop_token_ids.push_back(get_token(v[i], where + "[" + std::to_string(i) + "]", limits));
      }
    } else if (key == "ignore_eos") {
      if (!v.is_boolean()) reject(errc::kInvalidField, where + " must be true or false");
      sp.ignore_eos = v.get<bool>();
    } else if (key == "logprobs") {
      sp.logprobs = static_cast<int>(get_int(v, where, 0, INT32_MAX));
    } else {
      reject(errc::kUnknownField, "unknown field " + where);
    }
  }
  try {
    sp.validate(limits.vocab_size > 0 ? limits.vocab_size : INT32_MAX);
  } catch (const std::invalid_argument& e) {
    reject(errc::kInvalidParam, std::string("params: ") + e.what());
  }
}

void parse_messages(const json& v, Job& job) {
  if (!v.is_array() || v.empty()) reject(errc::kInvalidField, "messages must be a non-empty array");
  for (std::size_t i = 0; i < v.size(); ++i) {
    const std::string where = "messages[" + std::to_string(i) + "]";
    const json& m = v[i];
    if (!m.is_object()) reject(errc::kInvalidField, where + " must be an object");
    ChatMessage msg;
    bool has_role = false, has_content = false;
    for (const auto& [key, field] : m.items()) {
      if (key == "role") {
        msg.role = get_string(field, where + ".role");
        if (msg.role != "system" && msg.role != "user" && msg.role != "assistant") {
          reject(errc::kInvalidField, where + ".role must be system, user or assistant (got \"" +
                                          shorten(msg.role) + "\")");
        }
        has_role = true;
      } else if (key == "content") {
        msg.content = get_string(field, where + ".content");
        has_content = true;
      } else {
        reject(errc::kUnknownField, "unknown field " + where + "." + shorten(key));
      }
    }
    if (!has_role || !has_content)
      reject(errc::kInvalidField, where + " needs a role and a content");
    job.messages.push_back(std::move(msg));
  }
}

Job parse_document(const json& doc, const ModelLimits& limits) {
  if (!doc.is_object())
    reject(errc::kInvalidJson, "a job must be a JSON object (got " + type_of(doc) + ")");
  Job job;
  int prompts = 0;
  for (const auto& [key, v] : doc.items()) {
    if (key == "id") {
      job.id = get_name(v, "id");
    } else if (key == "prompt") {
      job.prompt = get_string(v, "prompt");
      job.prompt_kind = PromptKind::kText;
      ++prompts;
    } else if (key == "messages") {
      parse_messages(v, job);
      job.prompt_kind = PromptKind::kMessages;
      ++prompts;
    } else if (key == "prompt_token_ids") {
      if (!v.is_array() || v.empty()) {
        reject(errc::kInvalidField, "prompt_token_ids must be a non-empty array of token ids");
      }
      if (limits.max_context > 0 && v.size() >= static_cast<std::size_t>(limits.max_context)) {
        reject(errc::kPromptTooLong, "prompt_token_ids has " + std::to_string(v.size()) +
                                         " tokens; the model's context is " +
                                         std::to_string(limits.max_context) +
                                         " tokens and at least one must be left to generate");
      }
      job.prompt_token_ids.reserve(v.size());
      for (std::size_t i = 0; i < v.size(); ++i) {
        job.prompt_token_ids.push_back(
            get_token(v[i], "prompt_token_ids[" + std::to_string(i) + "]", limits));
      }
      job.prompt_kind = PromptKind::kTokenIds;
      ++prompts;
    } else if (key == "params") {
      parse_params(v, job, limits);
    } else if (key == "priority") {
      job.priority = static_cast<int>(get_int(v, "priority", -1000000, 1000000));
    } else if (key == "batch") {
      job.batch = get_name(v, "batch");
    } else if (key == "metadata") {
      job.metadata = v;
    } else {
      reject(errc::kUnknownField, "unknown field \"" + shorten(key) +
                                      "\" (a job has id, prompt, messages, prompt_token_ids, "
                                      "params, priority, batch, metadata)");
    }
  }
  if (prompts == 0) {
    reject(errc::kMissingPrompt, "a job needs one of prompt, messages or prompt_token_ids");
  }
  if (prompts > 1) {
    reject(errc::kMultiplePrompts,
           "a job takes exactly one of prompt, messages or prompt_token_ids");
  }
  return job;
}

}  // namespace

const char* prompt_kind_name(PromptKind kind) {
  switch (kind) {
    case PromptKind::kText:
      return "text";
    case PromptKind::kMessages:
      return "messages";
    case PromptKind::kTokenIds:
      return "token_ids";
  }
  return "text";
}

ParsedJob parse_job(std::string_view text, const ModelLimits& limits) {
  if (text.size() > kMaxJobBytes) {
    return JobError{errc::kInvalidJson,
                    "the job document is " + std::to_string(text.size()) + " bytes; at most " +
                        std::to_string(kMaxJobBytes) + " are accepted",
                    {}};
  }
  // The callback sees every value with its depth; values nested too deeply are discarded as
  // they are parsed, so a hostile document never becomes a deep tree.
  bool too_deep = false;
  const json::parser_callback_t limit_depth = [&too_deep](int depth, json::parse_event_t, json&) {
    if (depth > kMaxJobDepth) too_deep = true;
    return !too_deep;
  };
  json doc = json::parse(text.begin(), text.end(), limit_depth, /*allow_exceptions=*/false);
  if (too_deep) {
    return JobError{
        errc::kInvalidJson,
        "the job document nests deeper than " + std::to_string(kMaxJobDepth) + " levels",
        {}};
  }
  if (doc.is_discarded()) return JobError{errc::kInvalidJson, "the job is not valid JSON", {}};
  try {
    return parse_document(doc, limits);
  } catch (const Reject& r) {
    JobError error{r.code, r.message, {}};
    if (const auto it = doc.find("id"); doc.is_object() && it != doc.end() && it->is_string()) {
      const auto& id = it->get_ref<const std::string&>();
      if (!id.empty() && id.size() <= kMaxIdBytes) error.id = id;
    }
    return error;
  }
}

std::string prompt_for_store(const Job& job) {
  switch (job.prompt_kind) {
    case PromptKind::kText:
      return job.prompt;
    case PromptKind::kMessages: {
      json m = json::array();
      for (const auto& msg : job.messages)
        m.push_back({{"role", msg.role}, {"content", msg.content}});
      return m.dump(-1, ' ', false, json::error_handler_t::replace);
    }
    case PromptKind::kTokenIds:
      return json(job.prompt_token_ids).dump();
  }
  return {};
}

json params_to_json(const SamplingParams& p) {
  return {{"max_tokens", p.max_tokens},
          {"temperature", p.temperature},
          {"top_p", p.top_p},
          {"top_k", p.top_k},
          {"min_p", p.min_p},
          {"repetition_penalty", p.repetition_penalty},
          {"presence_penalty", p.presence_penalty},
          {"frequency_penalty", p.frequency_penalty},
          {"seed", p.seed},
          {"stop", p.stop},
          {"stop_token_ids", p.stop_token_ids},
          {"ignore_eos", p.ignore_eos},
          {"logprobs", p.logprobs}};
}

}  // namespace awqd
