// AWQ W4A16 GEMM on the GPU (skipped without one): every path (tensor-core sm_80+, the Turing
// path forced on newer GPUs, dequantize + cuBLASLt, auto), every tile (the tiled kernel's and the
// stream kernel's, forced at every M), with and without Programmatic Dependent Launch, against
// the CPU reference of
// tests/awq_gemm_reference.h (which also explains the tolerance), on random data, M = 1..64 and
// 128, 256, 1000, 4096, 8192, odd tensor-parallel shards, G = 32/64/128, with and without bias;
// outputs are poisoned (NaN) before every run, so an unwritten element fails.
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/awq.h"
#include "engine/fp16.h"
#include "kernels/activation.cuh"
#include "kernels/awq_gemm.cuh"
#include "kernels/cuda_check.cuh"
#include "kernels/norm.cuh"
#include "tests/awq_gemm_reference.h"
#include "tests/test_support.h"

namespace {

using awqd::half_bits;
using awqd::test::AwqReference;
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

// The reference of one Linear, uploaded, with output and workspace buffers.
struct Problem {
  AwqReference r;
  bool has_bias = false;
  std::unique_ptr<AwqDeviceWeight> weight;
  std::unique_ptr<DeviceArray<__half>> x, bias, y;
  std::unique_ptr<DeviceArray<char>> workspace;
  AwqWorkspace ws;
  int N() const { return r.N; }
};

std::unique_ptr<Problem> make_problem(int K, int N, int G, int max_M, bool has_bias,
                                      std::size_t workspace_bytes = SIZE_MAX) {
  auto p = std::make_unique<Problem>();
  p->r = awqd::test::make_awq_reference(K, N, G, max_M);
  p->has_bias = has_bias;
  p->weight = std::make_unique<AwqDeviceWeight>(p->r.packed);
  p->x = std::make_unique<DeviceArray<__half>>(p->r.x.size());
  p->x->upload(p->r.x.data(), p->r.x.size());
  p->bias = std::make_unique<DeviceArray<__half>>(N);
  p->bias->upload(p->r.bias.data(), N);
  p->y = std::make_unique<DeviceArray<__half>>(static_cast<std::size_t>(max_M) * N);
  // Room for every path the tests force, the dequantize + cuBLASLt one included (which auto
  // planning takes only from M = 128, so a workspace sized for max_M alone may lack it).
  if (workspace_bytes == SIZE_MAX)
    workspace_bytes = awq_gemm_workspace_bytes(std::max(max_M, 4096), K, N, G);
  p->workspace = std::make_unique<DeviceArray<char>>(workspace_bytes);
  p->ws = {p->workspace->ptr, workspace_bytes};
  awq_gemm_workspace_init(p->ws, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  return p;
}

std::string describe(const Problem& p, int M, const AwqGemmOptions& o, const AwqGemmPlan& plan) {
  std::ostringstream s;
  s << "M=" << M << " K=" << p.r.K << " N=" << p.r.N << " G=" << p.r.G << " bias=" << p.has_bias
    << " path=" << awq_gemm_path_name(o.path) << " -> " << awq_gemm_path_name(plan.path)
    << " tile=" << awq_tile_name(plan.tile) << " splits=" << plan.splits
    << " chunk=" << plan.chunk_cols << (o.batch_invariant ? " batch_invariant" : "");
  return s.str();
}

// The tests' stream: a created one, so that sm_90 launches use Programmatic Dependent Launch
// (which the legacy default stream does not get).
cudaStream_t test_stream() {
  static cudaStream_t stream = [] {
    cudaStream_t s;
    CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    return s;
  }();
  return stream;
}

// Runs y = x W (+ b) for the first M rows and compares; returns the outputs (fp16 bits).
std::vector<half_bits> run_and_check(Problem& p, int M, AwqGemmOptions o = {}) {
  const std::size_t count = static_cast<std::size_t>(M) * p.N();
  CUDA_CHECK(cudaMemsetAsync(p.y->ptr, 0xFF, count * sizeof(__half), test_stream()));  // NaN
  const AwqGemmPlan plan = awq_gemm(p.x->ptr, p.weight->view(), p.has_bias ? p.bias->ptr : nullptr,
                                    p.y->ptr, M, p.ws, test_stream(), o);
  CUDA_CHECK(cudaStreamSynchronize(test_stream()));
  std::vector<half_bits> y(count);
  CUDA_CHECK(cudaMemcpy(y.data(), p.y->ptr, count * sizeof(__half), cudaMemcpyDeviceToHost));
  const std::string failure = awqd::test::check_awq_output(
      p.r, y.data(), M, p.has_bias, plan.splits, awqd::test::awq_weights_of(plan.path, plan.tile));
  if (!failure.empty()) ADD_FAILURE() << describe(p, M, o, plan) << ": " << failure;
  return y;
}

// A weight for asking the planner what it would run (never dereferenced).
AwqWeight probe_weight() {
  AwqWeight probe;
  probe.tiles = reinterpret_cast<const uint4*>(std::uintptr_t{256});
  probe.scales = reinterpret_cast<const __half*>(std::uintptr_t{256});
  probe.zeros = reinterpret_cast<const std::uint32_t*>(std::uintptr_t{256});
  probe.K = 128;
  probe.N = 64;
  probe.group_size = 128;
  return probe;
}

// The paths this GPU and build can run: the tensor-core path needs sm_80+ code (absent from a
// compute_75 PTX build, which runs everything through the Turing kernels).
std::vector<AwqGemmPath> probe_paths() {
  const AwqWeight probe = probe_weight();
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

// Whether this GPU and build run `tile` on `path` (the Hopper tiles: sm_90a code on an sm_90 GPU,
// tensor-core path only); says why not once per (path, tile).
bool tile_available(AwqGemmPath path, AwqTile tile) {
  const AwqWeight probe = probe_weight();
  AwqGemmOptions o;
  o.path = path;
  o.tile = tile;
  try {
    awq_gemm_plan(1, probe, AwqWorkspace{}, o);
    return true;
  } catch (const std::invalid_argument& e) {
    std::printf("[ INFO     ] %s/%s not tested: %s\n", awq_gemm_path_name(path), awq_tile_name(tile),
                e.what());
    return false;
  }
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
  for (int G : {32, 64, 128}) {
    auto p = make_problem(1536, 392, G, 64, false);
    for (bool bias : {false, true}) {
      p->has_bias = bias;
      for (AwqGemmPath path : paths_to_test())
        for (int M = 1; M <= 64; ++M) run_and_check(*p, M, with_path(path));
      if (HasFailure()) return;
    }
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
    for (AwqTile tile : {AwqTile::kS16, AwqTile::kS32, AwqTile::kM64, AwqTile::kL128, AwqTile::kSt8,
                         AwqTile::kSt16, AwqTile::kW64, AwqTile::kW128, AwqTile::kSt8w}) {
      if (!tile_available(path, tile)) continue;
      for (int splits : {1, 2, 3, 7, 32})
        for (int M : {1, 8, 9, 17, 64, 130}) {
          AwqGemmOptions o = with_path(path);
          o.tile = tile;
          o.splits = splits;
          run_and_check(*p, M, o);
        }
    }
  }
}

// The planner's decode-size choices for Llama-3-8B's linears (and two tensor-parallel shards) on
// the card docs/PERF.md measured them on: an sm_90 GPU with 132 SMs and the Hopper tiles (runs 7,
// 30 and 31). Other GPUs have other split counts: skipped there.
TEST(AwqGemm, DecodePlansOnTheMeasuredCard) {
  AWQD_REQUIRE_CUDA();
  int device = 0, sms = 0, major = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  if (major != 9 || sms != 132 || !tile_available(AwqGemmPath::kTensorCore, AwqTile::kW64))
    GTEST_SKIP() << "the plans were measured on an sm_90 GPU with 132 SMs and the Hopper tiles";
  struct Want {
    int M, K, N, silu_mul_ld;
    AwqTile tile;
    int splits;
    bool cluster;
  };
  const Want wants[] = {
      {1, 4096, 4096, 0, AwqTile::kSt8w, 2, true},    // o: 64 stripes, 2 splits in a cluster
      {8, 4096, 4096, 0, AwqTile::kSt8w, 2, true},
      {1, 4096, 6144, 0, AwqTile::kSt8w, 1, false},   // qkv: 96 stripes, one block each
      {1, 4096, 28672, 0, AwqTile::kSt8, 1, false},   // gate_up: 448 stripes fill the GPU
      {1, 14336, 4096, 0, AwqTile::kSt8w, 2, true},   // down: 3.5 batches per warp (run 61)
      {1, 14336, 4096, 2 * 14336, AwqTile::kSt8w, 2, true},  // ... with the fused SiLU input
      {1, 2048, 4096, 0, AwqTile::kSt8w, 2, true},    // o at tensor parallel 2 (K halved)
      {1, 7168, 4096, 0, AwqTile::kSt8w, 2, true},    // down at tensor parallel 2
      // M = 9-16: st8w as two m-blocks of 8 rows where they fit one wave (run 104), ...
      {12, 4096, 4096, 0, AwqTile::kSt8w, 1, false},   // o: 128 blocks
      {16, 14336, 4096, 0, AwqTile::kSt8w, 1, false},  // down
      {9, 7168, 4096, 0, AwqTile::kSt8w, 1, false},    // down at tensor parallel 2
      {16, 2048, 4096, 0, AwqTile::kSt8w, 1, false},   // o at tensor parallel 2
      {16, 14336, 4096, 2 * 14336, AwqTile::kSt8w, 1, false},  // with the fused SiLU input
      // ... else s16 on weights up to 32 M elements with K up to 5120 (runs 96, 104), else st16
      {16, 4096, 6144, 0, AwqTile::kS16, 0, false},     // qkv: 192 blocks would be 1.5 waves
      {16, 4096, 14336, 0, AwqTile::kSt16, 2, true},    // gate_up at tensor parallel 2: 58.7 M
      {16, 4096, 28672, 0, AwqTile::kSt16, 0, false},   // gate_up: 117 M elements
      // The wgmma tiles (run 91): one wave of splits, stepped down to a divisor of the k-tiles.
      {64, 4096, 6144, 0, AwqTile::kW64, 4, false},    // qkv: 24 tiles, 64 k-tiles: 4, not 5
      {64, 14336, 4096, 0, AwqTile::kW64, 8, false},   // down: 16 tiles, 224 k-tiles
      {64, 4096, 28672, 0, AwqTile::kW64, 1, false},   // gate_up: 112 tiles
      // M = 65-128: two m-blocks of w64 where they fit one wave, else w128.
      {128, 4096, 6144, 0, AwqTile::kW64, 2, false},   // qkv: 48 tiles
      {128, 4096, 14336, 0, AwqTile::kW64, 1, false},  // gate_up at tensor parallel 2: 112
      {128, 14336, 4096, 0, AwqTile::kW64, 4, false},  // down: 32
      {96, 4096, 28672, 0, AwqTile::kW128, 1, false},  // gate_up: 224 w64 tiles, 112 w128
  };
  for (const Want& want : wants) {
    AwqWeight w = probe_weight();
    w.K = want.K;
    w.N = want.N;
    AwqGemmOptions o;
    o.pdl = true;
    o.silu_mul_ld = want.silu_mul_ld;
    // A workspace as the engine sizes it (never dereferenced by the planner).
    const AwqWorkspace ws{reinterpret_cast<void*>(std::uintptr_t{256}),
                          awq_gemm_workspace_bytes(std::max(want.M, 16), want.K, want.N, 128)};
    const AwqGemmPlan plan = awq_gemm_plan(want.M, w, ws, o);
    const std::string what = "M=" + std::to_string(want.M) + " K=" + std::to_string(want.K) +
                             " N=" + std::to_string(want.N) +
                             (want.silu_mul_ld > 0 ? " silu_mul" : "");
    EXPECT_EQ(plan.tile, want.tile) << what << ": " << awq_tile_name(plan.tile);
    if (want.splits > 0) {
      EXPECT_EQ(plan.splits, want.splits) << what;
    }
    EXPECT_EQ(plan.cluster, want.cluster) << what;
    EXPECT_EQ(plan.pdl, want.M <= 64) << what;  // PDL up to M = 64 (awq_gemm.cuh)
    // st8 / st8w from 5 rows (with a fused SiLU input too): the lanes' own activation loads.
    const bool st8 = want.tile == AwqTile::kSt8 || want.tile == AwqTile::kSt8w;
    EXPECT_EQ(plan.direct_x, st8 && want.M >= 5) << what;
    // Every stream tile has its folded-norm variant on this card.
    EXPECT_EQ(plan.fold, st8 || want.tile == AwqTile::kSt16) << what;
  }
}

// The MLP's activation fused into the down projection (silu_mul_ld): the same bits as silu_mul
// followed by the GEMM, for every M the stream kernel serves, forced split counts (sm_90: through
// clusters up to 4, the workspace beyond) and a row shard whose K ends mid-batch.
TEST(AwqGemm, FusedSiluMulInputEqualsTheSeparateKernels) {
  AWQD_REQUIRE_CUDA();
  for (int K : {1536, 4736}) {
    auto p = make_problem(K, 392, 128, 16, true);
    std::mt19937 rng(K);
    std::uniform_real_distribution<float> dist(-4.0f, 4.0f);
    std::vector<half_bits> gate_up(static_cast<std::size_t>(16) * 2 * K);
    for (half_bits& h : gate_up) h = awqd::float_to_half(dist(rng));
    DeviceArray<__half> gu(gate_up.size()), act(static_cast<std::size_t>(16) * K),
        y_ref(static_cast<std::size_t>(16) * p->N());
    gu.upload(gate_up.data(), gate_up.size());
    silu_mul(act.ptr, K, gu.ptr, gu.ptr + K, 2 * K, 16, K, test_stream());
    for (int M = 1; M <= 16; ++M)
      for (int splits : {0, 1, 3, 4, 8}) {
        AwqGemmOptions o;
        o.splits = splits;
        CUDA_CHECK(cudaMemsetAsync(p->y->ptr, 0xFF, static_cast<std::size_t>(M) * p->N() * 2,
                                   test_stream()));
        o.silu_mul_ld = 2 * K;
        const AwqGemmPlan plan =
            awq_gemm(gu.ptr, p->weight->view(), p->bias->ptr, p->y->ptr, M, p->ws, test_stream(), o);
        // The separate kernels on the same plan (without the fused input, auto may pick another
        // tile at M = 9-16, which sums in another order).
        o.silu_mul_ld = 0;
        o.tile = plan.tile;
        o.splits = plan.splits;
        awq_gemm(act.ptr, p->weight->view(), p->bias->ptr, y_ref.ptr, M, p->ws, test_stream(), o);
        CUDA_CHECK(cudaStreamSynchronize(test_stream()));
        std::vector<half_bits> a(static_cast<std::size_t>(M) * p->N()), b(a.size());
        CUDA_CHECK(cudaMemcpy(a.data(), y_ref.ptr, a.size() * 2, cudaMemcpyDeviceToHost));
        CUDA_CHECK(cudaMemcpy(b.data(), p->y->ptr, b.size() * 2, cudaMemcpyDeviceToHost));
        for (std::size_t i = 0; i < a.size(); ++i)
          ASSERT_EQ(a[i], b[i]) << "K=" << K << " M=" << M << " splits=" << plan.splits
                                << " cluster=" << plan.cluster << " element " << i;
      }
    AwqGemmOptions bad;
    bad.silu_mul_ld = 2 * K;
    EXPECT_THROW(awq_gemm(gu.ptr, p->weight->view(), nullptr, p->y->ptr, 17, p->ws, nullptr, bad),
                 std::invalid_argument);  // beyond the stream kernel
    bad.silu_mul_ld = 2 * K - 8;
    EXPECT_THROW(awq_gemm(gu.ptr, p->weight->view(), nullptr, p->y->ptr, 4, p->ws, nullptr, bad),
                 std::invalid_argument);  // too narrow for gate and up
  }
}

// The residual add and RMSNorm folded into the linears around it (norm_out, norm_in_sumsq)
// against add_rmsnorm between the same two GEMMs, for every M of the stream kernel, its tiles
// and split counts, launched with PDL as the engine launches them. The residual must be
// identical (the same additions); the second linear's output differs by where 1 / rms is
// applied: fp16(x * rms * w) feeds the products in the separate path, fp16(x * w) and the fp32
// sums times 1 / rms in the folded one, one fp16 rounding (2^-11) per input either way, so the
// outputs agree to a few 2^-11 of the row's magnitude (bound 2^-8 of max(|y|, the row's RMS));
// a missing or misplaced scale is off by O(1).
TEST(AwqGemm, FoldedNormEqualsAddRmsnormBetweenTheGemms) {
  AWQD_REQUIRE_CUDA();
  constexpr int D = 1024, kMaxM = 16;
  constexpr float kEps = 1e-5f;
  auto a = make_problem(1536, D, 128, kMaxM, true);  // o_proj-like: K 1536 -> D
  auto b = make_problem(D, 392, 64, kMaxM, true);    // gate_up-like: D -> 392
  std::mt19937 rng(17);
  std::uniform_real_distribution<float> dist(-2.0f, 2.0f);
  std::vector<half_bits> residual(static_cast<std::size_t>(kMaxM) * D), weight(D);
  for (half_bits& h : residual) h = awqd::float_to_half(dist(rng));
  for (half_bits& h : weight) h = awqd::float_to_half(dist(rng));
  DeviceArray<__half> res_sep(residual.size()), res_fold(residual.size()), w(D),
      h_sep(residual.size()), h_fold(residual.size()), y_sep(kMaxM * 392), y_fold(kMaxM * 392),
      proj(residual.size());
  DeviceArray<float> sumsq(kMaxM * (D / 64));
  w.upload(weight.data(), D);
  const std::vector<AwqTile> tiles = {AwqTile::kAuto, AwqTile::kSt8, AwqTile::kSt8w, AwqTile::kSt16};
  for (AwqTile tile : tiles)
    for (int splits : {0, 1, 3})
      for (int M = 1; M <= kMaxM; M += (M < 8 ? 1 : 4)) {
        if (tile == AwqTile::kSt8 && M > 8) continue;
        if (tile != AwqTile::kAuto && !tile_available(AwqGemmPath::kTensorCore, tile)) continue;
        const std::string what = std::string("tile=") + awq_tile_name(tile) +
                                 " splits=" + std::to_string(splits) + " M=" + std::to_string(M);
        res_sep.upload(residual.data(), residual.size());
        res_fold.upload(residual.data(), residual.size());
        CUDA_CHECK(cudaMemset(y_fold.ptr, 0xFF, y_fold.count * 2));
        CUDA_CHECK(cudaMemset(sumsq.ptr, 0xFF, sumsq.count * 4));
        AwqGemmOptions o;
        o.tile = tile;
        o.splits = splits;
        o.pdl = true;
        // Separate: the GEMM, add_rmsnorm, the GEMM (on the plans the folded calls get).
        AwqGemmOptions fa = o;
        fa.norm_out = {res_fold.ptr, w.ptr, sumsq.ptr};
        fa.norm_eps = kEps;
        const AwqGemmPlan plan_a = awq_gemm_plan(M, a->weight->view(), a->ws, fa);
        ASSERT_TRUE(plan_a.fold) << what;
        AwqGemmOptions sa = o;
        sa.tile = plan_a.tile;
        sa.splits = plan_a.splits;
        awq_gemm(a->x->ptr, a->weight->view(), a->bias->ptr, proj.ptr, M, a->ws, test_stream(), sa);
        add_rmsnorm(h_sep.ptr, res_sep.ptr, proj.ptr, w.ptr, M, D, kEps, test_stream());
        AwqGemmOptions fb = o;
        fb.norm_in_sumsq = sumsq.ptr;
        fb.norm_eps = kEps;
        const AwqGemmPlan plan_b = awq_gemm_plan(M, b->weight->view(), b->ws, fb);
        AwqGemmOptions sb = o;
        sb.tile = plan_b.tile;
        sb.splits = plan_b.splits;
        awq_gemm(h_sep.ptr, b->weight->view(), b->bias->ptr, y_sep.ptr, M, b->ws, test_stream(), sb);
        // Folded.
        awq_gemm(a->x->ptr, a->weight->view(), a->bias->ptr, h_fold.ptr, M, a->ws, test_stream(), fa);
        awq_gemm(h_fold.ptr, b->weight->view(), b->bias->ptr, y_fold.ptr, M, b->ws, test_stream(), fb);
        CUDA_CHECK(cudaStreamSynchronize(test_stream()));
        const std::size_t nr = static_cast<std::size_t>(M) * D, ny = static_cast<std::size_t>(M) * 392;
        std::vector<half_bits> r1(nr), r2(nr), y1(ny), y2(ny);
        CUDA_CHECK(cudaMemcpy(r1.data(), res_sep.ptr, nr * 2, cudaMemcpyDeviceToHost));
        CUDA_CHECK(cudaMemcpy(r2.data(), res_fold.ptr, nr * 2, cudaMemcpyDeviceToHost));
        CUDA_CHECK(cudaMemcpy(y1.data(), y_sep.ptr, ny * 2, cudaMemcpyDeviceToHost));
        CUDA_CHECK(cudaMemcpy(y2.data(), y_fold.ptr, ny * 2, cudaMemcpyDeviceToHost));
        for (std::size_t i = 0; i < nr; ++i) ASSERT_EQ(r1[i], r2[i]) << what << " residual " << i;
        for (int m = 0; m < M; ++m) {
          double ss = 0.0;
          for (int n = 0; n < 392; ++n) ss += std::pow(awqd::half_to_float(y1[m * 392 + n]), 2);
          const double rms = std::sqrt(ss / 392);
          for (int n = 0; n < 392; ++n) {
            const double u = awqd::half_to_float(y1[m * 392 + n]), v = awqd::half_to_float(y2[m * 392 + n]);
            ASSERT_LE(std::fabs(u - v), std::ldexp(std::max(std::fabs(u), rms), -8))
                << what << " row " << m << " column " << n << ": " << u << " vs " << v;
          }
        }
      }
  AwqGemmOptions bad;
  bad.norm_in_sumsq = sumsq.ptr;
  EXPECT_THROW(awq_gemm_plan(17, b->weight->view(), b->ws, bad), std::invalid_argument);  // not stream
  bad = {};
  bad.norm_out = {res_fold.ptr, nullptr, sumsq.ptr};
  EXPECT_THROW(awq_gemm_plan(4, a->weight->view(), a->ws, bad), std::invalid_argument);  // no weight
  bad = {};
  bad.norm_out = {res_fold.ptr, w.ptr, sumsq.ptr};
  EXPECT_THROW(awq_gemm_plan(4, b->weight->view(), b->ws, bad), std::invalid_argument);  // N % 64
}

TEST(AwqGemm, SmallOrNoWorkspaceIsSlowerNeverWrong) {
  AWQD_REQUIRE_CUDA();
  for (std::size_t bytes : {std::size_t{0}, std::size_t{64} << 10, std::size_t{80} << 10}) {
    // K = 2112: without room for partial sums the stream kernel runs one split, its activations
    // in 3 phases of shared memory at M = 16.
    auto p = make_problem(2112, 256, 64, 40, true, bytes);
    for (int M : {1, 8, 16, 40}) {
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
      for (int n = 0; n < p->N(); ++n)
        ASSERT_EQ(alone[n], batch[n])
            << "row 0, column " << n << ", M=" << M << " path " << awq_gemm_path_name(path);
    }
  }
}

// Each GEMM reads the previous one's output, back to back on one stream, sharing the workspace:
// with Programmatic Dependent Launch a kernel starts before the previous one has finished and
// must wait for it before reading the activations or touching the workspace. The chain must give
// the same bits with and without PDL (all paths here are deterministic), for the stream kernel
// (split-K) and the tiled kernel.
TEST(AwqGemm, ChainedCallsWithProgrammaticDependentLaunch) {
  AWQD_REQUIRE_CUDA();
  const int K = 2048, M_max = 16;
  auto p = make_problem(K, K, 128, M_max, true);
  DeviceArray<__half> a(static_cast<std::size_t>(M_max) * K),
      b(static_cast<std::size_t>(M_max) * K);
  cudaStream_t stream;
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  for (AwqTile tile : {AwqTile::kAuto, AwqTile::kS16})
    for (int M : {1, 5, 16}) {
      std::vector<half_bits> result[2];
      for (int pdl = 0; pdl < 2; ++pdl) {
        AwqGemmOptions o;
        o.tile = tile;
        o.pdl = pdl == 1;
        CUDA_CHECK(cudaMemcpyAsync(a.ptr, p->x->ptr, static_cast<std::size_t>(M) * K * 2,
                                   cudaMemcpyDeviceToDevice, stream));
        CUDA_CHECK(cudaMemsetAsync(b.ptr, 0xFF, b.count * sizeof(__half), stream));
        for (int i = 0; i < 6; ++i) {  // a -> b -> a -> ...: each call reads the last one's y
          __half* in = i % 2 == 0 ? a.ptr : b.ptr;
          __half* out = i % 2 == 0 ? b.ptr : a.ptr;
          awq_gemm(in, p->weight->view(), p->bias->ptr, out, M, p->ws, stream, o);
        }
        CUDA_CHECK(cudaStreamSynchronize(stream));
        result[pdl].resize(static_cast<std::size_t>(M) * K);
        CUDA_CHECK(
            cudaMemcpy(result[pdl].data(), a.ptr, result[pdl].size() * 2, cudaMemcpyDeviceToHost));
      }
      for (std::size_t i = 0; i < result[0].size(); ++i) {
        ASSERT_TRUE(std::isfinite(awqd::half_to_float(result[0][i]))) << "M=" << M << " i=" << i;
        ASSERT_EQ(result[0][i], result[1][i])
            << "M=" << M << " tile " << awq_tile_name(tile) << " element " << i;
      }
    }
  cudaStreamDestroy(stream);
}

TEST(AwqGemm, RunsInsideACudaGraph) {
  AWQD_REQUIRE_CUDA();
  auto p = make_problem(1024, 264, 128, 8, false);
  run_and_check(*p, 8);  // first call outside: caches, attributes
  cudaStream_t stream;
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  CUDA_CHECK(cudaMemsetAsync(p->y->ptr, 0xFF, 8 * p->N() * sizeof(__half), stream));
  cudaGraph_t graph;
  CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  // Two calls: on sm_90 the second depends on the first through a programmatic (PDL) edge.
  for (int i = 0; i < 2; ++i)
    awq_gemm(p->x->ptr, p->weight->view(), nullptr, p->y->ptr, 8, p->ws, stream);
  CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  cudaGraphExec_t exec;
  CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  for (int i = 0; i < 3; ++i) CUDA_CHECK(cudaGraphLaunch(exec, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<half_bits> y(8 * p->N());
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
  const AwqDeviceWeight weight(
      awq_repack(t.qweight.data(), t.qzeros.data(), t.scales.data(), K, N, G));
  const int n_pad = 256;
  DeviceArray<__half> out(static_cast<std::size_t>(K) * n_pad);
  awq_dequantize_f16(weight.view(), 0, n_pad, out.ptr, n_pad, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<half_bits> got(out.count);
  CUDA_CHECK(cudaMemcpy(got.data(), out.ptr, got.size() * 2, cudaMemcpyDeviceToHost));
  for (int k = 0; k < K; ++k)
    for (int n = 0; n < n_pad; ++n) {
      const half_bits want =
          n < N ? awqd::float_to_half(ref[static_cast<std::size_t>(k) * N + n]) : 0;
      ASSERT_EQ(got[static_cast<std::size_t>(k) * n_pad + n], want) << "k=" << k << " n=" << n;
    }
}

}  // namespace
