#include "daemon/daemon.h"

#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <filesystem>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <unordered_map>

#include "daemon/asio.h"
#include "daemon/control.h"
#include "daemon/embedded_text.h"
#include "daemon/engine_thread.h"
#include "daemon/metrics.h"
#include "daemon/named_blocks.h"
#include "daemon/record.h"
#include "daemon/redis_async.h"
#include "daemon/store.h"
#include "engine/version.h"

namespace awqd {

namespace asio = boost::asio;
using json = nlohmann::json;
using namespace std::chrono_literals;

namespace {

constexpr auto kHousekeeping = 1s;
constexpr auto kCancelPoll = 250ms;
constexpr int kReadBlockMs = 2000;  // XREADGROUP BLOCK: how long one read waits for jobs
constexpr int kMaxReadCount = 256;  // entries per XREADGROUP / XAUTOCLAIM
constexpr std::size_t kMaxKeysPerCommand = 2000;
constexpr std::size_t kPublishBatch = 64;  // results per publish script call
constexpr auto kShutdownGrace = 15s;       // after the drain deadline, for results to reach Redis
// The idle time a handed-back entry gets: past any instance's visibility timeout, so whichever
// daemon looks next reclaims it.
constexpr long long kHandBackIdleMs = 24LL * 3600 * 1000;

// One delivery of a stream entry to this consumer.
struct Delivery {
  std::string stream;
  std::string entry_id;
  int attempts = 1;         // the stream's delivery count, this delivery included
  bool has_job = false;     // the entry has a `job` field
  std::string raw;          // its value
  std::string extra_field;  // the first field other than `job`, if any
};

// Entries of an XREADGROUP/XCLAIM/XAUTOCLAIM reply ([[id, [field, value, ...]], ...]) as
// deliveries; an entry deleted from the stream comes back as nil and is reported in `gone`.
void parse_entries(const RedisReply& list, const std::string& stream, int attempts,
                   std::vector<Delivery>& out, std::vector<std::string>* gone = nullptr) {
  for (const auto& e : list.elements) {
    if (e.type != RedisReply::Type::kArray || e.elements.size() < 2) continue;
    Delivery d;
    d.stream = stream;
    d.entry_id = e.elements[0].str;
    d.attempts = attempts;
    const auto& fields = e.elements[1];
    if (fields.nil()) {
      if (gone) gone->push_back(d.entry_id);
      continue;
    }
    for (std::size_t i = 0; i + 1 < fields.elements.size(); i += 2) {
      if (fields.elements[i].str == "job" && !d.has_job) {
        d.has_job = true;
        d.raw = fields.elements[i + 1].str;
      } else if (d.extra_field.empty()) {
        d.extra_field = fields.elements[i].str;
      }
    }
    out.push_back(std::move(d));
  }
}

// Tokens per second over a sliding window of samples of a cumulative counter.
class RateWindow {
 public:
  void sample(std::chrono::steady_clock::time_point t, std::int64_t total) {
    samples_.emplace_back(t, total);
    while (samples_.size() > 2 && t - samples_.front().first > 10s) samples_.pop_front();
  }
  double per_second() const {
    if (samples_.size() < 2) return 0;
    const double dt =
        std::chrono::duration<double>(samples_.back().first - samples_.front().first).count();
    return dt > 0 ? (samples_.back().second - samples_.front().second) / dt : 0;
  }

 private:
  std::deque<std::pair<std::chrono::steady_clock::time_point, std::int64_t>> samples_;
};

}  // namespace

struct Daemon::Impl {
  // Redis command arguments. Coroutines name them before co_await: GCC 12 miscompiles braced
  // lists inside a co_await expression.
  using Args = std::vector<std::string>;
  enum class State { kChecking, kQueued, kRunning, kPublishing };

  struct Tracked {
    JobRecord record;
    std::shared_ptr<Job> job;  // shared with the engine thread once admitted
    std::string raw;           // the job document, for the dead-letter stream
    State state = State::kChecking;
    std::uint64_t arrival = 0;  // its place in `ready` while queued
    int replica = -1;
    bool handing_back = false;  // cancelled by the drain: give back to the stream, do not publish
  };

  Impl(DaemonConfig c, RunnerFactory f)
      : config(std::move(c)),
        factory(std::move(f)),
        keys{config.prefix},
        streams{keys.priority_jobs(), keys.jobs()},
        cmd(io, parse_redis_url(config.redis), "commands"),
        reader(io, parse_redis_url(config.redis), "reader"),
        signals(io, SIGTERM, SIGINT),
        capacity_signal(io, asio::steady_timer::time_point::max()),
        drain_timer(io),
        seed_rng(std::random_device{}()),
        step_seconds({0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5}) {}

  // ---- configuration and wiring ----
  DaemonConfig config;
  RunnerFactory factory;
  RedisKeys keys;
  std::vector<std::string> streams;  // read in this order: the express lane first
  asio::io_context io;
  RedisAsync cmd;     // every command but the blocking read
  RedisAsync reader;  // XREADGROUP BLOCK only: a blocked connection can do nothing else
  asio::signal_set signals;
  std::vector<std::unique_ptr<EngineThread>> engines;
  std::vector<RunnerInfo> runner_info;
  ModelLimits limits;
  std::unique_ptr<StoreWriter> store;
  std::unique_ptr<ControlServer> control;
  std::unique_ptr<MetricsServer> metrics;
  std::string publish_sha;  // SHA1 of the publish_results script, from SCRIPT LOAD

  // ---- job state (io thread only) ----
  std::unordered_map<std::string, Tracked> jobs;  // by job id: every unacknowledged job we hold
  using ReadyKey = std::tuple<int, std::uint64_t, std::string>;  // (-priority, arrival, id)
  std::set<ReadyKey> ready;                                      // queued jobs in admission order
  std::uint64_t arrivals = 0;
  std::unordered_map<std::string, std::vector<Delivery>> same_id_waiting;  // id already in flight
  std::vector<int> in_engine;           // jobs handed to each replica and not finished
  std::vector<std::string> to_publish;  // finished this turn, published together
  bool publish_scheduled = false;
  std::map<std::string, std::vector<std::string>> acks_waiting;  // stream -> entries to XACK
  bool ack_flush_scheduled = false;
  std::int64_t acks_outstanding = 0;  // final records pushed to the store and not yet acknowledged

  // ---- lifecycle ----
  bool draining = false;
  bool stopped = false;
  int exit_code = 0;
  asio::steady_timer capacity_signal;  // cancel() wakes the read loop when room appears
  asio::steady_timer drain_timer;
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  std::mt19937_64 seed_rng;

  // ---- statistics (io thread) ----
  struct Totals {
    std::int64_t received = 0, done = 0, failed = 0, cancelled = 0, dead = 0, retried = 0,
                 duplicates = 0, handed_back = 0;
  } totals;
  std::vector<EngineStats> engine_stats;
  std::vector<std::vector<DeviceStatus>> engine_devices;  // per replica, from its reports
  std::int64_t prompt_tokens_total = 0, generated_tokens_total = 0, preemptions_total = 0,
               steps_total = 0;
  Histogram step_seconds;
  RateWindow rate_in, rate_out;
  struct QueueInfo {
    std::int64_t length = 0, lag = -1, pending = 0;
  };
  std::map<std::string, QueueInfo> queue_info;

  // ================================================================================================
  int capacity() const {
    int total = 0;
    for (const auto& info : runner_info) total += info.max_num_seqs;
    return total + config.effective_read_ahead() - static_cast<int>(jobs.size());
  }
  void room_changed() {
    if (capacity() > 0) capacity_signal.cancel();
  }
  std::uint64_t new_seed() { return seed_rng() & ((1ull << 53) - 1); }  // exact in JSON doubles

  void enqueue(Tracked& t) {
    t.state = State::kQueued;
    t.arrival = arrivals++;
    ready.emplace(-t.job->priority, t.arrival, t.record.id);
  }
  void dequeue(const Tracked& t) {
    if (t.state == State::kQueued) ready.erase({-t.job->priority, t.arrival, t.record.id});
  }

  template <typename F>
  void spawn(F&& coroutine) {
    asio::co_spawn(io, std::forward<F>(coroutine), [](std::exception_ptr e) {
      if (!e) return;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        spdlog::error("internal error in a daemon task: {}", ex.what());
      }
    });
  }

  asio::awaitable<void> sleep(std::chrono::steady_clock::duration d) {
    asio::steady_timer t(io, d);
    boost::system::error_code ec;
    co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }

  // A command that must happen: waits out Redis outages and retries a lost reply. Only for
  // commands that are safe to repeat (XACK, SET, EVALSHA of an idempotent script, ...).
  asio::awaitable<RedisReply> must(Args args) {
    for (;;) {
      co_await cmd.wait_connected();
      if (stopped) co_return RedisReply::lost("stopped");
      RedisReply r = co_await cmd.command(args);
      if (!r.lost_connection()) co_return r;
    }
  }

  void fire(std::vector<std::string> args) {
    cmd.send(args, [](RedisReply r) {
      if (r.error() && !r.lost_connection()) spdlog::warn("redis: {}", r.str);
    });
  }

  // ================================================================================================
  // Startup

  asio::awaitable<void> ensure_groups() {
    for (const auto& stream : streams) {
      const Args create{"XGROUP", "CREATE", stream, RedisKeys::kGroup, "0", "MKSTREAM"};
      const RedisReply r = co_await must(create);
      if (r.error() && !r.error_is("BUSYGROUP"))
        spdlog::error("redis: XGROUP CREATE {}: {}", stream, r.str);
    }
  }

  asio::awaitable<void> load_scripts() {
    const std::string script = named_block(embedded::kRedisScripts, "publish_results");
    const Args load{"SCRIPT", "LOAD", script};
    const RedisReply r = co_await must(load);
    if (r.lost_connection()) co_return;  // stopped
    if (r.error()) throw std::runtime_error("Redis refused the publish script: " + r.str);
    publish_sha = r.str;
  }

  // Entries this consumer name holds from an earlier life (a restart under a fixed name, as
  // awqd@.service does): claim them again at once instead of waiting out the visibility timeout.
  asio::awaitable<void> recover_own() {
    for (const auto& stream : streams) {
      const Args query{"XPENDING", stream, RedisKeys::kGroup, "-", "+", "10000", config.consumer};
      const RedisReply pending = co_await must(query);
      std::map<std::string, int> counts;
      for (const auto& p : pending.elements) {
        if (p.elements.size() >= 4)
          counts[p.elements[0].str] = static_cast<int>(p.elements[3].integer);
      }
      if (counts.empty()) continue;
      std::vector<std::string> ids;
      for (const auto& [id, n] : counts) ids.push_back(id);
      for (std::size_t i = 0; i < ids.size(); i += kMaxKeysPerCommand) {
        std::vector<std::string> args{"XCLAIM", stream, RedisKeys::kGroup, config.consumer, "0"};
        args.insert(args.end(), ids.begin() + i,
                    ids.begin() + std::min(ids.size(), i + kMaxKeysPerCommand));
        const RedisReply claimed = co_await must(args);
        std::vector<Delivery> ds;
        parse_entries(claimed, stream, 0, ds);
        for (auto& d : ds) d.attempts = counts[d.entry_id] + 1;  // XCLAIM counted one more
        spdlog::info("recovered {} pending job(s) of consumer {} on {}", ds.size(), config.consumer,
                     stream);
        intake(std::move(ds));
      }
    }
  }

  asio::awaitable<void> startup() {
    if (!cmd.connected()) {
      spdlog::info("waiting for Redis at {}", cmd.endpoint().describe());
      sd_notify(0, ("STATUS=waiting for Redis at " + cmd.endpoint().describe()).c_str());
    }
    co_await cmd.wait_connected();
    if (stopped) co_return;
    try {
      co_await load_scripts();
    } catch (const std::exception& e) {
      spdlog::critical("{}", e.what());
      exit_code = 1;
      shutdown();
      co_return;
    }
    co_await ensure_groups();
    co_await recover_own();
    spawn(read_loop());
    spawn(claim_loop());
    spawn(keepalive_loop());
    spawn(cancel_loop());
    spdlog::info("awqd {} serving {} as consumer {} (group {} on {} and {})", kVersion,
                 runner_info[0].model, config.consumer, RedisKeys::kGroup, keys.jobs(),
                 keys.priority_jobs());
    sd_notify(0, "STATUS=serving");
  }

  // ================================================================================================
  // Taking jobs

  asio::awaitable<void> read_loop() {
    while (!draining && !stopped) {
      const int room = capacity();
      if (room <= 0) {
        boost::system::error_code ec;
        co_await capacity_signal.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        continue;
      }
      co_await reader.wait_connected();
      if (draining || stopped) break;
      std::vector<std::string> args{
          "XREADGROUP",      "GROUP",
          RedisKeys::kGroup, config.consumer,
          "COUNT",           std::to_string(std::min(room, kMaxReadCount)),
          "BLOCK",           std::to_string(kReadBlockMs),
          "STREAMS"};
      args.insert(args.end(), streams.begin(), streams.end());
      args.insert(args.end(), streams.size(), ">");
      const RedisReply r = co_await reader.command(args);
      if (r.lost_connection() || r.nil()) continue;
      if (r.error()) {
        if (r.error_is("NOGROUP")) {
          spdlog::warn(
              "redis: the consumer group is gone (Redis lost its data?): creating it again");
          co_await ensure_groups();
        } else {
          spdlog::error("redis: XREADGROUP: {}", r.str);
          co_await sleep(1s);
        }
        continue;
      }
      std::vector<Delivery> ds;
      for (const auto& s : r.elements) {
        if (s.elements.size() == 2) parse_entries(s.elements[1], s.elements[0].str, 1, ds);
      }
      intake(std::move(ds));
    }
  }

  // Reclaims entries other consumers left pending past the visibility timeout (a dead daemon).
  asio::awaitable<void> claim_loop() {
    const auto interval = std::clamp<std::chrono::milliseconds>(
        std::chrono::milliseconds(config.visibility_timeout_s * 1000 / 4), 500ms, 30s);
    std::map<std::string, std::string> cursor;
    for (bool first = true; !draining && !stopped; first = false) {
      if (!first)
        co_await sleep(interval);  // at once on start: jobs handed back by a drain wait for no one
      for (const auto& stream : streams) {
        if (draining || stopped || capacity() <= 0 || !cmd.connected()) break;
        const std::string start = cursor.count(stream) ? cursor[stream] : "0-0";
        const Args autoclaim{"XAUTOCLAIM",
                             stream,
                             RedisKeys::kGroup,
                             config.consumer,
                             std::to_string(config.visibility_timeout_s * 1000LL),
                             start,
                             "COUNT",
                             std::to_string(std::min(capacity(), kMaxReadCount))};
        const RedisReply r = co_await cmd.command(autoclaim);
        if (r.error() || r.elements.size() < 2) {
          if (r.error_is("NOGROUP")) co_await ensure_groups();
          continue;
        }
        cursor[stream] = r.elements[0].str;
        std::vector<Delivery> ds;
        std::vector<std::string> gone;
        parse_entries(r.elements[1], stream, 1, ds, &gone);
        if (!gone.empty()) {  // Redis 6.2 reports entries trimmed from the stream as nil
          std::vector<std::string> ack{"XACK", stream, RedisKeys::kGroup};
          ack.insert(ack.end(), gone.begin(), gone.end());
          fire(ack);
        }
        if (ds.empty()) continue;
        // The delivery count of each (XAUTOCLAIM does not return it).
        for (auto& d : ds) {
          const Args query{"XPENDING", stream, RedisKeys::kGroup, d.entry_id, d.entry_id, "1"};
          const RedisReply p = co_await must(query);
          if (!p.elements.empty() && p.elements[0].elements.size() >= 4) {
            d.attempts = static_cast<int>(p.elements[0].elements[3].integer);
          }
        }
        spdlog::info("reclaimed {} job(s) left pending on {} past the visibility timeout",
                     ds.size(), stream);
        intake(std::move(ds));
      }
    }
  }

  // Resets the idle time of every entry we hold, so that a long job is not reclaimed by others.
  asio::awaitable<void> keepalive_loop() {
    const auto interval = std::max<std::chrono::milliseconds>(
        std::chrono::milliseconds(config.visibility_timeout_s * 1000 / 3), 300ms);
    while (!stopped) {
      co_await sleep(interval);
      std::map<std::string, std::vector<std::string>> held;
      for (const auto& [id, t] : jobs) held[t.record.stream].push_back(t.record.entry_id);
      for (const auto& [stream, ids] : held) {
        for (std::size_t i = 0; i < ids.size(); i += kMaxKeysPerCommand) {
          std::vector<std::string> args{"XCLAIM", stream, RedisKeys::kGroup, config.consumer, "0"};
          args.insert(args.end(), ids.begin() + i,
                      ids.begin() + std::min(ids.size(), i + kMaxKeysPerCommand));
          args.push_back("JUSTID");  // does not count as a delivery
          fire(args);
        }
      }
    }
  }

  void intake(std::vector<Delivery> deliveries) {
    if (deliveries.empty()) return;
    totals.received += static_cast<std::int64_t>(deliveries.size());
    std::vector<std::string> checking;
    for (auto& d : deliveries) {
      JobRecord rec;
      rec.stream = d.stream;
      rec.entry_id = d.entry_id;
      rec.attempts = d.attempts;
      rec.instance = config.consumer;
      rec.queued_at = entry_time_ms(d.entry_id);
      ParsedJob parsed =
          !d.has_job ? ParsedJob(JobError{errc::kMissingJob,
                                          "the stream entry has no `job` field (expected "
                                          "XADD " +
                                              keys.jobs() + " * job <JSON>)",
                                          {}})
          : !d.extra_field.empty()
              ? ParsedJob(JobError{errc::kUnknownField,
                                   "the stream entry has a field `" + d.extra_field.substr(0, 64) +
                                       "`; a job entry has only `job`",
                                   {}})
              : parse_job(d.raw, limits);
      if (auto* err = std::get_if<JobError>(&parsed)) {
        rec.id = err->id.empty() ? d.entry_id : err->id;
        if (jobs.count(rec.id)) {
          same_id_waiting[rec.id].push_back(std::move(d));
          continue;
        }
        Tracked& t = jobs[rec.id];
        t.record = std::move(rec);
        t.raw = std::move(d.raw);
        fail(t, err->code, err->message);
        continue;
      }
      Job& job = std::get<Job>(parsed);
      rec.id = job.id.empty() ? d.entry_id : job.id;
      if (jobs.count(rec.id)) {  // the same id delivered twice: wait for the first to finish
        same_id_waiting[rec.id].push_back(std::move(d));
        continue;
      }
      rec.batch = job.batch;
      rec.priority = job.priority;
      rec.has_request = true;
      rec.prompt_kind = job.prompt_kind;
      rec.prompt = prompt_for_store(job);
      rec.metadata = job.metadata;
      Tracked& t = jobs[rec.id];
      t.record = std::move(rec);
      t.job = std::make_shared<Job>(std::move(job));
      t.raw = std::move(d.raw);
      checking.push_back(t.record.id);
    }
    if (!checking.empty()) spawn(check(std::move(checking)));
  }

  // Before a job is queued: is it done already, cancelled, or out of attempts?
  asio::awaitable<void> check(std::vector<std::string> ids) {
    std::vector<std::string> args{"MGET"};
    for (const auto& id : ids) {
      const auto it = jobs.find(id);
      const bool batched = it != jobs.end() && !it->second.record.batch.empty();
      args.push_back(keys.result(id));
      args.push_back(keys.cancel(id));
      args.push_back(keys.last_error(id));
      args.push_back(batched ? keys.cancel_batch(it->second.record.batch) : keys.cancel(id));
    }
    const RedisReply r = co_await must(args);
    if (r.lost_connection()) co_return;  // stopped
    if (r.error() || r.elements.size() != args.size() - 1) {
      spdlog::error("redis: checking {} new job(s) failed: {}; they stay pending and come back",
                    ids.size(), r.str);
      for (const auto& id : ids) {
        if (const auto it = jobs.find(id); it != jobs.end() && it->second.state == State::kChecking)
          jobs.erase(it);
      }
      room_changed();
      co_return;
    }
    for (std::size_t i = 0; i < ids.size(); ++i) {
      const auto it = jobs.find(ids[i]);
      if (it == jobs.end() || it->second.state != State::kChecking) continue;
      Tracked& t = it->second;
      const RedisReply& result = r.elements[4 * i];
      const bool cancelled = !r.elements[4 * i + 1].nil() || !r.elements[4 * i + 3].nil();
      const RedisReply& last_error = r.elements[4 * i + 2];
      std::optional<JobRecord> published;
      if (!result.nil()) {
        published = t.record;
        if (!merge_result(result.str, *published) || published->status != JobStatus::kDone)
          published.reset();
      }
      if (published) {
        // Done before (the daemon that ran it died before acknowledging): record, acknowledge.
        ++totals.duplicates;
        t.record = std::move(*published);
        t.state = State::kPublishing;
        finish_stored(t);
      } else if (t.record.attempts > config.max_attempts) {
        dead_letter(t, last_error.nil()
                           ? "the job was delivered " + std::to_string(t.record.attempts - 1) +
                                 " times and never finished (the daemon running it stopped or "
                                 "was killed)"
                           : last_error.str);
      } else if (cancelled) {
        finish(t, JobStatus::kCancelled, "cancelled");
      } else if (draining) {
        hand_back({t.record.id});
      } else {
        enqueue(t);
        store->push({StoreOp::Kind::kQueued, t.record, {}, {}});
        fire(
            {"SET", keys.status(t.record.id), "queued", "EX", std::to_string(config.result_ttl_s)});
      }
    }
    pump();
  }

  // What the store's job_started statement needs, without the prompt and JSON of the full record.
  static JobRecord started_row(const JobRecord& rec) {
    JobRecord row;
    row.id = rec.id;
    row.started_at = rec.started_at;
    row.seed = rec.seed;
    row.model = rec.model;
    row.model_hash = rec.model_hash;
    row.engine_version = rec.engine_version;
    return row;
  }

  // Starts queued jobs, highest priority first, on the replica with the most room.
  void pump() {
    while (!ready.empty() && !draining) {
      int best = -1;
      for (std::size_t r = 0; r < engines.size(); ++r) {
        if (in_engine[r] < runner_info[r].max_num_seqs &&
            (best < 0 || in_engine[r] < in_engine[best])) {
          best = static_cast<int>(r);
        }
      }
      if (best < 0) return;
      const std::string id = std::get<2>(*ready.begin());
      ready.erase(ready.begin());
      Tracked& t = jobs.at(id);
      t.state = State::kRunning;
      t.replica = best;
      ++in_engine[best];
      JobRecord& rec = t.record;
      rec.started_at = now_ms();
      rec.seed = t.job->seed_given ? t.job->params.seed : new_seed();
      t.job->params.seed = rec.seed;
      rec.params = params_to_json(t.job->params);
      rec.model = runner_info[best].model;
      rec.model_hash = runner_info[best].model_hash;
      rec.engine_version = kVersion;
      engines[best]->add(id, t.job, rec.seed);
      store->push({StoreOp::Kind::kStarted, started_row(rec), {}, {}});
      fire({"SET", keys.status(id), "running", "EX", std::to_string(config.result_ttl_s)});
    }
  }

  // ================================================================================================
  // Engine reports

  void on_report(EngineReport report) {
    const int r = report.replica;
    const EngineStats& before = engine_stats[r];
    const EngineStats& after = report.stats;
    prompt_tokens_total += after.prompt_tokens - before.prompt_tokens;
    generated_tokens_total += after.generated_tokens - before.generated_tokens;
    preemptions_total += after.preemptions - before.preemptions;
    steps_total += after.steps - before.steps;
    if (report.stepped) step_seconds.observe(after.last_step_ms / 1000.0);
    engine_stats[r] = after;
    if (report.devices) engine_devices[r] = std::move(*report.devices);
    if (report.minute) store->push({StoreOp::Kind::kMinute, {}, *report.minute, {}});
    if (stopped) return;  // the engines' last reports, after shutdown: statistics only
    for (auto& e : report.events) {
      const auto it = jobs.find(e.id);
      if (it == jobs.end() || it->second.state != State::kRunning) continue;
      Tracked& t = it->second;
      if (e.kind == EngineEvent::Kind::kFirstToken) {
        t.record.first_token_at = e.at_ms;
        continue;
      }
      --in_engine[t.replica];
      on_finished(t, std::move(e.outcome));
    }
    if (!report.fatal.empty()) {
      spdlog::critical("engine replica {} failed: {}; stopping (jobs stay pending and are retried)",
                       r, report.fatal);
      exit_code = 1;
      shutdown();
      return;
    }
    pump();
    room_changed();
  }

  void on_finished(Tracked& t, JobOutcome o) {
    JobRecord& rec = t.record;
    rec.text = std::move(o.text);
    rec.token_ids = std::move(o.token_ids);
    rec.logprobs = std::move(o.logprobs);
    rec.prompt_tokens = o.prompt_tokens;
    rec.cached_prompt_tokens = o.cached_prompt_tokens;
    rec.completion_tokens = o.completion_tokens;
    if (o.first_token_at) rec.first_token_at = o.first_token_at;
    if (!o.reject_code.empty()) {
      fail(t, o.reject_code, o.error);
    } else if (o.reason == FinishReason::kError) {
      retry_or_bury(t, o.error);
    } else if (o.reason == FinishReason::kCancelled && t.handing_back) {
      hand_back({rec.id});
    } else {
      finish(t, o.reason == FinishReason::kCancelled ? JobStatus::kCancelled : JobStatus::kDone,
             finish_reason_name(o.reason));
    }
  }

  // A transient failure: run it again (a new delivery, counted by the stream) or, out of
  // attempts, move it to the dead-letter stream.
  void retry_or_bury(Tracked& t, const std::string& error) {
    const std::string message = std::string(errc::kEngineError) + ": " + error;
    if (t.record.attempts >= config.max_attempts) {
      dead_letter(t, message);
      return;
    }
    ++totals.retried;
    spdlog::warn("job {} failed (attempt {} of {}): {}; retrying", t.record.id, t.record.attempts,
                 config.max_attempts, error);
    t.state = State::kChecking;  // not admitted while the new delivery is being taken
    spawn(redeliver(t.record.id, message));
  }

  asio::awaitable<void> redeliver(std::string id, std::string message) {
    auto it = jobs.find(id);
    if (it == jobs.end()) co_return;
    fire({"SET", keys.last_error(id), message, "EX", std::to_string(config.result_ttl_s)});
    // XCLAIM without JUSTID counts a delivery: the attempt is on the stream's books.
    const Args claim{"XCLAIM", it->second.record.stream,  RedisKeys::kGroup, config.consumer,
                     "0",      it->second.record.entry_id};
    const RedisReply r = co_await must(claim);
    it = jobs.find(id);
    if (it == jobs.end()) co_return;
    if (r.error() || r.elements.empty()) {  // acknowledged or trimmed meanwhile: nothing to run
      jobs.erase(it);
      room_changed();
      co_return;
    }
    Tracked& again = it->second;
    ++again.record.attempts;
    again.record.text.clear();
    again.record.token_ids.clear();
    again.record.first_token_at = 0;
    if (draining) {
      hand_back({id});
      co_return;
    }
    enqueue(again);
    pump();
  }

  // ================================================================================================
  // Finishing

  void fail(Tracked& t, const std::string& code, const std::string& message) {
    t.record.error_code = code;
    t.record.error_message = message;
    finish(t, JobStatus::kFailed, "error");
  }

  void finish(Tracked& t, JobStatus status, const std::string& finish_reason) {
    dequeue(t);
    t.state = State::kPublishing;
    t.record.status = status;
    t.record.finish_reason = finish_reason;
    t.record.finished_at = now_ms();
    switch (status) {
      case JobStatus::kDone:
        ++totals.done;
        break;
      case JobStatus::kFailed:
        ++totals.failed;
        break;
      default:
        ++totals.cancelled;
        break;
    }
    if (status == JobStatus::kFailed) {
      spdlog::info("job {} failed: {}: {}", t.record.id, t.record.error_code,
                   t.record.error_message);
    }
    schedule_publish(t.record.id);
  }

  // Finished jobs are published together: those finished in one turn of the io loop go out in
  // scripts of at most kPublishBatch jobs (short enough not to stall Redis).
  void schedule_publish(const std::string& id) {
    to_publish.push_back(id);
    if (publish_scheduled) return;
    publish_scheduled = true;
    asio::post(io, [this] {
      publish_scheduled = false;
      for (std::size_t i = 0; i < to_publish.size(); i += kPublishBatch) {
        const auto end = to_publish.begin() + std::min(to_publish.size(), i + kPublishBatch);
        spawn(publish(std::vector<std::string>(to_publish.begin() + i, end)));
      }
      to_publish.clear();
    });
  }

  // Results to Redis (atomically, at most once per id), then the rows to SQLite, then XACK once
  // the rows are committed. A crash between any two steps leaves the entries pending; their next
  // delivery finds the result and only records and acknowledges it.
  asio::awaitable<void> publish(std::vector<std::string> ids) {
    std::erase_if(ids, [&](const std::string& id) { return !jobs.count(id); });
    if (ids.empty()) co_return;
    // The arguments are built once, here: the tracked records may move while this waits.
    Args redis_keys{keys.results()};
    Args values{std::to_string(config.result_ttl_s), std::to_string(config.results_maxlen)};
    for (const auto& id : ids) {
      const JobRecord& rec = jobs.at(id).record;
      redis_keys.insert(redis_keys.end(), {keys.result(id), keys.status(id), keys.batch(rec.batch),
                                           keys.batch_ids(rec.batch)});
      values.insert(values.end(),
                    {result_text(rec), status_name(rec.status), id, rec.entry_id, rec.batch,
                     std::to_string(rec.prompt_tokens), std::to_string(rec.completion_tokens),
                     std::to_string(rec.finished_at)});
    }
    Args args{"EVALSHA", publish_sha, std::to_string(redis_keys.size())};
    args.insert(args.end(), std::make_move_iterator(redis_keys.begin()),
                std::make_move_iterator(redis_keys.end()));
    args.insert(args.end(), std::make_move_iterator(values.begin()),
                std::make_move_iterator(values.end()));
    RedisReply r;
    for (;;) {
      r = co_await must(args);
      if (r.lost_connection()) co_return;  // stopped: the entries stay pending, retried later
      if (r.error_is("NOSCRIPT")) {        // Redis restarted and forgot the script
        co_await load_scripts();
        args[1] = publish_sha;
        continue;
      }
      if (r.error() || r.elements.size() != ids.size()) {
        spdlog::error("redis: publishing {} result(s) failed: {}; retrying", ids.size(), r.str);
        co_await sleep(1s);
        continue;
      }
      break;
    }
    for (std::size_t i = 0; i < ids.size(); ++i) {
      if (r.elements[i].integer != 0) continue;
      // Already done (another delivery ran it): record what Redis holds, not our copy.
      ++totals.duplicates;
      const Args get{"GET", keys.result(ids[i])};
      const RedisReply existing = co_await must(get);
      if (const auto it = jobs.find(ids[i]); it != jobs.end() && !existing.nil())
        merge_result(existing.str, it->second.record);
    }
    for (const auto& id : ids) {
      if (const auto it = jobs.find(id); it != jobs.end()) finish_stored(it->second);
    }
  }

  // The last step of a finished job on the io thread: the final row goes to the store, which
  // acknowledges the entry after committing it; the id is free for waiting duplicates.
  void finish_stored(Tracked& t) {
    const std::string id = t.record.id;
    ++acks_outstanding;
    StreamAck ack{t.record.stream, t.record.entry_id};
    store->push({StoreOp::Kind::kFinished, std::move(t.record), {}, std::move(ack)});
    jobs.erase(id);
    if (const auto w = same_id_waiting.find(id); w != same_id_waiting.end()) {
      std::vector<Delivery> again = std::move(w->second);
      same_id_waiting.erase(w);
      intake(std::move(again));
    }
    room_changed();
    if (!draining) pump();
  }

  void dead_letter(Tracked& t, const std::string& last_error) {
    ++totals.dead;
    t.state = State::kPublishing;
    spdlog::warn("job {} moved to {} after {} attempt(s): {}", t.record.id, keys.dead(),
                 t.record.attempts, last_error);
    spawn(bury(t.record.id, last_error));
  }

  // The dead-letter entry first, then the failed result: a reader of the result can find the
  // entry. (A reply lost with the connection can repeat the entry; the result stays single.)
  asio::awaitable<void> bury(std::string id, std::string last_error) {
    const auto tracked = jobs.find(id);
    if (tracked == jobs.end()) co_return;
    const Tracked& t = tracked->second;
    const Args add{"XADD",
                   keys.dead(),
                   "*",
                   "id",
                   id,
                   "stream",
                   t.record.stream,
                   "entry",
                   t.record.entry_id,
                   "attempts",
                   std::to_string(t.record.attempts),
                   "error",
                   last_error,
                   "job",
                   t.raw};
    const RedisReply r = co_await must(add);
    if (r.error()) spdlog::error("redis: XADD {}: {}", keys.dead(), r.str);
    const auto it = jobs.find(id);
    if (it == jobs.end()) co_return;
    fail(it->second, errc::kMaxAttempts,
         "gave up after " +
             std::to_string(std::min(it->second.record.attempts, config.max_attempts)) +
             " attempt(s) (max_attempts " + std::to_string(config.max_attempts) +
             "); last error: " + last_error);
  }

  // Called by the store thread after a commit.
  void on_committed(std::vector<StreamAck> acks) {
    for (auto& a : acks) acks_waiting[a.stream].push_back(std::move(a.entry_id));
    if (ack_flush_scheduled) return;
    ack_flush_scheduled = true;
    asio::post(io, [this] {
      ack_flush_scheduled = false;
      for (auto& [stream, ids] : acks_waiting) {
        if (!ids.empty()) spawn(ack(stream, std::move(ids)));
      }
      acks_waiting.clear();
    });
  }

  asio::awaitable<void> ack(std::string stream, std::vector<std::string> ids) {
    for (std::size_t i = 0; i < ids.size(); i += kMaxKeysPerCommand) {
      std::vector<std::string> args{"XACK", stream, RedisKeys::kGroup};
      const std::size_t end = std::min(ids.size(), i + kMaxKeysPerCommand);
      args.insert(args.end(), ids.begin() + i, ids.begin() + end);
      const RedisReply r = co_await must(args);
      if (r.error() && !r.lost_connection()) spdlog::error("redis: XACK on {}: {}", stream, r.str);
      acks_outstanding -= static_cast<std::int64_t>(end - i);
    }
    maybe_finish_drain();
  }

  // ================================================================================================
  // Cancellation: SET <prefix>cancel:<id> or <prefix>cancel-batch:<batch>, polled for the jobs we
  // hold.

  asio::awaitable<void> cancel_loop() {
    while (!stopped) {
      co_await sleep(kCancelPoll);
      std::vector<std::string> ids;
      std::vector<std::string> args{"MGET"};
      for (const auto& [id, t] : jobs) {
        if (t.state != State::kQueued && t.state != State::kRunning) continue;
        if (t.handing_back) continue;
        ids.push_back(id);
        args.push_back(keys.cancel(id));
        args.push_back(t.record.batch.empty() ? keys.cancel(id)
                                              : keys.cancel_batch(t.record.batch));
      }
      if (ids.empty() || !cmd.connected()) continue;
      const RedisReply r = co_await cmd.command(args);
      if (r.error() || r.elements.size() != 2 * ids.size()) continue;
      for (std::size_t i = 0; i < ids.size(); ++i) {
        if (r.elements[2 * i].nil() && r.elements[2 * i + 1].nil()) continue;
        cancel(ids[i]);
      }
      pump();
    }
  }

  void cancel(const std::string& id) {
    const auto it = jobs.find(id);
    if (it == jobs.end()) return;
    Tracked& t = it->second;
    if (t.state == State::kQueued) {
      spdlog::info("job {} cancelled before it started", id);
      finish(t, JobStatus::kCancelled, "cancelled");
    } else if (t.state == State::kRunning) {
      spdlog::info("job {} cancelled while running", id);
      engines[t.replica]->cancel(id);
    }
  }

  // ================================================================================================
  // Drain and shutdown

  void begin_drain() {
    if (draining || stopped) {
      if (draining && !stopped) {
        spdlog::warn(
            "second stop signal: stopping now; unfinished jobs stay pending and are retried");
        shutdown();
      }
      return;
    }
    draining = true;
    spdlog::info("stopping: no new jobs; {} running job(s) get {} s to finish",
                 count(State::kRunning), config.drain_timeout_s);
    sd_notify(0, "STOPPING=1\nSTATUS=draining");
    reader.stop();  // ends the blocked XREADGROUP
    capacity_signal.cancel();
    std::vector<std::string> queued;
    for (const auto& [id, t] : jobs) {
      if (t.state == State::kQueued) queued.push_back(id);
    }
    hand_back(queued);
    drain_timer.expires_after(std::chrono::seconds(config.drain_timeout_s));
    drain_timer.async_wait([this](const boost::system::error_code& ec) {
      if (ec || stopped) return;
      std::size_t n = 0;
      for (auto& [id, t] : jobs) {
        if (t.state != State::kRunning || t.handing_back) continue;
        t.handing_back = true;
        engines[t.replica]->cancel(id);
        ++n;
      }
      if (n) spdlog::warn("drain timeout: handing {} unfinished job(s) back to the stream", n);
      drain_timer.expires_after(kShutdownGrace);
      drain_timer.async_wait([this](const boost::system::error_code& ec2) {
        if (ec2 || stopped) return;
        spdlog::warn(
            "stopping with {} job(s) and {} acknowledgement(s) unfinished; they stay pending",
            jobs.size(), acks_outstanding);
        shutdown();
      });
    });
    maybe_finish_drain();
  }

  // Gives jobs back to the group without counting the delivery (RETRYCOUNT restores the count):
  // their idle time is set past any visibility timeout, so any live consumer reclaims them.
  void hand_back(const std::vector<std::string>& ids) {
    std::map<std::pair<std::string, int>, std::vector<std::string>> by_stream_attempts;
    for (const auto& id : ids) {
      const auto it = jobs.find(id);
      if (it == jobs.end()) continue;
      const Tracked& t = it->second;
      dequeue(t);
      by_stream_attempts[{t.record.stream, t.record.attempts}].push_back(t.record.entry_id);
      jobs.erase(it);
      ++totals.handed_back;
      // Deliveries of the same id that waited for this one go back with it.
      if (const auto w = same_id_waiting.find(id); w != same_id_waiting.end()) {
        for (const auto& d : w->second)
          by_stream_attempts[{d.stream, d.attempts}].push_back(d.entry_id);
        same_id_waiting.erase(w);
      }
    }
    for (const auto& [key, entries] : by_stream_attempts) {
      std::vector<std::string> args{"XCLAIM", key.first, RedisKeys::kGroup, config.consumer, "0"};
      args.insert(args.end(), entries.begin(), entries.end());
      args.insert(args.end(), {"IDLE", std::to_string(kHandBackIdleMs), "RETRYCOUNT",
                               std::to_string(std::max(0, key.second - 1)), "JUSTID"});
      fire(args);
    }
    if (!ids.empty()) spdlog::info("handed {} job(s) back to the stream", ids.size());
    maybe_finish_drain();
  }

  std::size_t count(State s) const {
    return static_cast<std::size_t>(std::count_if(
        jobs.begin(), jobs.end(), [&](const auto& kv) { return kv.second.state == s; }));
  }

  void maybe_finish_drain() {
    if (draining && !stopped && jobs.empty() && acks_outstanding == 0) {
      spdlog::info("drained: every job finished or handed back");
      shutdown();
    }
  }

  void shutdown() {
    if (stopped) return;
    stopped = true;
    draining = true;
    drain_timer.cancel();
    capacity_signal.cancel();
    signals.cancel();
    if (control) control->stop();
    if (metrics) metrics->stop();
    reader.stop();
    // Let commands already sent (hand-backs, acknowledgements) reach Redis before closing: their
    // replies come before this PING's. A Redis that does not answer gets 2 s.
    const auto close = [this] {
      cmd.stop();
      io.stop();
    };
    cmd.send({"PING"}, [close](RedisReply) { close(); });
    drain_timer.expires_after(2s);
    drain_timer.async_wait([close](const boost::system::error_code& ec) {
      if (!ec) close();
    });
  }

  // ================================================================================================
  // Housekeeping, status, metrics

  asio::awaitable<void> housekeeping_loop() {
    std::uint64_t tick = 0;
    const bool watchdog = sd_watchdog_enabled(0, nullptr) > 0;
    while (!stopped) {
      co_await sleep(kHousekeeping);
      const auto now = std::chrono::steady_clock::now();
      rate_in.sample(now, prompt_tokens_total);
      rate_out.sample(now, generated_tokens_total);
      if (watchdog) sd_notify(0, "WATCHDOG=1");
      if (tick++ % 2 == 0 && cmd.connected()) {
        for (const auto& stream : streams) {
          const Args xlen{"XLEN", stream};
          const RedisReply len = co_await cmd.command(xlen);
          const Args xinfo{"XINFO", "GROUPS", stream};
          const RedisReply groups = co_await cmd.command(xinfo);
          QueueInfo q;
          q.length = len.integer;
          if (const auto group = find_group(groups, RedisKeys::kGroup)) {
            q.pending = group->pending;
            q.lag = group->lag;
          }
          queue_info[stream] = q;
        }
        if (!draining) {
          const std::string status = "STATUS=" + std::to_string(count(State::kRunning)) +
                                     " running, " + std::to_string(ready.size()) + " queued, " +
                                     std::to_string(static_cast<long>(rate_out.per_second())) +
                                     " tok/s out" + (cmd.connected() ? "" : ", Redis unreachable");
          sd_notify(0, status.c_str());
        }
      }
    }
  }

  static json gpus_json(const std::vector<DeviceStatus>& devices) {
    json out = json::array();
    for (const DeviceStatus& d : devices)
      out.push_back({{"gpu", d.gpu},
                     {"name", d.name},
                     {"memory_used", d.memory_used},
                     {"memory_total", d.memory_total},
                     {"kv_bytes", d.kv_bytes},
                     {"weight_bytes", d.weight_bytes},
                     {"utilization", d.utilization >= 0 ? json(d.utilization) : json(nullptr)}});
    return out;
  }

  json status_json() const {
    json engines_json = json::array();
    for (std::size_t r = 0; r < engine_stats.size(); ++r) {
      const EngineStats& s = engine_stats[r];
      engines_json.push_back(
          {{"describe", runner_info[r].describe},
           {"running", s.running},
           {"waiting", s.waiting},
           {"max_num_seqs", runner_info[r].max_num_seqs},
           {"batch_occupancy",
            runner_info[r].max_num_seqs ? double(s.running) / runner_info[r].max_num_seqs : 0.0},
           {"kv_blocks_used", s.kv_blocks_used},
           {"kv_blocks_total", s.kv_blocks_total},
           {"kv_cache_usage",
            s.kv_blocks_total ? double(s.kv_blocks_used) / s.kv_blocks_total : 0.0},
           {"steps", s.steps},
           {"preemptions", s.preemptions},
           {"last_step_ms", s.last_step_ms},
           {"gpus", gpus_json(engine_devices[r])}});
    }
    json queues = json::object();
    for (const auto& [stream, q] : queue_info) {
      queues[stream] = {{"length", q.length},
                        {"pending", q.pending},
                        {"lag", q.lag >= 0 ? json(q.lag) : json(nullptr)}};
    }
    return {
        {"version", kVersion},
        {"instance", config.consumer},
        {"pid", static_cast<long>(getpid())},
        {"model", runner_info.empty() ? "" : runner_info[0].model},
        {"model_hash", runner_info.empty() ? "" : runner_info[0].model_hash},
        {"uptime_s",
         std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count()},
        {"draining", draining},
        {"redis",
         {{"url", cmd.endpoint().describe()},
          {"connected", cmd.connected()},
          {"prefix", config.prefix}}},
        {"queues", queues},
        {"jobs",
         {{"checking", count(State::kChecking)},
          {"queued", count(State::kQueued)},
          {"running", count(State::kRunning)},
          {"publishing", count(State::kPublishing)}}},
        {"totals",
         {{"received", totals.received},
          {"done", totals.done},
          {"failed", totals.failed},
          {"cancelled", totals.cancelled},
          {"dead_lettered", totals.dead},
          {"retried", totals.retried},
          {"duplicates", totals.duplicates},
          {"handed_back", totals.handed_back}}},
        {"tokens_per_s", {{"in", rate_in.per_second()}, {"out", rate_out.per_second()}}},
        {"engines", engines_json},
        {"store",
         {{"db", config.db},
          {"backlog", store ? store->backlog() : 0},
          {"committed", store ? store->committed_ops() : 0}}},
    };
  }

  std::string render_metrics() const {
    MetricsPage m;
    for (const auto& [stream, q] : queue_info) {
      m.gauge("awqd_queue_depth", "Stream entries not yet delivered to any consumer (group lag)",
              static_cast<double>(std::max<std::int64_t>(q.lag, 0)), {{"stream", stream}});
    }
    for (const auto& [stream, q] : queue_info) {
      m.gauge("awqd_queue_pending",
              "Entries delivered to consumers and not acknowledged (all instances)",
              static_cast<double>(q.pending), {{"stream", stream}});
    }
    m.gauge("awqd_jobs", "Jobs this daemon holds, by state",
            static_cast<double>(count(State::kQueued)), {{"state", "queued"}});
    m.gauge("awqd_jobs", "", static_cast<double>(count(State::kRunning)), {{"state", "running"}});
    m.gauge("awqd_jobs", "",
            static_cast<double>(count(State::kChecking) + count(State::kPublishing)),
            {{"state", "other"}});
    m.counter("awqd_jobs_finished_total", "Jobs finished by this daemon, by status",
              static_cast<double>(totals.done), {{"status", "done"}});
    m.counter("awqd_jobs_finished_total", "", static_cast<double>(totals.failed),
              {{"status", "failed"}});
    m.counter("awqd_jobs_finished_total", "", static_cast<double>(totals.cancelled),
              {{"status", "cancelled"}});
    m.counter("awqd_jobs_dead_lettered_total", "Jobs moved to the dead-letter stream",
              static_cast<double>(totals.dead));
    m.counter("awqd_jobs_retried_total", "Transient failures retried",
              static_cast<double>(totals.retried));
    m.counter("awqd_jobs_received_total", "Stream deliveries taken",
              static_cast<double>(totals.received));
    m.counter("awqd_prompt_tokens_total", "Prompt tokens computed (prefill)",
              static_cast<double>(prompt_tokens_total));
    m.counter("awqd_generated_tokens_total", "Tokens generated",
              static_cast<double>(generated_tokens_total));
    m.gauge("awqd_tokens_per_second", "Tokens per second over the last 10 s", rate_in.per_second(),
            {{"direction", "in"}});
    m.gauge("awqd_tokens_per_second", "", rate_out.per_second(), {{"direction", "out"}});
    for (std::size_t r = 0; r < engine_stats.size(); ++r) {
      const int cap = runner_info[r].max_num_seqs;
      m.gauge("awqd_batch_occupancy", "Running sequences / max_num_seqs",
              cap ? double(engine_stats[r].running) / cap : 0.0, {{"replica", std::to_string(r)}});
    }
    for (std::size_t r = 0; r < engine_stats.size(); ++r) {
      const auto& s = engine_stats[r];
      m.gauge("awqd_kv_cache_usage", "KV-cache blocks in use / total",
              s.kv_blocks_total ? double(s.kv_blocks_used) / s.kv_blocks_total : 0.0,
              {{"replica", std::to_string(r)}});
    }
    m.counter("awqd_preemptions_total", "Sequences preempted (KV cache full)",
              static_cast<double>(preemptions_total));
    m.counter("awqd_engine_steps_total", "Engine steps", static_cast<double>(steps_total));
    m.histogram("awqd_step_latency_seconds", "Engine step latency", step_seconds);
    m.gauge("awqd_redis_connected", "1 when the Redis connection is up", cmd.connected() ? 1 : 0);
    m.gauge("awqd_store_backlog", "SQLite writes waiting for a commit",
            static_cast<double>(store ? store->backlog() : 0));
    return m.text();
  }

  // ================================================================================================

  int run() {
    const int replicas = static_cast<int>(config.engine_gpu_groups().size());
    for (int r = 0; r < replicas; ++r) {
      engines.push_back(std::make_unique<EngineThread>(r, factory, [this](EngineReport report) {
        asio::post(io,
                   [this, report = std::move(report)]() mutable { on_report(std::move(report)); });
      }));
    }
    for (auto& e : engines) runner_info.push_back(e->wait_ready());
    limits = runner_info[0].limits;
    in_engine.assign(engines.size(), 0);
    engine_stats.assign(engines.size(), EngineStats{});
    for (const RunnerInfo& info : runner_info) engine_devices.push_back(info.devices);
    for (std::size_t r = 0; r < engines.size(); ++r)
      spdlog::info("engine {}: {}", r, runner_info[r].describe);

    auto db = std::make_unique<Store>(config.db, /*read_only=*/false);
    db->set_instance(config.consumer);
    store = std::make_unique<StoreWriter>(std::move(db), [this](std::vector<StreamAck> acks) {
      asio::post(io, [this, acks = std::move(acks)]() mutable { on_committed(std::move(acks)); });
    });
    control = std::make_unique<ControlServer>(
        io, config.control_socket, [this](const std::string& command) {
          if (command != "status") return json{{"error", "unknown command: " + command}}.dump();
          return status_json().dump(-1, ' ', false, json::error_handler_t::replace);
        });
    if (config.metrics_port > 0) {
      metrics = std::make_unique<MetricsServer>(io, config.metrics_port,
                                                [this] { return render_metrics(); });
    }
    signals.async_wait([this](const boost::system::error_code& ec, int) {
      if (ec) return;
      begin_drain();
      signals.async_wait([this](const boost::system::error_code& ec2, int) {
        if (!ec2) begin_drain();
      });
    });

    sd_notify(0, "READY=1");
    cmd.start();
    reader.start();
    spawn(startup());
    spawn(housekeeping_loop());
    io.run();

    // The engines' last reports (the partial minute of statistics) are posted as they stop:
    // run them, then let the writer commit everything.
    for (auto& e : engines) e->stop();
    io.restart();
    io.poll();
    store->stop();
    spdlog::info("stopped (exit code {})", exit_code);
    return exit_code;
  }
};

Daemon::Daemon(DaemonConfig config, RunnerFactory factory)
    : impl_(std::make_unique<Impl>(std::move(config), std::move(factory))) {}

Daemon::~Daemon() = default;

int Daemon::run() { return impl_->run(); }

void Daemon::request_stop() {
  asio::post(impl_->io, [impl = impl_.get()] { impl->begin_drain(); });
}

}  // namespace awqd
