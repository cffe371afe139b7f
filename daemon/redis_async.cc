#include "daemon/redis_async.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <spdlog/spdlog.h>

#include <random>

#include "daemon/asio.h"

namespace awqd {

namespace asio = boost::asio;

namespace {
constexpr std::chrono::milliseconds kFirstBackoff{100};
constexpr std::chrono::milliseconds kMaxBackoff{5000};
constexpr std::chrono::seconds kConnectTimeout{5};
}  // namespace

// The adapter: hiredis's event hooks on an Asio stream_descriptor. hiredis owns the file
// descriptor; the stream_descriptor only watches it and releases it (never closes it) in cleanup.
// The object keeps itself alive (keep_alive) until hiredis calls cleanup, and each pending wait
// holds a reference, so a wait that completes after cleanup finds `ac` null and does nothing.
struct RedisAsync::Events : std::enable_shared_from_this<RedisAsync::Events> {
  Events(asio::io_context& io, redisAsyncContext* context)
      : descriptor(io, context->c.fd), ac(context) {}

  asio::posix::stream_descriptor descriptor;
  redisAsyncContext* ac;
  bool want_read = false, want_write = false;
  bool read_armed = false, write_armed = false;
  std::shared_ptr<Events> keep_alive;

  void arm_read() {
    if (read_armed || !ac || !want_read) return;
    read_armed = true;
    descriptor.async_wait(asio::posix::stream_descriptor::wait_read,
                          [self = shared_from_this()](const boost::system::error_code& ec) {
                            self->read_armed = false;
                            if (ec || !self->ac || !self->want_read) return;
                            redisAsyncHandleRead(self->ac);
                            self->arm_read();
                          });
  }
  void arm_write() {
    if (write_armed || !ac || !want_write) return;
    write_armed = true;
    descriptor.async_wait(asio::posix::stream_descriptor::wait_write,
                          [self = shared_from_this()](const boost::system::error_code& ec) {
                            self->write_armed = false;
                            if (ec || !self->ac || !self->want_write) return;
                            redisAsyncHandleWrite(self->ac);
                            self->arm_write();
                          });
  }

  static Events* of(void* privdata) { return static_cast<Events*>(privdata); }
  static void add_read(void* p) {
    of(p)->want_read = true;
    of(p)->arm_read();
  }
  static void del_read(void* p) { of(p)->want_read = false; }
  static void add_write(void* p) {
    of(p)->want_write = true;
    of(p)->arm_write();
  }
  static void del_write(void* p) { of(p)->want_write = false; }
  static void cleanup(void* p) {
    const std::shared_ptr<Events> self = std::move(of(p)->keep_alive);
    self->ac = nullptr;
    self->want_read = self->want_write = false;
    boost::system::error_code ignored;
    self->descriptor.cancel(ignored);
    self->descriptor.release();
  }

  static void attach(asio::io_context& io, redisAsyncContext* ac) {
    auto events = std::make_shared<Events>(io, ac);
    events->keep_alive = events;
    ac->ev.data = events.get();
    ac->ev.addRead = add_read;
    ac->ev.delRead = del_read;
    ac->ev.addWrite = add_write;
    ac->ev.delWrite = del_write;
    ac->ev.cleanup = cleanup;
  }
};

RedisAsync::RedisAsync(asio::io_context& io, RedisEndpoint endpoint, std::string name)
    : io_(io),
      endpoint_(std::move(endpoint)),
      name_(std::move(name)),
      retry_timer_(io),
      connect_timer_(io),
      connected_signal_(io, asio::steady_timer::time_point::max()) {}

RedisAsync::~RedisAsync() {
  *alive_ = false;
  stop();
}

void RedisAsync::start() {
  if (running_) return;
  running_ = true;
  connect();
}

void RedisAsync::stop() {
  running_ = false;
  retry_timer_.cancel();
  connect_timer_.cancel();
  drop_context();
  connected_signal_.cancel();
}

void RedisAsync::drop_context() {
  connected_ = false;
  if (ac_ == nullptr) return;
  redisAsyncContext* ac = ac_;
  ac_ = nullptr;
  ac->data = nullptr;  // the disconnect callback fired by the free below must not reconnect
  redisAsyncFree(ac);  // pending callbacks complete with a null reply: kLost
}

void RedisAsync::connect() {
  if (!running_) return;
  redisAsyncContext* ac = endpoint_.unix_path.empty()
                              ? redisAsyncConnect(endpoint_.host.c_str(), endpoint_.port)
                              : redisAsyncConnectUnix(endpoint_.unix_path.c_str());
  if (ac == nullptr) {
    connection_failed("out of memory");
    return;
  }
  if (ac->err) {
    const std::string why = ac->errstr;
    redisAsyncFree(ac);
    connection_failed(why);
    return;
  }
  ac_ = ac;
  ac->data = this;
  redisEnableKeepAlive(&ac->c);
  Events::attach(io_, ac);  // before the connect callback: setting it arms the first write wait
  redisAsyncSetConnectCallback(ac, &RedisAsync::on_connect);
  redisAsyncSetDisconnectCallback(ac, &RedisAsync::on_disconnect);
  connect_timer_.expires_after(kConnectTimeout);
  connect_timer_.async_wait([this, alive = alive_, ac](const boost::system::error_code& ec) {
    if (ec || !*alive || ac_ != ac || connected_) return;
    drop_context();
    connection_failed("no answer within " + std::to_string(kConnectTimeout.count()) + " s");
  });
}

void RedisAsync::on_connect(const redisAsyncContext* ac, int status) {
  auto* self = static_cast<RedisAsync*>(ac->data);
  if (self == nullptr) return;
  if (status != REDIS_OK) {
    // hiredis frees the context right after this callback returns.
    const std::string why = ac->errstr ? ac->errstr : "connect failed";
    self->ac_ = nullptr;
    asio::post(self->io_, [self, alive = self->alive_, why] {
      if (*alive) self->connection_failed(why);
    });
    return;
  }
  asio::post(self->io_, [self, alive = self->alive_] {
    if (*alive) self->handshake();
  });
}

void RedisAsync::on_disconnect(const redisAsyncContext* ac, int status) {
  auto* self = static_cast<RedisAsync*>(ac->data);
  if (self == nullptr) return;
  const std::string why = ac->errstr && ac->err ? ac->errstr : "closed by the server";
  self->ac_ = nullptr;  // hiredis frees the context after this callback
  self->connected_ = false;
  asio::post(self->io_, [self, alive = self->alive_, why] {
    if (*alive) self->connection_failed("connection lost: " + why);
  });
}

// AUTH and SELECT when the URL asks for them, then a PING: the connection counts as up only
// once the server has answered.
void RedisAsync::handshake() {
  if (endpoint_.password.size()) {
    send({"AUTH", endpoint_.password}, [this](RedisReply r) {
      if (r.error() && !r.lost_connection())
        spdlog::error("redis[{}]: AUTH failed: {}", name_, r.str);
    });
  }
  if (endpoint_.db != 0) send({"SELECT", std::to_string(endpoint_.db)}, [](RedisReply) {});
  send({"PING"}, [this](RedisReply r) {
    if (r.lost_connection()) return;  // the disconnect path reconnects
    if (r.error()) {                  // NOAUTH, LOADING, ...: try again later
      drop_context();
      connection_failed(r.str);
      return;
    }
    connect_timer_.cancel();
    connected_ = true;
    if (backoff_.count() > 0)
      spdlog::info("redis[{}]: connected to {}", name_, endpoint_.describe());
    backoff_ = std::chrono::milliseconds(0);
    if (on_connected_) on_connected_();
    connected_signal_.cancel();
  });
}

void RedisAsync::connection_failed(const std::string& why) {
  connected_ = false;
  connect_timer_.cancel();
  if (!running_) return;
  backoff_ = backoff_.count() == 0 ? kFirstBackoff : std::min(kMaxBackoff, backoff_ * 2);
  spdlog::warn("redis[{}]: {} ({}): retrying in {:.1f} s", name_, endpoint_.describe(), why,
               backoff_.count() / 1000.0);
  schedule_reconnect();
}

void RedisAsync::schedule_reconnect() {
  // Jitter of +-20% keeps many daemons from reconnecting in lockstep after a Redis restart.
  static thread_local std::minstd_rand rng{std::random_device{}()};
  const auto jitter = std::uniform_real_distribution<double>(0.8, 1.2)(rng);
  retry_timer_.expires_after(
      std::chrono::milliseconds(static_cast<long>(backoff_.count() * jitter)));
  retry_timer_.async_wait([this, alive = alive_](const boost::system::error_code& ec) {
    if (!ec && *alive) connect();
  });
}

namespace {
// hiredis's privdata for one command: where to complete it and what to call.
struct Pending {
  asio::io_context* io;
  RedisAsync::Callback done;
};

void complete(Pending* pending, RedisReply reply) {
  asio::post(*pending->io, [pending, reply = std::move(reply)]() mutable {
    pending->done(std::move(reply));
    delete pending;
  });
}
}  // namespace

// Called by hiredis with the reply, or with null when the connection is gone. The reply is
// copied (hiredis frees it on return) and the callback runs later on the io_context, outside
// hiredis, so that it may send commands or stop the connection freely.
void RedisAsync::on_reply(redisAsyncContext*, void* reply, void* privdata) {
  complete(static_cast<Pending*>(privdata), RedisReply::from(static_cast<redisReply*>(reply)));
}

void RedisAsync::send(const std::vector<std::string>& args, Callback done) {
  auto* pending = new Pending{&io_, std::move(done)};
  if (ac_ == nullptr) {
    complete(pending, RedisReply::lost("not connected"));
    return;
  }
  RedisArgv a(args);  // not const: hiredis takes const char** (0.14)
  if (redisAsyncCommandArgv(ac_, &RedisAsync::on_reply, pending, a.argc(), a.argv.data(),
                            a.argvlen.data()) != REDIS_OK) {
    complete(pending, RedisReply::lost("the connection is closing"));
  }
}

asio::awaitable<RedisReply> RedisAsync::command(std::vector<std::string> args) {
  co_return co_await async_command(std::move(args), asio::use_awaitable);
}

asio::awaitable<void> RedisAsync::wait_connected() {
  while (!connected_ && running_) {
    boost::system::error_code ec;
    co_await connected_signal_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
}

}  // namespace awqd
