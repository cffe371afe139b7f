// awqd submit [--prompt TEXT | --file jobs.jsonl] [--batch NAME] [--priority N] [--wait]:
// enqueue jobs (XADD <prefix>jobs * job <JSON>), optionally wait for their results.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <thread>

#include "daemon/cli.h"
#include "daemon/client.h"
#include "daemon/commands.h"
#include "daemon/config.h"
#include "daemon/job.h"
#include "daemon/record.h"
#include "daemon/redis.h"

namespace awqd::cli {
namespace {

using json = nlohmann::json;

constexpr std::size_t kPipelineChunk = 1000;

struct SubmitArgs {
  std::string prompt;
  std::string file;
  std::string id;
  std::string batch;
  int priority = 0;
  int max_tokens = 0;  // 0: the default of the job format
  double temperature = -1;
  long long seed = -1;
  bool wait = false;
  double timeout_s = 0;  // 0: wait forever
  bool json_output = false;
};

// The job documents to send, each checked with the daemon's own parser so that mistakes are
// reported here, with their line numbers, before anything is queued.
std::vector<json> build_jobs(const SubmitArgs& a) {
  std::vector<json> jobs;
  if (!a.prompt.empty()) {
    json j = {{"prompt", a.prompt}};
    if (!a.id.empty()) j["id"] = a.id;
    jobs.push_back(std::move(j));
  } else {
    std::ifstream file;
    std::istream* in = &std::cin;
    if (a.file != "-") {
      file.open(a.file);
      if (!file) throw std::runtime_error("cannot read " + a.file);
      in = &file;
    }
    std::string line;
    std::size_t number = 0;
    std::vector<std::string> errors;
    while (std::getline(*in, line)) {
      ++number;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      json j = json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.is_object()) {
        errors.push_back(a.file + ":" + std::to_string(number) + ": not a JSON object");
        continue;
      }
      jobs.push_back(std::move(j));
    }
    if (!errors.empty()) {
      for (const auto& e : errors) std::fprintf(stderr, "%s\n", e.c_str());
      throw std::runtime_error(std::to_string(errors.size()) + " bad line(s) in " + a.file +
                               "; nothing was submitted");
    }
  }
  std::vector<std::string> errors;
  for (std::size_t i = 0; i < jobs.size(); ++i) {
    json& j = jobs[i];
    if (!a.batch.empty() && !j.contains("batch")) j["batch"] = a.batch;
    if (a.priority != 0 && !j.contains("priority")) j["priority"] = a.priority;
    json& params = j["params"];
    if (params.is_null()) params = json::object();
    if (params.is_object()) {
      if (a.max_tokens > 0 && !params.contains("max_tokens")) params["max_tokens"] = a.max_tokens;
      if (a.temperature >= 0 && !params.contains("temperature"))
        params["temperature"] = a.temperature;
      if (a.seed >= 0 && !params.contains("seed")) params["seed"] = a.seed;
    }
    const auto parsed = parse_job(j.dump(), ModelLimits{});
    if (const auto* err = std::get_if<JobError>(&parsed)) {
      errors.push_back(
          (a.prompt.empty() ? "job " + std::to_string(i + 1) : std::string("--prompt")) + ": " +
          err->code + ": " + err->message);
    }
  }
  if (!errors.empty()) {
    for (const auto& e : errors) std::fprintf(stderr, "%s\n", e.c_str());
    throw std::runtime_error(std::to_string(errors.size()) +
                             " invalid job(s); nothing was submitted");
  }
  return jobs;
}

// Waits for every id's result; returns them in submission order.
std::vector<json> wait_for(RedisSync& redis, const RedisKeys& keys,
                           const std::vector<std::string>& ids, const std::string& notices_from,
                           const SubmitArgs& a) {
  std::map<std::string, json> results;
  std::set<std::string> outstanding(ids.begin(), ids.end());
  std::string cursor = notices_from;
  const auto start = std::chrono::steady_clock::now();
  auto last_sweep = start;
  const bool bar = is_tty(2);
  std::int64_t done = 0, failed = 0, cancelled = 0;
  const auto fetch = [&](const std::vector<std::string>& which) {
    for (std::size_t i = 0; i < which.size(); i += kPipelineChunk) {
      std::vector<std::string> args{"MGET"};
      for (std::size_t k = i; k < std::min(which.size(), i + kPipelineChunk); ++k)
        args.push_back(keys.result(which[k]));
      const RedisReply r = redis.command(args);
      for (std::size_t k = 0; k < r.elements.size(); ++k) {
        if (r.elements[k].nil()) continue;
        json doc = json::parse(r.elements[k].str, nullptr, false);
        const std::string& id = which[i + k];
        const std::string status = doc.is_object() ? doc.value("status", "") : "";
        if (!outstanding.count(id) ||
            (status != "done" && status != "failed" && status != "cancelled"))
          continue;
        outstanding.erase(id);
        (status == "done" ? done : status == "failed" ? failed : cancelled)++;
        results[id] = std::move(doc);
      }
    }
  };
  fetch(ids);  // some may be done already (a resubmitted id)
  while (!outstanding.empty()) {
    if (a.timeout_s > 0 &&
        std::chrono::steady_clock::now() - start > std::chrono::duration<double>(a.timeout_s)) {
      throw std::runtime_error("timed out after " + format_duration(a.timeout_s) + " with " +
                               std::to_string(outstanding.size()) + " job(s) unfinished");
    }
    // Notices name the ids that finished; a full sweep now and then covers a trimmed stream.
    const RedisReply r = redis.blocking_command(
        {"XREAD", "COUNT", "10000", "BLOCK", "500", "STREAMS", keys.results(), cursor},
        std::chrono::milliseconds(500));
    std::vector<std::string> finished;
    for (const auto& stream : r.elements) {
      if (stream.elements.size() < 2) continue;
      for (const auto& entry : stream.elements[1].elements) {
        cursor = entry.elements[0].str;
        const auto& f = entry.elements[1].elements;
        for (std::size_t i = 0; i + 1 < f.size(); i += 2) {
          if (f[i].str == "id" && outstanding.count(f[i + 1].str)) finished.push_back(f[i + 1].str);
        }
      }
    }
    if (!finished.empty()) fetch(finished);
    if (std::chrono::steady_clock::now() - last_sweep > std::chrono::seconds(10)) {
      fetch(std::vector<std::string>(outstanding.begin(), outstanding.end()));
      last_sweep = std::chrono::steady_clock::now();
    }
    if (bar) {
      BatchCounts b;
      b.total = static_cast<std::int64_t>(ids.size());
      b.done = done;
      b.failed = failed;
      b.cancelled = cancelled;
      b.submitted_at = now_ms() - std::chrono::duration_cast<std::chrono::milliseconds>(
                                      std::chrono::steady_clock::now() - start)
                                      .count();
      b.last_finished_at = now_ms();
      for (const auto& [id, doc] : results) {
        if (doc.contains("usage"))
          b.completion_tokens += doc["usage"].value("completion_tokens", 0);
      }
      std::fprintf(stderr, "\r%s", progress_line(b).c_str());
    }
  }
  if (bar) std::fputc('\n', stderr);
  std::vector<json> ordered;
  for (const auto& id : ids) ordered.push_back(results[id]);
  return ordered;
}

int submit(const DaemonConfig& c, const SubmitArgs& a) {
  const std::vector<json> jobs = build_jobs(a);
  RedisSync redis(parse_redis_url(c.redis));
  const RedisKeys keys{c.prefix};
  // Where the notices stream ends now: --wait reads the notices that come after.
  std::string notices_from = "0-0";
  if (a.wait) {
    const RedisReply last = redis.command({"XREVRANGE", keys.results(), "+", "-", "COUNT", "1"});
    if (!last.elements.empty()) notices_from = last.elements[0].elements[0].str;
  }
  std::vector<std::string> ids;
  std::map<std::string, std::int64_t> per_batch;
  std::map<std::string, std::size_t> per_stream;
  for (std::size_t i = 0; i < jobs.size(); i += kPipelineChunk) {
    std::vector<std::vector<std::string>> commands;
    const std::size_t end = std::min(jobs.size(), i + kPipelineChunk);
    for (std::size_t k = i; k < end; ++k) {
      const json& j = jobs[k];
      // Priority jobs take the express lane so that they overtake a backlog (README).
      const std::string stream = j.value("priority", 0) > 0 ? keys.priority_jobs() : keys.jobs();
      ++per_stream[stream];
      commands.push_back(
          {"XADD", stream, "*", "job", j.dump(-1, ' ', false, json::error_handler_t::replace)});
      if (j.contains("batch")) ++per_batch[j["batch"].get<std::string>()];
    }
    const auto replies = redis.pipeline(commands);
    for (std::size_t k = i; k < end; ++k) {
      const RedisReply& r = replies[k - i];
      if (r.error())
        throw std::runtime_error("Redis refused job " + std::to_string(k + 1) + ": " + r.str);
      ids.push_back(jobs[k].contains("id") ? jobs[k]["id"].get<std::string>() : r.str);
    }
  }
  for (const auto& [batch, n] : per_batch) {
    redis.pipeline({{"HINCRBY", keys.batch(batch), "total", std::to_string(n)},
                    {"HSETNX", keys.batch(batch), "submitted_at", std::to_string(now_ms())},
                    {"EXPIRE", keys.batch(batch), std::to_string(c.result_ttl_s)}});
  }
  for (const auto& [stream, n] : per_stream)
    std::fprintf(stderr, "submitted %zu job(s) to %s\n", n, stream.c_str());
  if (!a.wait) {
    for (const auto& id : ids)
      std::printf("%s\n", a.json_output ? json{{"id", id}}.dump().c_str() : id.c_str());
    return 0;
  }
  int rc = 0;
  for (const auto& result : wait_for(redis, keys, ids, notices_from, a)) {
    if (result.value("status", "") != "done") rc = 1;
    if (a.json_output) {
      std::printf("%s\n", result.dump(-1, ' ', false, json::error_handler_t::replace).c_str());
    } else {
      std::printf(
          "%s [%s] %s\n", result.value("id", "").c_str(), result.value("status", "").c_str(),
          result.value("status", "") == "failed" ? result["error"].value("message", "").c_str()
                                                 : result.value("text", "").c_str());
    }
  }
  return rc;
}

}  // namespace

void add_submit_command(CLI::App& app) {
  auto* sub =
      app.add_subcommand("submit", "Enqueue jobs on the Redis stream; --wait for their results");
  auto options = std::make_shared<ConfigOptions>(sub, ConfigScope::kClient);
  auto args = std::make_shared<SubmitArgs>();
  auto* prompt = sub->add_option("--prompt", args->prompt, "one job with this prompt text");
  auto* file =
      sub->add_option("--file", args->file, "JSON lines, one job document each (- for stdin)");
  prompt->excludes(file);
  file->excludes(prompt);
  sub->add_option("--id", args->id, "the job's id (with --prompt)")->needs(prompt);
  sub->add_option("--batch", args->batch, "batch name for jobs that have none");
  sub->add_option("--priority", args->priority,
                  "priority for jobs that have none; > 0 takes the express lane");
  sub->add_option("--max-tokens", args->max_tokens, "params.max_tokens for jobs that have none");
  sub->add_option("--temperature", args->temperature, "params.temperature for jobs that have none");
  sub->add_option("--seed", args->seed, "params.seed for jobs that have none");
  sub->add_flag("--wait", args->wait, "wait for the results (progress on stderr) and print them");
  sub->add_option("--timeout", args->timeout_s, "with --wait: give up after this many seconds");
  sub->add_flag("--json", args->json_output, "print ids / results as JSON lines");
  set_action(sub, [options, args] {
    if (args->prompt.empty() && args->file.empty()) {
      throw CLI::RequiredError("--prompt or --file");
    }
    return submit(options->load(), *args);
  });
}

}  // namespace awqd::cli
