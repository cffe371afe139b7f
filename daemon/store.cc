#include "daemon/store.h"

#include <SQLiteCpp/SQLiteCpp.h>
#include <pthread.h>
#include <spdlog/spdlog.h>

#include <charconv>
#include <chrono>
#include <string_view>
#include <unordered_set>

#include "daemon/embedded_text.h"
#include "daemon/named_blocks.h"

namespace awqd {

using json = nlohmann::json;

namespace {

// Migration files are named NNN_what.sql; NNN is the schema version they bring the file to.
int migration_number(std::string_view file_name) {
  int n = 0;
  std::from_chars(file_name.data(), file_name.data() + file_name.size(), n);
  return n;
}

void bind_text(SQLite::Statement& s, const char* name, const std::string& value) {
  if (value.empty()) {
    s.bind(name);  // NULL
  } else {
    s.bind(name, value);
  }
}

void bind_json(SQLite::Statement& s, const char* name, const json& value) {
  if (value.is_null()) {
    s.bind(name);
  } else {
    s.bind(name, value.dump(-1, ' ', false, json::error_handler_t::replace));
  }
}

void bind_time(SQLite::Statement& s, const char* name, std::int64_t ms) {
  if (ms == 0) {
    s.bind(name);
  } else {
    s.bind(name, static_cast<int64_t>(ms));
  }
}

void bind_job(SQLite::Statement& s, const JobRecord& r) {
  s.bind(":id", r.id);
  s.bind(":stream", r.stream);
  s.bind(":entry_id", r.entry_id);
  bind_text(s, ":batch", r.batch);
  s.bind(":priority", r.priority);
  s.bind(":attempts", r.attempts);
  if (r.has_request) {
    s.bind(":prompt_kind", prompt_kind_name(r.prompt_kind));
    s.bind(":prompt", r.prompt);
  } else {
    s.bind(":prompt_kind");
    s.bind(":prompt");
  }
  bind_json(s, ":params", r.params);
  bind_json(s, ":metadata", r.metadata);
  bind_time(s, ":queued_at", r.queued_at);
  bind_text(s, ":instance", r.instance);
}

std::string column_text(SQLite::Statement& s, const char* name) {
  const auto c = s.getColumn(name);
  return c.isNull() ? std::string() : c.getString();
}

json column_json(SQLite::Statement& s, const char* name) {
  const auto c = s.getColumn(name);
  if (c.isNull()) return nullptr;
  return json::parse(c.getString(), nullptr, /*allow_exceptions=*/false);
}

std::int64_t column_int(SQLite::Statement& s, const char* name) {
  const auto c = s.getColumn(name);
  return c.isNull() ? 0 : c.getInt64();
}

JobRecord read_job(SQLite::Statement& s) {
  JobRecord r;
  r.id = column_text(s, "id");
  r.stream = column_text(s, "stream");
  r.entry_id = column_text(s, "entry_id");
  r.batch = column_text(s, "batch");
  r.status = parse_status(column_text(s, "status")).value_or(JobStatus::kQueued);
  r.priority = static_cast<int>(column_int(s, "priority"));
  r.attempts = static_cast<int>(column_int(s, "attempts"));
  const std::string kind = column_text(s, "prompt_kind");
  r.has_request = !kind.empty();
  r.prompt_kind = kind == "messages"    ? PromptKind::kMessages
                  : kind == "token_ids" ? PromptKind::kTokenIds
                                        : PromptKind::kText;
  r.prompt = column_text(s, "prompt");
  r.params = column_json(s, "params");
  r.metadata = column_json(s, "metadata");
  r.text = column_text(s, "result_text");
  if (const json ids = column_json(s, "token_ids"); ids.is_array()) {
    for (const auto& id : ids) {
      if (id.is_number_integer()) r.token_ids.push_back(id.get<std::int32_t>());
    }
  }
  r.logprobs = column_json(s, "logprobs");
  r.finish_reason = column_text(s, "finish_reason");
  r.error_code = column_text(s, "error_code");
  r.error_message = column_text(s, "error_message");
  r.queued_at = column_int(s, "queued_at");
  r.started_at = column_int(s, "started_at");
  r.first_token_at = column_int(s, "first_token_at");
  r.finished_at = column_int(s, "finished_at");
  r.prompt_tokens = static_cast<int>(column_int(s, "prompt_tokens"));
  r.cached_prompt_tokens = static_cast<int>(column_int(s, "cached_prompt_tokens"));
  r.completion_tokens = static_cast<int>(column_int(s, "completion_tokens"));
  r.model = column_text(s, "model");
  r.model_hash = column_text(s, "model_hash");
  r.engine_version = column_text(s, "engine_version");
  r.seed = static_cast<std::uint64_t>(column_int(s, "seed"));
  r.instance = column_text(s, "instance");
  return r;
}

}  // namespace

Store::Store(const std::filesystem::path& path, bool read_only) : path_(path.string()) {
  try {
    if (!read_only && path.has_parent_path())
      std::filesystem::create_directories(path.parent_path());
    const int flags =
        read_only ? SQLite::OPEN_READONLY : (SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
    db_ = std::make_unique<SQLite::Database>(path_, flags, /*busy_timeout_ms=*/5000);
    if (!read_only) {
      db_->exec("PRAGMA journal_mode = WAL");
      db_->exec("PRAGMA synchronous = NORMAL");
      migrate();
    }
  } catch (const std::exception& e) {
    throw std::runtime_error(
        "SQLite store " + path_ + ": " + e.what() +
        (read_only ? "" : " (check that the directory is writable: the `db` key)"));
  }
}

Store::~Store() = default;

int Store::latest_schema_version() {
  int latest = 0;
  for (const auto& m : embedded::kMigrations) latest = std::max(latest, migration_number(m.name));
  return latest;
}

int Store::schema_version() { return db_->execAndGet("PRAGMA user_version").getInt(); }

void Store::migrate() {
  const int current = schema_version();
  const int latest = latest_schema_version();
  if (current > latest) {
    throw std::runtime_error("the database has schema version " + std::to_string(current) +
                             " but this awqd knows only up to " + std::to_string(latest) +
                             ": it was written by a newer awqd; upgrade awqd");
  }
  for (const auto& m : embedded::kMigrations) {
    const int version = migration_number(m.name);
    if (version <= current) continue;
    SQLite::Transaction tx(*db_);
    db_->exec(std::string(m.text));
    db_->exec("PRAGMA user_version = " + std::to_string(version));
    tx.commit();
    spdlog::info("store {}: applied migration {}", path_, m.name);
  }
}

SQLite::Statement& Store::statement(const std::string& name) {
  auto& slot = statements_[name];
  if (!slot)
    slot = std::make_unique<SQLite::Statement>(*db_, named_block(embedded::kStoreSql, name));
  slot->reset();
  slot->clearBindings();
  return *slot;
}

void Store::write(const std::vector<StoreOp>& ops) {
  SQLite::Transaction tx(*db_);
  for (const auto& op : ops) {
    const JobRecord& r = op.record;
    switch (op.kind) {
      case StoreOp::Kind::kQueued: {
        auto& s = statement("job_queued");
        bind_job(s, r);
        s.exec();
        break;
      }
      case StoreOp::Kind::kStarted: {
        auto& s = statement("job_started");
        s.bind(":id", r.id);
        bind_time(s, ":started_at", r.started_at);
        s.bind(":seed", static_cast<int64_t>(r.seed));
        bind_text(s, ":model", r.model);
        bind_text(s, ":model_hash", r.model_hash);
        bind_text(s, ":engine_version", r.engine_version);
        s.exec();
        break;
      }
      case StoreOp::Kind::kFinished: {
        auto& s = statement("job_finished");
        bind_job(s, r);
        s.bind(":status", status_name(r.status));
        s.bind(":result_text", r.text);
        s.bind(":token_ids", json(r.token_ids).dump());
        bind_json(s, ":logprobs", r.logprobs);
        bind_text(s, ":finish_reason", r.finish_reason);
        bind_text(s, ":error_code", r.error_code);
        bind_text(s, ":error_message", r.error_message);
        bind_time(s, ":started_at", r.started_at);
        bind_time(s, ":first_token_at", r.first_token_at);
        bind_time(s, ":finished_at", r.finished_at);
        s.bind(":prompt_tokens", r.prompt_tokens);
        s.bind(":cached_prompt_tokens", r.cached_prompt_tokens);
        s.bind(":completion_tokens", r.completion_tokens);
        bind_text(s, ":model", r.model);
        bind_text(s, ":model_hash", r.model_hash);
        bind_text(s, ":engine_version", r.engine_version);
        s.bind(":seed", static_cast<int64_t>(r.seed));
        s.exec();
        break;
      }
      case StoreOp::Kind::kMinute: {
        const MinuteStats& m = op.minute;
        auto& s = statement("minute_add");
        s.bind(":minute", static_cast<int64_t>(m.minute));
        s.bind(":instance", instance_);
        s.bind(":prompt_tokens", static_cast<int64_t>(m.prompt_tokens));
        s.bind(":generated_tokens", static_cast<int64_t>(m.generated_tokens));
        s.bind(":steps", static_cast<int64_t>(m.steps));
        s.bind(":seqs_sum", static_cast<int64_t>(m.seqs_sum));
        s.bind(":seqs_max", m.seqs_max);
        s.bind(":max_num_seqs", m.max_num_seqs);
        s.bind(":kv_blocks_used_sum", static_cast<int64_t>(m.kv_blocks_used_sum));
        s.bind(":kv_blocks_used_max", m.kv_blocks_used_max);
        s.bind(":kv_blocks_total", m.kv_blocks_total);
        s.bind(":preemptions", static_cast<int64_t>(m.preemptions));
        s.bind(":step_ms_sum", m.step_ms_sum);
        s.exec();
        break;
      }
    }
  }
  tx.commit();
}

std::optional<JobRecord> Store::job(const std::string& id) {
  auto& s = statement("job_by_id");
  s.bind(":id", id);
  if (!s.executeStep()) return std::nullopt;
  return read_job(s);
}

std::vector<JobRecord> Store::recent_jobs(int limit) {
  auto& s = statement("recent_jobs");
  s.bind(":limit", limit);
  std::vector<JobRecord> jobs;
  while (s.executeStep()) jobs.push_back(read_job(s));
  return jobs;
}

void Store::for_each_job_of_batch(const std::string& batch,
                                  const std::function<void(const JobRecord&)>& fn) {
  auto& s = statement("jobs_of_batch");
  s.bind(":batch", batch);
  while (s.executeStep()) fn(read_job(s));
}

std::optional<BatchProgress> Store::batch_progress(const std::string& batch) {
  auto& s = statement("batch_progress");
  s.bind(":batch", batch);
  if (!s.executeStep()) return std::nullopt;
  BatchProgress p;
  p.name = batch;
  p.jobs = column_int(s, "jobs");
  p.queued = column_int(s, "queued");
  p.running = column_int(s, "running");
  p.done = column_int(s, "done");
  p.failed = column_int(s, "failed");
  p.cancelled = column_int(s, "cancelled");
  p.prompt_tokens = column_int(s, "prompt_tokens");
  p.completion_tokens = column_int(s, "completion_tokens");
  p.first_queued_at = column_int(s, "first_queued_at");
  p.first_started_at = column_int(s, "first_started_at");
  p.last_finished_at = column_int(s, "last_finished_at");
  return p;
}

std::map<std::string, std::int64_t> Store::status_counts() {
  auto& s = statement("status_counts");
  std::map<std::string, std::int64_t> counts;
  while (s.executeStep()) counts[column_text(s, "status")] = column_int(s, "n");
  return counts;
}

// ---- StoreWriter -------------------------------------------------------------------------------

namespace {

// Drops the queued/started writes of jobs whose final record comes later in the same batch: in
// one transaction nobody could see those states, and a busy daemon finishes most jobs within
// one commit's worth of ops. Returns how many ops the batch had before.
std::size_t drop_superseded(std::vector<StoreOp>& batch) {
  const std::size_t n = batch.size();
  std::unordered_set<std::string_view> finished_later;
  std::vector<bool> keep(n, true);
  for (std::size_t i = n; i-- > 0;) {
    const StoreOp& op = batch[i];
    if (op.kind == StoreOp::Kind::kFinished) {
      finished_later.insert(op.record.id);
    } else if (op.kind != StoreOp::Kind::kMinute && finished_later.count(op.record.id)) {
      keep[i] = false;
    }
  }
  std::size_t kept = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (!keep[i]) continue;
    if (kept != i) batch[kept] = std::move(batch[i]);
    ++kept;
  }
  batch.resize(kept);
  return n;
}

}  // namespace

StoreWriter::StoreWriter(std::unique_ptr<Store> store, CommitSink on_commit)
    : store_(std::move(store)), on_commit_(std::move(on_commit)), thread_([this] { run(); }) {}

StoreWriter::~StoreWriter() { stop(); }

void StoreWriter::push(StoreOp op) {
  {
    std::lock_guard lock(mutex_);
    queue_.push_back(std::move(op));
    ++pushed_;
  }
  wake_.notify_one();
}

void StoreWriter::flush() {
  std::unique_lock lock(mutex_);
  const std::uint64_t target = pushed_;
  committed_.wait(lock, [&] { return committed_ops_ >= target || !thread_.joinable(); });
}

void StoreWriter::stop() {
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return;
    stopping_ = true;
  }
  wake_.notify_one();
  if (thread_.joinable()) thread_.join();
}

std::uint64_t StoreWriter::committed_ops() const {
  std::lock_guard lock(mutex_);
  return committed_ops_;
}

std::size_t StoreWriter::backlog() const {
  std::lock_guard lock(mutex_);
  return queue_.size();
}

void StoreWriter::run() {
  pthread_setname_np(pthread_self(), "awqd-store");
  std::vector<StoreOp> batch;
  std::size_t batch_ops = 0;  // ops pushed for this batch, superseded ones included
  auto backoff = std::chrono::milliseconds(0);
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return !queue_.empty() || stopping_; });
      if (queue_.empty() && stopping_) break;
      // Whatever queued while the last commit ran goes into this one: batching without delay.
      if (batch.empty()) {
        batch.swap(queue_);
        batch_ops = drop_superseded(batch);
      }
    }
    try {
      store_->write(batch);
    } catch (const std::exception& e) {
      backoff = std::min(std::chrono::milliseconds(5000),
                         std::max(backoff * 2, std::chrono::milliseconds(50)));
      spdlog::error("store: a commit of {} writes failed: {}; retrying in {} ms", batch.size(),
                    e.what(), backoff.count());
      std::unique_lock lock(mutex_);
      // A failing disk must not keep the daemon from stopping forever: give up after the wait.
      if (wake_.wait_for(lock, backoff, [&] { return stopping_; })) {
        spdlog::critical("store: stopping with {} writes not committed",
                         batch.size() + queue_.size());
        break;
      }
      continue;
    }
    backoff = std::chrono::milliseconds(0);
    std::vector<StreamAck> acks;
    for (auto& op : batch) {
      if (op.ack) acks.push_back(std::move(*op.ack));
    }
    batch.clear();
    if (!acks.empty() && on_commit_) on_commit_(std::move(acks));
    {
      std::lock_guard lock(mutex_);
      committed_ops_ += batch_ops;
    }
    committed_.notify_all();
  }
  std::lock_guard lock(mutex_);
  committed_ops_ = pushed_;  // wake flush() callers: nothing more will be committed
  committed_.notify_all();
}

}  // namespace awqd
