#include "engine/checkpoint_writer.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>

namespace awqd {

void CheckpointWriter::add(const std::string& name, DType dtype, std::vector<std::int64_t> shape,
                           const void* data, std::size_t nbytes) {
  std::size_t want = dtype_size(dtype);
  for (auto d : shape) want *= static_cast<std::size_t>(d);
  if (want != nbytes)
    throw std::invalid_argument("CheckpointWriter: " + name + " data does not match its shape");
  Entry e{name, dtype, std::move(shape), std::vector<std::byte>(nbytes)};
  if (nbytes) std::memcpy(e.bytes.data(), data, nbytes);
  entries_.push_back(std::move(e));
}

void CheckpointWriter::add_f16(const std::string& name, std::vector<std::int64_t> shape,
                               std::vector<half_bits> data) {
  add(name, DType::kF16, std::move(shape), data.data(), data.size() * 2);
}

void CheckpointWriter::add_f16_from_float(const std::string& name, std::vector<std::int64_t> shape,
                                          const std::vector<float>& data) {
  std::vector<half_bits> h(data.size());
  for (std::size_t i = 0; i < data.size(); ++i) h[i] = float_to_half(data[i]);
  add_f16(name, std::move(shape), std::move(h));
}

void CheckpointWriter::add_i32(const std::string& name, std::vector<std::int64_t> shape,
                               std::vector<std::int32_t> data) {
  add(name, DType::kI32, std::move(shape), data.data(), data.size() * 4);
}

void CheckpointWriter::add_bf16(const std::string& name, std::vector<std::int64_t> shape,
                                std::vector<std::uint16_t> data) {
  add(name, DType::kBF16, std::move(shape), data.data(), data.size() * 2);
}

void CheckpointWriter::add_f32(const std::string& name, std::vector<std::int64_t> shape,
                               std::vector<float> data) {
  add(name, DType::kF32, std::move(shape), data.data(), data.size() * 4);
}

std::size_t CheckpointWriter::total_bytes() const {
  std::size_t n = 0;
  for (const auto& e : entries_) n += e.bytes.size();
  return n;
}

std::size_t TensorSource::nbytes() const {
  std::size_t n = dtype_size(dtype);
  for (auto d : shape) n *= static_cast<std::size_t>(d);
  return n;
}

int write_checkpoint(const std::filesystem::path& dir, const std::vector<TensorSource>& tensors,
                     std::size_t max_shard_bytes) {
  std::filesystem::create_directories(dir);
  std::vector<std::vector<const TensorSource*>> shards(1);
  std::size_t in_shard = 0, total = 0;
  for (const auto& t : tensors) {
    const std::size_t n = t.nbytes();
    if (max_shard_bytes && in_shard > 0 && in_shard + n > max_shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(&t);
    in_shard += n;
    total += n;
  }
  const std::map<std::string, std::string> meta = {{"format", "pt"}};
  auto write_shard = [&](const std::filesystem::path& path,
                         const std::vector<const TensorSource*>& list) {
    std::vector<TensorView> views;
    for (const TensorSource* t : list) {
      TensorView v;
      v.name = t->name;
      v.dtype = t->dtype;
      v.shape = t->shape;
      v.nbytes = t->nbytes();
      views.push_back(std::move(v));
    }
    const std::string header = safetensors_header(views, meta);
    const std::string tmp = path.string() + ".tmp";
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw std::runtime_error(tmp + ": cannot create");
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    std::vector<std::byte> buf;
    for (const TensorSource* t : list) {
      buf.resize(t->nbytes());
      t->fill(buf.data());
      out.write(reinterpret_cast<const char*>(buf.data()),
                static_cast<std::streamsize>(buf.size()));
    }
    out.close();
    if (!out) throw std::runtime_error(tmp + ": write failed (disk full?)");
    std::filesystem::rename(tmp, path);
  };
  if (shards.size() == 1 && max_shard_bytes == 0) {
    write_shard(dir / "model.safetensors", shards[0]);
    return 1;
  }
  nlohmann::json index;
  index["metadata"] = {{"total_size", total}};
  index["weight_map"] = nlohmann::json::object();
  const std::size_t n = shards.size();
  for (std::size_t i = 0; i < n; ++i) {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", i + 1, n);
    write_shard(dir / name, shards[i]);
    for (const TensorSource* t : shards[i]) index["weight_map"][t->name] = name;
  }
  std::ofstream out(dir / "model.safetensors.index.json");
  out << index.dump(2) << "\n";
  if (!out)
    throw std::runtime_error((dir / "model.safetensors.index.json").string() + ": write failed");
  return static_cast<int>(n);
}

void require_no_checkpoint(const std::filesystem::path& dir) {
  if (!std::filesystem::is_directory(dir)) return;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (e.path().extension() == ".safetensors" || name == "model.safetensors.index.json")
      throw std::runtime_error(dir.string() + " already holds a checkpoint (" + name +
                               "); write into a new or empty directory");
  }
}

void CheckpointWriter::write(const std::filesystem::path& dir, std::size_t max_shard_bytes) const {
  std::vector<TensorSource> sources;
  for (const auto& e : entries_)
    sources.push_back({e.name, e.dtype, e.shape,
                       [&e](std::byte* dst) { std::memcpy(dst, e.bytes.data(), e.bytes.size()); }});
  write_checkpoint(dir, sources, max_shard_bytes);
}

}  // namespace awqd
