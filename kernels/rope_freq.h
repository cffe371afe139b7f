// RoPE inverse frequencies, computed on the host once per model and uploaded as a [head_dim / 2]
// fp32 table that the GPU kernel (kernels/rope.cuh) and the CPU reference both read, so the two
// rotate by identical angles. Plain C++17 (no CUDA): the CPU executor uses it too.
//
//   default: inv_freq[i] = theta^(-2i / head_dim)                      (HF rotate_half layout)
//   linear:  inv_freq[i] / factor
//   llama3:  HF's _compute_llama3_parameters: wavelengths shorter than
//            original_max / high_freq_factor keep their frequency, longer than
//            original_max / low_freq_factor are divided by `factor`, and the band between is
//            interpolated smoothly.
// Computed in double and rounded once to fp32 (HF computes in fp32; the difference is below
// fp16 resolution of the rotated values).
#pragma once

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

namespace awqd::cuda {

struct RopeFreqConfig {
  enum class Scaling { kNone, kLinear, kLlama3 };
  int head_dim = 128;
  double theta = 10000.0;
  Scaling scaling = Scaling::kNone;
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int original_max_position_embeddings = 8192;
};

inline std::vector<float> rope_inv_freq(const RopeFreqConfig& c) {
  if (c.head_dim <= 0 || c.head_dim % 2 != 0) {
    throw std::invalid_argument("rope_inv_freq: head_dim must be positive and even, got " +
                                std::to_string(c.head_dim));
  }
  if (c.scaling != RopeFreqConfig::Scaling::kNone && !(c.factor > 0.0)) {
    throw std::invalid_argument("rope_inv_freq: scaling factor must be positive");
  }
  if (c.scaling == RopeFreqConfig::Scaling::kLlama3 && !(c.high_freq_factor > c.low_freq_factor)) {
    throw std::invalid_argument("rope_inv_freq: llama3 needs high_freq_factor > low_freq_factor");
  }
  const double pi = 3.14159265358979323846;
  std::vector<float> out(c.head_dim / 2);
  for (int i = 0; i < c.head_dim / 2; ++i) {
    double f = std::pow(c.theta, -2.0 * i / c.head_dim);
    switch (c.scaling) {
      case RopeFreqConfig::Scaling::kNone:
        break;
      case RopeFreqConfig::Scaling::kLinear:
        f /= c.factor;
        break;
      case RopeFreqConfig::Scaling::kLlama3: {
        const double old_len = c.original_max_position_embeddings;
        const double low_freq_wavelen = old_len / c.low_freq_factor;
        const double high_freq_wavelen = old_len / c.high_freq_factor;
        const double wavelen = 2.0 * pi / f;
        if (wavelen > low_freq_wavelen) {
          f /= c.factor;
        } else if (wavelen >= high_freq_wavelen) {
          const double smooth = (old_len / wavelen - c.low_freq_factor) /
                                (c.high_freq_factor - c.low_freq_factor);
          f = (1.0 - smooth) * f / c.factor + smooth * f;
        }
        break;
      }
    }
    out[i] = static_cast<float>(f);
  }
  return out;
}

}  // namespace awqd::cuda
