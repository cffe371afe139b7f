// The SQLite store (SPEC section 5): one database file per daemon, WAL mode, schema from
// schema/*.sql tracked with PRAGMA user_version, statements from daemon/store.sql.
//
// Store is one connection and is not thread-safe. The daemon writes through a StoreWriter, whose
// thread owns the read-write connection and commits whatever has queued up in one transaction,
// so writes never wait on the engine and the engine never waits on the disk. The CLI opens its
// own read-only Store. Durability: WAL with synchronous=NORMAL; a committed transaction survives
// kill -9 of the process (not a power cut, which can lose the last commits but never corrupts).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "daemon/record.h"

namespace SQLite {
class Database;
class Statement;
}  // namespace SQLite

namespace awqd {

// Engine statistics of one minute of one instance (table minute_stats).
struct MinuteStats {
  std::int64_t minute = 0;  // start of the minute, ms since the epoch
  std::int64_t prompt_tokens = 0;
  std::int64_t generated_tokens = 0;
  std::int64_t steps = 0;
  std::int64_t seqs_sum = 0;  // sum over steps of the sequences in the step
  int seqs_max = 0;
  int max_num_seqs = 0;
  std::int64_t kv_blocks_used_sum = 0;
  int kv_blocks_used_max = 0;
  int kv_blocks_total = 0;
  std::int64_t preemptions = 0;
  double step_ms_sum = 0;
};

// A stream entry to acknowledge (XACK) once the write that carries it is committed.
struct StreamAck {
  std::string stream;
  std::string entry_id;
};

struct StoreOp {
  enum class Kind { kQueued, kStarted, kFinished, kMinute };
  Kind kind = Kind::kQueued;
  JobRecord record;              // kQueued, kStarted, kFinished
  MinuteStats minute;            // kMinute
  std::optional<StreamAck> ack;  // kFinished: acknowledge after commit
};

struct BatchProgress {
  std::string name;
  std::int64_t jobs = 0, queued = 0, running = 0, done = 0, failed = 0, cancelled = 0;
  std::int64_t prompt_tokens = 0, completion_tokens = 0;
  std::int64_t first_queued_at = 0, first_started_at = 0, last_finished_at = 0;
};

class Store {
 public:
  // Read-write: creates the file and its directory when missing and applies the migrations.
  // Read-only: the file must exist. Throws std::runtime_error naming the file and the problem.
  Store(const std::filesystem::path& path, bool read_only);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  int schema_version();
  static int latest_schema_version();

  void write(const std::vector<StoreOp>& ops);  // one transaction

  std::optional<JobRecord> job(const std::string& id);
  std::vector<JobRecord> recent_jobs(int limit);
  void for_each_job_of_batch(const std::string& batch,
                             const std::function<void(const JobRecord&)>& fn);
  std::optional<BatchProgress> batch_progress(const std::string& batch);
  std::map<std::string, std::int64_t> status_counts();
  const std::string& instance() const { return instance_; }
  void set_instance(std::string instance) { instance_ = std::move(instance); }

 private:
  void migrate();
  SQLite::Statement& statement(const std::string& name);

  std::unique_ptr<SQLite::Database> db_;
  std::map<std::string, std::unique_ptr<SQLite::Statement>> statements_;
  std::string instance_;  // written into minute_stats
  std::string path_;
};

// The store's writer thread. push() is thread-safe and never blocks on the disk; each commit
// hands the acknowledgements it made durable to `on_commit`, on the writer thread. A failed
// commit (disk full, I/O error) is logged and retried with backoff: nothing is dropped, and
// nothing is acknowledged before it is on disk.
class StoreWriter {
 public:
  using CommitSink = std::function<void(std::vector<StreamAck>)>;

  StoreWriter(std::unique_ptr<Store> store, CommitSink on_commit);
  ~StoreWriter();  // stop()
  StoreWriter(const StoreWriter&) = delete;
  StoreWriter& operator=(const StoreWriter&) = delete;

  void push(StoreOp op);
  void flush();  // returns once everything pushed before the call is committed
  void stop();   // flushes, then ends the thread

  std::uint64_t committed_ops() const;  // since start
  std::size_t backlog() const;          // ops waiting

 private:
  void run();

  std::unique_ptr<Store> store_;
  CommitSink on_commit_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;       // work arrived or stop
  std::condition_variable committed_;  // a commit finished
  std::vector<StoreOp> queue_;
  std::uint64_t pushed_ = 0, committed_ops_ = 0;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace awqd
