// The daemon core in-process against a real redis-server, with the fake runner in place of the
// engine (tests/fake_runner.h): the Redis protocol of SPEC section 4 and the reliability of
// section 9 that does not need a process to die (test_e2e.cc has kill -9 and the real engine).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "daemon/control.h"
#include "daemon/daemon.h"
#include "daemon/store.h"
#include "tests/daemon_harness.h"
#include "tests/fake_runner.h"

namespace awqd {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;
using test::eventually;

// "name" + i, without the std::string operator+ that trips GCC 12's -Wrestrict false positive.
std::string numbered(const char* name, int i) {
  std::string s = name;
  s += std::to_string(i);
  return s;
}

// One daemon on its own thread.
class TestDaemon {
 public:
  TestDaemon(DaemonConfig config, test::FakeRunnerOptions runner) : config_(std::move(config)) {
    daemon_ = std::make_unique<Daemon>(
        config_, [runner](int) { return std::make_unique<test::FakeRunner>(runner); });
    thread_ = std::thread([this] { exit_code_ = daemon_->run(); });
  }
  ~TestDaemon() { stop(); }
  int stop() {
    if (thread_.joinable()) {
      daemon_->request_stop();
      thread_.join();
    }
    return exit_code_;
  }
  const DaemonConfig& config() const { return config_; }

 private:
  DaemonConfig config_;
  std::unique_ptr<Daemon> daemon_;
  std::thread thread_;
  int exit_code_ = -1;
};

class DaemonTest : public ::testing::Test {
 protected:
  void SetUp() override { use_redis(test::shared_redis_url()); }

  void use_redis(const std::string& url) {
    url_ = url;
    redis_ = std::make_unique<RedisSync>(parse_redis_url(url_));
  }

  DaemonConfig config(const std::string& consumer = "daemon-a") {
    DaemonConfig c;
    c.redis = url_;
    c.prefix = prefix_;
    c.db = (dir_.path / (consumer + ".db")).string();
    c.control_socket = (dir_.path / (consumer + ".sock")).string();
    c.metrics_port = 0;
    c.consumer = consumer;
    c.visibility_timeout_s = 2;
    c.drain_timeout_s = 30;
    return c;
  }

  std::string add(const json& job, const std::string& stream = "") {
    const RedisReply r =
        redis_->command({"XADD", stream.empty() ? keys_.jobs() : stream, "*", "job", job.dump()});
    EXPECT_FALSE(r.error()) << r.str;
    return r.str;
  }
  std::string add_raw(const std::vector<std::string>& fields) {
    std::vector<std::string> args{"XADD", keys_.jobs(), "*"};
    args.insert(args.end(), fields.begin(), fields.end());
    return redis_->command(args).str;
  }

  std::optional<json> result(const std::string& id) {
    const RedisReply r = redis_->command({"GET", keys_.result(id)});
    if (r.nil()) return std::nullopt;
    return json::parse(r.str);
  }
  bool all_results(const std::vector<std::string>& ids, std::chrono::milliseconds timeout = 30s) {
    return eventually(
        [&] {
          for (const auto& id : ids) {
            if (!result(id)) return false;
          }
          return true;
        },
        timeout);
  }
  // Notices on the results stream, per id.
  std::map<std::string, int> notices() { return test::notices_per_id(*redis_, keys_.results()); }
  long long pending(const std::string& stream = "") {
    return test::pending_entries(*redis_, stream.empty() ? keys_.jobs() : stream);
  }
  bool no_pending() {
    return eventually([&] { return pending() == 0 && pending(keys_.priority_jobs()) == 0; }, 10s);
  }

  test::TempDir dir_;
  std::string prefix_ =
      test::unique_prefix(::testing::UnitTest::GetInstance()->current_test_info()->name());
  RedisKeys keys_{prefix_};
  std::string url_;
  std::unique_ptr<RedisSync> redis_;
};

TEST_F(DaemonTest, RunsJobsToResultsAndRows) {
  TestDaemon d(config(), {.max_num_seqs = 8});
  std::vector<std::string> ids;
  for (int i = 0; i < 40; ++i) {
    json job = {
        {"prompt", numbered("job ", i)}, {"params", {{"max_tokens", 1 + i % 5}}}, {"batch", "b"}};
    if (i % 2 == 0) {
      job["id"] = numbered("j", i);
      job["metadata"] = {{"n", i}};
      ids.push_back(job["id"]);
      add(job);
    } else {
      ids.push_back(add(job));  // no id: the entry id is the job id
    }
  }
  ASSERT_TRUE(all_results(ids));
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const json r = *result(ids[i]);
    EXPECT_EQ(r["status"], "done");
    EXPECT_EQ(r["finish_reason"], "length");
    EXPECT_EQ(r["usage"]["completion_tokens"], 1 + i % 5);
    EXPECT_EQ(r["token_ids"].size(), 1 + i % 5);
    EXPECT_FALSE(r["text"].get<std::string>().empty());
    EXPECT_TRUE(r["timings"]["total_ms"].is_number());
    EXPECT_TRUE(r["timings"]["ttft_ms"].is_number());
    EXPECT_EQ(r["batch"], "b");
    EXPECT_EQ(r["model"], "fake");
    EXPECT_TRUE(r["seed"].is_number());
    EXPECT_EQ(r["token_ids"][0],
              r["seed"].get<std::uint64_t>() % 1000);  // the seed the job ran with
    if (i % 2 == 0) {
      EXPECT_EQ(r["metadata"]["n"], i);
    }
    EXPECT_EQ(redis_->command({"GET", keys_.status(ids[i])}).str, "done");
  }
  EXPECT_TRUE(no_pending()) << "every entry is acknowledged";
  const auto n = notices();
  for (const auto& id : ids) EXPECT_EQ(n.count(id) ? n.at(id) : 0, 1) << id;
  EXPECT_EQ(d.stop(), 0);
  Store store(d.config().db, true);
  EXPECT_EQ(store.status_counts().at("done"), 40);
  const auto row = store.job("j4");
  ASSERT_TRUE(row);
  EXPECT_EQ(row->completion_tokens, 5);
  EXPECT_EQ(row->prompt, "job 4");
  EXPECT_GT(row->finished_at, 0);
  EXPECT_EQ(store.batch_progress("b")->done, 40);
  // The batch counters kept by the publish script.
  const auto batch = redis_->command({"HGET", keys_.batch("b"), "done"});
  EXPECT_EQ(batch.str, "40");
  EXPECT_EQ(redis_->command({"SCARD", keys_.batch_ids("b")}).integer, 40);
}

TEST_F(DaemonTest, BadInputIsAnsweredNotDropped) {
  TestDaemon d(config(), {});
  std::vector<std::pair<std::string, std::string>> cases;  // job id, expected code
  cases.emplace_back(add_raw({"payload", "{}"}), errc::kMissingJob);
  cases.emplace_back(add_raw({"job", R"({"prompt": "x"})", "extra", "1"}), errc::kUnknownField);
  cases.emplace_back(add_raw({"job", "{not json"}), errc::kInvalidJson);
  cases.emplace_back(add_raw({"job", "[1, 2]"}), errc::kInvalidJson);
  add(json{{"id", "unknown-field"}, {"prompt", "x"}, {"temperature", 1}});
  cases.emplace_back("unknown-field", errc::kUnknownField);
  add(json{{"id", "wrong-type"}, {"prompt", "x"}, {"params", {{"max_tokens", "many"}}}});
  cases.emplace_back("wrong-type", errc::kInvalidField);
  add(json{{"id", "out-of-range"}, {"prompt", "x"}, {"params", {{"top_p", 3}}}});
  cases.emplace_back("out-of-range", errc::kInvalidParam);
  add(json{{"id", "no-prompt"}, {"params", {{"max_tokens", 3}}}});
  cases.emplace_back("no-prompt", errc::kMissingPrompt);
  add(json{{"id", "two-prompts"}, {"prompt", "x"}, {"prompt_token_ids", {1}}});
  cases.emplace_back("two-prompts", errc::kMultiplePrompts);
  add(json{{"id", "unknown-token"}, {"prompt_token_ids", {1, 99999}}});
  cases.emplace_back("unknown-token", errc::kUnknownToken);
  add(json{{"id", "too-long"}, {"prompt_token_ids", std::vector<int>(1024, 5)}});
  cases.emplace_back("too-long", errc::kPromptTooLong);
  add(json{{"id", "rejected"}, {"prompt", "#reject"}});
  cases.emplace_back("rejected", errc::kInvalidRequest);
  add(json{{"id", "fine"}, {"prompt", "ok"}, {"params", {{"max_tokens", 2}}}});

  std::vector<std::string> ids{"fine"};
  for (const auto& c : cases) ids.push_back(c.first);
  ASSERT_TRUE(all_results(ids));
  for (const auto& [id, code] : cases) {
    const json r = *result(id);
    EXPECT_EQ(r["status"], "failed") << id;
    EXPECT_EQ(r["error"]["code"], code) << id << ": " << r["error"]["message"];
    EXPECT_FALSE(r["error"]["message"].get<std::string>().empty());
    EXPECT_EQ(r["finish_reason"], "error");
    EXPECT_EQ(r["attempts"], 1) << "input errors are not retried";
  }
  EXPECT_EQ((*result("fine"))["status"], "done") << "bad neighbours do not hurt a good job";
  EXPECT_TRUE(no_pending());
  EXPECT_EQ(redis_->command({"XLEN", keys_.dead()}).integer, 0);
  d.stop();
  Store store(d.config().db, true);
  EXPECT_EQ(store.job("out-of-range")->error_code, errc::kInvalidParam);
}

TEST_F(DaemonTest, AnIdIsDoneOnce) {
  TestDaemon d(config(), {});
  add(json{{"id", "once"}, {"prompt", "first"}, {"params", {{"max_tokens", 3}}}});
  ASSERT_TRUE(all_results({"once"}));
  const json first = *result("once");
  // The same id again, twice at once: acknowledged without running.
  add(json{{"id", "once"}, {"prompt", "second"}, {"params", {{"max_tokens", 9}}}});
  add(json{{"id", "once"}, {"prompt", "third"}, {"params", {{"max_tokens", 9}}}});
  // Two entries of a new id arriving together: one run.
  add(json{{"id", "twin"}, {"prompt", "a"}, {"params", {{"max_tokens", 4}}}});
  add(json{{"id", "twin"}, {"prompt", "b"}, {"params", {{"max_tokens", 4}}}});
  ASSERT_TRUE(all_results({"twin"}));
  EXPECT_TRUE(no_pending());
  EXPECT_EQ(*result("once"), first) << "the done result is never replaced";
  const auto n = notices();
  EXPECT_EQ(n.at("once"), 1);
  EXPECT_EQ(n.at("twin"), 1);
}

TEST_F(DaemonTest, CancelsQueuedAndRunningJobs) {
  TestDaemon d(config(), {.max_num_seqs = 1, .max_tokens_cap = 1000, .step_delay = 10ms});
  add(json{{"id", "running"}, {"prompt", "long"}, {"params", {{"max_tokens", 1000}}}});
  add(json{{"id", "queued"}, {"prompt", "waits"}, {"params", {{"max_tokens", 5}}}});
  ASSERT_TRUE(eventually([&] {
    return redis_->command({"GET", keys_.status("running")}).str == "running";
  }));
  std::this_thread::sleep_for(200ms);  // some tokens
  redis_->command({"SET", keys_.cancel("queued"), "1"});
  redis_->command({"SET", keys_.cancel("running"), "1"});
  ASSERT_TRUE(all_results({"running", "queued"}, 10s));
  const json running = *result("running");
  EXPECT_EQ(running["status"], "cancelled");
  EXPECT_EQ(running["finish_reason"], "cancelled");
  EXPECT_GT(running["usage"]["completion_tokens"], 0) << "keeps its partial text";
  EXPECT_LT(running["usage"]["completion_tokens"], 1000);
  EXPECT_FALSE(running["text"].get<std::string>().empty());
  const json queued = *result("queued");
  EXPECT_EQ(queued["status"], "cancelled");
  EXPECT_EQ(queued["usage"]["completion_tokens"], 0) << "a cancelled queued job never starts";
  EXPECT_TRUE(queued["timings"]["ttft_ms"].is_null());
  // A batch cancelled before its jobs arrive: they never start.
  redis_->command({"SET", keys_.cancel_batch("doomed"), "1"});
  add(json{{"id", "b1"}, {"prompt", "x"}, {"batch", "doomed"}});
  ASSERT_TRUE(all_results({"b1"}, 10s));
  EXPECT_EQ((*result("b1"))["status"], "cancelled");
  EXPECT_TRUE(no_pending());
}

TEST_F(DaemonTest, APriorityJobOvertakesABulkBatch) {
  DaemonConfig c = config();
  c.read_ahead = 2;
  TestDaemon d(c, {.max_num_seqs = 2, .step_delay = 5ms});
  std::vector<std::string> bulk;
  for (int i = 0; i < 60; ++i) {
    bulk.push_back(numbered("bulk", i));
    add(json{{"id", bulk.back()}, {"prompt", "bulk"}, {"params", {{"max_tokens", 8}}}});
  }
  ASSERT_TRUE(eventually([&] { return result("bulk3").has_value(); }));
  add(json{{"id", "urgent"}, {"prompt", "now"}, {"priority", 9}, {"params", {{"max_tokens", 8}}}},
      keys_.priority_jobs());
  ASSERT_TRUE(all_results({"urgent"}));
  const auto urgent_done = (*result("urgent"))["finished_at"].get<std::int64_t>();
  ASSERT_TRUE(all_results(bulk));
  int later = 0;
  for (const auto& id : bulk)
    later += (*result(id))["finished_at"].get<std::int64_t>() > urgent_done;
  EXPECT_GE(later, 40) << "the priority job waited for the backlog";
}

TEST_F(DaemonTest, PriorityOrdersJobsAlreadyRead) {
  DaemonConfig c = config();
  c.read_ahead = 50;
  TestDaemon d(c, {.max_num_seqs = 1, .step_delay = 2ms});
  add(json{{"id", "first"},
           {"prompt", "#slow"},
           {"params", {{"max_tokens", 10}}}});  // occupies the engine
  ASSERT_TRUE(eventually([&] {
    return redis_->command({"GET", keys_.status("first")}).str == "running";
  }));
  for (int i = 0; i < 10; ++i)
    add(json{{"id", numbered("low", i)}, {"prompt", "x"}, {"params", {{"max_tokens", 2}}}});
  add(json{{"id", "high"}, {"prompt", "x"}, {"priority", 5}, {"params", {{"max_tokens", 2}}}});
  ASSERT_TRUE(all_results({"high", "low0"}));
  EXPECT_LT((*result("high"))["finished_at"].get<std::int64_t>(),
            (*result("low0"))["finished_at"].get<std::int64_t>());
}

TEST_F(DaemonTest, RetriesStopAtMaxAttemptsThenDeadLetter) {
  DaemonConfig c = config();
  c.max_attempts = 3;
  TestDaemon d(c, {});
  add(json{{"id", "flaky"}, {"prompt", "#fail"}, {"metadata", {{"keep", true}}}});
  add(json{{"id", "fine"}, {"prompt", "ok"}});
  ASSERT_TRUE(all_results({"flaky", "fine"}));
  const json r = *result("flaky");
  EXPECT_EQ(r["status"], "failed");
  EXPECT_EQ(r["error"]["code"], errc::kMaxAttempts);
  EXPECT_NE(r["error"]["message"].get<std::string>().find("fake engine failure"),
            std::string::npos);
  EXPECT_EQ(r["attempts"], 3);
  EXPECT_EQ(r["metadata"]["keep"], true);
  const RedisReply dead = redis_->command({"XRANGE", keys_.dead(), "-", "+"});
  ASSERT_EQ(dead.elements.size(), 1u);
  std::map<std::string, std::string> f;
  const auto& fields = dead.elements[0].elements[1].elements;
  for (std::size_t i = 0; i + 1 < fields.size(); i += 2) f[fields[i].str] = fields[i + 1].str;
  EXPECT_EQ(f["id"], "flaky");
  EXPECT_EQ(f["attempts"], "3");
  EXPECT_NE(f["error"].find("fake engine failure"), std::string::npos);
  EXPECT_NE(f["job"].find("#fail"), std::string::npos) << "the job document travels with it";
  EXPECT_TRUE(no_pending());
  EXPECT_EQ(notices().at("flaky"), 1);
}

TEST_F(DaemonTest, SigtermDrainsRunningJobsAndHandsBackTheRest) {
  DaemonConfig c = config("drainer");
  c.read_ahead = 20;
  auto a = std::make_unique<TestDaemon>(
      c, test::FakeRunnerOptions{.max_num_seqs = 2, .step_delay = 10ms});
  std::vector<std::string> ids;
  for (int i = 0; i < 12; ++i) {
    ids.push_back(numbered("d", i));
    add(json{{"id", ids.back()}, {"prompt", "x"}, {"params", {{"max_tokens", 20}}}});
  }
  ASSERT_TRUE(eventually([&] { return result("d0").has_value(); }));
  EXPECT_EQ(a->stop(), 0);
  int done_by_a = 0;
  for (const auto& id : ids) done_by_a += result(id).has_value();
  EXPECT_GE(done_by_a, 2);
  EXPECT_LT(done_by_a, 12) << "the test needs jobs left over";
  // Whatever was running finished; whatever was queued went back, and is reclaimed at once
  // (no visibility timeout to wait out) by the next daemon.
  c.consumer = "successor";
  c.visibility_timeout_s = 30;
  c.db = (dir_.path / "successor.db").string();
  TestDaemon b(c, {.max_num_seqs = 4});
  ASSERT_TRUE(all_results(ids, 20s));
  const auto n = notices();
  for (const auto& id : ids) EXPECT_EQ(n.at(id), 1) << id;
  EXPECT_TRUE(no_pending());
  for (const auto& id : ids)
    EXPECT_EQ((*result(id))["attempts"], 1) << "a hand-back is not an attempt";
}

TEST_F(DaemonTest, DrainTimeoutHandsBackRunningJobs) {
  DaemonConfig c = config("impatient");
  c.drain_timeout_s = 0;
  auto a = std::make_unique<TestDaemon>(
      c, test::FakeRunnerOptions{.max_num_seqs = 2, .max_tokens_cap = 1000, .step_delay = 10ms});
  add(json{{"id", "long0"}, {"prompt", "x"}, {"params", {{"max_tokens", 300}}}});
  add(json{{"id", "long1"}, {"prompt", "x"}, {"params", {{"max_tokens", 300}}}});
  ASSERT_TRUE(eventually([&] {
    return redis_->command({"GET", keys_.status("long1")}).str == "running";
  }));
  EXPECT_EQ(a->stop(), 0);
  EXPECT_FALSE(result("long0")) << "a job cut off by the drain is not published as cancelled";
  EXPECT_EQ(pending(), 2);
  c.consumer = "finisher";
  c.db = (dir_.path / "finisher.db").string();
  c.visibility_timeout_s = 30;
  TestDaemon b(c, {.max_num_seqs = 2, .max_tokens_cap = 1000});
  ASSERT_TRUE(all_results({"long0", "long1"}, 20s));
  EXPECT_EQ((*result("long0"))["status"], "done");
  EXPECT_EQ((*result("long0"))["usage"]["completion_tokens"], 300);
}

TEST_F(DaemonTest, TwoDaemonsSplitTheWork) {
  // Jobs long enough that one daemon alone needs about a second for all of them (100 jobs, 4 at
  // a time, 8 steps of 5 ms): with 4 x 1 ms, a finished 96 before b, started 50 ms later on a
  // busy CI machine, had read its first job. Each daemon holds at most 4 running + 9 read ahead.
  TestDaemon a(config("split-a"), {.max_num_seqs = 4, .step_delay = 5ms});
  TestDaemon b(config("split-b"), {.max_num_seqs = 4, .step_delay = 5ms});
  std::vector<std::string> ids;
  for (int i = 0; i < 100; ++i) {
    ids.push_back(numbered("s", i));
    add(json{{"id", ids.back()}, {"prompt", "x"}, {"params", {{"max_tokens", 8}}}});
  }
  ASSERT_TRUE(all_results(ids));
  std::map<std::string, int> by_instance;
  for (const auto& id : ids) ++by_instance[(*result(id))["instance"].get<std::string>()];
  EXPECT_GT(by_instance["split-a"], 10);
  EXPECT_GT(by_instance["split-b"], 10);
  const auto n = notices();
  for (const auto& id : ids) EXPECT_EQ(n.at(id), 1) << id;
  EXPECT_TRUE(no_pending());
}

TEST_F(DaemonTest, ReclaimsJobsOfADeadConsumer) {
  // A "daemon" that took five jobs and died: they sit in its pending list.
  redis_->command({"XGROUP", "CREATE", keys_.jobs(), RedisKeys::kGroup, "0", "MKSTREAM"});
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    ids.push_back(numbered("orphan", i));
    add(json{{"id", ids.back()}, {"prompt", "x"}, {"params", {{"max_tokens", 2}}}});
  }
  redis_->command({"XREADGROUP", "GROUP", RedisKeys::kGroup, "ghost", "COUNT", "5", "STREAMS",
                   keys_.jobs(), ">"});
  ASSERT_EQ(pending(), 5);
  DaemonConfig c = config("rescuer");
  c.visibility_timeout_s = 1;
  TestDaemon d(c, {});
  ASSERT_TRUE(all_results(ids, 15s));
  for (const auto& id : ids) {
    EXPECT_EQ((*result(id))["status"], "done");
    EXPECT_EQ((*result(id))["attempts"], 2) << "the ghost's delivery counts";
  }
  EXPECT_TRUE(no_pending());
}

TEST_F(DaemonTest, KeepsLongJobsFromBeingStolen) {
  DaemonConfig c = config("owner");
  c.visibility_timeout_s = 2;
  TestDaemon owner(c, {.max_num_seqs = 1, .max_tokens_cap = 1000, .step_delay = 10ms});
  add(json{{"id", "marathon"},
           {"prompt", "x"},
           {"params", {{"max_tokens", 500}}}});  // ~5 s > visibility timeout
  ASSERT_TRUE(eventually([&] {
    return redis_->command({"GET", keys_.status("marathon")}).str == "running";
  }));
  DaemonConfig t = config("thief");
  t.visibility_timeout_s = 2;
  TestDaemon thief(t, {.max_num_seqs = 1, .max_tokens_cap = 1000});
  ASSERT_TRUE(all_results({"marathon"}, 20s));
  const json r = *result("marathon");
  EXPECT_EQ(r["instance"], "owner");
  EXPECT_EQ(r["attempts"], 1);
  EXPECT_EQ(notices().at("marathon"), 1);
}

TEST_F(DaemonTest, SurvivesARedisRestart) {
  test::RedisServer server;
  use_redis(server.url());
  TestDaemon d(config(), {.max_num_seqs = 4, .step_delay = 5ms});
  std::vector<std::string> ids;
  for (int i = 0; i < 40; ++i) {
    ids.push_back(numbered("r", i));
    add(json{{"id", ids.back()}, {"prompt", "x"}, {"params", {{"max_tokens", 10}}}});
  }
  ASSERT_TRUE(eventually([&] { return result("r3").has_value(); }));
  redis_.reset();
  server.stop();
  std::this_thread::sleep_for(1500ms);  // jobs finish meanwhile and wait for Redis
  server.start();
  use_redis(server.url());
  ASSERT_TRUE(all_results(ids, 30s));
  const auto n = notices();
  for (const auto& id : ids) {
    EXPECT_EQ((*result(id))["status"], "done") << id;
    EXPECT_EQ(n.at(id), 1) << id;
  }
  EXPECT_TRUE(no_pending());
  EXPECT_EQ(d.stop(), 0);
}

TEST_F(DaemonTest, ControlSocketReportsStatus) {
  TestDaemon d(config(), {.max_num_seqs = 3});
  for (int i = 0; i < 5; ++i)
    add(json{{"id", numbered("c", i)}, {"prompt", "x"}, {"params", {{"max_tokens", 2}}}});
  ASSERT_TRUE(all_results({"c0", "c1", "c2", "c3", "c4"}));
  json status;
  ASSERT_TRUE(eventually([&] {
    try {
      status = json::parse(control_request(d.config().control_socket, "status"));
      return status["totals"]["done"] == 5;
    } catch (const std::exception&) {
      return false;
    }
  }));
  EXPECT_EQ(status["instance"], "daemon-a");
  EXPECT_EQ(status["model"], "fake");
  EXPECT_EQ(status["redis"]["connected"], true);
  EXPECT_EQ(status["engines"][0]["max_num_seqs"], 3);
  EXPECT_EQ(json::parse(control_request(d.config().control_socket, "bogus")).count("error"), 1u);
  d.stop();
  EXPECT_THROW(control_request(d.config().control_socket, "status"), ControlUnavailable);
}

std::string http_get(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return "";
  }
  const std::string req = "GET " + path + " HTTP/1.1\r\nHost: localhost\r\n\r\n";
  (void)!write(fd, req.data(), req.size());
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) out.append(buf, static_cast<std::size_t>(n));
  close(fd);
  return out;
}

TEST_F(DaemonTest, ServesPrometheusMetrics) {
  DaemonConfig c = config();
  c.metrics_port = test::free_port();
  TestDaemon d(c, {});
  for (int i = 0; i < 3; ++i)
    add(json{{"id", numbered("m", i)}, {"prompt", "x"}, {"params", {{"max_tokens", 4}}}});
  ASSERT_TRUE(all_results({"m0", "m1", "m2"}));
  std::string page;
  ASSERT_TRUE(eventually([&] {
    page = http_get(c.metrics_port, "/metrics");
    return page.find("awqd_jobs_finished_total{status=\"done\"} 3") != std::string::npos &&
           page.find("awqd_queue_depth") != std::string::npos;
  })) << page;
  EXPECT_NE(page.find("HTTP/1.1 200 OK"), std::string::npos);
  EXPECT_NE(page.find("text/plain; version=0.0.4"), std::string::npos);
  for (const char* name :
       {"awqd_queue_depth", "awqd_jobs{state=\"running\"}", "awqd_generated_tokens_total 12",
        "awqd_tokens_per_second{direction=\"out\"}", "awqd_batch_occupancy{replica=\"0\"}",
        "awqd_kv_cache_usage{replica=\"0\"}", "awqd_preemptions_total",
        "awqd_step_latency_seconds_bucket{le=\"+Inf\"}",
        "# TYPE awqd_step_latency_seconds histogram"}) {
    EXPECT_NE(page.find(name), std::string::npos) << name;
  }
  EXPECT_NE(http_get(c.metrics_port, "/other").find("404"), std::string::npos);
}

}  // namespace
}  // namespace awqd
