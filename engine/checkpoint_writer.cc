#include "engine/checkpoint_writer.h"

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>

namespace awqd {

void CheckpointWriter::add(const std::string& name, DType dtype, std::vector<std::int64_t> shape,
                           const void* data, std::size_t nbytes) {
  std::size_t want = dtype_size(dtype);
  for (auto d : shape) want *= static_cast<std::size_t>(d);
  if (want != nbytes) throw std::invalid_argument("CheckpointWriter: " + name + " data does not match its shape");
  Entry e{name, dtype, std::move(shape), std::vector<std::byte>(nbytes)};
  if (nbytes) std::memcpy(e.bytes.data(), data, nbytes);
  entries_.push_back(std::move(e));
}

void CheckpointWriter::add_f16(const std::string& name, std::vector<std::int64_t> shape, std::vector<half_bits> data) {
  add(name, DType::kF16, std::move(shape), data.data(), data.size() * 2);
}

void CheckpointWriter::add_f16_from_float(const std::string& name, std::vector<std::int64_t> shape,
                                          const std::vector<float>& data) {
  std::vector<half_bits> h(data.size());
  for (std::size_t i = 0; i < data.size(); ++i) h[i] = float_to_half(data[i]);
  add_f16(name, std::move(shape), std::move(h));
}

void CheckpointWriter::add_i32(const std::string& name, std::vector<std::int64_t> shape, std::vector<std::int32_t> data) {
  add(name, DType::kI32, std::move(shape), data.data(), data.size() * 4);
}

void CheckpointWriter::add_bf16(const std::string& name, std::vector<std::int64_t> shape, std::vector<std::uint16_t> data) {
  add(name, DType::kBF16, std::move(shape), data.data(), data.size() * 2);
}

void CheckpointWriter::add_f32(const std::string& name, std::vector<std::int64_t> shape, std::vector<float> data) {
  add(name, DType::kF32, std::move(shape), data.data(), data.size() * 4);
}

std::size_t CheckpointWriter::total_bytes() const {
  std::size_t n = 0;
  for (const auto& e : entries_) n += e.bytes.size();
  return n;
}

void CheckpointWriter::write(const std::filesystem::path& dir, std::size_t max_shard_bytes) const {
  std::filesystem::create_directories(dir);
  std::vector<std::vector<const Entry*>> shards(1);
  std::size_t in_shard = 0;
  for (const auto& e : entries_) {
    if (max_shard_bytes && in_shard > 0 && in_shard + e.bytes.size() > max_shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(&e);
    in_shard += e.bytes.size();
  }
  auto views = [](const std::vector<const Entry*>& list) {
    std::vector<TensorView> v;
    for (const Entry* e : list) {
      TensorView t;
      t.name = e->name;
      t.dtype = e->dtype;
      t.shape = e->shape;
      t.data = e->bytes.data();
      t.nbytes = e->bytes.size();
      v.push_back(std::move(t));
    }
    return v;
  };
  const std::map<std::string, std::string> meta = {{"format", "pt"}};
  if (shards.size() == 1 && max_shard_bytes == 0) {
    write_safetensors(dir / "model.safetensors", views(shards[0]), meta);
    return;
  }
  nlohmann::json index;
  index["metadata"] = {{"total_size", total_bytes()}};
  index["weight_map"] = nlohmann::json::object();
  const std::size_t n = shards.size();
  for (std::size_t i = 0; i < n; ++i) {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", i + 1, n);
    write_safetensors(dir / name, views(shards[i]), meta);
    for (const Entry* e : shards[i]) index["weight_map"][e->name] = name;
  }
  std::ofstream out(dir / "model.safetensors.index.json");
  out << index.dump(2) << "\n";
  if (!out) throw std::runtime_error((dir / "model.safetensors.index.json").string() + ": write failed");
}

}  // namespace awqd
