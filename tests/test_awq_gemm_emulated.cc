// The AWQ GEMM kernels' real source (kernels/awq_gemm_kernel.cuh, awq_gemm_stream.cuh) run on the
// CPU through tests/emu/cuda_emulation.h: every tile shape of both paths (sm_80 with deferred
// cp.async groups, Turing with register staging) and the stream kernel (both mma flavours),
// split-K with blocks run in random order, odd shapes,
// the three group sizes, against the reference of tests/awq_gemm_reference.h. Runs in CI, which
// has no GPU; the GPU test (test_awq_gemm) covers the launcher, cuBLASLt and real hardware.
#include <gtest/gtest.h>

#include "tests/emu/cuda_emulation.h"
// (the emulation must come first: it defines what the kernel header expects from CUDA)
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/awq_gemm_kernel.cuh"
#include "kernels/awq_layout.cuh"
#include "kernels/silu.cuh"
#include "tests/awq_gemm_reference.h"

namespace {

using awqd::half_bits;
using awqd::test::AwqReference;
using namespace awqd::cuda::awq_gemm_detail;

// The kernel parameters both paths share, over the test's host buffers (y, split-K partial sums,
// tile counters), as the launcher fills them.
Params make_params(const AwqReference& r, int M, int splits, bool with_bias, std::vector<half_bits>& y,
                   std::vector<float>& partials, std::vector<int>& counters) {
  const auto& w = r.packed;
  const int k_tiles = w.k_pad / 64, n_stripes = w.n_pad / 64;
  Params p{};
  p.x = reinterpret_cast<const __half*>(r.x.data());
  p.tiles = reinterpret_cast<const uint4*>(w.tiles.data());
  p.scales = reinterpret_cast<const __half*>(w.scales.data());
  p.zeros = w.zeros.data();
  p.bias = with_bias ? reinterpret_cast<const __half*>(r.bias.data()) : nullptr;
  p.y = reinterpret_cast<__half*>(y.data());
  p.partials = partials.data();
  p.counters = counters.data();
  p.M = M;
  p.N = r.N;
  p.K = r.K;
  p.k_tiles = k_tiles;
  p.n_stripes = n_stripes;
  p.groups = w.k_pad / r.G;
  p.group_shift = r.G == 32 ? 5 : r.G == 64 ? 6 : 7;
  p.splits = splits;
  p.x_ld = r.K;
  return p;
}

// Mirrors the launcher (kernels/awq_gemm.cu, run_tensor_core) for one tile shape.
template <class C>
void emulate_and_check(const AwqReference& r, int M, int splits, bool with_bias,
                       std::mt19937& rng) {
  const auto& w = r.packed;
  const int k_tiles = w.k_pad / 64, n_stripes = w.n_pad / 64;
  splits = std::min(splits, k_tiles);
  std::vector<half_bits> y(static_cast<std::size_t>(M) * r.N, 0x7E00);  // NaN poison
  std::vector<float> partials(static_cast<std::size_t>(splits) * M * r.N, NAN);
  const int n_blocks = (n_stripes + C::kWarpsN - 1) / C::kWarpsN;
  const int m_blocks = (M + C::kBM - 1) / C::kBM;
  std::vector<int> counters(static_cast<std::size_t>(n_blocks) * m_blocks, 0);
  Params p = make_params(r, M, splits, with_bias, y, partials, counters);

  // Blocks in random order: any of a tile's splits may be the last to arrive.
  std::vector<emu::Dim> blocks;
  for (unsigned z = 0; z < static_cast<unsigned>(splits); ++z)
    for (unsigned yb = 0; yb < static_cast<unsigned>(m_blocks); ++yb)
      for (unsigned xb = 0; xb < static_cast<unsigned>(n_blocks); ++xb)
        blocks.push_back({xb, yb, z});
  std::shuffle(blocks.begin(), blocks.end(), rng);
  const emu::Dim grid{static_cast<unsigned>(n_blocks), static_cast<unsigned>(m_blocks),
                      static_cast<unsigned>(splits)};
  for (const emu::Dim& b : blocks) emu::run_block(C::kThreads, b, grid, [&] { gemm_block<C>(p); });

  const std::string what =
      std::string(C::kTuring ? "turing" : "sm80") + " tile " + std::to_string(C::kBM) + "x" +
      std::to_string(C::kBN) + " M=" + std::to_string(M) + " K=" + std::to_string(r.K) +
      " N=" + std::to_string(r.N) + " G=" + std::to_string(r.G) +
      " splits=" + std::to_string(splits) + " bias=" + std::to_string(with_bias);
  const std::string failure = awqd::test::check_awq_output(r, y.data(), M, with_bias, splits,
                                                           awqd::test::AwqWeights::kFp16);
  EXPECT_TRUE(failure.empty()) << what << ": " << failure;
  EXPECT_TRUE(std::all_of(counters.begin(), counters.end(), [](int c) { return c == 0; }))
      << what << ": split-K counters not reset";
}

// Mirrors the launcher (kernels/awq_gemm.cu, plan_stream and run_tensor_core) for the stream
// kernel: runs it over the grid, blocks in random order, and returns y (NaN where unwritten).
// gate_up (when given): the kernel's input is SiLU(gate_up[:, 0..K)) * gate_up[:, K..2K).
// counters_reset: whether every split-K counter is zero again after the launch.
template <class C>
std::vector<half_bits> run_stream(const AwqReference& r, int M, int splits, bool with_bias,
                                  std::mt19937& rng, const std::vector<half_bits>* gate_up,
                                  const NormFold& fold, bool& counters_reset) {
  const auto& w = r.packed;
  const int n_stripes = w.n_pad / 64;
  const int batches = (w.k_pad + 127) / 128;
  const int rows = std::min(M, C::kRows);
  const int m_blocks = (M + C::kRows - 1) / C::kRows;
  const int n_blocks = (n_stripes + C::kStripes - 1) / C::kStripes;
  std::vector<half_bits> y(static_cast<std::size_t>(M) * r.N, 0x7E00);  // NaN poison
  std::vector<float> partials(static_cast<std::size_t>(splits) * M * r.N, NAN);
  std::vector<int> counters(static_cast<std::size_t>(n_blocks) * m_blocks, 0);
  Params p = make_params(r, M, splits, with_bias, y, partials, counters);
  p.batches = batches;
  p.phase_batches = stream_phase_batches<C>(rows, (batches + splits - 1) / splits);
  p.x_stride = p.phase_batches * 128 + 8;
  if (gate_up != nullptr) {
    p.x = reinterpret_cast<const __half*>(gate_up->data());
    p.x_ld = 2 * r.K;
    p.silu_mul = 1;
  }
  EXPECT_LE(rows * p.x_stride * 2, C::kXBytes);

  std::vector<emu::Dim> blocks;
  for (unsigned z = 0; z < static_cast<unsigned>(splits); ++z)
    for (unsigned yb = 0; yb < static_cast<unsigned>(m_blocks); ++yb)
      for (unsigned xb = 0; xb < static_cast<unsigned>(n_blocks); ++xb)
        blocks.push_back({yb, xb, z});
  std::shuffle(blocks.begin(), blocks.end(), rng);
  const emu::Dim grid{static_cast<unsigned>(m_blocks), static_cast<unsigned>(n_blocks),
                      static_cast<unsigned>(splits)};
  for (const emu::Dim& b : blocks)
    emu::run_block(C::kThreads, b, grid, [&] { stream_block<C>(p, fold); });
  counters_reset = std::all_of(counters.begin(), counters.end(), [](int c) { return c == 0; });
  return y;
}

template <class C>
std::string stream_name(const AwqReference& r, int M, int splits, bool with_bias) {
  return std::string(C::kTuring ? "turing" : "sm80") + " stream " + std::to_string(C::kRows) +
         (C::kWarpsK == 16 ? "w" : "") + (C::kDirectX ? " direct-x" : "") +
         " M=" + std::to_string(M) + " K=" + std::to_string(r.K) + " N=" + std::to_string(r.N) +
         " G=" + std::to_string(r.G) + " splits=" + std::to_string(splits) +
         " bias=" + std::to_string(with_bias);
}

template <class C>
void emulate_stream_and_check(const AwqReference& r, int M, int splits, bool with_bias,
                              std::mt19937& rng, const std::vector<half_bits>* gate_up = nullptr) {
  splits = std::min(splits, (r.packed.k_pad + 127) / 128);
  bool counters_reset = false;
  const std::vector<half_bits> y =
      run_stream<C>(r, M, splits, with_bias, rng, gate_up, NormFold{}, counters_reset);
  const std::string what =
      stream_name<C>(r, M, splits, with_bias) + (gate_up != nullptr ? " silu_mul" : "");
  const std::string failure = awqd::test::check_awq_output(
      r, y.data(), M, with_bias, splits,
      C::kExactWeights ? awqd::test::AwqWeights::kExact : awqd::test::AwqWeights::kFp16);
  EXPECT_TRUE(failure.empty()) << what << ": " << failure;
  EXPECT_TRUE(counters_reset) << what << ": split-K counters not reset";
}

// The folded norm (NormFold, the C::Folded variant) against the plain kernel, on the same
// blocks' sums:
// - norm_out: residual' = fp16(residual + y), y' = fp16(residual' * weight) bit for bit, and the
//   64-column sums of residual'^2 (fp32, to a few ulp of a 64-term sum);
// - norm_in: y' = fp16(y_unscaled * rsqrt(sum / K + eps) + bias), where y_unscaled is the kernel's
//   own fp16 output without bias: within one fp16 ulp of that rounding (and the bias's).
template <class C>
void emulate_fold_and_check(const AwqReference& r, int M, int splits, std::mt19937& rng) {
  using awqd::float_to_half;
  using awqd::half_to_float;
  splits = std::min(splits, (r.packed.k_pad + 127) / 128);
  const std::string what = stream_name<C>(r, M, splits, true);
  const std::size_t count = static_cast<std::size_t>(M) * r.N;
  ASSERT_EQ(r.N % 64, 0);
  std::uniform_real_distribution<float> dist(-2.0f, 2.0f);
  bool reset = false;
  const std::vector<half_bits> y = run_stream<C>(r, M, splits, true, rng, nullptr, NormFold{}, reset);

  std::vector<half_bits> residual(count), weight(r.N);
  for (half_bits& h : residual) h = float_to_half(dist(rng));
  for (half_bits& h : weight) h = float_to_half(dist(rng));
  std::vector<half_bits> res_after = residual;
  std::vector<float> sumsq(static_cast<std::size_t>(M) * (r.N / 64), NAN);
  NormFold out{};
  out.residual = reinterpret_cast<__half*>(res_after.data());
  out.weight = reinterpret_cast<const __half*>(weight.data());
  out.sumsq_out = sumsq.data();
  using Folded = typename C::Folded;  // the kernel variant that takes a NormFold
  const std::vector<half_bits> h = run_stream<Folded>(r, M, splits, true, rng, nullptr, out, reset);
  EXPECT_TRUE(reset) << what << " norm_out: split-K counters not reset";
  std::size_t bad = 0;
  for (int m = 0; m < M; ++m)
    for (int s = 0; s < r.N / 64; ++s) {
      double want = 0.0;
      for (int c = 0; c < 64; ++c) {
        const std::size_t i = static_cast<std::size_t>(m) * r.N + s * 64 + c;
        const half_bits xn = float_to_half(half_to_float(residual[i]) + half_to_float(y[i]));
        const half_bits hn = float_to_half(half_to_float(xn) * half_to_float(weight[s * 64 + c]));
        if (res_after[i] != xn || h[i] != hn) ++bad;
        want += static_cast<double>(half_to_float(xn)) * half_to_float(xn);
      }
      const float got = sumsq[static_cast<std::size_t>(m) * (r.N / 64) + s];
      if (!(std::fabs(got - want) <= 1e-5 * want + 1e-30)) ++bad;
    }
  EXPECT_EQ(bad, 0u) << what << " norm_out: residual, y or sums differ";

  // norm_in: the kernel's output without bias, then with the folded scale and the bias.
  const std::vector<half_bits> y0 = run_stream<C>(r, M, splits, false, rng, nullptr, NormFold{}, reset);
  const int per_row = r.K / 64;
  ASSERT_EQ(r.K % 64, 0);
  std::vector<float> sums(static_cast<std::size_t>(M) * per_row);
  std::uniform_real_distribution<float> positive(0.5f, 8.0f);
  for (float& v : sums) v = positive(rng);
  NormFold in{};
  in.sumsq_in = sums.data();
  in.eps = 1e-5f;
  const std::vector<half_bits> y1 = run_stream<Folded>(r, M, splits, true, rng, nullptr, in, reset);
  bad = 0;
  for (int m = 0; m < M; ++m) {
    double total = 0.0;
    for (int c = 0; c < per_row; ++c) total += sums[static_cast<std::size_t>(m) * per_row + c];
    const double scale = 1.0 / std::sqrt(total / r.K + 1e-5);
    for (int n = 0; n < r.N; ++n) {
      const std::size_t i = static_cast<std::size_t>(m) * r.N + n;
      const double want = half_to_float(y0[i]) * scale + half_to_float(r.bias[n]);
      const double ulp = std::ldexp(1.0, -10) * (std::fabs(half_to_float(y0[i]) * scale) +
                                                 std::fabs(half_to_float(r.bias[n])) + std::fabs(want));
      if (!(std::fabs(half_to_float(y1[i]) - want) <= ulp + 1e-6)) ++bad;
    }
  }
  EXPECT_EQ(bad, 0u) << what << " norm_in: scaled rows differ";
}

// A reference whose activations are SiLU(gate) * up of a random gate_up [max_M, 2K] (filled
// here), by silu_mul8 itself, with the reference sums recomputed for them.
AwqReference with_silu_input(AwqReference r, std::vector<half_bits>& gate_up, std::mt19937& rng) {
  const int K = r.K, M = r.max_M;
  std::uniform_real_distribution<float> dist(-4.0f, 4.0f);
  gate_up.resize(static_cast<std::size_t>(M) * 2 * K);
  for (half_bits& h : gate_up) h = awqd::float_to_half(dist(rng));
  for (int m = 0; m < M; ++m)
    for (int k = 0; k < K; k += 8) {
      uint4 g, u, a;
      std::memcpy(&g, &gate_up[static_cast<std::size_t>(m) * 2 * K + k], 16);
      std::memcpy(&u, &gate_up[static_cast<std::size_t>(m) * 2 * K + K + k], 16);
      a = awqd::cuda::silu_mul8(g, u);
      std::memcpy(&r.x[static_cast<std::size_t>(m) * K + k], &a, 16);
    }
  awqd::test::compute_reference_sums(r);
  return r;
}

template <bool Turing>
void all_tiles(const AwqReference& r, int M, int splits, bool bias, std::mt19937& rng) {
  emulate_and_check<TileS16<Turing>>(r, M, splits, bias, rng);
  emulate_and_check<TileS32<Turing>>(r, M, splits, bias, rng);
  emulate_and_check<TileM64<Turing>>(r, M, splits, bias, rng);
  emulate_and_check<TileL128<Turing>>(r, M, splits, bias, rng);
  emulate_stream_and_check<StreamM8<Turing>>(r, M, splits, bias, rng);
  emulate_stream_and_check<StreamM16<Turing>>(r, M, splits, bias, rng);
  emulate_stream_and_check<StreamM8Wide<Turing>>(r, M, splits, bias, rng);
  if constexpr (!Turing) {  // the lanes' own activation loads (kDirectX: sm_80+ only)
    emulate_stream_and_check<StreamM8Direct<false>>(r, M, splits, bias, rng);
    emulate_stream_and_check<StreamM8WideDirect<false>>(r, M, splits, bias, rng);
  }
}

TEST(AwqGemmEmulated, EveryTileBothPathsMatchTheReference) {
  std::mt19937 rng(5);
  struct Shape {
    int K, N, G;
  };
  // K % 64 == 32 with G = 32 (a padded group); N % 64 == 8 (a stripe with 8 real columns);
  // N = 136 with 4-stripe blocks leaves whole warps without a stripe.
  for (const Shape s : {Shape{224, 200, 32}, Shape{320, 136, 64}, Shape{256, 72, 128}}) {
    const AwqReference r = awqd::test::make_awq_reference(s.K, s.N, s.G, 130);
    for (int M : {1, 19, 130}) {
      const int splits = M == 19 ? 3 : 1;
      const bool bias = M != 19;
      all_tiles<false>(r, M, splits, bias, rng);
      all_tiles<true>(r, M, splits, !bias, rng);
    }
  }
}

TEST(AwqGemmEmulated, SplitKEverySplitCountUpToTheKTiles) {
  std::mt19937 rng(6);
  const AwqReference r = awqd::test::make_awq_reference(384, 64, 64, 17);
  for (int splits = 2; splits <= 6; ++splits) {
    emulate_and_check<TileS16<false>>(r, 17, splits, true, rng);
    emulate_and_check<TileM64<true>>(r, 5, splits, false, rng);
  }
}

// The stream kernel where a split's activations take several phases of shared memory (K > 1024
// rows at 16 rows, 512 on the Turing path), a last phase with fewer batches than warps, a last
// batch of 64 rows (K % 128 == 64), every group size, M up to 16, and split-K.
TEST(AwqGemmEmulated, StreamKernelSplitsAndPartialBatches) {
  std::mt19937 rng(7);
  for (const int G : {32, 64, 128}) {
    const int K = G == 128 ? 2176 : 2112;  // 17 and 16.5 batches of 128 rows
    const AwqReference r = awqd::test::make_awq_reference(K, 72, G, 16);
    for (int M = 1; M <= 16; M += (M < 4 ? 1 : 5)) {
      emulate_stream_and_check<StreamM8<false>>(r, std::min(M, 8), 1, M % 2 == 0, rng);
      // st8w also serves M = 9-16 on sm_90 as two m-blocks of 8 rows (awq_gemm.cu, run 104).
      emulate_stream_and_check<StreamM8Wide<false>>(r, M, 2, M % 2 == 1, rng);
      emulate_stream_and_check<StreamM8Wide<true>>(r, std::min(M, 8), 3, M % 2 == 0, rng);
      emulate_stream_and_check<StreamM8Direct<false>>(r, std::min(M, 8), 2, M % 2 == 1, rng);
      emulate_stream_and_check<StreamM8WideDirect<false>>(r, M, 3, M % 2 == 0, rng);
      emulate_stream_and_check<StreamM16<false>>(r, M, M == 16 ? 1 : 9, M % 2 == 1, rng);
      emulate_stream_and_check<StreamM16<true>>(r, M, M == 1 ? 1 : 2, true, rng);
    }
  }
}

// The residual add and RMSNorm folded into the stream kernel (AwqGemmOptions::norm_out and
// norm_in_sumsq): every stream tile, split-K through the workspace (blocks in random order),
// m-blocks with fewer rows than the tile, G = 32 and 128.
TEST(AwqGemmEmulated, StreamKernelWithTheNormFolded) {
  std::mt19937 rng(13);
  for (const int G : {32, 128}) {
    const AwqReference r = awqd::test::make_awq_reference(1024, 192, G, 16);
    for (int M : {1, 5, 16}) {
      const int splits = M == 5 ? 3 : 1;
      emulate_fold_and_check<StreamM8<false>>(r, std::min(M, 8), splits, rng);
      emulate_fold_and_check<StreamM8<true>>(r, std::min(M, 8), splits, rng);
      emulate_fold_and_check<StreamM8Direct<false>>(r, std::min(M, 8), splits, rng);
      emulate_fold_and_check<StreamM8Wide<false>>(r, M, splits + 1, rng);
      emulate_fold_and_check<StreamM8WideDirect<false>>(r, M, splits, rng);
      emulate_fold_and_check<StreamM16<false>>(r, M, splits, rng);
      emulate_fold_and_check<StreamM16<true>>(r, M, splits + 1, rng);
    }
  }
}

TEST(AwqGemmEmulated, StreamKernelWithTheSiluMulInputFused) {
  std::mt19937 rng(11);
  for (const int G : {32, 128}) {
    const int K = G == 128 ? 2176 : 2112;
    std::vector<half_bits> gate_up;
    const AwqReference r = with_silu_input(awqd::test::make_awq_reference(K, 72, G, 16), gate_up, rng);
    for (int M : {1, 5, 16}) {
      emulate_stream_and_check<StreamM8<false>>(r, std::min(M, 8), 3, true, rng, &gate_up);
      emulate_stream_and_check<StreamM8Wide<false>>(r, M, 2, false, rng, &gate_up);
      // kDirectX: each lane computes the SiLU of its own fragments (the launcher's choice from 5
      // rows; here at 1 row too, where it is merely slower).
      emulate_stream_and_check<StreamM8Direct<false>>(r, std::min(M, 8), 1, true, rng, &gate_up);
      emulate_stream_and_check<StreamM8WideDirect<false>>(r, M, 3, false, rng, &gate_up);  // 2 m-blocks at 16
      emulate_stream_and_check<StreamM16<false>>(r, M, 1, false, rng, &gate_up);
      emulate_stream_and_check<StreamM16<true>>(r, M, 2, true, rng, &gate_up);
    }
  }
}

}  // namespace
