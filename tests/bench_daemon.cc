// Daemon overhead without a model (docs/PERF.md, "Daemon"): a benchmark, never run by ctest.
//
//   bench_daemon [--jobs N] [--writes N]
//
// 1. Job throughput: N jobs are put on the stream first; then a daemon with the no-op runner
//    (tests/fake_runner.h, one token per job, no delay) takes them, runs them, publishes each
//    result (Lua script: result key, status key, notice, batch counters), writes each row to
//    SQLite and acknowledges the entry. The clock runs from the daemon's start to the last
//    acknowledgement, so the figure covers the whole intake path and the result path.
// 2. SQLite result writes: the store's writer thread alone, committing N final job records
//    (200-byte text, 50 token ids, params and metadata JSON) as fast as they are pushed.
// A private redis-server (no persistence) is started for the run.
#include <pthread.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "daemon/daemon.h"
#include "daemon/store.h"
#include "tests/daemon_harness.h"
#include "tests/fake_runner.h"

namespace awqd {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// CPU seconds (user + system) of a thread or process from its /proc stat file, and its name.
std::pair<std::string, double> cpu_of(const std::filesystem::path& stat_file) {
  std::ifstream in(stat_file);
  std::string text((std::istreambuf_iterator<char>(in)), {});
  const auto open = text.find('('), close = text.rfind(')');
  if (open == std::string::npos || close == std::string::npos) return {"?", 0};
  std::istringstream rest(text.substr(close + 2));
  std::string field;
  double ticks = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14 || i == 15) ticks += std::stod(field);  // utime, stime
  }
  return {text.substr(open + 1, close - open - 1),
          ticks / static_cast<double>(sysconf(_SC_CLK_TCK))};
}

// CPU seconds of every thread of this process (by name) and of redis-server.
std::map<std::string, double> cpu_snapshot(pid_t redis) {
  std::map<std::string, double> cpu;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    const auto [name, seconds] = cpu_of(task.path() / "stat");
    cpu[name] += seconds;
  }
  cpu["redis-server"] = cpu_of("/proc/" + std::to_string(redis) + "/stat").second;
  return cpu;
}

void bench_jobs(int n) {
  test::RedisServer server(/*persistent=*/false);
  test::TempDir dir;
  RedisSync redis(parse_redis_url(server.url()));
  const RedisKeys keys{"bench:"};
  // Typical job documents: a prompt of ~60 words, a few params, metadata.
  std::string prompt;
  for (int w = 0; w < 60; ++w) prompt += "word ";
  const auto load_start = Clock::now();
  for (int i = 0; i < n; i += 1000) {
    std::vector<std::vector<std::string>> commands;
    for (int k = i; k < std::min(n, i + 1000); ++k) {
      const json job = {{"id", "job-" + std::to_string(k)},
                        {"prompt", prompt},
                        {"params", {{"max_tokens", 1}, {"temperature", 0.7}, {"seed", k}}},
                        {"batch", "bench"},
                        {"metadata", {{"row", k}}}};
      commands.push_back({"XADD", keys.jobs(), "*", "job", job.dump()});
    }
    redis.pipeline(commands);
  }
  std::printf("enqueued %d jobs with pipelined XADD in %.2f s (%.0f jobs/s, not the daemon)\n", n,
              seconds_since(load_start), n / seconds_since(load_start));

  DaemonConfig c;
  c.redis = server.url();
  c.prefix = keys.prefix;
  c.db = (dir.path / "bench.db").string();
  c.control_socket = (dir.path / "bench.sock").string();
  c.metrics_port = 0;
  c.consumer = "bench";
  c.max_num_seqs = 512;
  c.read_ahead = 2048;
  test::FakeRunnerOptions noop{.max_num_seqs = c.max_num_seqs, .max_tokens_cap = 1};
  Daemon daemon(c, [noop](int) { return std::make_unique<test::FakeRunner>(noop); });
  const auto cpu_before = cpu_snapshot(server.pid());
  const auto start = Clock::now();
  std::thread serving([&] {
    pthread_setname_np(pthread_self(), "awqd-io");
    daemon.run();
  });
  bool drained = false;
  while (!drained) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    const auto group =
        find_group(redis.command({"XINFO", "GROUPS", keys.jobs()}), RedisKeys::kGroup);
    drained = group && group->pending == 0 && group->lag == 0;
  }
  const double elapsed = seconds_since(start);
  const auto cpu_after = cpu_snapshot(server.pid());
  daemon.request_stop();
  serving.join();
  const long long results = redis.command({"XLEN", keys.results()}).integer;
  Store store(c.db, true);
  const auto counts = store.status_counts();
  std::printf(
      "daemon, no-op runner: %d jobs read, run, published, stored and acknowledged in %.2f s: "
      "%.0f jobs/s (%lld notices, %lld done rows)\n",
      n, elapsed, n / elapsed, results,
      counts.count("done") ? static_cast<long long>(counts.at("done")) : 0LL);
  // Where the CPU went: on a shared machine the wall-clock rate depends on the neighbours; CPU
  // time per job does not.
  double total = 0;
  for (const auto& [name, seconds] : cpu_after) {
    const double used = seconds - (cpu_before.count(name) ? cpu_before.at(name) : 0);
    if (used < 0.005) continue;
    total += used;
    std::printf("  %-16s %6.2f CPU s  %6.1f us/job\n", name.c_str(), used, used * 1e6 / n);
  }
  std::printf("  %-16s %6.2f CPU s  %6.1f us/job  (%.0f jobs per CPU second)\n", "total", total,
              total * 1e6 / n, n / total);
}

void bench_store(int n) {
  test::TempDir dir;
  std::string text;
  for (int w = 0; w < 40; ++w) text += "text ";
  std::vector<std::int32_t> tokens(50, 1234);
  std::uint64_t acks = 0;
  StoreWriter writer(std::make_unique<Store>(dir.path / "bench.db", false),
                     [&](std::vector<StreamAck> a) { acks += a.size(); });
  const auto start = Clock::now();
  for (int i = 0; i < n; ++i) {
    JobRecord r;
    r.id = "job-" + std::to_string(i);
    r.stream = "bench:jobs";
    r.entry_id = "1700000000000-" + std::to_string(i);
    r.batch = "bench";
    r.status = JobStatus::kDone;
    r.attempts = 1;
    r.has_request = true;
    r.prompt = text;
    r.params = {{"max_tokens", 50}, {"temperature", 0.7}};
    r.metadata = {{"row", i}};
    r.text = text;
    r.token_ids = tokens;
    r.finish_reason = "length";
    r.prompt_tokens = 60;
    r.completion_tokens = 50;
    r.queued_at = 1700000000000;
    r.started_at = r.queued_at + 5;
    r.first_token_at = r.queued_at + 10;
    r.finished_at = r.queued_at + 100;
    r.model = "bench";
    r.seed = static_cast<std::uint64_t>(i);
    writer.push(StoreOp{
        StoreOp::Kind::kFinished, std::move(r), {}, StreamAck{"bench:jobs", std::to_string(i)}});
  }
  writer.flush();
  const double elapsed = seconds_since(start);
  std::printf(
      "SQLite result writes (WAL, synchronous=NORMAL, writer thread): %d rows in %.2f s: %.0f "
      "rows/s "
      "(%llu acknowledgements after commit)\n",
      n, elapsed, n / elapsed, static_cast<unsigned long long>(acks));
}

}  // namespace
}  // namespace awqd

int main(int argc, char** argv) {
  CLI::App app{"Daemon overhead with a no-op engine: job throughput and SQLite result writes"};
  int jobs = 50000, writes = 200000;
  app.add_option("--jobs", jobs, "jobs through the daemon")->capture_default_str();
  app.add_option("--writes", writes, "rows through the store writer")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);
  awqd::bench_store(writes);
  awqd::bench_jobs(jobs);
  return 0;
}
