#include "tests/awq_gemm_reference.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <sstream>

#include "engine/awq.h"

namespace awqd::test {

AwqReference make_awq_reference(int K, int N, int G, int max_M) {
  AwqReference r;
  r.K = K;
  r.N = N;
  r.G = G;
  r.max_M = max_M;
  std::mt19937 rng(static_cast<std::uint32_t>(K * 7919 + N * 31 + G + max_M * 3));
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f), amp(0.5f, 2.0f);

  std::vector<float> W(static_cast<std::size_t>(K) * N);
  std::vector<float> col_amp(N);
  for (auto& a : col_amp) a = 0.05f * amp(rng);
  for (int g = 0; g < K / G; ++g)
    for (int n = 0; n < N; ++n) {
      const float offset = col_amp[n] * uni(rng);  // moves the group's zero point off the middle
      for (int k = g * G; k < (g + 1) * G; ++k)
        W[static_cast<std::size_t>(k) * N + n] = col_amp[n] * uni(rng) + offset;
    }
  const AwqTensors t = awq_quantize(W.data(), K, N, G);
  r.w_exact = awq_dequantize(t.qweight.data(), t.qzeros.data(), t.scales.data(), K, N, G);
  r.w16.resize(r.w_exact.size());
  for (std::size_t i = 0; i < r.w_exact.size(); ++i) r.w16[i] = round_to_half(r.w_exact[i]);
  r.packed = cuda::awq_repack(t.qweight.data(), t.qzeros.data(), t.scales.data(), K, N, G);

  r.x.resize(static_cast<std::size_t>(max_M) * K);
  r.bias.resize(N);
  for (auto& v : r.x) v = float_to_half(uni(rng));
  for (auto& v : r.bias) v = float_to_half(uni(rng));

  compute_reference_sums(r);
  return r;
}

void compute_reference_sums(AwqReference& r) {
  const int K = r.K, N = r.N, max_M = r.max_M;
  r.ref.assign(static_cast<std::size_t>(max_M) * N, 0.0);
  r.ref_exact.assign(static_cast<std::size_t>(max_M) * N, 0.0);
  r.mag.assign(static_cast<std::size_t>(max_M) * N, 0.0);
  std::vector<double> sq(N);
  for (int m = 0; m < max_M; ++m) {
    double* acc = &r.ref[static_cast<std::size_t>(m) * N];
    double* acc_exact = &r.ref_exact[static_cast<std::size_t>(m) * N];
    std::fill(sq.begin(), sq.end(), 0.0);
    for (int k = 0; k < K; ++k) {
      const double xv = half_to_float(r.x[static_cast<std::size_t>(m) * K + k]);
      const float* wrow = &r.w16[static_cast<std::size_t>(k) * N];
      const float* wrow_exact = &r.w_exact[static_cast<std::size_t>(k) * N];
      for (int n = 0; n < N; ++n) {
        const double prod = xv * wrow[n];
        acc[n] += prod;
        acc_exact[n] += xv * wrow_exact[n];
        sq[n] += prod * prod;
      }
    }
    for (int n = 0; n < N; ++n) r.mag[static_cast<std::size_t>(m) * N + n] = std::sqrt(sq[n]);
  }
}

AwqWeights awq_weights_of(cuda::AwqGemmPath path, cuda::AwqTile tile) {
  using cuda::AwqTile;
  const bool stream = tile == AwqTile::kSt8 || tile == AwqTile::kSt16 || tile == AwqTile::kSt8w;
  return stream && path == cuda::AwqGemmPath::kTensorCore ? AwqWeights::kExact : AwqWeights::kFp16;
}

std::string check_awq_output(const AwqReference& r, const half_bits* y, int M, bool with_bias,
                             int splits, AwqWeights weights) {
  const double acc_bound = (r.K + 8.0 * splits + 32.0 + r.K / r.G) * std::ldexp(1.0, -23);
  const std::vector<double>& model = weights == AwqWeights::kExact ? r.ref_exact : r.ref;
  auto reference = [&](std::size_t i) {
    return model[i] + (with_bias ? half_to_float(r.bias[i % r.N]) : 0.0);
  };
  auto tolerance = [&](std::size_t i) {
    const double ref = std::fabs(reference(i));
    return std::ldexp(ref, -10) + acc_bound * (ref + 4.0 * r.mag[i]);
  };
  const std::size_t count = static_cast<std::size_t>(M) * r.N;
  std::size_t bad = 0, unwritten = 0, worst_i = 0;
  double worst_ratio = 0.0, err2 = 0.0, ref2 = 0.0;
  for (std::size_t i = 0; i < count; ++i) {
    const double got = half_to_float(y[i]), ref = reference(i);
    const double ratio = std::isfinite(got) ? std::fabs(got - ref) / tolerance(i) : INFINITY;
    if (!std::isfinite(got))
      ++unwritten;
    else if (ratio > 1.0)
      ++bad;
    if (ratio > worst_ratio || (i == 0 && ratio == 0.0)) {
      worst_ratio = ratio;
      worst_i = i;
    }
    if (std::isfinite(got)) {
      err2 += (got - ref) * (got - ref);
      ref2 += ref * ref;
    }
  }
  const double rel_l2 = std::sqrt(err2 / std::max(ref2, 1e-300));
  if (bad == 0 && unwritten == 0 && rel_l2 <= 4e-3) return "";
  std::ostringstream s;
  s << bad << " outside tolerance, " << unwritten << " unwritten or NaN, of " << count
    << "; relative L2 error " << rel_l2 << "; worst at (m=" << worst_i / r.N
    << ", n=" << worst_i % r.N << "): got " << half_to_float(y[worst_i]) << ", ref "
    << reference(worst_i) << ", tol " << tolerance(worst_i) << " (mag " << r.mag[worst_i] << ")";
  return s.str();
}

}  // namespace awqd::test
