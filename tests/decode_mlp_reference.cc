#include "tests/decode_mlp_reference.h"

#include <cmath>
#include <random>
#include <sstream>

namespace awqd::test {
namespace {

float h16(double v) { return round_to_half(static_cast<float>(v)); }

// y[m][n] = fp16(sum_k x[m][k] * w16[k][n] + bias[n]), the sum in double.
std::vector<float> gemm(const std::vector<float>& x, int M, const AwqReference& w, bool with_bias) {
  std::vector<double> acc(static_cast<std::size_t>(M) * w.N, 0.0);
  for (int m = 0; m < M; ++m)
    for (int k = 0; k < w.K; ++k) {
      const double xv = x[static_cast<std::size_t>(m) * w.K + k];
      const float* wrow = &w.w16[static_cast<std::size_t>(k) * w.N];
      double* a = &acc[static_cast<std::size_t>(m) * w.N];
      for (int n = 0; n < w.N; ++n) a[n] += xv * wrow[n];
    }
  std::vector<float> y(acc.size());
  for (std::size_t i = 0; i < acc.size(); ++i)
    y[i] = h16(acc[i] + (with_bias ? half_to_float(w.bias[i % w.N]) : 0.0));
  return y;
}

// residual = fp16(residual + y), then rmsnorm(residual) * weight as fp16.
std::vector<float> add_rmsnorm(std::vector<float>& residual, const std::vector<float>& y, int M, int H,
                               const std::vector<half_bits>& weight, float eps) {
  std::vector<float> out(residual.size());
  for (int m = 0; m < M; ++m) {
    double ss = 0.0;
    for (int n = 0; n < H; ++n) {
      float& r = residual[static_cast<std::size_t>(m) * H + n];
      r = round_to_half(r + y[static_cast<std::size_t>(m) * H + n]);
      ss += static_cast<double>(r) * r;
    }
    const float inv = static_cast<float>(1.0 / std::sqrt(ss / H + eps));
    for (int n = 0; n < H; ++n) {
      const std::size_t i = static_cast<std::size_t>(m) * H + n;
      out[i] = round_to_half(residual[i] * inv * half_to_float(weight[n]));
    }
  }
  return out;
}

}  // namespace

MlpReference make_mlp_reference(int M, int Ko, int H, int I, bool with_bias) {
  MlpReference r;
  r.M = M;
  r.Ko = Ko;
  r.H = H;
  r.I = I;
  r.with_bias = with_bias;
  r.o = make_awq_reference(Ko, H, 128, 1);
  r.gate_up = make_awq_reference(H, 2 * I, 128, 1);
  r.down = make_awq_reference(I, H, 128, 1);
  std::mt19937 rng(static_cast<std::uint32_t>(M * 131 + Ko * 7 + H * 3 + I));
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f), pos(0.5f, 1.5f);
  r.attn.resize(static_cast<std::size_t>(M) * Ko);
  r.residual.resize(static_cast<std::size_t>(M) * H);
  r.post_norm.resize(H);
  r.next_norm.resize(H);
  for (auto& v : r.attn) v = float_to_half(uni(rng));
  for (auto& v : r.residual) v = float_to_half(2.0f * uni(rng));
  for (auto& v : r.post_norm) v = float_to_half(pos(rng));
  for (auto& v : r.next_norm) v = float_to_half(pos(rng));

  std::vector<float> x(r.attn.size()), res(r.residual.size());
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = half_to_float(r.attn[i]);
  for (std::size_t i = 0; i < res.size(); ++i) res[i] = half_to_float(r.residual[i]);
  const std::vector<float> h = add_rmsnorm(res, gemm(x, M, r.o, with_bias), M, H, r.post_norm, r.eps);
  const std::vector<float> gu = gemm(h, M, r.gate_up, with_bias);
  std::vector<float> act(static_cast<std::size_t>(M) * I);
  for (int m = 0; m < M; ++m)
    for (int i = 0; i < I; ++i) {
      const float g = gu[static_cast<std::size_t>(m) * 2 * I + i];
      const float u = gu[static_cast<std::size_t>(m) * 2 * I + I + i];
      act[static_cast<std::size_t>(m) * I + i] = round_to_half(g / (1.0f + std::exp(-g)) * u);
    }
  r.want_out = add_rmsnorm(res, gemm(act, M, r.down, with_bias), M, H, r.next_norm, r.eps);
  r.want_residual = res;
  return r;
}

std::string check_mlp_output(const MlpReference& r, const half_bits* residual, const half_bits* out) {
  std::ostringstream report;
  auto check = [&](const char* name, const half_bits* got, const std::vector<float>& want) {
    double err2 = 0.0, ref2 = 0.0, worst = 0.0;
    std::size_t bad = 0, worst_i = 0;
    for (int m = 0; m < r.M; ++m) {
      double rms = 0.0;
      for (int n = 0; n < r.H; ++n) rms += std::pow(want[static_cast<std::size_t>(m) * r.H + n], 2);
      rms = std::sqrt(rms / r.H);
      for (int n = 0; n < r.H; ++n) {
        const std::size_t i = static_cast<std::size_t>(m) * r.H + n;
        const double g = half_to_float(got[i]), w = want[i];
        const double tol = 0.02 * rms + std::ldexp(std::fabs(w), -8);
        const double ratio = std::isfinite(g) ? std::fabs(g - w) / tol : INFINITY;
        if (!(ratio <= 1.0)) ++bad;
        if (!(ratio <= worst)) {
          worst = ratio;
          worst_i = i;
        }
        err2 += std::isfinite(g) ? (g - w) * (g - w) : INFINITY;
        ref2 += w * w;
      }
    }
    const double rel = std::sqrt(err2 / ref2);
    if (bad > 0 || !(rel < 5e-3))
      report << name << ": " << bad << " of " << r.M * r.H << " outside tolerance, relative L2 " << rel
             << ", worst at row " << worst_i / r.H << " col " << worst_i % r.H << ": got "
             << half_to_float(got[worst_i]) << " want " << want[worst_i] << " (" << worst
             << " x tolerance); ";
  };
  check("residual", residual, r.want_residual);
  check("out", out, r.want_out);
  return report.str();
}

}  // namespace awqd::test
