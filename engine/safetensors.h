// Memory-mapped safetensors reader (single file or shards with model.safetensors.index.json).
// Format: 8-byte little-endian header length N, N bytes of JSON
//   {"name": {"dtype": "F16", "shape": [d0, d1], "data_offsets": [begin, end]}, "__metadata__": {...}}
// then the tensor bytes; offsets are relative to the end of the header. The header is validated
// completely before any tensor is used: known dtype, byte size = product(shape) * dtype size,
// offsets inside the file, no two tensors overlapping. Files are never copied to the heap.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace awqd {

enum class DType { kF16, kBF16, kF32, kI32, kI64, kU8, kI8, kF64, kBool, kI16, kU16 };

const char* dtype_name(DType dtype);  // safetensors spelling: "F16", "BF16", ...
std::size_t dtype_size(DType dtype);  // bytes per element

struct TensorView {
  std::string name;
  DType dtype = DType::kF16;
  std::vector<std::int64_t> shape;
  const std::byte* data = nullptr;  // into the mapping; valid while the file is open
  std::size_t nbytes = 0;
  std::string file;                 // which file it lives in (for error messages)

  std::int64_t numel() const;
  template <typename T>
  const T* as() const { return reinterpret_cast<const T*>(data); }
};

// One memory-mapped .safetensors file.
class SafetensorsFile {
 public:
  // Opens and validates; throws std::runtime_error naming the file and the problem.
  explicit SafetensorsFile(const std::filesystem::path& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  void* map_ = nullptr;
  std::size_t map_size_ = 0;
  std::map<std::string, TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Validates a whole safetensors image (length prefix, header, data) held in memory and returns
// its tensors pointing into `bytes`. The file reader and the fuzzer both use it; throws
// std::runtime_error naming `where` and the problem.
std::map<std::string, TensorView> parse_safetensors(const std::byte* bytes, std::size_t size,
                                                    const std::string& where,
                                                    std::map<std::string, std::string>* metadata);

// All tensors of a model directory: model.safetensors, or the shards named by
// model.safetensors.index.json (every listed shard must exist and hold what the index says), or
// every *.safetensors file when there is no index.
class TensorStore {
 public:
  explicit TensorStore(const std::filesystem::path& model_dir);

  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  // Throws "missing tensor <name> in <dir>" when absent.
  const TensorView& get(const std::string& name) const;
  std::vector<std::string> names() const;
  std::size_t total_bytes() const;  // sum of tensor sizes
  const std::filesystem::path& dir() const { return dir_; }

 private:
  std::filesystem::path dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorView*> index_;
};

// The header block of a .safetensors file holding `tensors` in the order given (their `data` is
// not read): the 8-byte length, then the JSON padded with spaces to a multiple of 8.
std::string safetensors_header(const std::vector<TensorView>& tensors,
                               const std::map<std::string, std::string>& metadata = {});

// Writes tensors to a .safetensors file (used by quantize, synth, import-llama2c, tests).
// Tensors are written in the order given; data is copied from each entry's `data` pointer.
void write_safetensors(const std::filesystem::path& path, const std::vector<TensorView>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace awqd
