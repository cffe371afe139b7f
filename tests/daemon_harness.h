// Test harness for the daemon: private redis-server processes, a child-process runner, unique
// key prefixes, and a polling helper. Used by the Redis, daemon and end-to-end tests.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "daemon/redis.h"

namespace awqd::test {

// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
int free_port();

// A fresh temporary directory, removed with the object.
struct TempDir {
  TempDir();
  ~TempDir();
  std::filesystem::path path;
};

// A redis-server of our own on a free port, for tests that stop or restart it. With
// `persistent`, it writes an append-only file (fsync always) so that a restart keeps the data,
// as a production Redis does.
class RedisServer {
 public:
  // On `port`, or on a free one when 0.
  explicit RedisServer(bool persistent = true, int port = 0);
  ~RedisServer();
  void start();
  void stop();  // SIGTERM, and wait (Redis saves nothing extra: the AOF is already on disk)
  void kill9();
  std::string url() const { return "redis://127.0.0.1:" + std::to_string(port_); }
  int port() const { return port_; }
  pid_t pid() const { return pid_; }

 private:
  TempDir dir_;
  int port_;
  bool persistent_;
  pid_t pid_ = -1;
};

// The Redis for tests that only need one: $AWQD_TEST_REDIS_URL (scripts/test.sh starts it), else
// a private server started on first use and kept for the process.
std::string shared_redis_url();

// A key prefix no other test (or test process) uses: "t<pid>-<n>-<name>:".
std::string unique_prefix(const std::string& name);

// A child process; killed (SIGKILL) with the object unless waited for.
class Child {
 public:
  Child(const std::string& binary, const std::vector<std::string>& args,
        const std::filesystem::path& log_file = {});
  ~Child();
  pid_t pid() const { return pid_; }
  void signal(int sig);
  // Waits for the exit; returns the exit code, or 128 + signal. -1 on timeout.
  int wait(std::chrono::milliseconds timeout = std::chrono::seconds(60));
  bool running();

 private:
  pid_t pid_ = -1;
  int status_ = -1;
};

// The notices on a results stream (XADD ... id <id> status <status>), counted per job id.
std::map<std::string, int> notices_per_id(RedisSync& redis, const std::string& results_stream);

// Entries of `stream` delivered to the awqd group and not acknowledged; -1 without a group.
long long pending_entries(RedisSync& redis, const std::string& stream);

// Runs a command and returns its exit code, with its stdout and stderr together in `out`.
int run_command(const std::vector<std::string>& argv, std::string* out = nullptr);

// Polls `done` every 20 ms until it is true or `timeout` passes; returns its last value.
bool eventually(const std::function<bool()>& done,
                std::chrono::milliseconds timeout = std::chrono::seconds(30));

}  // namespace awqd::test
