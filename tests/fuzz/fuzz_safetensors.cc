// libFuzzer target: any byte string as a safetensors file. Must end in tensors whose bytes lie
// inside the input, or a std::runtime_error; never a crash, hang or out-of-bounds read.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>

#include "engine/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto* bytes = reinterpret_cast<const std::byte*>(data);
  try {
    const auto tensors = awqd::parse_safetensors(bytes, size, "fuzz", nullptr);
    volatile unsigned sum = 0;
    for (const auto& [name, t] : tensors) {
      if (t.nbytes == 0) continue;
      if (t.data < bytes || t.data + t.nbytes > bytes + size) __builtin_trap();
      sum = sum + static_cast<unsigned>(t.data[0]) + static_cast<unsigned>(t.data[t.nbytes - 1]);
    }
  } catch (const std::runtime_error&) {
  }
  return 0;
}
