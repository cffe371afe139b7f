// The control socket: a Unix stream socket on which the daemon answers one request per
// connection. The client writes a command line ("status\n"); the daemon writes one line of JSON
// and closes. `awqd status` is its client.
#pragma once

#include <chrono>
#include <functional>
#include <stdexcept>
#include <string>

#include "daemon/asio.h"

namespace awqd {

class ControlServer {
 public:
  using Handler = std::function<std::string(const std::string& command)>;  // returns JSON

  // Binds `path`. A stale socket file (no daemon answers on it) is replaced; a live one is an
  // error: another daemon is serving there. Throws std::runtime_error.
  ControlServer(boost::asio::io_context& io, std::string path, Handler handler);
  ~ControlServer();  // removes the socket file
  void stop();

 private:
  void accept();

  boost::asio::local::stream_protocol::acceptor acceptor_;
  std::string path_;
  Handler handler_;
};

struct ControlUnavailable : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Sends `command` to the daemon at `path` and returns its reply. Throws ControlUnavailable when
// no daemon answers there.
std::string control_request(const std::string& path, const std::string& command,
                            std::chrono::milliseconds timeout = std::chrono::seconds(5));

}  // namespace awqd
