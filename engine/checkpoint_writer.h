// Writes a Hugging Face model directory's weights: tensors collected in memory, then written as
// one model.safetensors or as shards of at most `max_shard_bytes` with
// model.safetensors.index.json, the way real releases are laid out. Used by quantize, synth,
// import-llama2c and the tests.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "engine/fp16.h"
#include "engine/safetensors.h"

namespace awqd {

class CheckpointWriter {
 public:
  void add_f16(const std::string& name, std::vector<std::int64_t> shape, std::vector<half_bits> data);
  void add_f16_from_float(const std::string& name, std::vector<std::int64_t> shape, const std::vector<float>& data);
  void add_i32(const std::string& name, std::vector<std::int64_t> shape, std::vector<std::int32_t> data);
  void add_bf16(const std::string& name, std::vector<std::int64_t> shape, std::vector<std::uint16_t> data);
  void add_f32(const std::string& name, std::vector<std::int64_t> shape, std::vector<float> data);

  std::size_t total_bytes() const;
  // Writes into `dir` (created if needed). max_shard_bytes == 0: a single model.safetensors.
  void write(const std::filesystem::path& dir, std::size_t max_shard_bytes = 0) const;

 private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<std::int64_t> shape;
    std::vector<std::byte> bytes;
  };
  void add(const std::string& name, DType dtype, std::vector<std::int64_t> shape, const void* data, std::size_t nbytes);
  std::vector<Entry> entries_;
};

}  // namespace awqd
