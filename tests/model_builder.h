// Builds small random checkpoints (config.json + safetensors) for tests: any architecture,
// fp16 or AWQ, with known values so loaders and executors can be checked against them.
#pragma once

#include <cstdint>
#include <filesystem>
#include <random>
#include <string>

#include <nlohmann/json.hpp>

#include "engine/checkpoint_writer.h"

namespace awqd::test {

struct TinyModelSpec {
  std::string arch = "LlamaForCausalLM";
  int hidden = 64, intermediate = 128, layers = 2, heads = 4, kv_heads = 2, head_dim = 16, vocab = 96;
  bool tied = false;
  bool awq = false;
  int group_size = 32;
  std::size_t max_shard_bytes = 0;  // > 0: sharded with an index
  unsigned seed = 1;
};

// config.json contents for the spec.
nlohmann::json tiny_config(const TinyModelSpec& spec);

// Writes config.json and random weights (normal, std 0.05; norms near 1) into dir.
void write_tiny_model(const std::filesystem::path& dir, const TinyModelSpec& spec);

// A fresh empty directory under the system temp dir, removed by the destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace awqd::test
