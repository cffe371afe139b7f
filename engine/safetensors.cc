#include "engine/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>

namespace awqd {

using nlohmann::json;

namespace {

constexpr std::size_t kMaxHeaderBytes = 100u << 20;  // the format's own limit

struct DTypeInfo {
  const char* name;
  DType dtype;
  std::size_t size;
};
constexpr DTypeInfo kDTypes[] = {
    {"F16", DType::kF16, 2},  {"BF16", DType::kBF16, 2}, {"F32", DType::kF32, 4},
    {"I32", DType::kI32, 4},  {"I64", DType::kI64, 8},   {"U8", DType::kU8, 1},
    {"I8", DType::kI8, 1},    {"F64", DType::kF64, 8},   {"BOOL", DType::kBool, 1},
    {"I16", DType::kI16, 2},  {"U16", DType::kU16, 2},
};

[[noreturn]] void fail(const std::string& where, const std::string& what) {
  throw std::runtime_error(where + ": " + what);
}

}  // namespace

const char* dtype_name(DType dtype) {
  for (const auto& d : kDTypes)
    if (d.dtype == dtype) return d.name;
  return "?";
}

std::size_t dtype_size(DType dtype) {
  for (const auto& d : kDTypes)
    if (d.dtype == dtype) return d.size;
  return 0;
}

std::int64_t TensorView::numel() const {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

namespace {

// Tensors of a header (without the length prefix) for the data section [data, data + data_size).
std::map<std::string, TensorView> parse_header(std::string_view header, const std::byte* data,
                                               std::size_t data_size, const std::string& where,
                                               std::map<std::string, std::string>* metadata) {
  json j;
  try {
    j = json::parse(header.begin(), header.end());
  } catch (const json::exception& e) {
    fail(where, std::string("corrupt safetensors header (invalid JSON): ") + e.what());
  }
  if (!j.is_object()) fail(where, "corrupt safetensors header: not a JSON object");

  std::map<std::string, TensorView> tensors;
  std::vector<std::pair<std::size_t, std::size_t>> ranges;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const json& e = it.value();
    if (name == "__metadata__") {
      if (!e.is_object()) fail(where, "__metadata__ must be an object of strings");
      for (auto m = e.begin(); m != e.end(); ++m) {
        if (!m.value().is_string()) fail(where, "__metadata__ value \"" + m.key() + "\" is not a string");
        if (metadata) (*metadata)[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string what = "tensor \"" + name + "\"";
    if (!e.is_object()) fail(where, what + ": entry is not an object");
    const auto dt = e.find("dtype");
    const auto sh = e.find("shape");
    const auto off = e.find("data_offsets");
    if (dt == e.end() || !dt->is_string()) fail(where, what + ": missing dtype");
    if (sh == e.end() || !sh->is_array()) fail(where, what + ": missing shape");
    if (off == e.end() || !off->is_array() || off->size() != 2) fail(where, what + ": missing data_offsets [begin, end]");

    TensorView t;
    t.name = name;
    t.file = where;
    const std::string dts = dt->get<std::string>();
    const DTypeInfo* info = nullptr;
    for (const auto& d : kDTypes)
      if (dts == d.name) info = &d;
    if (!info) fail(where, what + ": unsupported dtype \"" + dts + "\"");
    t.dtype = info->dtype;

    // numel * size, checked against overflow: every factor below 2^40 and the product tracked.
    std::size_t bytes = info->size;
    for (const auto& d : *sh) {
      if (!d.is_number_unsigned() && !(d.is_number_integer() && d.get<long long>() >= 0))
        fail(where, what + ": shape entries must be non-negative integers");
      const auto v = d.get<std::uint64_t>();
      if (v != 0 && bytes > std::numeric_limits<std::size_t>::max() / v)
        fail(where, what + ": shape overflows");
      bytes *= static_cast<std::size_t>(v);
      t.shape.push_back(static_cast<std::int64_t>(v));
    }
    for (const auto& o : *off)
      if (!o.is_number_unsigned() && !(o.is_number_integer() && o.get<long long>() >= 0))
        fail(where, what + ": data_offsets must be non-negative integers");
    const auto begin = (*off)[0].get<std::uint64_t>();
    const auto end = (*off)[1].get<std::uint64_t>();
    if (begin > end || end > data_size)
      fail(where, what + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                      "] lie outside the file's " + std::to_string(data_size) +
                      " data bytes (truncated file?)");
    if (end - begin != bytes)
      fail(where, what + ": holds " + std::to_string(end - begin) + " bytes but dtype " + dts +
                      " and its shape need " + std::to_string(bytes));
    t.data = data + begin;
    t.nbytes = bytes;
    if (bytes > 0) ranges.emplace_back(begin, end);
    tensors.emplace(name, std::move(t));
  }
  std::sort(ranges.begin(), ranges.end());
  for (std::size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].first < ranges[i - 1].second)
      fail(where, "corrupt safetensors header: two tensors overlap at byte " + std::to_string(ranges[i].first));
  return tensors;
}

}  // namespace

std::map<std::string, TensorView> parse_safetensors(const std::byte* bytes, std::size_t size,
                                                    const std::string& where,
                                                    std::map<std::string, std::string>* metadata) {
  if (size < 8)
    fail(where, "truncated safetensors file (" + std::to_string(size) + " bytes, less than the 8-byte header length)");
  std::uint64_t n = 0;
  std::memcpy(&n, bytes, 8);  // little-endian on every platform awqd supports
  if (n > kMaxHeaderBytes || n > size - 8)
    fail(where, "corrupt or truncated safetensors file: header length " + std::to_string(n) +
                    " does not fit in " + std::to_string(size) + " bytes");
  const std::string_view header(reinterpret_cast<const char*>(bytes + 8), n);
  const std::byte* data = bytes + 8 + n;
  return parse_header(header, data, size - 8 - n, where, metadata);
}

SafetensorsFile::SafetensorsFile(const std::filesystem::path& path) : path_(path) {
  const std::string where = path.string();
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(where, std::string("cannot open: ") + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    fail(where, std::string("cannot stat: ") + std::strerror(errno));
  }
  map_size_ = static_cast<std::size_t>(st.st_size);
  if (map_size_ == 0) {
    ::close(fd);
    fail(where, "empty file (a safetensors file starts with an 8-byte header length)");
  }
  map_ = ::mmap(nullptr, map_size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map_ == MAP_FAILED) {
    map_ = nullptr;
    fail(where, std::string("cannot mmap: ") + std::strerror(errno));
  }
  ::madvise(map_, map_size_, MADV_WILLNEED);
  try {
    tensors_ = parse_safetensors(static_cast<const std::byte*>(map_), map_size_, where, &metadata_);
  } catch (...) {
    ::munmap(map_, map_size_);
    map_ = nullptr;
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(map_, map_size_);
  map_ = nullptr;
}

TensorStore::TensorStore(const std::filesystem::path& dir) : dir_(dir) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(dir)) throw std::runtime_error(dir.string() + ": not a directory");
  const auto index_path = dir / "model.safetensors.index.json";
  std::map<std::string, std::string> weight_map;
  std::vector<std::string> files;
  if (fs::exists(index_path)) {
    json j;
    std::ifstream in(index_path);
    try {
      j = json::parse(in);
    } catch (const json::exception& e) {
      fail(index_path.string(), std::string("invalid JSON: ") + e.what());
    }
    const auto wm = j.find("weight_map");
    if (wm == j.end() || !wm->is_object()) fail(index_path.string(), "missing \"weight_map\"");
    std::set<std::string> seen;
    for (auto it = wm->begin(); it != wm->end(); ++it) {
      if (!it.value().is_string()) fail(index_path.string(), "weight_map values must be file names");
      const std::string f = it.value().get<std::string>();
      if (f.find('/') != std::string::npos || f == "..")
        fail(index_path.string(), "shard name \"" + f + "\" must be a plain file name");
      weight_map[it.key()] = f;
      if (seen.insert(f).second) files.push_back(f);
    }
  } else if (fs::exists(dir / "model.safetensors")) {
    files.push_back("model.safetensors");
  } else {
    for (const auto& e : fs::directory_iterator(dir))
      if (e.path().extension() == ".safetensors") files.push_back(e.path().filename().string());
    std::sort(files.begin(), files.end());
  }
  if (files.empty()) throw std::runtime_error(dir.string() + ": no *.safetensors files");

  std::map<std::string, const SafetensorsFile*> file_of;
  for (const auto& f : files) {
    const auto path = dir / f;
    if (!fs::exists(path))
      fail(index_path.string(), "lists shard " + f + " which does not exist");
    files_.push_back(std::make_unique<SafetensorsFile>(path));
    file_of[f] = files_.back().get();
    for (const auto& [name, t] : files_.back()->tensors()) {
      if (!index_.emplace(name, &t).second)
        fail(path.string(), "tensor \"" + name + "\" also appears in another shard");
    }
  }
  for (const auto& [name, f] : weight_map) {
    const auto it = index_.find(name);
    if (it == index_.end() || it->second->file != (dir / f).string())
      fail(index_path.string(), "says tensor \"" + name + "\" is in " + f + ", but it is not there");
  }
}

const TensorView& TensorStore::get(const std::string& name) const {
  const auto it = index_.find(name);
  if (it == index_.end()) throw std::runtime_error(dir_.string() + ": missing tensor \"" + name + "\"");
  return *it->second;
}

std::vector<std::string> TensorStore::names() const {
  std::vector<std::string> out;
  for (const auto& [name, t] : index_) out.push_back(name);
  return out;
}

std::size_t TensorStore::total_bytes() const {
  std::size_t n = 0;
  for (const auto& [name, t] : index_) n += t->nbytes;
  return n;
}

std::string safetensors_header(const std::vector<TensorView>& tensors,
                               const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  std::size_t offset = 0;
  for (const auto& t : tensors) {
    const std::size_t want = static_cast<std::size_t>(t.numel()) * dtype_size(t.dtype);
    if (want != t.nbytes)
      throw std::invalid_argument("write_safetensors: tensor " + t.name + " has " +
                                  std::to_string(t.nbytes) + " bytes, its shape needs " + std::to_string(want));
    header[t.name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.nbytes}}};
    offset += t.nbytes;
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keep tensor data 8-byte aligned
  const std::uint64_t n = text.size();
  return std::string(reinterpret_cast<const char*>(&n), 8) + text;
}

void write_safetensors(const std::filesystem::path& path, const std::vector<TensorView>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  const std::string header = safetensors_header(tensors, metadata);
  const auto tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw std::runtime_error(tmp + ": cannot create");
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    for (const auto& t : tensors) out.write(reinterpret_cast<const char*>(t.data), static_cast<std::streamsize>(t.nbytes));
    out.flush();
    if (!out) throw std::runtime_error(tmp + ": write failed (disk full?)");
  }
  std::filesystem::rename(tmp, path);
}

}  // namespace awqd
