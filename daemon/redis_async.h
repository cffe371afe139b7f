// An asynchronous Redis connection on a Boost.Asio io_context: hiredis's async API driven by our
// own adapter (hiredis 0.14 ships none for Asio). The socket is watched with a
// posix::stream_descriptor whose read/write waits implement hiredis's addRead/delRead/addWrite/
// delWrite/cleanup hooks, so replies arrive as io_context events: no polling, no extra thread.
//
// The connection reconnects by itself with exponential backoff (100 ms doubling to 5 s, with
// jitter) whenever it drops or cannot be made. Commands sent while it is down, or whose reply is
// lost with it, complete with a RedisReply of type kLost; callers wait with wait_connected() and
// retry what must happen. Every callback and awaitable completes on the io_context's thread,
// never inside hiredis.
//
// Threading: one io_context thread owns the object; no method is thread-safe.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "daemon/asio.h"
#include "daemon/redis.h"

struct redisAsyncContext;

namespace awqd {

class RedisAsync {
 public:
  using Callback = std::function<void(RedisReply)>;

  // `name` appears in log lines ("redis[reader]: connection lost, retrying in 0.4 s").
  RedisAsync(boost::asio::io_context& io, RedisEndpoint endpoint, std::string name);
  ~RedisAsync();
  RedisAsync(const RedisAsync&) = delete;
  RedisAsync& operator=(const RedisAsync&) = delete;

  void start();  // connects now and whenever the connection is lost, until stop()
  void stop();   // disconnects for good; outstanding commands complete with kLost
  bool connected() const { return connected_; }
  const RedisEndpoint& endpoint() const { return endpoint_; }

  // Sends a command; `done` runs on the io_context with its reply.
  void send(const std::vector<std::string>& args, Callback done);

  // The same as an awaitable.
  template <typename Token>
  auto async_command(std::vector<std::string> args, Token&& token) {
    return boost::asio::async_initiate<Token, void(RedisReply)>(
        [this](auto handler, std::vector<std::string> argv) {
          auto shared = std::make_shared<decltype(handler)>(std::move(handler));
          send(argv, [shared](RedisReply reply) { (*shared)(std::move(reply)); });
        },
        token, std::move(args));
  }
  boost::asio::awaitable<RedisReply> command(std::vector<std::string> args);

  // Completes once the connection is up (at once when it is) or stop() was called.
  boost::asio::awaitable<void> wait_connected();

  // Runs after every successful (re)connection, before waiters of wait_connected() resume.
  void on_connected(std::function<void()> hook) { on_connected_ = std::move(hook); }

 private:
  struct Events;
  static void on_connect(const redisAsyncContext* ac, int status);
  static void on_disconnect(const redisAsyncContext* ac, int status);
  static void on_reply(redisAsyncContext* ac, void* reply, void* privdata);

  void connect();
  void handshake();
  void connection_failed(const std::string& why);
  void schedule_reconnect();
  void drop_context();

  boost::asio::io_context& io_;
  RedisEndpoint endpoint_;
  std::string name_;
  redisAsyncContext* ac_ = nullptr;
  bool connected_ = false;
  bool running_ = false;
  std::chrono::milliseconds backoff_{0};
  boost::asio::steady_timer retry_timer_;
  boost::asio::steady_timer connect_timer_;     // gives up on a connect that hangs
  boost::asio::steady_timer connected_signal_;  // never expires; cancel() wakes waiters
  std::function<void()> on_connected_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);  // guards posted callbacks
};

}  // namespace awqd
