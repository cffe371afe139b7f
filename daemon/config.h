// Daemon configuration (SPEC section 6): defaults, then the TOML file (/etc/awqd/awqd.toml or
// --config FILE), then flags. Every key is also a flag spelled with dashes
// (control_socket -> --control-socket). Unknown keys in the file are an error.
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

namespace awqd {

inline constexpr const char* kDefaultConfigPath = "/etc/awqd/awqd.toml";

struct DaemonConfig {
  std::string model;  // model directory
  std::string redis = "redis://127.0.0.1:6379";
  std::string prefix = "awqd:";              // every Redis key starts with it
  std::string db = "/var/lib/awqd/awqd.db";  // SQLite file
  std::string device = "auto";               // auto | cuda | cpu
  std::string control_socket = "/run/awqd/awqd.sock";
  int metrics_port = 9464;  // Prometheus on 127.0.0.1; 0 turns it off
  std::string consumer;     // consumer name in the group; default host:pid
  int tensor_parallel = 1;
  int replicas = 1;       // engines (GPU groups) in this daemon
  std::vector<int> gpus;  // default 0 .. tensor_parallel * replicas - 1
  // One replica per group, e.g. "[[0,1],[2]]" (groups may differ in size); in place of
  // tensor_parallel, replicas and gpus.
  std::string gpu_groups;
  double gpu_memory_utilization = 0.90;
  int max_num_seqs = 256;  // sequences per engine step, per replica
  int max_num_batched_tokens = 8192;
  int read_ahead = 0;  // jobs held beyond running ones; 0: max_num_seqs / 4 + 8
  int max_attempts = 3;
  int visibility_timeout_s = 300;  // a pending job idle this long is reclaimed
  int result_ttl_s = 7 * 24 * 3600;
  int results_maxlen = 1'000'000;  // MAXLEN ~ of the notice stream
  int drain_timeout_s = 60;        // SIGTERM: time running jobs get to finish
  int cpu_threads = 0;             // CPU executor threads; 0: all cores
  int cpu_kv_cache_mb = 256;       // CPU executor KV pool
  bool prefix_caching = true;
  bool cuda_graphs = true;
  bool deterministic = false;
  std::string fp16_weight_cache = "auto";  // auto | on | off (EngineConfig::fp16_weight_cache)
  bool async_output = true;  // build a step's outputs while the GPU runs the next step
  bool fused_decode_mlp = false;  // EngineConfig::fused_decode_mlp (experimental, slower so far)
  bool fold_norms = true;         // EngineConfig::fold_norms
  std::string log_level = "info";  // trace | debug | info | warn | error

  // Throws std::invalid_argument naming the key when a value is out of range.
  void validate() const;
  int effective_read_ahead() const { return read_ahead > 0 ? read_ahead : max_num_seqs / 4 + 8; }
  // Each replica's GPUs: gpu_groups when set, else replicas groups of tensor_parallel GPUs taken
  // from gpus (default 0, 1, ...) in order.
  std::vector<std::vector<int>> engine_gpu_groups() const;
};

// Which keys a subcommand takes: `serve` all of them, the client commands the ones that tell
// them where the daemon is.
enum class ConfigScope { kServe, kClient };

// Adds --config and the keys' flags to a subcommand; load() (after parsing) merges the file.
class ConfigOptions {
 public:
  ConfigOptions(CLI::App* app, ConfigScope scope);
  // Defaults < file < flags. Throws std::invalid_argument / std::runtime_error with the file,
  // the key and what is wrong.
  DaemonConfig load();

 private:
  CLI::App* app_;
  ConfigScope scope_;
  DaemonConfig flags_;  // flag values land here
  std::string config_path_ = kDefaultConfigPath;
};

// The same merge without CLI11: `toml_text` as the file's content (tests).
DaemonConfig config_from_toml(const std::string& toml_text, const std::string& where);

}  // namespace awqd
