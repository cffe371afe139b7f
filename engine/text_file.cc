// read_file(): std::ifstream for the bytes, liblzma's stream decoder for `.xz` (all streams of a
// concatenated file, no memory limit: the caller chose the file). See text_file.h.
#include "engine/text_file.h"

#include <lzma.h>

#include <fstream>
#include <iterator>
#include <stdexcept>

namespace awqd {
namespace {

std::string xz_error(lzma_ret ret) {
  switch (ret) {
    case LZMA_MEM_ERROR:
      return "out of memory";
    case LZMA_FORMAT_ERROR:
      return "not xz data";
    case LZMA_OPTIONS_ERROR:
      return "unsupported xz options";
    case LZMA_DATA_ERROR:
      return "corrupt xz data";
    case LZMA_BUF_ERROR:
      return "truncated xz data";
    default:
      return "liblzma error " + std::to_string(static_cast<int>(ret));
  }
}

std::string decompress_xz(const std::string& in, const std::filesystem::path& path) {
  lzma_stream strm = LZMA_STREAM_INIT;
  lzma_ret ret = lzma_stream_decoder(&strm, UINT64_MAX, LZMA_CONCATENATED);
  if (ret != LZMA_OK) throw std::runtime_error(path.string() + ": " + xz_error(ret));
  std::string out(in.size() * 4 + 4096, '\0');
  strm.next_in = reinterpret_cast<const std::uint8_t*>(in.data());
  strm.avail_in = in.size();
  std::size_t produced = 0;
  for (;;) {
    if (produced == out.size()) out.resize(out.size() * 2);
    strm.next_out = reinterpret_cast<std::uint8_t*>(out.data()) + produced;
    strm.avail_out = out.size() - produced;
    ret = lzma_code(&strm, LZMA_FINISH);
    produced = out.size() - strm.avail_out;
    if (ret == LZMA_STREAM_END) break;
    if (ret != LZMA_OK) {
      lzma_end(&strm);
      throw std::runtime_error(path.string() + ": " + xz_error(ret));
    }
  }
  lzma_end(&strm);
  out.resize(produced);
  return out;
}

}  // namespace

std::string read_file(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    throw std::runtime_error(path.string() + ": no such file");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path.string() + ": cannot open file");
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw std::runtime_error(path.string() + ": read error");
  if (path.extension() == ".xz") return decompress_xz(data, path);
  return data;
}

}  // namespace awqd
