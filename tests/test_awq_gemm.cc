// AWQ W4A16 GEMM on the GPU (skipped without one): every path (tensor-core sm_80+, the Turing
// path forced on newer GPUs, dequantize + cuBLASLt, auto) against a CPU reference, on random data,
// M = 1..64 and 128, 256, 1000, 4096, 8192, odd tensor-parallel shards, G = 32/64/128, with and
// without bias; outputs are poisoned (NaN) before every run, so an unwritten element fails.
//
// Reference: awq_quantize a random fp32 W (per-group offsets, so zero points span 0..15), then
// W16 = fp16(awq_dequantize(...)): the kernels multiply by exactly these fp16 values (the exact
// q - z times the fp16 scale, rounded once). ref = sum_k x*W16 in double.
//
// Tolerance for one output, with mag = sqrt(sum_k (x_k W16_k)^2):
//   |y - ref| <= 2^-10 |ref|                                   fp16 output rounding (2^-11) x 2
//              + (K + 8 splits + 32) 2^-23 (|ref| + 4 mag)     fp32 accumulation
// The products x*W16 are exact in fp32 (11-bit significands). The tensor cores add the products
// of each mma into the fp32 accumulator after aligning them to the largest exponent and
// truncating, so each of the K products can lose up to one fp32 ulp (2^-23 relative) of the
// running sum; split-K, the warps' k-split and cuBLASLt add a few more fp32 additions. A running
// sum of random-sign terms stays within a few mag of zero (4 mag bounds it with a wide margin).
// For the shapes below this is 0.1% to 1% of mag: a wrong scale or zero for one group of 32 rows
// moves an output by several % of mag, a wrong column or tile by ~100%.
#include <gtest/gtest.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/awq.h"
#include "engine/fp16.h"
#include "kernels/awq_gemm.cuh"
#include "kernels/cuda_check.cuh"
#include "tests/test_support.h"

namespace {

using awqd::half_bits;
using namespace awqd::cuda;

template <class T>
struct DeviceArray {
  T* ptr = nullptr;
  std::size_t count = 0;
  explicit DeviceArray(std::size_t n) : count(n) {
    if (n > 0) CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&ptr), n * sizeof(T)));
  }
  ~DeviceArray() { cudaFree(ptr); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  void upload(const void* host, std::size_t n) {
    CUDA_CHECK(cudaMemcpy(ptr, host, n * sizeof(T), cudaMemcpyHostToDevice));
  }
};

// One Linear with its reference outputs for rows 0..max_M-1 of x.
struct Problem {
  int K, N, G, max_M;
  bool has_bias;
  std::vector<double> ref, mag;  // [max_M, N]
  std::unique_ptr<AwqDeviceWeight> weight;
  std::unique_ptr<DeviceArray<__half>> x, bias, y;
  std::unique_ptr<DeviceArray<char>> workspace;
  AwqWorkspace ws;
};

std::unique_ptr<Problem> make_problem(int K, int N, int G, int max_M, bool has_bias,
                                      std::size_t workspace_bytes = SIZE_MAX) {
  auto p = std::make_unique<Problem>();
  p->K = K;
  p->N = N;
  p->G = G;
  p->max_M = max_M;
  p->has_bias = has_bias;
  std::mt19937 rng(static_cast<std::uint32_t>(K * 7919 + N * 31 + G + max_M * 3 + has_bias));
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
  const awqd::AwqTensors t = awqd::awq_quantize(W.data(), K, N, G);
  std::vector<float> w16 =
      awqd::awq_dequantize(t.qweight.data(), t.qzeros.data(), t.scales.data(), K, N, G);
  for (auto& v : w16) v = awqd::round_to_half(v);

  std::vector<half_bits> x(static_cast<std::size_t>(max_M) * K), bias(N);
  for (auto& v : x) v = awqd::float_to_half(uni(rng));
  for (auto& v : bias) v = awqd::float_to_half(uni(rng));

  p->ref.assign(static_cast<std::size_t>(max_M) * N, 0.0);
  p->mag.assign(static_cast<std::size_t>(max_M) * N, 0.0);
  std::vector<double> acc(N), sq(N);
  for (int m = 0; m < max_M; ++m) {
    std::fill(acc.begin(), acc.end(), 0.0);
    std::fill(sq.begin(), sq.end(), 0.0);
    for (int k = 0; k < K; ++k) {
      const double xv = awqd::half_to_float(x[static_cast<std::size_t>(m) * K + k]);
      const float* wrow = &w16[static_cast<std::size_t>(k) * N];
      for (int n = 0; n < N; ++n) {
        const double prod = xv * wrow[n];
        acc[n] += prod;
        sq[n] += prod * prod;
      }
    }
    for (int n = 0; n < N; ++n) {
      p->ref[static_cast<std::size_t>(m) * N + n] =
          acc[n] + (has_bias ? awqd::half_to_float(bias[n]) : 0.0);
      p->mag[static_cast<std::size_t>(m) * N + n] = std::sqrt(sq[n]);
    }
  }

  const AwqPackedWeight packed =
      awq_repack(t.qweight.data(), t.qzeros.data(), t.scales.data(), K, N, G);
  p->weight = std::make_unique<AwqDeviceWeight>(packed);
  p->x = std::make_unique<DeviceArray<__half>>(x.size());
  p->x->upload(x.data(), x.size());
  p->bias = std::make_unique<DeviceArray<__half>>(N);
  p->bias->upload(bias.data(), N);
  p->y = std::make_unique<DeviceArray<__half>>(static_cast<std::size_t>(max_M) * N);
  if (workspace_bytes == SIZE_MAX) workspace_bytes = awq_gemm_workspace_bytes(max_M, K, N, G);
  p->workspace = std::make_unique<DeviceArray<char>>(workspace_bytes);
  p->ws = {p->workspace->ptr, workspace_bytes};
  awq_gemm_workspace_init(p->ws, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  return p;
}

std::string describe(const Problem& p, int M, const AwqGemmOptions& o, const AwqGemmPlan& plan) {
  std::ostringstream s;
  s << "M=" << M << " K=" << p.K << " N=" << p.N << " G=" << p.G << " bias=" << p.has_bias
    << " path=" << awq_gemm_path_name(o.path) << " -> " << awq_gemm_path_name(plan.path)
    << " tile=" << awq_tile_name(plan.tile) << " splits=" << plan.splits
    << (o.batch_invariant ? " batch_invariant" : "");
  return s.str();
}

// Runs y = x W (+ b) for the first M rows and compares; returns the outputs (fp16 bits).
std::vector<half_bits> run_and_check(Problem& p, int M, AwqGemmOptions o = {}) {
  const std::size_t count = static_cast<std::size_t>(M) * p.N;
  CUDA_CHECK(cudaMemset(p.y->ptr, 0xFF, count * sizeof(__half)));  // NaN: poison
  const AwqGemmPlan plan = awq_gemm(p.x->ptr, p.weight->view(), p.has_bias ? p.bias->ptr : nullptr,
                                    p.y->ptr, M, p.ws, nullptr, o);
  CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<half_bits> y(count);
  CUDA_CHECK(cudaMemcpy(y.data(), p.y->ptr, count * sizeof(__half), cudaMemcpyDeviceToHost));

  const double acc_bound = (p.K + 8.0 * plan.splits + 32.0) * std::ldexp(1.0, -23);
  std::size_t bad = 0, unwritten = 0, worst_i = 0;
  double worst_ratio = 0.0, err2 = 0.0, ref2 = 0.0;
  for (std::size_t i = 0; i < count; ++i) {
    const double got = awqd::half_to_float(y[i]);
    const double ref = p.ref[i];
    const double tol = std::ldexp(std::fabs(ref), -10) + acc_bound * (std::fabs(ref) + 4.0 * p.mag[i]);
    if (!std::isfinite(got)) {
      ++unwritten;
      if (worst_ratio < INFINITY) worst_i = i;
      worst_ratio = INFINITY;
      continue;
    }
    const double ratio = std::fabs(got - ref) / tol;
    if (ratio > 1.0) ++bad;
    if (ratio > worst_ratio) {
      worst_ratio = ratio;
      worst_i = i;
    }
    err2 += (got - ref) * (got - ref);
    ref2 += ref * ref;
  }
  const double rel_l2 = std::sqrt(err2 / std::max(ref2, 1e-300));
  if (bad > 0 || unwritten > 0 || rel_l2 > 4e-3) {
    const std::size_t m = worst_i / p.N, n = worst_i % p.N;
    const double tol = std::ldexp(std::fabs(p.ref[worst_i]), -10) +
                       acc_bound * (std::fabs(p.ref[worst_i]) + 4.0 * p.mag[worst_i]);
    ADD_FAILURE() << describe(p, M, o, plan) << ": " << bad << " outside tolerance, "
                  << unwritten << " unwritten or NaN of " << count << "; rel L2 error " << rel_l2
                  << "; worst at (m=" << m << ", n=" << n << "): got "
                  << awqd::half_to_float(y[worst_i]) << ", ref " << p.ref[worst_i] << ", tol "
                  << tol << " (mag " << p.mag[worst_i] << ")";
  }
  return y;
}

// The paths this GPU and build can run: the tensor-core path needs sm_80+ code (absent from a
// compute_75 PTX build, which runs everything through the Turing kernels).
std::vector<AwqGemmPath> probe_paths() {
  AwqWeight probe;  // never dereferenced by the planner
  probe.tiles = reinterpret_cast<const uint4*>(std::uintptr_t{256});
  probe.scales = reinterpret_cast<const __half*>(std::uintptr_t{256});
  probe.zeros = reinterpret_cast<const std::uint32_t*>(std::uintptr_t{256});
  probe.K = 128;
  probe.N = 64;
  probe.group_size = 128;
  std::vector<AwqGemmPath> paths;
  for (AwqGemmPath path : {AwqGemmPath::kTensorCore, AwqGemmPath::kTuring}) {
    AwqGemmOptions o;
    o.path = path;
    try {
      awq_gemm_plan(1, probe, AwqWorkspace{}, o);
      paths.push_back(path);
    } catch (const std::invalid_argument& e) {
      std::printf("[ INFO     ] %s path not tested: %s\n", awq_gemm_path_name(path), e.what());
    }
  }
  paths.push_back(AwqGemmPath::kDequantCublas);
  paths.push_back(AwqGemmPath::kAuto);
  return paths;
}

const std::vector<AwqGemmPath>& paths_to_test() {
  static const std::vector<AwqGemmPath> paths = probe_paths();
  return paths;
}

AwqGemmOptions with_path(AwqGemmPath path) {
  AwqGemmOptions o;
  o.path = path;
  return o;
}

TEST(AwqGemm, EveryMFrom1To64EveryPathEveryGroupSize) {
  AWQD_REQUIRE_CUDA();
  // N = 392: 7 stripes, the last with 8 real columns; K = 1536: 24 k-tiles.
  for (int G : {32, 64, 128})
    for (bool bias : {false, true}) {
      auto p = make_problem(1536, 392, G, 64, bias);
      for (AwqGemmPath path : paths_to_test())
        for (int M = 1; M <= 64; ++M) run_and_check(*p, M, with_path(path));
      if (HasFailure()) return;
    }
}

TEST(AwqGemm, LargeM) {
  AWQD_REQUIRE_CUDA();
  for (int G : {32, 128}) {
    auto p = make_problem(384, 136, G, 8192, G == 32);
    for (AwqGemmPath path : paths_to_test())
      for (int M : {65, 128, 256, 1000, 4096, 8192}) run_and_check(*p, M, with_path(path));
  }
}

TEST(AwqGemm, TensorParallelShardsAndOddShapes) {
  AWQD_REQUIRE_CUDA();
  struct Shape {
    int K, N, G;
  };
  const Shape shapes[] = {
      {4864, 320, 128},   // Llama-3 down_proj, TP=3 row shard (38 groups)
      {4736, 136, 128},   // the other TP=3 row shard (37 groups)
      {4768, 200, 32},    // row shard on 32-row groups: K % 64 == 32
      {4096, 2176, 128},  // Llama-3-8B qkv, TP=3 column shard (11 q heads + 3+3 kv heads)
      {1024, 1408, 64},   // 11 heads of 128 columns
      {128, 4104, 128},   // N % 64 == 8 past a full-size N
      {32, 8, 32},        // smallest
  };
  for (const Shape& s : shapes) {
    auto p = make_problem(s.K, s.N, s.G, 100, s.N % 16 == 8);
    for (AwqGemmPath path : paths_to_test())
      for (int M : {1, 5, 16, 31, 64, 100}) run_and_check(*p, M, with_path(path));
  }
}

TEST(AwqGemm, EveryTileAndForcedSplitK) {
  AWQD_REQUIRE_CUDA();
  auto p = make_problem(2048, 520, 64, 130, true, std::size_t{16} << 20);
  for (AwqGemmPath path : paths_to_test()) {
    if (path == AwqGemmPath::kDequantCublas || path == AwqGemmPath::kAuto) continue;
    for (AwqTile tile : {AwqTile::kS16, AwqTile::kS32, AwqTile::kM64, AwqTile::kL128})
      for (int splits : {1, 2, 3, 7, 32})
        for (int M : {1, 17, 64, 130}) {
          AwqGemmOptions o = with_path(path);
          o.tile = tile;
          o.splits = splits;
          run_and_check(*p, M, o);
        }
  }
}

TEST(AwqGemm, SmallOrNoWorkspaceIsSlowerNeverWrong) {
  AWQD_REQUIRE_CUDA();
  for (std::size_t bytes : {std::size_t{0}, std::size_t{64} << 10, std::size_t{80} << 10}) {
    auto p = make_problem(1024, 256, 128, 40, true, bytes);
    for (int M : {1, 16, 40}) {
      const std::vector<half_bits> y = run_and_check(*p, M);
      (void)y;
    }
    AwqGemmOptions o = with_path(AwqGemmPath::kDequantCublas);
    EXPECT_THROW(awq_gemm(p->x->ptr, p->weight->view(), nullptr, p->y->ptr, 4, p->ws, nullptr, o),
                 std::invalid_argument);
  }
}

TEST(AwqGemm, BatchInvariantRowsDoNotDependOnTheBatch) {
  AWQD_REQUIRE_CUDA();
  auto p = make_problem(2048, 392, 128, 300, true);
  for (AwqGemmPath path : paths_to_test()) {
    if (path == AwqGemmPath::kDequantCublas) continue;
    AwqGemmOptions o = with_path(path);
    o.batch_invariant = true;
    const std::vector<half_bits> alone = run_and_check(*p, 1, o);
    for (int M : {2, 37, 300}) {
      const std::vector<half_bits> batch = run_and_check(*p, M, o);
      for (int n = 0; n < p->N; ++n)
        ASSERT_EQ(alone[n], batch[n]) << "row 0, column " << n << ", M=" << M << " path "
                                      << awq_gemm_path_name(path);
    }
  }
}

TEST(AwqGemm, RunsInsideACudaGraph) {
  AWQD_REQUIRE_CUDA();
  auto p = make_problem(1024, 264, 128, 8, false);
  run_and_check(*p, 8);  // first call outside: caches, attributes
  cudaStream_t stream;
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  CUDA_CHECK(cudaMemset(p->y->ptr, 0xFF, 8 * p->N * sizeof(__half)));
  cudaGraph_t graph;
  CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  awq_gemm(p->x->ptr, p->weight->view(), nullptr, p->y->ptr, 8, p->ws, stream);
  CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  cudaGraphExec_t exec;
  CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  for (int i = 0; i < 3; ++i) CUDA_CHECK(cudaGraphLaunch(exec, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<half_bits> y(8 * p->N);
  CUDA_CHECK(cudaMemcpy(y.data(), p->y->ptr, y.size() * 2, cudaMemcpyDeviceToHost));
  const std::vector<half_bits> direct = run_and_check(*p, 8);
  EXPECT_EQ(y, direct);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

TEST(AwqGemm, LauncherRejectsBadArguments) {
  AWQD_REQUIRE_CUDA();
  auto p = make_problem(256, 64, 128, 4, false);
  const AwqWeight w = p->weight->view();
  auto call = [&](const __half* x, AwqWeight weight, const __half* bias, __half* y, int M) {
    awq_gemm(x, weight, bias, y, M, p->ws, nullptr);
  };
  EXPECT_THROW(call(p->x->ptr, w, nullptr, p->y->ptr, -1), std::invalid_argument);
  EXPECT_THROW(call(nullptr, w, nullptr, p->y->ptr, 1), std::invalid_argument);
  EXPECT_THROW(call(p->x->ptr + 1, w, nullptr, p->y->ptr, 1), std::invalid_argument);  // align
  EXPECT_THROW(call(p->x->ptr, w, p->bias->ptr + 1, p->y->ptr, 1), std::invalid_argument);
  AwqWeight bad = w;
  bad.N = 60;
  EXPECT_THROW(call(p->x->ptr, bad, nullptr, p->y->ptr, 1), std::invalid_argument);
  bad = w;
  bad.group_size = 16;
  EXPECT_THROW(call(p->x->ptr, bad, nullptr, p->y->ptr, 1), std::invalid_argument);
  bad = w;
  bad.K = 200;
  EXPECT_THROW(call(p->x->ptr, bad, nullptr, p->y->ptr, 1), std::invalid_argument);
  bad = w;
  bad.tiles = nullptr;
  EXPECT_THROW(call(p->x->ptr, bad, nullptr, p->y->ptr, 1), std::invalid_argument);
  EXPECT_NO_THROW(call(p->x->ptr, w, nullptr, p->y->ptr, 0));  // M == 0: nothing to do
  CUDA_CHECK(cudaDeviceSynchronize());
}

TEST(AwqGemm, DequantizeMatchesTheReferenceWeights) {
  AWQD_REQUIRE_CUDA();
  const int K = 4768, N = 200, G = 32;
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> uni(-0.2f, 0.3f);
  std::vector<float> W(static_cast<std::size_t>(K) * N);
  for (auto& v : W) v = uni(rng);
  const awqd::AwqTensors t = awqd::awq_quantize(W.data(), K, N, G);
  const std::vector<float> ref =
      awqd::awq_dequantize(t.qweight.data(), t.qzeros.data(), t.scales.data(), K, N, G);
  const AwqDeviceWeight weight(awq_repack(t.qweight.data(), t.qzeros.data(), t.scales.data(), K, N, G));
  const int n_pad = 256;
  DeviceArray<__half> out(static_cast<std::size_t>(K) * n_pad);
  awq_dequantize_f16(weight.view(), 0, n_pad, out.ptr, n_pad, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<half_bits> got(out.count);
  CUDA_CHECK(cudaMemcpy(got.data(), out.ptr, got.size() * 2, cudaMemcpyDeviceToHost));
  for (int k = 0; k < K; ++k)
    for (int n = 0; n < n_pad; ++n) {
      const half_bits want = n < N ? awqd::float_to_half(ref[static_cast<std::size_t>(k) * N + n]) : 0;
      ASSERT_EQ(got[static_cast<std::size_t>(k) * n_pad + n], want) << "k=" << k << " n=" << n;
    }
}

}  // namespace
