#include "tests/daemon_harness.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <thread>

namespace awqd::test {

int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

TempDir::TempDir() {
  char tmpl[] = "/tmp/awqd-test-XXXXXX";
  path = mkdtemp(tmpl);
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
}

RedisServer::RedisServer(bool persistent, int port)
    : port_(port ? port : free_port()), persistent_(persistent) {
  start();
}

RedisServer::~RedisServer() { kill9(); }

void RedisServer::start() {
  std::vector<std::string> args{"redis-server",
                                "--port",
                                std::to_string(port_),
                                "--bind",
                                "127.0.0.1",
                                "--dir",
                                dir_.path.string(),
                                "--save",
                                "",
                                "--logfile",
                                (dir_.path / "redis.log").string()};
  if (persistent_) {
    args.insert(args.end(), {"--appendonly", "yes", "--appendfsync", "always"});
  } else {
    args.insert(args.end(), {"--appendonly", "no"});
  }
  const pid_t pid = fork();
  if (pid == 0) {
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execvp("redis-server", argv.data());
    _exit(127);
  }
  pid_ = pid;
  const bool up = eventually(
      [&] {
        try {
          RedisSync probe(parse_redis_url(url()), std::chrono::milliseconds(200));
          return probe.command({"PING"}).str == "PONG";
        } catch (const RedisUnavailable&) {
          return false;
        }
      },
      std::chrono::seconds(10));
  if (!up) throw std::runtime_error("redis-server did not start on port " + std::to_string(port_));
}

void RedisServer::stop() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

void RedisServer::kill9() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

std::string shared_redis_url() {
  if (const char* env = std::getenv("AWQD_TEST_REDIS_URL"); env && *env) return env;
  static std::unique_ptr<RedisServer> server = std::make_unique<RedisServer>(false);
  return server->url();
}

std::string unique_prefix(const std::string& name) {
  static std::atomic<int> n{0};
  return "t" + std::to_string(getpid()) + "-" + std::to_string(n++) + "-" + name + ":";
}

Child::Child(const std::string& binary, const std::vector<std::string>& args,
             const std::filesystem::path& log_file) {
  pid_ = fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    if (!log_file.empty()) {
      const int fd = open(log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
      }
    }
    std::vector<std::string> all{binary};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(binary.c_str(), argv.data());
    _exit(127);
  }
}

Child::~Child() {
  if (pid_ > 0 && status_ < 0) {
    ::kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
}

void Child::signal(int sig) {
  if (pid_ > 0 && status_ < 0) ::kill(pid_, sig);
}

bool Child::running() {
  if (status_ >= 0) return false;
  int st = 0;
  if (waitpid(pid_, &st, WNOHANG) == pid_) {
    status_ = st;
    return false;
  }
  return true;
}

int Child::wait(std::chrono::milliseconds timeout) {
  if (!eventually([&] { return !running(); }, timeout)) return -1;
  return WIFEXITED(status_) ? WEXITSTATUS(status_) : 128 + WTERMSIG(status_);
}

std::map<std::string, int> notices_per_id(RedisSync& redis, const std::string& results_stream) {
  std::map<std::string, int> n;
  for (const auto& e : redis.command({"XRANGE", results_stream, "-", "+"}).elements) {
    const auto& f = e.elements[1].elements;
    for (std::size_t i = 0; i + 1 < f.size(); i += 2) {
      if (f[i].str == "id") ++n[f[i + 1].str];
    }
  }
  return n;
}

long long pending_entries(RedisSync& redis, const std::string& stream) {
  const RedisReply r = redis.command({"XPENDING", stream, RedisKeys::kGroup});
  return r.elements.empty() ? -1 : r.elements[0].integer;
}

int run_command(const std::vector<std::string>& argv, std::string* out) {
  int fds[2];
  if (pipe(fds) != 0) return -1;
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], 1);
    dup2(fds[1], 2);
    close(fds[0]);
    close(fds[1]);
    std::vector<char*> a;
    for (const auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
    a.push_back(nullptr);
    execvp(a[0], a.data());
    _exit(127);
  }
  close(fds[1]);
  std::string text;
  char buf[65536];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof(buf))) > 0) text.append(buf, static_cast<std::size_t>(n));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (out) *out = std::move(text);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

bool eventually(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (done()) return true;
    if (std::chrono::steady_clock::now() > deadline) return done();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace awqd::test
