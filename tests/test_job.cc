// The job parser (daemon/job.h): every field of SPEC section 4, and every kind of bad input with
// its error code.
#include <gtest/gtest.h>

#include <string>

#include "daemon/job.h"
#include "daemon/record.h"

namespace awqd {
namespace {

const ModelLimits kLimits{32000, 1024};

Job ok(const std::string& text) {
  ParsedJob p = parse_job(text, kLimits);
  if (auto* e = std::get_if<JobError>(&p)) {
    ADD_FAILURE() << "expected a valid job, got " << e->code << ": " << e->message << "\n  for "
                  << text;
    return {};
  }
  return std::get<Job>(p);
}

JobError bad(const std::string& text, const ModelLimits& limits = kLimits) {
  ParsedJob p = parse_job(text, limits);
  if (auto* e = std::get_if<JobError>(&p)) return *e;
  ADD_FAILURE() << "expected an error for " << text;
  return {};
}

TEST(JobParser, FullDocument) {
  const Job j = ok(R"({"id": "j-1", "prompt": "Hello", "priority": 9, "batch": "nightly",
      "metadata": {"anything": ["echoed", 1]},
      "params": {"max_tokens": 16, "temperature": 0.7, "top_p": 0.95, "top_k": 50, "min_p": 0.05,
                 "repetition_penalty": 1.1, "presence_penalty": 0.5, "frequency_penalty": -0.5,
                 "seed": 42, "stop": ["\n\n", "END"], "stop_token_ids": [2], "ignore_eos": true,
                 "logprobs": 3}})");
  EXPECT_EQ(j.id, "j-1");
  EXPECT_EQ(j.prompt_kind, PromptKind::kText);
  EXPECT_EQ(j.prompt, "Hello");
  EXPECT_EQ(j.priority, 9);
  EXPECT_EQ(j.batch, "nightly");
  EXPECT_EQ(j.metadata["anything"][0], "echoed");
  EXPECT_EQ(j.params.max_tokens, 16);
  EXPECT_FLOAT_EQ(j.params.temperature, 0.7f);
  EXPECT_FLOAT_EQ(j.params.top_p, 0.95f);
  EXPECT_EQ(j.params.top_k, 50);
  EXPECT_FLOAT_EQ(j.params.min_p, 0.05f);
  EXPECT_FLOAT_EQ(j.params.repetition_penalty, 1.1f);
  EXPECT_FLOAT_EQ(j.params.presence_penalty, 0.5f);
  EXPECT_FLOAT_EQ(j.params.frequency_penalty, -0.5f);
  EXPECT_EQ(j.params.seed, 42u);
  EXPECT_TRUE(j.seed_given);
  EXPECT_EQ(j.params.stop, (std::vector<std::string>{"\n\n", "END"}));
  EXPECT_EQ(j.params.stop_token_ids, (std::vector<std::int32_t>{2}));
  EXPECT_TRUE(j.params.ignore_eos);
  EXPECT_EQ(j.params.logprobs, 3);
}

TEST(JobParser, DefaultsAndPromptKinds) {
  const Job text = ok(R"({"prompt": ""})");
  EXPECT_TRUE(text.id.empty());
  EXPECT_FALSE(text.seed_given);
  EXPECT_EQ(text.params.max_tokens, SamplingParams{}.max_tokens);
  EXPECT_TRUE(text.metadata.is_null());

  const Job chat = ok(R"({"messages": [{"role": "system", "content": "Be brief."},
                                         {"role": "user", "content": "Hi"}]})");
  EXPECT_EQ(chat.prompt_kind, PromptKind::kMessages);
  ASSERT_EQ(chat.messages.size(), 2u);
  EXPECT_EQ(chat.messages[1].role, "user");
  EXPECT_EQ(prompt_for_store(chat),
            R"([{"content":"Be brief.","role":"system"},{"content":"Hi","role":"user"}])");

  const Job ids = ok(R"({"prompt_token_ids": [1, 450, 31999]})");
  EXPECT_EQ(ids.prompt_kind, PromptKind::kTokenIds);
  EXPECT_EQ(ids.prompt_token_ids, (std::vector<std::int32_t>{1, 450, 31999}));
  EXPECT_EQ(prompt_for_store(ids), "[1,450,31999]");

  EXPECT_EQ(ok(R"({"prompt": "x", "params": {"stop": "END"}})").params.stop,
            std::vector<std::string>{"END"});
}

TEST(JobParser, MalformedJson) {
  for (const char* text : {"", "{", "not json", "[1,2]", "\"a string\"", "42", "null",
                           R"({"prompt": "x",})", "{\"prompt\": \"\xff\xfe\"}"}) {
    EXPECT_EQ(bad(text).code, errc::kInvalidJson) << text;
  }
  EXPECT_EQ(bad(std::string(300, '[') + std::string(300, ']')).code, errc::kInvalidJson);
  const std::string huge = R"({"prompt": ")" + std::string(kMaxJobBytes, 'a') + "\"}";
  EXPECT_EQ(bad(huge).code, errc::kInvalidJson);
}

TEST(JobParser, UnknownFieldsAreErrors) {
  EXPECT_EQ(bad(R"({"prompt": "x", "promt": "y"})").code, errc::kUnknownField);
  const JobError e = bad(R"({"prompt": "x", "params": {"temprature": 0.5}})");
  EXPECT_EQ(e.code, errc::kUnknownField);
  EXPECT_NE(e.message.find("params.temprature"), std::string::npos) << e.message;
  EXPECT_EQ(bad(R"({"messages": [{"role": "user", "content": "x", "name": "bob"}]})").code,
            errc::kUnknownField);
}

TEST(JobParser, WrongTypes) {
  for (const char* text : {
           R"({"prompt": 5})",
           R"({"id": 7, "prompt": "x"})",
           R"({"id": "", "prompt": "x"})",
           R"({"prompt": "x", "batch": ["a"]})",
           R"({"prompt": "x", "params": []})",
           R"({"prompt": "x", "params": {"max_tokens": "16"}})",
           R"({"prompt": "x", "params": {"max_tokens": 16.5}})",
           R"({"prompt": "x", "params": {"temperature": "hot"}})",
           R"({"prompt": "x", "params": {"ignore_eos": 1}})",
           R"({"prompt": "x", "params": {"stop": [1]}})",
           R"({"prompt": "x", "params": {"stop_token_ids": "2"}})",
           R"({"prompt": "x", "priority": "high"})",
           R"({"messages": []})",
           R"({"messages": [{"role": "user"}]})",
           R"({"messages": [{"role": "robot", "content": "x"}]})",
           R"({"messages": "hi"})",
           R"({"prompt_token_ids": []})",
           R"({"prompt_token_ids": [1, "2"]})",
       }) {
    EXPECT_EQ(bad(text).code, errc::kInvalidField) << text;
  }
}

TEST(JobParser, OutOfRangeParams) {
  for (const char* text : {
           R"({"prompt": "x", "params": {"max_tokens": 0}})",
           R"({"prompt": "x", "params": {"max_tokens": 99999999999}})",
           R"({"prompt": "x", "params": {"temperature": -1}})",
           R"({"prompt": "x", "params": {"top_p": 0}})",
           R"({"prompt": "x", "params": {"top_p": 1.5}})",
           R"({"prompt": "x", "params": {"top_k": -2}})",
           R"({"prompt": "x", "params": {"min_p": 2}})",
           R"({"prompt": "x", "params": {"repetition_penalty": 0}})",
           R"({"prompt": "x", "params": {"presence_penalty": 3}})",
           R"({"prompt": "x", "params": {"frequency_penalty": -3}})",
           R"({"prompt": "x", "params": {"logprobs": 21}})",
           R"({"prompt": "x", "params": {"seed": -1}})",
           R"({"prompt": "x", "params": {"stop": [""]}})",
           R"({"prompt": "x", "params": {"temperature": 1e300}})",
           R"({"prompt": "x", "priority": 10000000})",
       }) {
    EXPECT_EQ(bad(text).code, errc::kInvalidParam) << text;
  }
}

TEST(JobParser, PromptChoice) {
  EXPECT_EQ(bad(R"({"params": {}})").code, errc::kMissingPrompt);
  EXPECT_EQ(bad(R"({})").code, errc::kMissingPrompt);
  EXPECT_EQ(bad(R"({"prompt": "x", "prompt_token_ids": [1]})").code, errc::kMultiplePrompts);
  EXPECT_EQ(bad(R"({"prompt": "x", "messages": [{"role": "user", "content": "y"}]})").code,
            errc::kMultiplePrompts);
}

TEST(JobParser, TokensOutsideTheVocabulary) {
  EXPECT_EQ(bad(R"({"prompt_token_ids": [1, 32000]})").code, errc::kUnknownToken);
  EXPECT_EQ(bad(R"({"prompt_token_ids": [-1]})").code, errc::kUnknownToken);
  EXPECT_EQ(bad(R"({"prompt": "x", "params": {"stop_token_ids": [40000]}})").code,
            errc::kUnknownToken);
  // Without a model the vocabulary is unknown and only negative ids are wrong.
  EXPECT_TRUE(
      std::holds_alternative<Job>(parse_job(R"({"prompt_token_ids": [40000]})", ModelLimits{})));
}

TEST(JobParser, PromptLongerThanTheContext) {
  std::string ids = "[1";
  for (int i = 1; i < 1024; ++i) ids += ",5";
  const JobError e = bad(R"({"prompt_token_ids": )" + ids + "]}");
  EXPECT_EQ(e.code, errc::kPromptTooLong);
  EXPECT_NE(e.message.find("1024"), std::string::npos) << e.message;
}

TEST(JobParser, ErrorsKeepTheCallersId) {
  EXPECT_EQ(bad(R"({"id": "mine", "prompt": "x", "params": {"top_p": 7}})").id, "mine");
  EXPECT_EQ(bad(R"({"id": "mine"})").id, "mine");
  EXPECT_EQ(bad(R"({"id": 5, "prompt": "x"})").id, "");
  EXPECT_EQ(bad("{nope").id, "");
}

TEST(JobParser, ErrorMessagesStayShort) {
  const std::string key(100000, 'k');
  const JobError e = bad(R"({"prompt": "x", ")" + key + R"(": 1})");
  EXPECT_EQ(e.code, errc::kUnknownField);
  EXPECT_LT(e.message.size(), 400u);
}

TEST(ResultRecord, RoundTripsThroughTheResultDocument) {
  JobRecord r;
  r.id = "j-1";
  r.batch = "b";
  r.entry_id = "1700000000000-0";
  r.status = JobStatus::kDone;
  r.text = "Once upon a time";
  r.token_ids = {9038, 2501, 263, 931};
  r.finish_reason = "length";
  r.prompt_tokens = 5;
  r.completion_tokens = 4;
  r.cached_prompt_tokens = 1;
  r.queued_at = 1700000000000;
  r.started_at = 1700000000100;
  r.first_token_at = 1700000000150;
  r.finished_at = 1700000000400;
  r.metadata = {{"k", "v"}};
  r.model = "llama-13m";
  r.model_hash = "0123456789abcdef";
  r.engine_version = "0.1.0";
  r.seed = 42;
  r.attempts = 2;
  r.instance = "host:1";
  const nlohmann::json doc = result_json(r);
  EXPECT_EQ(doc["timings"]["queued_ms"], 100);
  EXPECT_EQ(doc["timings"]["ttft_ms"], 50);
  EXPECT_EQ(doc["timings"]["total_ms"], 400);
  EXPECT_EQ(doc["usage"]["completion_tokens"], 4);
  EXPECT_FALSE(doc.contains("error"));

  JobRecord back;
  back.entry_id = "1700000000999-0";  // another delivery of the same job
  ASSERT_TRUE(merge_result(result_text(r), back));
  EXPECT_EQ(back.id, r.id);
  EXPECT_EQ(back.status, r.status);
  EXPECT_EQ(back.text, r.text);
  EXPECT_EQ(back.token_ids, r.token_ids);
  EXPECT_EQ(back.queued_at, r.queued_at);
  EXPECT_EQ(back.started_at, r.started_at);
  EXPECT_EQ(back.first_token_at, r.first_token_at);
  EXPECT_EQ(back.finished_at, r.finished_at);
  EXPECT_EQ(back.metadata, r.metadata);
  EXPECT_EQ(back.seed, r.seed);
  EXPECT_EQ(back.entry_id, "1700000000999-0") << "the record stays that of its own delivery";

  EXPECT_FALSE(merge_result("{}", back));
  EXPECT_FALSE(merge_result("nonsense", back));
}

TEST(ResultRecord, FailedJobsCarryTheirError) {
  JobRecord r;
  r.id = "x";
  r.status = JobStatus::kFailed;
  r.error_code = errc::kInvalidJson;
  r.error_message = std::string("cut \xe2\x82", 6);  // a truncated UTF-8 sequence
  const nlohmann::json doc = nlohmann::json::parse(result_text(r));
  EXPECT_EQ(doc["error"]["code"], "invalid_json");
  EXPECT_TRUE(doc["timings"]["queued_ms"].is_null());
}

}  // namespace
}  // namespace awqd
