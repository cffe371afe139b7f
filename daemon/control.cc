#include "daemon/control.h"

#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>

#include "daemon/asio.h"

namespace awqd {

namespace asio = boost::asio;
using local = asio::local::stream_protocol;

namespace {

constexpr std::size_t kMaxRequest = 4096;

// A connected socket to `path`, or -1 with errno set.
int connect_unix(const std::string& path, std::chrono::milliseconds timeout) {
  sockaddr_un addr{};
  if (path.size() >= sizeof(addr.sun_path)) {
    errno = ENAMETOOLONG;
    return -1;
  }
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  timeval tv{static_cast<time_t>(timeout.count() / 1000),
             static_cast<suseconds_t>(timeout.count() % 1000 * 1000)};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size());
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    const int saved = errno;
    close(fd);
    errno = saved;
    return -1;
  }
  return fd;
}

// One connection: read a line, answer, close.
struct Session : std::enable_shared_from_this<Session> {
  Session(local::socket s, const ControlServer::Handler& h)
      : socket(std::move(s)), handler(h), buffer(kMaxRequest) {}
  local::socket socket;
  const ControlServer::Handler& handler;
  asio::streambuf buffer;
  std::string reply;

  void start() {
    asio::async_read_until(
        socket, buffer, '\n',
        [self = shared_from_this()](const boost::system::error_code& ec, std::size_t n) {
          if (ec) return;  // closed early or a request too long: drop it
          std::string line(asio::buffers_begin(self->buffer.data()),
                           asio::buffers_begin(self->buffer.data()) + n - 1);
          try {
            self->reply = self->handler(line) + "\n";
          } catch (const std::exception& e) {
            self->reply = nlohmann::json{{"error", e.what()}}.dump() + "\n";
          }
          asio::async_write(self->socket, asio::buffer(self->reply),
                            [self](const boost::system::error_code&, std::size_t) {});
        });
  }
};

}  // namespace

ControlServer::ControlServer(asio::io_context& io, std::string path, Handler handler)
    : acceptor_(io), path_(std::move(path)), handler_(std::move(handler)) {
  std::error_code fs_ec;
  if (std::filesystem::exists(path_, fs_ec)) {
    const int fd = connect_unix(path_, std::chrono::milliseconds(500));
    if (fd >= 0) {
      close(fd);
      throw std::runtime_error("another awqd daemon is already serving on control socket " + path_ +
                               " (stop it, or give this one another --control-socket)");
    }
    std::filesystem::remove(path_, fs_ec);  // stale: left by a daemon that was killed
  }
  const auto parent = std::filesystem::path(path_).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, fs_ec);
  boost::system::error_code ec;
  acceptor_.open(local(), ec);
  if (!ec) acceptor_.bind(local::endpoint(path_), ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    throw std::runtime_error("cannot create control socket " + path_ + ": " + ec.message() +
                             " (check the directory, or set `control_socket`)");
  }
  accept();
}

ControlServer::~ControlServer() { stop(); }

void ControlServer::stop() {
  if (!acceptor_.is_open()) return;
  boost::system::error_code ec;
  acceptor_.close(ec);
  std::error_code fs_ec;
  std::filesystem::remove(path_, fs_ec);
}

void ControlServer::accept() {
  acceptor_.async_accept([this](const boost::system::error_code& ec, local::socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor_.is_open()) return;
    if (!ec) std::make_shared<Session>(std::move(socket), handler_)->start();
    accept();
  });
}

std::string control_request(const std::string& path, const std::string& command,
                            std::chrono::milliseconds timeout) {
  const int fd = connect_unix(path, timeout);
  if (fd < 0) {
    throw ControlUnavailable(
        "no daemon answers on control socket " + path + " (" + std::strerror(errno) +
        "): is `awqd serve` running? (systemctl status awqd; or pass --control-socket)");
  }
  const std::string request = command + "\n";
  std::string reply;
  bool ok = write(fd, request.data(), request.size()) == static_cast<ssize_t>(request.size());
  char buf[65536];
  while (ok) {
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0) ok = false;
    if (n <= 0) break;
    reply.append(buf, static_cast<std::size_t>(n));
  }
  close(fd);
  if (!ok || reply.empty()) {
    throw ControlUnavailable("the daemon on control socket " + path + " did not answer within " +
                             std::to_string(timeout.count()) + " ms");
  }
  if (reply.back() == '\n') reply.pop_back();
  return reply;
}

}  // namespace awqd
