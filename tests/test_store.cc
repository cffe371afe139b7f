// The SQLite store: migrations, the job lifecycle, rollups, the writer thread, and kill -9.
#include <SQLiteCpp/SQLiteCpp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <set>
#include <string>
#include <thread>

#include "daemon/store.h"

namespace awqd {
namespace {

namespace fs = std::filesystem;

struct TempDir {
  fs::path path;
  TempDir() {
    char tmpl[] = "/tmp/awqd-store-XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~TempDir() { fs::remove_all(path); }
};

JobRecord queued(const std::string& id, const std::string& batch = "b1") {
  JobRecord r;
  r.id = id;
  r.stream = "awqd:jobs";
  r.entry_id = "1700000000000-" + id;
  r.batch = batch;
  r.attempts = 1;
  r.has_request = true;
  r.prompt = "prompt of " + id;
  r.params = {{"max_tokens", 8}};
  r.queued_at = 1700000000000;
  r.instance = "test:1";
  return r;
}

JobRecord finished(JobRecord r, JobStatus status = JobStatus::kDone) {
  r.status = status;
  r.text = "text of " + r.id;
  r.token_ids = {1, 2, 3};
  r.finish_reason = status == JobStatus::kDone ? "length" : "error";
  r.prompt_tokens = 7;
  r.completion_tokens = 3;
  r.started_at = r.queued_at + 10;
  r.first_token_at = r.queued_at + 20;
  r.finished_at = r.queued_at + 100;
  r.model = "m";
  r.seed = 5;
  return r;
}

StoreOp op(StoreOp::Kind kind, JobRecord r) { return StoreOp{kind, std::move(r), {}, {}}; }

TEST(Store, MigratesToTheLatestVersion) {
  TempDir dir;
  const auto db = dir.path / "sub" / "awqd.db";
  {
    Store store(db, false);
    EXPECT_EQ(store.schema_version(), Store::latest_schema_version());
    EXPECT_GE(Store::latest_schema_version(), 1);
  }
  {
    Store again(db, false);  // applying twice is a no-op
    EXPECT_EQ(again.schema_version(), Store::latest_schema_version());
  }
  SQLite::Database raw(db.string(), SQLite::OPEN_READONLY);
  EXPECT_EQ(raw.execAndGet("PRAGMA journal_mode").getString(), "wal");
  for (const char* table : {"jobs", "minute_stats", "job_stats", "batches"}) {
    SQLite::Statement q(raw, "SELECT count(*) FROM sqlite_master WHERE name = ?");
    q.bind(1, table);
    ASSERT_TRUE(q.executeStep());
    EXPECT_EQ(q.getColumn(0).getInt(), 1) << table;
  }
}

TEST(Store, RefusesADatabaseFromANewerAwqd) {
  TempDir dir;
  const auto db = dir.path / "awqd.db";
  {
    SQLite::Database raw(db.string(), SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
    raw.exec("PRAGMA user_version = 999");
  }
  try {
    Store store(db, false);
    FAIL() << "opened a database of schema version 999";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("newer awqd"), std::string::npos) << e.what();
  }
}

TEST(Store, JobLifecycle) {
  TempDir dir;
  Store store(dir.path / "awqd.db", false);
  store.write({op(StoreOp::Kind::kQueued, queued("a"))});
  auto row = store.job("a");
  ASSERT_TRUE(row);
  EXPECT_EQ(row->status, JobStatus::kQueued);
  EXPECT_EQ(row->prompt, "prompt of a");

  JobRecord started = queued("a");
  started.started_at = 1700000000010;
  started.seed = 77;
  started.model = "llama-13m";
  store.write({op(StoreOp::Kind::kStarted, started)});
  row = store.job("a");
  EXPECT_EQ(row->status, JobStatus::kRunning);
  EXPECT_EQ(row->seed, 77u);
  EXPECT_EQ(row->model, "llama-13m");

  store.write({op(StoreOp::Kind::kFinished, finished(queued("a")))});
  row = store.job("a");
  EXPECT_EQ(row->status, JobStatus::kDone);
  EXPECT_EQ(row->text, "text of a");
  EXPECT_EQ(row->token_ids, (std::vector<std::int32_t>{1, 2, 3}));
  EXPECT_EQ(row->completion_tokens, 3);
  EXPECT_EQ(row->prompt, "prompt of a");  // kept from the queued row

  // A done row is final: a later delivery of the same id cannot reset or overwrite it.
  store.write({op(StoreOp::Kind::kQueued, queued("a"))});
  JobRecord other = finished(queued("a"), JobStatus::kFailed);
  other.text = "overwritten";
  store.write({op(StoreOp::Kind::kFinished, other)});
  row = store.job("a");
  EXPECT_EQ(row->status, JobStatus::kDone);
  EXPECT_EQ(row->text, "text of a");

  // A failed job may be submitted again and then succeed.
  store.write({op(StoreOp::Kind::kFinished, finished(queued("f"), JobStatus::kFailed))});
  store.write({op(StoreOp::Kind::kQueued, queued("f"))});
  EXPECT_EQ(store.job("f")->status, JobStatus::kQueued);
  EXPECT_TRUE(store.job("f")->text.empty());
  store.write({op(StoreOp::Kind::kFinished, finished(queued("f")))});
  EXPECT_EQ(store.job("f")->status, JobStatus::kDone);
}

TEST(Store, FinishedRowsWithoutAQueuedRow) {
  TempDir dir;
  Store store(dir.path / "awqd.db", false);
  JobRecord r = finished(queued("backfill"));
  r.has_request = false;  // a result found in Redis for a job this store never saw
  store.write({op(StoreOp::Kind::kFinished, r)});
  const auto row = store.job("backfill");
  ASSERT_TRUE(row);
  EXPECT_EQ(row->status, JobStatus::kDone);
  EXPECT_FALSE(row->has_request);
}

TEST(Store, BatchesAndCounts) {
  TempDir dir;
  Store store(dir.path / "awqd.db", false);
  std::vector<StoreOp> ops;
  for (int i = 0; i < 10; ++i)
    ops.push_back(op(StoreOp::Kind::kQueued, queued("j" + std::to_string(i))));
  for (int i = 0; i < 6; ++i)
    ops.push_back(op(StoreOp::Kind::kFinished, finished(queued("j" + std::to_string(i)))));
  ops.push_back(op(StoreOp::Kind::kFinished, finished(queued("j6"), JobStatus::kFailed)));
  ops.push_back(op(StoreOp::Kind::kQueued, queued("other", "b2")));
  store.write(ops);
  const auto p = store.batch_progress("b1");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->jobs, 10);
  EXPECT_EQ(p->done, 6);
  EXPECT_EQ(p->failed, 1);
  EXPECT_EQ(p->queued, 3);
  EXPECT_EQ(p->completion_tokens, 21);
  EXPECT_FALSE(store.batch_progress("nope"));
  const auto counts = store.status_counts();
  EXPECT_EQ(counts.at("done"), 6);
  EXPECT_EQ(counts.at("queued"), 4);
  int n = 0;
  store.for_each_job_of_batch("b1", [&](const JobRecord& r) { n += r.batch == "b1"; });
  EXPECT_EQ(n, 10);
  EXPECT_EQ(store.recent_jobs(3).size(), 3u);
}

TEST(Store, MinuteRollupsAddUp) {
  TempDir dir;
  Store store(dir.path / "awqd.db", false);
  store.set_instance("host:1");
  MinuteStats m;
  m.minute = 1700000040000;
  m.prompt_tokens = 100;
  m.generated_tokens = 50;
  m.steps = 10;
  m.seqs_max = 4;
  m.kv_blocks_used_max = 9;
  StoreOp a{StoreOp::Kind::kMinute, {}, m, {}};
  m.seqs_max = 7;
  m.kv_blocks_used_max = 3;
  StoreOp b{StoreOp::Kind::kMinute, {}, m, {}};
  store.write({a, b});
  SQLite::Database raw((dir.path / "awqd.db").string(), SQLite::OPEN_READONLY);
  SQLite::Statement q(raw,
                      "SELECT prompt_tokens, generated_tokens, steps, seqs_max, kv_blocks_used_max "
                      "FROM minute_stats");
  ASSERT_TRUE(q.executeStep());
  EXPECT_EQ(q.getColumn(0).getInt(), 200);
  EXPECT_EQ(q.getColumn(1).getInt(), 100);
  EXPECT_EQ(q.getColumn(2).getInt(), 20);
  EXPECT_EQ(q.getColumn(3).getInt(), 7);
  EXPECT_EQ(q.getColumn(4).getInt(), 9);
  EXPECT_FALSE(q.executeStep());
}

TEST(StoreWriter, AcknowledgesOnlyAfterTheCommit) {
  TempDir dir;
  const auto db = dir.path / "awqd.db";
  std::mutex m;
  std::vector<std::string> acked;
  {
    StoreWriter writer(std::make_unique<Store>(db, false), [&](std::vector<StreamAck> acks) {
      // Called after the commit: the rows must be readable by another connection now.
      Store reader(db, true);
      for (const auto& a : acks) {
        const auto row = reader.job(a.entry_id);
        EXPECT_TRUE(row && row->status == JobStatus::kDone) << a.entry_id;
        std::lock_guard lock(m);
        acked.push_back(a.entry_id);
      }
    });
    for (int i = 0; i < 500; ++i) {
      const std::string id = "w" + std::to_string(i);
      writer.push(op(StoreOp::Kind::kQueued, queued(id)));
      StoreOp fin = op(StoreOp::Kind::kFinished, finished(queued(id)));
      fin.ack = StreamAck{"awqd:jobs", id};
      writer.push(std::move(fin));
    }
    writer.flush();
    EXPECT_EQ(writer.committed_ops(), 1000u);
    EXPECT_EQ(writer.backlog(), 0u);
  }
  EXPECT_EQ(acked.size(), 500u);
}

TEST(StoreWriter, StatesSupersededWithinACommitAreSkipped) {
  TempDir dir;
  const auto db = dir.path / "awqd.db";
  {
    // Everything is pushed before the writer can take it: one batch.
    auto store = std::make_unique<Store>(db, false);
    std::vector<StoreOp> ops{
        op(StoreOp::Kind::kQueued, queued("x")), op(StoreOp::Kind::kStarted, queued("x")),
        op(StoreOp::Kind::kFinished, finished(queued("x"), JobStatus::kFailed)),
        op(StoreOp::Kind::kQueued, queued("x"))};  // submitted again after failing
    StoreWriter writer(std::move(store), nullptr);
    for (auto& o : ops) writer.push(std::move(o));
    writer.flush();
    EXPECT_EQ(writer.committed_ops(), 4u);
  }
  Store store(db, true);
  const auto row = store.job("x");
  ASSERT_TRUE(row);
  EXPECT_EQ(row->status, JobStatus::kQueued) << "a write after the final one is kept";
  EXPECT_EQ(row->prompt, "prompt of x");
}

// SPEC section 5: kill -9 at any moment leaves no corrupt database and loses no acknowledged
// (done) result. A child writes and reports each acknowledgement on a pipe; it is killed in the
// middle; every acknowledged row must be there, done, in a database that passes integrity_check.
TEST(StoreWriter, SurvivesKill9) {
  for (int trial = 0; trial < 3; ++trial) {
    TempDir dir;
    const auto db = dir.path / "awqd.db";
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      close(fds[0]);
      StoreWriter writer(std::make_unique<Store>(db, false), [&](std::vector<StreamAck> acks) {
        for (const auto& a : acks) {
          const std::string line = a.entry_id + "\n";
          if (write(fds[1], line.data(), line.size()) < 0) _exit(3);
        }
      });
      for (int i = 0;; ++i) {
        const std::string id = "k" + std::to_string(i);
        writer.push(op(StoreOp::Kind::kQueued, queued(id)));
        StoreOp fin = op(StoreOp::Kind::kFinished, finished(queued(id)));
        fin.ack = StreamAck{"s", id};
        writer.push(std::move(fin));
        if (i % 64 == 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
    }
    close(fds[1]);
    std::this_thread::sleep_for(std::chrono::milliseconds(300 + 100 * trial));
    kill(child, SIGKILL);
    int status = 0;
    waitpid(child, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status));
    std::set<std::string> acked;
    std::string buffer;
    char chunk[4096];
    ssize_t n;
    while ((n = read(fds[0], chunk, sizeof(chunk))) > 0)
      buffer.append(chunk, static_cast<std::size_t>(n));
    close(fds[0]);
    for (std::size_t pos = 0, nl; (nl = buffer.find('\n', pos)) != std::string::npos;
         pos = nl + 1) {
      acked.insert(buffer.substr(pos, nl - pos));
    }
    ASSERT_GT(acked.size(), 100u) << "the child acknowledged too little to test anything";
    {
      SQLite::Database raw(db.string(), SQLite::OPEN_READWRITE);
      EXPECT_EQ(raw.execAndGet("PRAGMA integrity_check").getString(), "ok");
    }
    Store store(db, true);
    std::size_t missing = 0;
    for (const auto& id : acked) {
      const auto row = store.job(id);
      if (!row || row->status != JobStatus::kDone) ++missing;
    }
    EXPECT_EQ(missing, 0u) << "of " << acked.size() << " acknowledged rows";
  }
}

}  // namespace
}  // namespace awqd
