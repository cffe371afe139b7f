// The AWQ GEMM checkpoint format (SPEC section 2), for a Linear with K inputs and N outputs and
// group size G:
//   qweight int32 [K, N/8]   eight 4-bit values per word, packed along N
//   qzeros  int32 [K/G, N/8] packed the same way, unsigned 0..15
//   scales  fp16  [K/G, N]
//   W[k][n] = (q[k][n] - z[k/G][n]) * s[k/G][n],   y = x W + b
// Packing order within a word: bits 4*i..4*i+3 hold column 8c + kAwqPackOrder[i], so logical
// column j of word c sits at nibble kAwqNibbleOf[j].
#pragma once

#include <cstdint>
#include <vector>

#include "engine/fp16.h"

namespace awqd {

inline constexpr int kAwqPackOrder[8] = {0, 2, 4, 6, 1, 3, 5, 7};  // nibble i -> column offset
inline constexpr int kAwqNibbleOf[8] = {0, 4, 1, 5, 2, 6, 3, 7};   // column offset j -> nibble

// The 4-bit value of logical column j (0..7) in a packed word.
inline std::uint32_t awq_unpack(std::int32_t word, int j) {
  return (static_cast<std::uint32_t>(word) >> (4 * kAwqNibbleOf[j])) & 0xFu;
}

// Packs values q [rows, cols] (0..15, row-major) into words [rows, cols/8]. cols % 8 == 0.
std::vector<std::int32_t> awq_pack(const std::uint8_t* q, int rows, int cols);

// Unpacks words [rows, cols/8] into values [rows, cols].
std::vector<std::uint8_t> awq_unpack_all(const std::int32_t* packed, int rows, int cols);

// Dequantizes to W [K, N] in fp32, exactly per the formula above (fp16 scale widened to fp32).
std::vector<float> awq_dequantize(const std::int32_t* qweight, const std::int32_t* qzeros,
                                  const half_bits* scales, int K, int N, int group_size);

// Zero-point 4-bit quantization of one group of weights (w_min..w_max), as AutoAWQ does it:
//   s = (max - min) / 15, z = clamp(-round(min / s), 0, 15), q = clamp(round(w / s) + z, 0, 15).
struct AwqGroupParams {
  float scale;        // s (already rounded to fp16 when stored)
  std::uint8_t zero;  // z
};
AwqGroupParams awq_group_params(float w_min, float w_max);
std::uint8_t awq_quantize_value(float w, AwqGroupParams p);

// Quantizes W [K, N] (fp32, row-major, K % G == 0, N % 8 == 0) with per-(group, column) zero-point
// params computed from each group's min and max, and packs it. Scales are stored as fp16 and the
// quantized values are computed against the stored (fp16-rounded) scale.
struct AwqTensors {
  std::vector<std::int32_t> qweight;  // [K, N/8]
  std::vector<std::int32_t> qzeros;   // [K/G, N/8]
  std::vector<half_bits> scales;      // [K/G, N]
};
AwqTensors awq_quantize(const float* W, int K, int N, int group_size);

}  // namespace awqd
