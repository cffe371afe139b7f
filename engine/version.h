#pragma once

namespace awqd {
// Engine version recorded with every result (SPEC section 4) and printed by `awqd --version`.
inline constexpr const char* kVersion = "0.1.0";
}  // namespace awqd
