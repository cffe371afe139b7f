#include "daemon/metrics.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <sstream>

#include "daemon/asio.h"

namespace awqd {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)), counts_(bounds_.size() + 1, 0) {
  std::sort(bounds_.begin(), bounds_.end());
}

void Histogram::observe(double value) {
  const auto it = std::lower_bound(bounds_.begin(), bounds_.end(), value);
  ++counts_[static_cast<std::size_t>(it - bounds_.begin())];
  sum_ += value;
  ++count_;
}

namespace {

std::string format_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  std::ostringstream s;
  s.precision(12);
  s << v;
  return s.str();
}

// Label values escape backslash, double quote and newline.
std::string escape_label(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

void MetricsPage::header(const std::string& name, const std::string& help, const char* type) {
  if (name == last_family_) return;
  last_family_ = name;
  text_ += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

void MetricsPage::sample(const std::string& name, const Labels& labels, double value) {
  text_ += name;
  if (!labels.empty()) {
    text_ += '{';
    bool first = true;
    for (const auto& [k, v] : labels) {
      if (!first) text_ += ',';
      first = false;
      text_ += k + "=\"" + escape_label(v) + "\"";
    }
    text_ += '}';
  }
  text_ += ' ' + format_value(value) + '\n';
}

void MetricsPage::gauge(const std::string& name, const std::string& help, double value,
                        const Labels& labels) {
  header(name, help, "gauge");
  sample(name, labels, value);
}

void MetricsPage::counter(const std::string& name, const std::string& help, double value,
                          const Labels& labels) {
  header(name, help, "counter");
  sample(name, labels, value);
}

void MetricsPage::histogram(const std::string& name, const std::string& help, const Histogram& h) {
  header(name, help, "histogram");
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i < h.bounds().size(); ++i) {
    cumulative += h.counts()[i];
    sample(name + "_bucket", {{"le", format_value(h.bounds()[i])}},
           static_cast<double>(cumulative));
  }
  sample(name + "_bucket", {{"le", "+Inf"}}, static_cast<double>(h.count()));
  sample(name + "_sum", {}, h.sum());
  sample(name + "_count", {}, static_cast<double>(h.count()));
}

namespace {

// One HTTP exchange: read the request head, answer, close.
struct HttpSession : std::enable_shared_from_this<HttpSession> {
  HttpSession(tcp::socket s, const MetricsServer::Render& r)
      : socket(std::move(s)), render(r), buffer(16384) {}
  tcp::socket socket;
  const MetricsServer::Render& render;
  asio::streambuf buffer;
  std::string response;

  void start() {
    asio::async_read_until(
        socket, buffer, "\r\n\r\n",
        [self = shared_from_this()](const boost::system::error_code& ec, std::size_t) {
          if (ec) return;
          std::istream in(&self->buffer);
          std::string method, target;
          in >> method >> target;
          self->respond(method, target);
        });
  }

  void respond(const std::string& method, const std::string& target) {
    std::string status = "200 OK", type = "text/plain; version=0.0.4; charset=utf-8", body;
    if (method != "GET") {
      status = "405 Method Not Allowed";
      body = "only GET\n";
    } else if (target == "/metrics" || target.starts_with("/metrics?")) {
      body = render();
    } else {
      status = "404 Not Found";
      body = "metrics are at /metrics\n";
    }
    response = "HTTP/1.1 " + status + "\r\nContent-Type: " + type +
               "\r\nContent-Length: " + std::to_string(body.size()) +
               "\r\nConnection: close\r\n\r\n" + body;
    asio::async_write(socket, asio::buffer(response),
                      [self = shared_from_this()](const boost::system::error_code&, std::size_t) {
                        boost::system::error_code ignored;
                        self->socket.shutdown(tcp::socket::shutdown_both, ignored);
                      });
  }
};

}  // namespace

MetricsServer::MetricsServer(asio::io_context& io, int port, Render render)
    : acceptor_(io), render_(std::move(render)) {
  boost::system::error_code ec;
  const tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port));
  acceptor_.open(ep.protocol(), ec);
  if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(ep, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    throw std::runtime_error("cannot serve metrics on 127.0.0.1:" + std::to_string(port) + ": " +
                             ec.message() + " (set `metrics_port`, or 0 to turn metrics off)");
  }
  accept();
}

void MetricsServer::stop() {
  boost::system::error_code ec;
  acceptor_.close(ec);
}

int MetricsServer::port() const { return acceptor_.local_endpoint().port(); }

void MetricsServer::accept() {
  acceptor_.async_accept([this](const boost::system::error_code& ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor_.is_open()) return;
    if (!ec) std::make_shared<HttpSession>(std::move(socket), render_)->start();
    accept();
  });
}

}  // namespace awqd
