// Redis basics shared by the daemon's asynchronous client (redis_async.h) and the blocking client
// the CLI commands use (RedisSync below): the server address, replies as plain values, and the
// key names of the protocol (SPEC section 4).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

struct redisReply;
struct redisContext;

namespace awqd {

// redis://[:password@]host[:port][/db] or unix:///path/to/redis.sock[?db=N]
struct RedisEndpoint {
  std::string host = "127.0.0.1";
  int port = 6379;
  std::string unix_path;  // set for unix:// URLs
  std::string password;
  int db = 0;

  std::string describe() const;  // the address without the password
};

// Throws std::invalid_argument with a clear message for a malformed URL.
RedisEndpoint parse_redis_url(const std::string& url);

// A reply copied out of hiredis (which frees its own after the callback).
struct RedisReply {
  enum class Type { kNil, kString, kStatus, kError, kInteger, kArray, kLost };
  Type type = Type::kNil;
  std::string str;  // kString, kStatus, kError; for kLost, why the connection went away
  long long integer = 0;
  std::vector<RedisReply> elements;

  static RedisReply lost(std::string why) { return {Type::kLost, std::move(why), 0, {}}; }
  static RedisReply from(const ::redisReply* r);  // null means the connection was lost

  bool lost_connection() const { return type == Type::kLost; }
  bool error() const { return type == Type::kError || type == Type::kLost; }
  bool nil() const { return type == Type::kNil; }
  // "ERR ...", "NOGROUP ...": true when this is a server error starting with `prefix`.
  bool error_is(std::string_view prefix) const;
  // Integer value of an integer reply or of a string holding a number; `fallback` otherwise.
  long long as_int(long long fallback = 0) const;
};

// Key names of the protocol under one prefix (default "awqd:").
struct RedisKeys {
  std::string prefix = "awqd:";

  std::string jobs() const { return prefix + "jobs"; }
  // The express lane: jobs with priority > 0 that must overtake a backlog on jobs() (README).
  std::string priority_jobs() const { return prefix + "jobs:priority"; }
  std::string results() const { return prefix + "results"; }
  std::string dead() const { return prefix + "dead"; }
  std::string result(std::string_view id) const { return cat("result:", id); }
  std::string status(std::string_view id) const { return cat("status:", id); }
  std::string cancel(std::string_view id) const { return cat("cancel:", id); }
  std::string cancel_batch(std::string_view batch) const { return cat("cancel-batch:", batch); }
  std::string last_error(std::string_view id) const { return cat("last-error:", id); }
  std::string batch(std::string_view name) const { return cat("batch:", name); }
  std::string batch_ids(std::string_view name) const { return cat("batch-ids:", name); }
  static constexpr const char* kGroup = "awqd";

 private:
  std::string cat(std::string_view kind, std::string_view name) const {
    std::string k;
    k.reserve(prefix.size() + kind.size() + name.size());
    return k.append(prefix).append(kind).append(name);
  }
};

// The stream entry id's time part: "1700000000000-3" -> 1700000000000 (ms since the epoch).
std::int64_t entry_time_ms(std::string_view entry_id);

// Our consumer group's line of an XINFO GROUPS reply.
struct GroupInfo {
  long long pending = 0;  // delivered and not acknowledged
  long long lag = -1;     // not yet delivered; -1 when the server does not know (Redis < 7)
  long long consumers = 0;
};
std::optional<GroupInfo> find_group(const RedisReply& xinfo_groups, std::string_view group);

// A command's arguments as hiredis takes them (argc, argv, argvlen); views into `args`.
struct RedisArgv {
  explicit RedisArgv(const std::vector<std::string>& args);
  int argc() const { return static_cast<int>(argv.size()); }
  std::vector<const char*> argv;
  std::vector<size_t> argvlen;
};

// Redis could not be reached, or the connection broke.
struct RedisUnavailable : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A blocking client for the CLI and the tests: one connection, commands with a timeout, and
// pipelining for bulk work. Throws RedisUnavailable when the server cannot be reached.
class RedisSync {
 public:
  explicit RedisSync(const RedisEndpoint& endpoint,
                     std::chrono::milliseconds timeout = std::chrono::seconds(5));
  ~RedisSync();
  RedisSync(const RedisSync&) = delete;
  RedisSync& operator=(const RedisSync&) = delete;

  RedisReply command(const std::vector<std::string>& args);
  // Sends every command, then reads every reply: one round trip for the lot.
  std::vector<RedisReply> pipeline(const std::vector<std::vector<std::string>>& commands);
  // A command that may block server-side for up to `block` (XREAD BLOCK): the read timeout grows
  // by that much for this call.
  RedisReply blocking_command(const std::vector<std::string>& args,
                              std::chrono::milliseconds block);

 private:
  void append(const std::vector<std::string>& args);
  RedisReply read_reply();

  redisContext* ctx_ = nullptr;
  std::chrono::milliseconds timeout_;
  std::string where_;
};

}  // namespace awqd
