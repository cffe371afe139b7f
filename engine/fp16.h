// IEEE 754 binary16 and bfloat16 conversions on the CPU, bit-exact with the GPU's
// round-to-nearest-even __float2half_rn / __half2float. The CPU reference executor keeps weights
// as fp16 bits and computes in fp32; these are its only conversions.
#pragma once

#include <bit>
#include <cstdint>

namespace awqd {

using half_bits = std::uint16_t;  // raw fp16 storage on the host

inline float half_to_float(half_bits h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1Fu;
  std::uint32_t mant = h & 0x3FFu;
  std::uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;  // +-0
    } else {         // subnormal: renormalise
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400u) == 0);
      bits = sign | static_cast<std::uint32_t>(127 - 15 - e) << 23 | (mant & 0x3FFu) << 13;
    }
  } else if (exp == 0x1F) {
    bits = sign | 0x7F800000u | mant << 13;  // inf / nan
  } else {
    bits = sign | (exp + 127 - 15) << 23 | mant << 13;
  }
  return std::bit_cast<float>(bits);
}

inline half_bits float_to_half(float f) {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  const std::uint32_t abs = x & 0x7FFFFFFFu;
  if (abs >= 0x7F800000u) {  // inf or nan (nan keeps a quiet payload bit)
    return static_cast<half_bits>(sign | 0x7C00u | (abs > 0x7F800000u ? 0x200u : 0u));
  }
  if (abs >= 0x477FF000u) return static_cast<half_bits>(sign | 0x7C00u);  // rounds to inf
  if (abs < 0x38800000u) {  // result is subnormal or zero in fp16
    if (abs < 0x33000000u) return static_cast<half_bits>(sign);  // below half the min subnormal
    const std::uint32_t e = abs >> 23;
    const std::uint32_t mant = (abs & 0x7FFFFFu) | 0x800000u;
    const std::uint32_t shift = 126 - e;  // 14..24 (fp16 subnormal exponent is -24)
    std::uint32_t h = mant >> shift;
    const std::uint32_t rem = mant & ((1u << shift) - 1);
    const std::uint32_t halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (h & 1u))) ++h;
    return static_cast<half_bits>(sign | h);
  }
  std::uint32_t h = ((abs >> 23) - 127 + 15) << 10 | (abs >> 13 & 0x3FFu);
  const std::uint32_t rem = abs & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // may carry into exponent: correct
  return static_cast<half_bits>(sign | h);
}

inline float bf16_to_float(std::uint16_t b) {
  return std::bit_cast<float>(static_cast<std::uint32_t>(b) << 16);
}

// Rounds a float to the nearest fp16 value and back: what storing an activation in fp16 does.
inline float round_to_half(float f) { return half_to_float(float_to_half(f)); }

}  // namespace awqd
