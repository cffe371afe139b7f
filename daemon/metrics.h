// Prometheus metrics: the text exposition format (version 0.0.4) served over HTTP on
// 127.0.0.1:<metrics_port>/metrics. The daemon renders the page from its own counters on the
// io_context thread at each scrape; nothing is computed between scrapes.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "daemon/asio.h"

namespace awqd {

// A cumulative histogram with fixed upper bounds (Prometheus `le` buckets).
class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void observe(double value);
  const std::vector<double>& bounds() const { return bounds_; }
  const std::vector<std::uint64_t>& counts() const {
    return counts_;
  }  // per bucket, not cumulative
  double sum() const { return sum_; }
  std::uint64_t count() const { return count_; }

 private:
  std::vector<double> bounds_;
  std::vector<std::uint64_t> counts_;  // bounds_.size() + 1: the last is +Inf
  double sum_ = 0;
  std::uint64_t count_ = 0;
};

// Builds one exposition page. Each metric family gets its HELP and TYPE once.
class MetricsPage {
 public:
  using Labels = std::map<std::string, std::string>;
  void gauge(const std::string& name, const std::string& help, double value,
             const Labels& labels = {});
  void counter(const std::string& name, const std::string& help, double value,
               const Labels& labels = {});
  void histogram(const std::string& name, const std::string& help, const Histogram& h);
  const std::string& text() const { return text_; }

 private:
  void header(const std::string& name, const std::string& help, const char* type);
  void sample(const std::string& name, const Labels& labels, double value);
  std::string text_;
  std::string last_family_;
};

class MetricsServer {
 public:
  using Render = std::function<std::string()>;
  // Listens on 127.0.0.1:port. Throws std::runtime_error when the port is taken.
  MetricsServer(boost::asio::io_context& io, int port, Render render);
  void stop();
  int port() const;

 private:
  void accept();
  boost::asio::ip::tcp::acceptor acceptor_;
  Render render_;
};

}  // namespace awqd
