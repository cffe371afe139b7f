#include "engine/awq.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace awqd {

std::vector<std::int32_t> awq_pack(const std::uint8_t* q, int rows, int cols) {
  if (cols % 8 != 0) throw std::invalid_argument("awq_pack: cols must be a multiple of 8");
  std::vector<std::int32_t> out(static_cast<std::size_t>(rows) * (cols / 8));
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < cols / 8; ++c) {
      std::uint32_t word = 0;
      for (int j = 0; j < 8; ++j) {
        const std::uint32_t v = q[static_cast<std::size_t>(r) * cols + 8 * c + j] & 0xFu;
        word |= v << (4 * kAwqNibbleOf[j]);
      }
      out[static_cast<std::size_t>(r) * (cols / 8) + c] = static_cast<std::int32_t>(word);
    }
  }
  return out;
}

std::vector<std::uint8_t> awq_unpack_all(const std::int32_t* packed, int rows, int cols) {
  std::vector<std::uint8_t> out(static_cast<std::size_t>(rows) * cols);
  for (int r = 0; r < rows; ++r)
    for (int n = 0; n < cols; ++n)
      out[static_cast<std::size_t>(r) * cols + n] =
          static_cast<std::uint8_t>(awq_unpack(packed[static_cast<std::size_t>(r) * (cols / 8) + n / 8], n % 8));
  return out;
}

std::vector<float> awq_dequantize(const std::int32_t* qweight, const std::int32_t* qzeros,
                                  const half_bits* scales, int K, int N, int group_size) {
  if (K % group_size != 0 || N % 8 != 0)
    throw std::invalid_argument("awq_dequantize: K % G != 0 or N % 8 != 0");
  std::vector<float> W(static_cast<std::size_t>(K) * N);
  const int words = N / 8;
  for (int k = 0; k < K; ++k) {
    const int g = k / group_size;
    for (int n = 0; n < N; ++n) {
      const float q = static_cast<float>(awq_unpack(qweight[static_cast<std::size_t>(k) * words + n / 8], n % 8));
      const float z = static_cast<float>(awq_unpack(qzeros[static_cast<std::size_t>(g) * words + n / 8], n % 8));
      const float s = half_to_float(scales[static_cast<std::size_t>(g) * N + n]);
      W[static_cast<std::size_t>(k) * N + n] = (q - z) * s;
    }
  }
  return W;
}

AwqGroupParams awq_group_params(float w_min, float w_max) {
  // AutoAWQ clamps the scale away from zero so that constant groups stay representable.
  const float s = round_to_half(std::max((w_max - w_min) / 15.0f, 1e-5f));
  const float z = std::clamp(-std::round(w_min / s), 0.0f, 15.0f);
  return {s, static_cast<std::uint8_t>(z)};
}

std::uint8_t awq_quantize_value(float w, AwqGroupParams p) {
  const float q = std::clamp(std::round(w / p.scale) + static_cast<float>(p.zero), 0.0f, 15.0f);
  return static_cast<std::uint8_t>(q);
}

AwqTensors awq_quantize(const float* W, int K, int N, int group_size) {
  if (group_size <= 0 || K % group_size != 0)
    throw std::invalid_argument("awq_quantize: K=" + std::to_string(K) +
                                " is not a multiple of the group size " + std::to_string(group_size));
  if (N % 8 != 0) throw std::invalid_argument("awq_quantize: N must be a multiple of 8");
  const int groups = K / group_size;
  std::vector<std::uint8_t> q(static_cast<std::size_t>(K) * N), z(static_cast<std::size_t>(groups) * N);
  AwqTensors out;
  out.scales.resize(static_cast<std::size_t>(groups) * N);
  for (int g = 0; g < groups; ++g) {
    for (int n = 0; n < N; ++n) {
      float lo = INFINITY, hi = -INFINITY;
      for (int k = g * group_size; k < (g + 1) * group_size; ++k) {
        lo = std::min(lo, W[static_cast<std::size_t>(k) * N + n]);
        hi = std::max(hi, W[static_cast<std::size_t>(k) * N + n]);
      }
      const AwqGroupParams p = awq_group_params(lo, hi);
      out.scales[static_cast<std::size_t>(g) * N + n] = float_to_half(p.scale);
      z[static_cast<std::size_t>(g) * N + n] = p.zero;
      for (int k = g * group_size; k < (g + 1) * group_size; ++k)
        q[static_cast<std::size_t>(k) * N + n] = awq_quantize_value(W[static_cast<std::size_t>(k) * N + n], p);
    }
  }
  out.qweight = awq_pack(q.data(), K, N);
  out.qzeros = awq_pack(z.data(), groups, N);
  return out;
}

}  // namespace awqd
