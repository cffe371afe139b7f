// fp16/bf16 conversions: exhaustive over all 65536 half values, and rounding of floats checked
// against the definition (nearest representable half, ties to even).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>

#include "engine/fp16.h"

namespace awqd {
namespace {

// Reference: value of a half computed from its fields in double precision.
double half_value(std::uint16_t h) {
  const int sign = (h >> 15) ? -1 : 1;
  const int exp = (h >> 10) & 0x1F;
  const int mant = h & 0x3FF;
  if (exp == 0) return sign * std::ldexp(mant, -24);
  if (exp == 31) return mant ? std::numeric_limits<double>::quiet_NaN()
                             : sign * std::numeric_limits<double>::infinity();
  return sign * std::ldexp(1024 + mant, exp - 25);
}

TEST(Fp16, HalfToFloatIsExactForEveryValue) {
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const double want = half_value(static_cast<std::uint16_t>(h));
    const float got = half_to_float(static_cast<std::uint16_t>(h));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got)) << h;
    } else {
      EXPECT_EQ(static_cast<double>(got), want) << "half bits " << h;
    }
  }
}

TEST(Fp16, RoundTripEveryFiniteHalf) {
  for (std::uint32_t h = 0; h < 65536; ++h) {
    if (((h >> 10) & 0x1F) == 0x1F) continue;
    EXPECT_EQ(float_to_half(half_to_float(static_cast<std::uint16_t>(h))), h);
  }
}

TEST(Fp16, FloatToHalfRoundsToNearestEven) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> mag(-30.f, 15.99f);  // finite halves only
  for (int i = 0; i < 200000; ++i) {
    const float f = std::copysign(std::exp2(mag(rng)), (i & 1) ? 1.f : -1.f);
    const std::uint16_t h = float_to_half(f);
    const double got = half_value(h);
    ASSERT_FALSE(std::isnan(got));
    // No other finite half is closer; on a tie the chosen one has an even mantissa.
    for (int d : {-1, 1}) {
      const std::uint16_t nb = static_cast<std::uint16_t>(h + d);
      if ((nb & 0x7FFF) >= 0x7C00 || ((nb ^ h) & 0x8000)) continue;
      const double other = half_value(nb);
      const double e_got = std::fabs(got - f), e_other = std::fabs(other - f);
      ASSERT_LE(e_got, e_other) << f;
      if (e_got == e_other) {
        ASSERT_EQ(h & 1, 0) << f;
      }
    }
  }
  EXPECT_EQ(float_to_half(65520.f), 0x7C00);  // halfway to 2^16 rounds to infinity
  EXPECT_EQ(float_to_half(65519.f), 0x7BFF);
  EXPECT_TRUE(std::isnan(half_to_float(float_to_half(std::nanf("")))));
}

TEST(Fp16, Bf16ToFloatShiftsBits) {
  EXPECT_EQ(bf16_to_float(0x3F80), 1.0f);
  EXPECT_EQ(bf16_to_float(0xC000), -2.0f);
  EXPECT_EQ(bf16_to_float(0x4049), 3.140625f);
}

}  // namespace
}  // namespace awqd
