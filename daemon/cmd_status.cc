// awqd status [JOB_ID] [--batch NAME] [--json] [--watch]: the daemon's health (control socket),
// the queue (Redis) and recent jobs (SQLite); one job in full; a batch's progress.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <thread>

#include "daemon/cli.h"
#include "daemon/client.h"
#include "daemon/commands.h"
#include "daemon/config.h"
#include "daemon/control.h"
#include "daemon/record.h"
#include "daemon/redis.h"
#include "daemon/store.h"

namespace awqd::cli {
namespace {

using json = nlohmann::json;

struct StatusArgs {
  std::string job_id;
  std::string batch;
  bool json_output = false;
  bool watch = false;
  double interval_s = 1.0;
};

// Each source is asked separately: one that is down is reported, the others still answer.
json daemon_part(const DaemonConfig& c) {
  try {
    return json::parse(control_request(c.control_socket, "status"));
  } catch (const std::exception& e) {
    return {{"error", e.what()}};
  }
}

json redis_part(const DaemonConfig& c) {
  try {
    RedisSync redis(parse_redis_url(c.redis), std::chrono::seconds(3));
    const RedisKeys keys{c.prefix};
    json streams = json::object();
    for (const auto& stream : {keys.jobs(), keys.priority_jobs()}) {
      const auto replies = redis.pipeline({{"XLEN", stream}, {"XINFO", "GROUPS", stream}});
      json s = {
          {"length", replies[0].integer}, {"pending", 0}, {"waiting", nullptr}, {"consumers", 0}};
      if (const auto group = find_group(replies[1], RedisKeys::kGroup)) {
        s["pending"] = group->pending;
        s["consumers"] = group->consumers;
        if (group->lag >= 0) s["waiting"] = group->lag;
      }
      streams[stream] = s;
    }
    return {{"url", parse_redis_url(c.redis).describe()},
            {"prefix", c.prefix},
            {"streams", streams},
            {"dead_letters", redis.command({"XLEN", keys.dead()}).integer}};
  } catch (const std::exception& e) {
    return {{"error", e.what()}};
  }
}

json job_summary(const JobRecord& r) {
  return {{"id", r.id},
          {"status", status_name(r.status)},
          {"batch", r.batch.empty() ? json(nullptr) : json(r.batch)},
          {"prompt_tokens", r.prompt_tokens},
          {"completion_tokens", r.completion_tokens},
          {"finish_reason", r.finish_reason.empty() ? json(nullptr) : json(r.finish_reason)},
          {"error", r.error_code.empty() ? json(nullptr) : json(r.error_code)},
          {"total_ms",
           r.finished_at && r.queued_at ? json(r.finished_at - r.queued_at) : json(nullptr)}};
}

json store_part(const DaemonConfig& c) {
  if (!std::filesystem::exists(c.db)) return {{"error", "no database at " + c.db + " (set --db)"}};
  try {
    Store store(c.db, /*read_only=*/true);
    json recent = json::array();
    for (const auto& r : store.recent_jobs(10)) recent.push_back(job_summary(r));
    return {{"db", c.db}, {"jobs", store.status_counts()}, {"recent", recent}};
  } catch (const std::exception& e) {
    return {{"error", e.what()}};
  }
}

void print_overview(const json& s) {
  const json& d = s["daemon"];
  if (d.contains("error")) {
    std::printf("daemon   NOT RUNNING: %s\n", d["error"].get<std::string>().c_str());
  } else {
    std::printf("daemon   awqd %s, instance %s, pid %ld, up %s%s\n", d.value("version", "").c_str(),
                d.value("instance", "").c_str(), d.value("pid", 0L),
                format_duration(d.value("uptime_s", 0.0)).c_str(),
                d.value("draining", false) ? ", DRAINING" : "");
    std::printf("model    %s (%s)\n", d.value("model", "").c_str(),
                d.value("model_hash", "").c_str());
    int r = 0;
    for (const auto& e : d["engines"]) {
      std::printf(
          "engine %d %s\n         running %d/%d (occupancy %.0f%%), waiting %d, KV cache %.0f%%, "
          "preemptions %lld\n",
          r++, e.value("describe", "").c_str(), e.value("running", 0), e.value("max_num_seqs", 0),
          100 * e.value("batch_occupancy", 0.0), e.value("waiting", 0),
          100 * e.value("kv_cache_usage", 0.0), e.value("preemptions", 0LL));
      for (const auto& g : e.value("gpus", json::array())) {
        const double gib = 1024.0 * 1024.0 * 1024.0;
        const std::string util = g["utilization"].is_number()
                                     ? std::to_string(g["utilization"].get<int>()) + "%"
                                     : std::string("n/a");
        std::printf(
            "         GPU %d %s: memory %.1f/%.1f GiB (KV %.1f GiB at %.0f%% use, weights "
            "%.2f GiB), utilization %s\n",
            g.value("gpu", 0), g.value("name", "").c_str(), g.value("memory_used", 0.0) / gib,
            g.value("memory_total", 0.0) / gib, g.value("kv_bytes", 0.0) / gib,
            100 * e.value("kv_cache_usage", 0.0), g.value("weight_bytes", 0.0) / gib, util.c_str());
      }
    }
    const json& j = d["jobs"];
    const json& t = d["totals"];
    std::printf(
        "jobs     %d queued, %d running here; since start %lld done, %lld failed, %lld cancelled, "
        "%lld dead-lettered\n",
        j.value("queued", 0), j.value("running", 0), t.value("done", 0LL), t.value("failed", 0LL),
        t.value("cancelled", 0LL), t.value("dead_lettered", 0LL));
    std::printf("tokens   %.0f/s in, %.0f/s out\n", d["tokens_per_s"].value("in", 0.0),
                d["tokens_per_s"].value("out", 0.0));
  }
  const json& r = s["redis"];
  if (r.contains("error")) {
    std::printf("redis    UNREACHABLE: %s\n", r["error"].get<std::string>().c_str());
  } else {
    std::printf("redis    %s (prefix %s), %lld dead letter(s)\n", r.value("url", "").c_str(),
                r.value("prefix", "").c_str(), r.value("dead_letters", 0LL));
    for (const auto& [stream, q] : r["streams"].items()) {
      std::printf(
          "         %-24s %lld entries, %s waiting, %lld pending, %lld consumer(s)\n",
          stream.c_str(), q.value("length", 0LL),
          q["waiting"].is_null() ? "?" : std::to_string(q["waiting"].get<long long>()).c_str(),
          q.value("pending", 0LL), q.value("consumers", 0LL));
    }
  }
  const json& st = s["store"];
  if (st.contains("error")) {
    std::printf("store    %s\n", st["error"].get<std::string>().c_str());
    return;
  }
  std::printf("store    %s:", st.value("db", "").c_str());
  for (const auto& [status, n] : st["jobs"].items())
    std::printf(" %lld %s", n.get<long long>(), status.c_str());
  std::printf("\nrecent   %-36s %-9s %-20s %7s %7s %9s\n", "ID", "STATUS", "BATCH", "PROMPT",
              "OUTPUT", "TOTAL");
  for (const auto& j : st["recent"]) {
    std::printf("         %-36s %-9s %-20s %7d %7d %9s\n", j.value("id", "").substr(0, 36).c_str(),
                j.value("status", "").c_str(),
                j["batch"].is_null() ? "-" : j["batch"].get<std::string>().substr(0, 20).c_str(),
                j.value("prompt_tokens", 0), j.value("completion_tokens", 0),
                j["total_ms"].is_null()
                    ? "-"
                    : (std::to_string(j["total_ms"].get<long long>()) + "ms").c_str());
  }
}

// One job: the Redis result (or status key) and this daemon's SQLite row.
int show_job(const DaemonConfig& c, const StatusArgs& a) {
  json out = {{"id", a.job_id}};
  bool found = false;
  try {
    RedisSync redis(parse_redis_url(c.redis), std::chrono::seconds(3));
    const RedisKeys keys{c.prefix};
    const auto replies =
        redis.pipeline({{"GET", keys.result(a.job_id)}, {"GET", keys.status(a.job_id)}});
    if (!replies[0].nil()) {
      out["result"] = json::parse(replies[0].str, nullptr, false);
      found = true;
    }
    if (!replies[1].nil()) {
      out["status"] = replies[1].str;
      found = true;
    }
  } catch (const std::exception& e) {
    out["redis_error"] = e.what();
  }
  if (std::filesystem::exists(c.db)) {
    try {
      Store store(c.db, /*read_only=*/true);
      if (const auto row = store.job(a.job_id)) {
        json record = result_json(*row);
        record["prompt"] = row->prompt;
        record["params"] = row->params;
        out["record"] = record;
        if (!out.contains("status")) out["status"] = status_name(row->status);
        found = true;
      }
    } catch (const std::exception& e) {
      out["store_error"] = e.what();
    }
  }
  if (a.json_output) {
    std::cout << out.dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
  } else if (!found) {
    std::fprintf(stderr, "awqd status: no job %s in Redis (%s) or the database (%s)\n",
                 a.job_id.c_str(), c.redis.c_str(), c.db.c_str());
  } else {
    std::cout << out.dump(2, ' ', false, json::error_handler_t::replace) << "\n";
  }
  return found ? 0 : 1;
}

// A batch: counters from Redis (every instance's work); this daemon's database as a fallback.
int show_batch(const DaemonConfig& c, const StatusArgs& a, bool& complete) {
  BatchCounts b;
  std::string source = "redis";
  try {
    RedisSync redis(parse_redis_url(c.redis), std::chrono::seconds(3));
    b = read_batch(redis, RedisKeys{c.prefix}, a.batch);
  } catch (const std::exception& e) {
    if (!std::filesystem::exists(c.db)) throw;
    std::fprintf(stderr, "awqd status: %s; showing this daemon's database instead\n", e.what());
    Store store(c.db, /*read_only=*/true);
    if (const auto p = store.batch_progress(a.batch)) {
      b.exists = true;
      b.total = p->jobs;
      b.done = p->done;
      b.failed = p->failed;
      b.cancelled = p->cancelled;
      b.prompt_tokens = p->prompt_tokens;
      b.completion_tokens = p->completion_tokens;
      b.submitted_at = p->first_queued_at;
      b.last_finished_at = p->last_finished_at;
    }
    source = "db";
  }
  complete = b.complete();
  if (a.json_output) {
    json j = batch_json(a.batch, b);
    j["source"] = source;
    std::cout << j.dump() << "\n";
  } else if (b.exists) {
    std::printf("batch %s\n%s\n", a.batch.c_str(), progress_line(b).c_str());
  } else {
    std::fprintf(stderr, "awqd status: no batch named %s\n", a.batch.c_str());
  }
  return b.exists ? 0 : 1;
}

int show(const DaemonConfig& c, const StatusArgs& a, bool& complete) {
  complete = false;
  if (!a.job_id.empty()) return show_job(c, a);
  if (!a.batch.empty()) return show_batch(c, a, complete);
  const json s = {{"daemon", daemon_part(c)}, {"redis", redis_part(c)}, {"store", store_part(c)}};
  if (a.json_output) {
    std::cout << s.dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
  } else {
    print_overview(s);
  }
  return s["daemon"].contains("error") || s["redis"].contains("error") ? 1 : 0;
}

}  // namespace

void add_status_command(CLI::App& app) {
  auto* sub = app.add_subcommand(
      "status", "Daemon health, queue and recent jobs; one job; a batch's progress");
  auto options = std::make_shared<ConfigOptions>(sub, ConfigScope::kClient);
  auto args = std::make_shared<StatusArgs>();
  sub->add_option("JOB_ID", args->job_id, "show this job in full");
  sub->add_option("--batch", args->batch, "show this batch's progress");
  sub->add_flag("--json", args->json_output, "machine-readable output");
  sub->add_flag("--watch", args->watch, "refresh until interrupted (a batch: until it completes)");
  sub->add_option("--interval", args->interval_s, "seconds between refreshes with --watch")
      ->capture_default_str();
  set_action(sub, [options, args] {
    const DaemonConfig config = options->load();
    bool complete = false;
    if (!args->watch) return show(config, *args, complete);
    const bool clear = is_tty(1) && !args->json_output;
    for (;;) {
      if (clear) std::fputs("\033[H\033[2J", stdout);
      const int rc = show(config, *args, complete);
      std::fflush(stdout);
      if (complete) return rc;
      std::this_thread::sleep_for(std::chrono::duration<double>(args->interval_s));
    }
  });
}

}  // namespace awqd::cli
