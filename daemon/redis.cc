#include "daemon/redis.h"

#include <hiredis/hiredis.h>
#include <sys/time.h>

#include <charconv>
#include <stdexcept>

namespace awqd {
namespace {

bool parse_int(std::string_view s, int& out) {
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size();
}

timeval to_timeval(std::chrono::milliseconds ms) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
  return tv;
}

}  // namespace

std::string RedisEndpoint::describe() const {
  std::string url =
      unix_path.empty() ? "redis://" + host + ":" + std::to_string(port) : "unix://" + unix_path;
  if (db != 0) url.append(unix_path.empty() ? "/" : "?db=").append(std::to_string(db));
  return url;
}

RedisEndpoint parse_redis_url(const std::string& url) {
  const auto bad = [&](const std::string& why) {
    return std::invalid_argument("bad Redis URL \"" + url + "\": " + why +
                                 " (expected redis://[:password@]host[:port][/db] or "
                                 "unix:///path/to/socket[?db=N])");
  };
  RedisEndpoint ep;
  std::string_view rest(url);
  if (rest.starts_with("unix://")) {
    rest.remove_prefix(7);
    if (const auto q = rest.find("?db="); q != std::string_view::npos) {
      if (!parse_int(rest.substr(q + 4), ep.db) || ep.db < 0)
        throw bad("the database is not a number");
      rest = rest.substr(0, q);
    }
    if (rest.empty() || rest.front() != '/') throw bad("the socket path must be absolute");
    ep.unix_path = std::string(rest);
    return ep;
  }
  if (!rest.starts_with("redis://")) throw bad("unknown scheme");
  rest.remove_prefix(8);
  if (const auto at = rest.rfind('@'); at != std::string_view::npos) {
    std::string_view auth = rest.substr(0, at);
    if (const auto colon = auth.find(':'); colon != std::string_view::npos)
      auth.remove_prefix(colon + 1);
    ep.password = std::string(auth);
    rest.remove_prefix(at + 1);
  }
  if (const auto slash = rest.find('/'); slash != std::string_view::npos) {
    const auto db = rest.substr(slash + 1);
    if (!db.empty() && (!parse_int(db, ep.db) || ep.db < 0))
      throw bad("the database is not a number");
    rest = rest.substr(0, slash);
  }
  if (const auto colon = rest.rfind(':');
      colon != std::string_view::npos && rest.find(']') == std::string_view::npos) {
    if (!parse_int(rest.substr(colon + 1), ep.port) || ep.port <= 0 || ep.port > 65535) {
      throw bad("the port is not a number in 1..65535");
    }
    rest = rest.substr(0, colon);
  }
  if (!rest.empty()) ep.host = std::string(rest);
  return ep;
}

RedisReply RedisReply::from(const ::redisReply* r) {
  if (r == nullptr) return lost("connection lost");
  RedisReply out;
  switch (r->type) {
    case REDIS_REPLY_STRING:
      out.type = Type::kString;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_STATUS:
      out.type = Type::kStatus;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ERROR:
      out.type = Type::kError;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_INTEGER:
      out.type = Type::kInteger;
      out.integer = r->integer;
      break;
    case REDIS_REPLY_ARRAY:
      out.type = Type::kArray;
      out.elements.reserve(r->elements);
      for (size_t i = 0; i < r->elements; ++i) out.elements.push_back(from(r->element[i]));
      break;
    default:
      out.type = Type::kNil;
  }
  return out;
}

bool RedisReply::error_is(std::string_view prefix) const {
  return type == Type::kError && std::string_view(str).starts_with(prefix);
}

long long RedisReply::as_int(long long fallback) const {
  if (type == Type::kInteger) return integer;
  if (type == Type::kString || type == Type::kStatus) {
    long long v = 0;
    const auto [end, ec] = std::from_chars(str.data(), str.data() + str.size(), v);
    if (ec == std::errc() && end == str.data() + str.size()) return v;
  }
  return fallback;
}

std::int64_t entry_time_ms(std::string_view entry_id) {
  std::int64_t ms = 0;
  const auto dash = entry_id.find('-');
  const auto head = entry_id.substr(0, dash);
  std::from_chars(head.data(), head.data() + head.size(), ms);
  return ms;
}

std::optional<GroupInfo> find_group(const RedisReply& xinfo_groups, std::string_view group) {
  for (const auto& g : xinfo_groups.elements) {
    GroupInfo info;
    bool ours = false;
    for (std::size_t i = 0; i + 1 < g.elements.size(); i += 2) {
      const std::string& field = g.elements[i].str;
      const RedisReply& value = g.elements[i + 1];
      if (field == "name") ours = value.str == group;
      if (field == "pending") info.pending = value.integer;
      if (field == "consumers") info.consumers = value.integer;
      if (field == "lag" && value.type == RedisReply::Type::kInteger) info.lag = value.integer;
    }
    if (ours) return info;
  }
  return std::nullopt;
}

RedisArgv::RedisArgv(const std::vector<std::string>& args) {
  argv.reserve(args.size());
  argvlen.reserve(args.size());
  for (const auto& a : args) {
    argv.push_back(a.data());
    argvlen.push_back(a.size());
  }
}

RedisSync::RedisSync(const RedisEndpoint& endpoint, std::chrono::milliseconds timeout)
    : timeout_(timeout), where_(endpoint.describe()) {
  const timeval tv = to_timeval(timeout);
  ctx_ = endpoint.unix_path.empty()
             ? redisConnectWithTimeout(endpoint.host.c_str(), endpoint.port, tv)
             : redisConnectUnixWithTimeout(endpoint.unix_path.c_str(), tv);
  if (ctx_ == nullptr || ctx_->err) {
    const std::string why = ctx_ ? ctx_->errstr : "out of memory";
    if (ctx_) redisFree(ctx_);
    ctx_ = nullptr;
    throw RedisUnavailable(
        "cannot reach Redis at " + where_ + ": " + why +
        " (is redis-server running? check --redis or the `redis` key of the config)");
  }
  redisSetTimeout(ctx_, tv);
  if (!endpoint.password.empty()) {
    const auto r = command({"AUTH", endpoint.password});
    if (r.error()) throw RedisUnavailable("Redis at " + where_ + " refused the password: " + r.str);
  }
  if (endpoint.db != 0) {
    const auto r = command({"SELECT", std::to_string(endpoint.db)});
    if (r.error()) throw RedisUnavailable("Redis at " + where_ + ": SELECT failed: " + r.str);
  }
}

RedisSync::~RedisSync() {
  if (ctx_) redisFree(ctx_);
}

void RedisSync::append(const std::vector<std::string>& args) {
  RedisArgv a(args);  // not const: hiredis takes const char** (0.14)
  if (redisAppendCommandArgv(ctx_, a.argc(), a.argv.data(), a.argvlen.data()) != REDIS_OK) {
    throw RedisUnavailable("Redis at " + where_ + ": " + ctx_->errstr);
  }
}

RedisReply RedisSync::read_reply() {
  void* raw = nullptr;
  if (redisGetReply(ctx_, &raw) != REDIS_OK || raw == nullptr) {
    throw RedisUnavailable("lost the connection to Redis at " + where_ + ": " + ctx_->errstr);
  }
  auto reply = RedisReply::from(static_cast<redisReply*>(raw));
  freeReplyObject(raw);
  return reply;
}

RedisReply RedisSync::command(const std::vector<std::string>& args) {
  append(args);
  return read_reply();
}

std::vector<RedisReply> RedisSync::pipeline(const std::vector<std::vector<std::string>>& commands) {
  for (const auto& c : commands) append(c);
  std::vector<RedisReply> replies;
  replies.reserve(commands.size());
  for (std::size_t i = 0; i < commands.size(); ++i) replies.push_back(read_reply());
  return replies;
}

RedisReply RedisSync::blocking_command(const std::vector<std::string>& args,
                                       std::chrono::milliseconds block) {
  redisSetTimeout(ctx_, to_timeval(timeout_ + block));
  auto reply = command(args);
  redisSetTimeout(ctx_, to_timeval(timeout_));
  return reply;
}

}  // namespace awqd
