// Writes a Hugging Face model directory's weights: tensors collected in memory, then written as
// one model.safetensors or as shards of at most `max_shard_bytes` with
// model.safetensors.index.json, the way real releases are laid out. Used by quantize, synth,
// import-llama2c and the tests.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "engine/fp16.h"
#include "engine/safetensors.h"

namespace awqd {

// A tensor whose bytes are produced only when its shard is written (synth streams 70B models
// through one tensor's worth of memory this way).
struct TensorSource {
  std::string name;
  DType dtype = DType::kF16;
  std::vector<std::int64_t> shape;
  std::function<void(std::byte* dst)> fill;  // writes nbytes() bytes
  std::size_t nbytes() const;
};

// Writes `tensors` in order into `dir` (created if needed): one model.safetensors when
// max_shard_bytes == 0, else shards model-0000i-of-0000n.safetensors of at most max_shard_bytes
// (a bigger tensor gets a shard of its own) and model.safetensors.index.json. Holds one tensor's
// bytes at a time. Returns the number of files written.
int write_checkpoint(const std::filesystem::path& dir, const std::vector<TensorSource>& tensors,
                     std::size_t max_shard_bytes);

// Throws std::runtime_error when `dir` already holds safetensors files or an index: a new
// checkpoint written beside an old one's shards would be read mixed with them.
void require_no_checkpoint(const std::filesystem::path& dir);

// Tensors collected in memory, then written with write_checkpoint.
class CheckpointWriter {
 public:
  void add_f16(const std::string& name, std::vector<std::int64_t> shape,
               std::vector<half_bits> data);
  void add_f16_from_float(const std::string& name, std::vector<std::int64_t> shape,
                          const std::vector<float>& data);
  void add_i32(const std::string& name, std::vector<std::int64_t> shape,
               std::vector<std::int32_t> data);
  void add_bf16(const std::string& name, std::vector<std::int64_t> shape,
                std::vector<std::uint16_t> data);
  void add_f32(const std::string& name, std::vector<std::int64_t> shape, std::vector<float> data);

  std::size_t total_bytes() const;
  // See write_checkpoint.
  void write(const std::filesystem::path& dir, std::size_t max_shard_bytes = 0) const;

 private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<std::int64_t> shape;
    std::vector<std::byte> bytes;
  };
  void add(const std::string& name, DType dtype, std::vector<std::int64_t> shape, const void* data,
           std::size_t nbytes);
  std::vector<Entry> entries_;
};

}  // namespace awqd
