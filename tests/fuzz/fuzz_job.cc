// libFuzzer target: any byte string as a job document (the `job` field of a stream entry) and as
// a result document read back from Redis. The job parser must answer every input with a Job or
// a JobError carrying a known code and a message, never crash or throw; whatever it accepts
// must serialize into a result document.
#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>

#include "daemon/job.h"
#include "daemon/record.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace awqd;
  static const std::set<std::string> kCodes = {
      errc::kInvalidJson,     errc::kMissingJob,   errc::kUnknownField,
      errc::kInvalidField,    errc::kInvalidParam, errc::kMissingPrompt,
      errc::kMultiplePrompts, errc::kUnknownToken, errc::kPromptTooLong};
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const ParsedJob parsed = parse_job(text, ModelLimits{32000, 1024});
  if (const auto* error = std::get_if<JobError>(&parsed)) {
    if (!kCodes.count(error->code) || error->message.empty()) __builtin_trap();
  } else {
    const Job& job = std::get<Job>(parsed);
    const int prompts = !job.prompt.empty() + !job.messages.empty() + !job.prompt_token_ids.empty();
    if (prompts > 1) __builtin_trap();  // exactly one of prompt / messages / prompt_token_ids
    for (auto id : job.prompt_token_ids) {
      if (id < 0 || id >= 32000) __builtin_trap();
    }
    if (job.prompt_token_ids.size() >= 1024) __builtin_trap();
    JobRecord record;
    record.id = job.id.empty() ? "entry" : job.id;
    record.batch = job.batch;
    record.prompt = prompt_for_store(job);
    record.params = params_to_json(job.params);
    record.metadata = job.metadata;
    JobRecord back;
    if (!merge_result(result_text(record), back) || back.id != record.id ||
        back.metadata != record.metadata) {
      __builtin_trap();  // a result document must read back as written
    }
  }
  JobRecord any;
  merge_result(text, any);  // result documents come from Redis too: any bytes, no crash
  return 0;
}
