// libFuzzer target: any byte string as config.json. Must parse into a consistent config or throw
// std::runtime_error with a message; never crash.
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "engine/model_config.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto j = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  try {
    const awqd::ModelConfig c = awqd::parse_model_config(j, "fuzz");
    if (c.hidden_size <= 0 || c.num_heads <= 0 || c.num_kv_heads <= 0 || c.num_heads % c.num_kv_heads != 0 ||
        c.head_dim <= 0 || c.head_dim % 2 != 0)
      __builtin_trap();  // the parser let an inconsistent config through
  } catch (const std::runtime_error&) {
  }
  return 0;
}
