#include "tests/test_support.h"

#include <cstdio>

#include <cstdlib>

#ifdef AWQD_HAS_CUDA
#include "kernels/device.cuh"
#endif

namespace awqd::test {

int cuda_devices() {
#ifdef AWQD_HAS_CUDA
  static const int n = awqd::cuda::device_count();
  return n;
#else
  return 0;
#endif
}

std::filesystem::path fixtures_dir() {
  if (const char* env = std::getenv("AWQD_FIXTURES"); env != nullptr && *env != '\0') {
    return std::filesystem::path(env);
  }
  return std::filesystem::path(AWQD_SOURCE_DIR) / ".." / "shared" / "fixtures";
}

std::filesystem::path fixture(const std::string& relative) {
  const auto path = fixtures_dir() / relative;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return {};
  return std::filesystem::weakly_canonical(path, ec);
}

int run_command(const std::string& command, std::string& out) {
  FILE* p = ::popen(command.c_str(), "r");
  if (p == nullptr) return -1;
  char buf[4096];
  while (std::size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  return ::pclose(p);
}

}  // namespace awqd::test
