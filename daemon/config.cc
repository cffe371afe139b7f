#include "daemon/config.h"

#include <toml++/toml.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>

#include "daemon/redis.h"
#include "engine/engine_group.h"

namespace awqd {
namespace {

// The one list of keys: name, help, member, and whether client commands take it too.
template <typename Fn>
void for_each_key(DaemonConfig& c, Fn&& fn) {
  fn("model", "model directory (Hugging Face layout)", c.model, false);
  fn("redis", "Redis URL: redis://[:password@]host[:port][/db] or unix:///path", c.redis, true);
  fn("prefix", "prefix of every Redis key", c.prefix, true);
  fn("db", "SQLite database file", c.db, true);
  fn("device", "auto | cuda | cpu", c.device, false);
  fn("control_socket", "Unix socket for live status", c.control_socket, true);
  fn("metrics_port", "Prometheus metrics port on 127.0.0.1 (0: off)", c.metrics_port, false);
  fn("consumer", "consumer name in the Redis group (default host:pid)", c.consumer, false);
  fn("tensor_parallel", "GPUs per engine", c.tensor_parallel, false);
  fn("replicas", "engines (GPU groups) in this daemon", c.replicas, false);
  fn("gpus", "GPU ids, comma-separated (default 0..tensor_parallel*replicas-1)", c.gpus, false);
  fn("gpu_groups", "one replica per GPU group, JSON, e.g. [[0,1],[2]] (instead of tensor_parallel, replicas, gpus)",
     c.gpu_groups, false);
  fn("gpu_memory_utilization", "fraction of GPU memory to use", c.gpu_memory_utilization, false);
  fn("max_num_seqs", "sequences per engine step (per replica)", c.max_num_seqs, false);
  fn("max_num_batched_tokens", "tokens per engine step", c.max_num_batched_tokens, false);
  fn("read_ahead", "jobs taken from Redis beyond those running (0: max_num_seqs/4+8)", c.read_ahead,
     false);
  fn("max_attempts", "deliveries before a job goes to the dead-letter stream", c.max_attempts,
     false);
  fn("visibility_timeout_s", "seconds a pending job stays with a silent daemon",
     c.visibility_timeout_s, false);
  fn("result_ttl_s", "seconds results stay in Redis", c.result_ttl_s, false);
  fn("results_maxlen", "approximate length cap of the results notice stream", c.results_maxlen,
     false);
  fn("drain_timeout_s", "seconds running jobs get to finish on SIGTERM", c.drain_timeout_s, false);
  fn("cpu_threads", "CPU executor threads (0: all cores)", c.cpu_threads, false);
  fn("cpu_kv_cache_mb", "CPU executor KV cache size in MiB", c.cpu_kv_cache_mb, false);
  fn("prefix_caching", "reuse KV blocks of shared prompt prefixes", c.prefix_caching, false);
  fn("cuda_graphs", "capture decode steps in CUDA graphs", c.cuda_graphs, false);
  fn("deterministic", "batch-invariant logits (slower)", c.deterministic, false);
  fn("fp16_weight_cache", "fp16 copies of the AWQ weights for large steps (64+ tokens, 128+ on Hopper): auto | on | off",
     c.fp16_weight_cache, false);
  fn("async_output", "build a step's outputs while the GPU runs the next step", c.async_output, false);
  fn("fused_decode_mlp",
     "experimental: one persistent kernel for a layer's MLP half in steps of 1-8 tokens (CUDA, one GPU; slower so far)",
     c.fused_decode_mlp, false);
  fn("fold_norms", "fold the residual add and RMSNorm into the GEMMs around them in steps of up to 16 tokens (CUDA, one GPU)",
     c.fold_norms, false);
  fn("log_level", "trace | debug | info | warn | error", c.log_level, false);
}

std::string flag_name(const std::string& key) {
  std::string flag = "--" + key;
  for (auto& ch : flag) ch = ch == '_' ? '-' : ch;
  return flag;
}

[[noreturn]] void bad_value(const std::string& where, const std::string& key,
                            const std::string& want) {
  throw std::invalid_argument(where + ": key `" + key + "` must be " + want);
}

void read_value(const toml::node& n, const std::string& where, const std::string& key,
                std::string& out) {
  const auto v = n.value<std::string>();
  if (!v || !n.is_string()) bad_value(where, key, "a string");
  out = *v;
}
void read_value(const toml::node& n, const std::string& where, const std::string& key, int& out) {
  if (!n.is_integer()) bad_value(where, key, "an integer");
  const auto v = *n.value<std::int64_t>();
  if (v < INT32_MIN || v > INT32_MAX) bad_value(where, key, "a 32-bit integer");
  out = static_cast<int>(v);
}
void read_value(const toml::node& n, const std::string& where, const std::string& key,
                double& out) {
  if (!n.is_number()) bad_value(where, key, "a number");
  out = *n.value<double>();
}
void read_value(const toml::node& n, const std::string& where, const std::string& key, bool& out) {
  if (!n.is_boolean()) bad_value(where, key, "true or false");
  out = *n.value<bool>();
}
void read_value(const toml::node& n, const std::string& where, const std::string& key,
                std::vector<int>& out) {
  const toml::array* arr = n.as_array();
  if (!arr) bad_value(where, key, "an array of integers");
  out.clear();
  for (const auto& e : *arr) {
    int v = 0;
    read_value(e, where, key, v);
    out.push_back(v);
  }
}

// Applies the file's keys to `cfg`, except those in `skip` (given as flags).
void apply_toml(const toml::table& table, const std::string& where, DaemonConfig& cfg,
                const std::set<std::string>& skip) {
  std::set<std::string> known;
  for_each_key(cfg, [&](const std::string& key, const char*, auto& member, bool) {
    known.insert(key);
    const toml::node* node = table.get(key);
    if (node != nullptr && !skip.count(key)) read_value(*node, where, key, member);
  });
  for (const auto& [key, node] : table) {
    if (!known.count(std::string(key.str()))) {
      throw std::invalid_argument(where + ": unknown key `" + std::string(key.str()) +
                                  "` (see `awqd serve --help` for the keys)");
    }
  }
}

toml::table parse_toml(const std::string& text, const std::string& where) {
  try {
    return toml::parse(text, where);
  } catch (const toml::parse_error& e) {
    std::ostringstream msg;
    msg << where << ":" << e.source().begin.line << ":" << e.source().begin.column << ": "
        << e.description();
    throw std::invalid_argument(msg.str());
  }
}

std::string default_consumer() {
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0) std::snprintf(host, sizeof(host), "localhost");
  return std::string(host) + ":" + std::to_string(getpid());
}

void require(bool ok, const std::string& key, const std::string& want) {
  if (!ok) throw std::invalid_argument("config key `" + key + "` must be " + want);
}

}  // namespace

std::vector<std::vector<int>> DaemonConfig::engine_gpu_groups() const {
  if (!gpu_groups.empty()) return EngineGroup::parse_groups(gpu_groups);
  auto groups = EngineGroup::consecutive_groups(replicas, tensor_parallel);
  if (!gpus.empty())
    for (auto& g : groups)
      for (int& id : g) id = gpus[static_cast<std::size_t>(id)];
  return groups;
}

void DaemonConfig::validate() const {
  parse_redis_url(redis);
  require(!prefix.empty(), "prefix", "non-empty");
  require(!db.empty(), "db", "a file path");
  require(device == "auto" || device == "cuda" || device == "cpu", "device", "auto, cuda or cpu");
  require(metrics_port >= 0 && metrics_port <= 65535, "metrics_port", "in 0..65535");
  require(tensor_parallel >= 1, "tensor_parallel", ">= 1");
  require(replicas >= 1, "replicas", ">= 1");
  require(gpus.empty() || static_cast<int>(gpus.size()) == tensor_parallel * replicas, "gpus",
          "empty or tensor_parallel * replicas ids");
  if (!gpu_groups.empty()) {
    require(gpus.empty() && tensor_parallel == 1 && replicas == 1, "gpu_groups",
            "used alone (it says the GPUs, the replicas and each one's tensor_parallel; leave "
            "gpus, replicas and tensor_parallel unset)");
    try {
      EngineGroup::parse_groups(gpu_groups);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(std::string("gpu_groups: ") + e.what());
    }
  }
  require(gpu_memory_utilization > 0 && gpu_memory_utilization <= 1, "gpu_memory_utilization",
          "in (0, 1]");
  require(max_num_seqs >= 1, "max_num_seqs", ">= 1");
  require(max_num_batched_tokens >= 16, "max_num_batched_tokens", ">= 16");
  require(read_ahead >= 0, "read_ahead", ">= 0");
  require(max_attempts >= 1, "max_attempts", ">= 1");
  require(visibility_timeout_s >= 1, "visibility_timeout_s", ">= 1");
  require(result_ttl_s >= 1, "result_ttl_s", ">= 1");
  require(results_maxlen >= 1, "results_maxlen", ">= 1");
  require(drain_timeout_s >= 0, "drain_timeout_s", ">= 0");
  require(cpu_threads >= 0, "cpu_threads", ">= 0");
  require(fp16_weight_cache == "auto" || fp16_weight_cache == "on" || fp16_weight_cache == "off",
          "fp16_weight_cache", "auto, on or off");
  require(cpu_kv_cache_mb >= 1, "cpu_kv_cache_mb", ">= 1");
  require(log_level == "trace" || log_level == "debug" || log_level == "info" ||
              log_level == "warn" || log_level == "error",
          "log_level", "trace, debug, info, warn or error");
}

ConfigOptions::ConfigOptions(CLI::App* app, ConfigScope scope) : app_(app), scope_(scope) {
  app->add_option("--config", config_path_, "TOML config file")
      ->capture_default_str()
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  for_each_key(flags_, [&](const std::string& key, const char* help, auto& member, bool client) {
    if (scope == ConfigScope::kClient && !client) return;
    // A flag given twice takes the last value, as wrappers that append flags expect. --help
    // shows the built-in default (the config file may set another).
    auto* opt = app->add_option(flag_name(key), member, help)
                    ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast)
                    ->capture_default_str();
    if constexpr (std::is_same_v<std::decay_t<decltype(member)>, std::vector<int>>)
      opt->delimiter(',');
  });
}

DaemonConfig ConfigOptions::load() {
  // Flags win: start from the flag values (defaults where not given) and let the file fill in
  // only the keys no flag set.
  DaemonConfig cfg = flags_;
  std::set<std::string> given;
  for_each_key(cfg, [&](const std::string& key, const char*, auto&, bool client) {
    if (scope_ == ConfigScope::kClient && !client) return;
    if (app_->count(flag_name(key)) > 0) given.insert(key);
  });
  const bool explicit_file = app_->count("--config") > 0;
  if (explicit_file || std::filesystem::exists(config_path_)) {
    std::ifstream in(config_path_);
    if (!in) throw std::runtime_error("cannot read config file " + config_path_);
    std::stringstream text;
    text << in.rdbuf();
    apply_toml(parse_toml(text.str(), config_path_), config_path_, cfg, given);
  }
  if (cfg.consumer.empty()) cfg.consumer = default_consumer();
  cfg.validate();
  return cfg;
}

DaemonConfig config_from_toml(const std::string& toml_text, const std::string& where) {
  DaemonConfig cfg;
  apply_toml(parse_toml(toml_text, where), where, cfg, {});
  if (cfg.consumer.empty()) cfg.consumer = default_consumer();
  cfg.validate();
  return cfg;
}

}  // namespace awqd
