// The hiredis-on-Asio client (daemon/redis_async.h) against a real redis-server: replies in order,
// awaitable commands, and reconnection with backoff when the server goes away and comes back.
#include <gtest/gtest.h>

#include "daemon/asio.h"
#include "daemon/redis_async.h"
#include "tests/daemon_harness.h"

namespace awqd {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using Args = std::vector<std::string>;

asio::awaitable<void> sleep_for(asio::io_context& io, std::chrono::milliseconds d) {
  asio::steady_timer t(io, d);
  boost::system::error_code ec;
  co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
}

// Runs `body` as a coroutine on a fresh io_context until it returns (or 30 s pass).
void run_coroutine(asio::io_context& io, std::function<asio::awaitable<void>()> body) {
  bool finished = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        co_await body();
        finished = true;
        io.stop();
      },
      [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
      });
  io.run_for(30s);
  EXPECT_TRUE(finished) << "the test coroutine did not finish in 30 s";
}

TEST(RedisAsync, RepliesArriveInOrder) {
  asio::io_context io;
  RedisAsync redis(io, parse_redis_url(test::shared_redis_url()), "test");
  const std::string key = test::unique_prefix("order") + "counter";
  std::vector<long long> values;
  redis.start();
  run_coroutine(io, [&]() -> asio::awaitable<void> {
    co_await redis.wait_connected();
    EXPECT_TRUE(redis.connected());
    for (int i = 0; i < 1000; ++i)
      redis.send({"INCR", key}, [&](RedisReply r) { values.push_back(r.integer); });
    const Args get{"GET", key};
    const RedisReply last =
        co_await redis.command(get);  // after all 1000: one connection, in order
    EXPECT_EQ(last.str, "1000");
    const Args del{"DEL", key};
    co_await redis.command(del);
    const Args bad{"NOSUCHCOMMAND"};
    const RedisReply err = co_await redis.command(bad);
    EXPECT_EQ(err.type, RedisReply::Type::kError);
    EXPECT_FALSE(err.lost_connection());
  });
  ASSERT_EQ(values.size(), 1000u);
  for (int i = 0; i < 1000; ++i) EXPECT_EQ(values[i], i + 1);
}

TEST(RedisAsync, ConvertsEveryReplyType) {
  asio::io_context io;
  RedisAsync redis(io, parse_redis_url(test::shared_redis_url()), "test");
  const std::string p = test::unique_prefix("types");
  redis.start();
  run_coroutine(io, [&]() -> asio::awaitable<void> {
    co_await redis.wait_connected();
    const Args set{"SET", p + "k", std::string("a\0b", 3)};
    EXPECT_EQ((co_await redis.command(set)).type, RedisReply::Type::kStatus);
    const Args get{"GET", p + "k"};
    EXPECT_EQ((co_await redis.command(get)).str, std::string("a\0b", 3));  // binary safe
    const Args missing{"GET", p + "missing"};
    EXPECT_TRUE((co_await redis.command(missing)).nil());
    const Args rpush{"RPUSH", p + "l", "x", "y"};
    EXPECT_EQ((co_await redis.command(rpush)).integer, 2);
    const Args lrange{"LRANGE", p + "l", "0", "-1"};
    const RedisReply list = co_await redis.command(lrange);
    EXPECT_EQ(list.elements.size(), 2u);
    if (list.elements.size() == 2) {
      EXPECT_EQ(list.elements[1].str, "y");
    }
    const Args del{"DEL", p + "k", p + "l"};
    co_await redis.command(del);
  });
}

TEST(RedisAsync, ReconnectsAfterARedisRestart) {
  test::RedisServer server;
  asio::io_context io;
  RedisAsync redis(io, parse_redis_url(server.url()), "test");
  int reconnections = 0;
  redis.on_connected([&] { ++reconnections; });
  redis.start();
  run_coroutine(io, [&]() -> asio::awaitable<void> {
    co_await redis.wait_connected();
    const Args set{"SET", "kept", "1"};
    co_await redis.command(set);
    server.stop();
    const Args ping{"PING"};
    const RedisReply lost = co_await redis.command(ping);
    EXPECT_TRUE(lost.lost_connection()) << lost.str;
    co_await sleep_for(io, 300ms);  // a few failed reconnects with backoff
    EXPECT_FALSE(redis.connected());
    server.start();
    co_await redis.wait_connected();
    const Args get{"GET", "kept"};
    EXPECT_EQ((co_await redis.command(get)).str, "1");  // appendonly: the data survived
  });
  EXPECT_EQ(reconnections, 2);
}

TEST(RedisAsync, StartsWithoutAServerAndConnectsWhenOneAppears) {
  const int port = test::free_port();
  asio::io_context io;
  RedisAsync redis(io, parse_redis_url("redis://127.0.0.1:" + std::to_string(port)), "test");
  redis.start();
  io.run_for(400ms);  // connection refused, a few times, with backoff
  EXPECT_FALSE(redis.connected());
  bool got_lost = false;
  redis.send({"PING"}, [&](RedisReply r) { got_lost = r.lost_connection(); });
  io.restart();
  io.run_for(50ms);
  EXPECT_TRUE(got_lost) << "a command without a connection completes at once, as lost";
  test::RedisServer server(/*persistent=*/false, port);
  io.restart();
  run_coroutine(io, [&]() -> asio::awaitable<void> {
    co_await redis.wait_connected();
    const Args ping{"PING"};
    EXPECT_EQ((co_await redis.command(ping)).str, "PONG");
  });
}

TEST(RedisAsync, StopCompletesOutstandingCommands) {
  asio::io_context io;
  RedisAsync redis(io, parse_redis_url(test::shared_redis_url()), "test");
  redis.start();
  std::string outcome;
  run_coroutine(io, [&]() -> asio::awaitable<void> {
    co_await redis.wait_connected();
    // BLPOP on a key nobody pushes: the reply can only come from stop().
    redis.send({"BLPOP", test::unique_prefix("stop") + "never", "5"},
               [&](RedisReply r) { outcome = r.lost_connection() ? "lost" : "reply"; });
    co_await sleep_for(io, 100ms);
    redis.stop();
    co_await sleep_for(io, 50ms);
  });
  EXPECT_EQ(outcome, "lost");
}

}  // namespace
}  // namespace awqd
