// The tensor-parallel collectives (kernels/allreduce.cuh) on 2..4 GPUs against a CPU sum: every
// path at sizes from one vector to several chunks, back-to-back calls mixing paths and sizes (the
// P2P kernel's parities and counters), replays of CUDA graphs that hold the P2P kernel, the
// all-reduce fused with the residual add and RMSNorm, and the logits gather. One thread per rank,
// as in the engine. Skips with fewer than 2 GPUs.
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <thread>
#include <vector>

#include "engine/fp16.h"
#include "kernels/allreduce.cuh"
#include "kernels/cuda_check.cuh"
#include "tests/on_ranks.h"
#include "tests/test_support.h"

namespace awqd {
namespace {

using cuda::AllReducePath;

int max_ranks() { return std::min(test::cuda_devices(), 4); }

std::vector<int> first_devices(int n) {
  std::vector<int> d(n);
  for (int i = 0; i < n; ++i) d[i] = i;
  return d;
}

using test::on_ranks;

struct RankData {
  cudaStream_t stream = nullptr;
  __half* dev = nullptr;
  std::size_t capacity = 0;
};

class AllReduce : public ::testing::Test {
 protected:
  void SetUp() override { AWQD_REQUIRE_GPUS(2); }

  void make(int n, const cuda::TpCommOptions& options, std::size_t capacity) {
    comm_ = std::make_unique<cuda::TpComm>(first_devices(n), options);
    ranks_.assign(n, {});
    on_ranks(n, [&](int r) {
      CUDA_CHECK(cudaStreamCreateWithFlags(&ranks_[r].stream, cudaStreamNonBlocking));
      CUDA_CHECK(cudaMalloc(&ranks_[r].dev, capacity * 2));
      ranks_[r].capacity = capacity;
    });
  }
  void TearDown() override {
    for (int r = 0; r < static_cast<int>(ranks_.size()); ++r) {
      cudaSetDevice(r);
      cudaStreamSynchronize(ranks_[r].stream);
      cudaFree(ranks_[r].dev);
      cudaStreamDestroy(ranks_[r].stream);
    }
    ranks_.clear();
    comm_.reset();
  }

  // Random inputs per rank (never zeros), the reference sums, one all-reduce on every rank, and
  // the check: P2P and gather paths must equal the fp32 rank-order sum rounded once (bit for bit);
  // NCCL's fp16 pairwise sums are within a few fp16 ulps. Every rank must get the same bits.
  void check_once(std::size_t count, AllReducePath path, unsigned seed) {
    const int n = comm_->size();
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<std::vector<half_bits>> in(n, std::vector<half_bits>(count));
    for (auto& v : in)
      for (auto& x : v) x = float_to_half(nd(rng));
    std::vector<float> ref(count), mag(count);
    for (std::size_t i = 0; i < count; ++i) {
      float acc = 0.0f, m = 0.0f;
      for (int r = 0; r < n; ++r) {
        acc += half_to_float(in[r][i]);
        m += std::fabs(half_to_float(in[r][i]));
      }
      ref[i] = acc;
      mag[i] = m;
    }
    std::vector<std::vector<half_bits>> out(n, std::vector<half_bits>(count));
    on_ranks(n, [&](int r) {
      RankData& d = ranks_[r];
      ASSERT_LE(count, d.capacity);
      CUDA_CHECK(cudaMemcpyAsync(d.dev, in[r].data(), count * 2, cudaMemcpyHostToDevice, d.stream));
      comm_->all_reduce(r, d.dev, count, d.stream, path);
      CUDA_CHECK(
          cudaMemcpyAsync(out[r].data(), d.dev, count * 2, cudaMemcpyDeviceToHost, d.stream));
      CUDA_CHECK(cudaStreamSynchronize(d.stream));
    });
    const bool exact = path == AllReducePath::kP2p || path == AllReducePath::kNcclGather ||
                       path == AllReducePath::kDeterministic ||
                       (path == AllReducePath::kAuto && comm_->p2p() &&
                        count * 2 <= comm_->options().p2p_max_bytes);
    for (int r = 0; r < n; ++r) {
      ASSERT_EQ(out[r], out[0]) << "rank " << r << " differs from rank 0 ("
                                << cuda::all_reduce_path_name(path) << ", " << count << " values)";
    }
    for (std::size_t i = 0; i < count; ++i) {
      const float got = half_to_float(out[0][i]);
      if (exact) {
        ASSERT_EQ(out[0][i], float_to_half(ref[i]))
            << cuda::all_reduce_path_name(path) << " count " << count << " at " << i << ": got "
            << got << ", want " << ref[i];
      } else {
        // n - 1 fp16 roundings of partial sums bounded by the sum of magnitudes.
        ASSERT_NEAR(got, ref[i], (n + 1) * 4.9e-4f * mag[i] + 1e-6f)
            << cuda::all_reduce_path_name(path) << " count " << count << " at " << i;
      }
    }
  }

  std::unique_ptr<cuda::TpComm> comm_;
  std::vector<RankData> ranks_;
};

// Up to past the 4 MiB P2P buffer (kAuto switches to NCCL there; P2P goes in two chunks).
const std::vector<std::size_t> kCounts = {8,        64,    8 * 37,     4096,
                                          4096 * 3, 65536, 512 * 1024, 2 * 1024 * 1024 + 8};

TEST_F(AllReduce, EveryPathEveryRankCountAgainstCpuSum) {
  for (int n = 2; n <= max_ranks(); ++n) {
    SCOPED_TRACE(std::to_string(n) + " ranks");
    make(n, {}, kCounts.back());
    std::printf("%d ranks: %s\n", n, comm_->describe().c_str());
    std::vector<AllReducePath> paths = {AllReducePath::kAuto, AllReducePath::kNccl,
                                        AllReducePath::kNcclGather, AllReducePath::kDeterministic};
    if (comm_->p2p()) paths.push_back(AllReducePath::kP2p);
    unsigned seed = 1;
    for (AllReducePath p : paths)
      for (std::size_t count : kCounts) check_once(count, p, seed++);
    TearDown();
  }
}

TEST_F(AllReduce, BackToBackCallsMixingPathsAndSizes) {
  // 200 calls: the P2P kernel's parity alternates and its buffers are rewritten while NCCL calls
  // interleave; sizes change so blocks own different slices from call to call.
  const int n = max_ranks();
  make(n, {}, 65536);
  std::mt19937 rng(3);
  for (int i = 0; i < 200; ++i) {
    const std::size_t count = 8 * (1 + rng() % 8192);
    const bool nccl = comm_->p2p() ? rng() % 4 == 0 : true;
    check_once(count, nccl ? AllReducePath::kNccl : AllReducePath::kP2p, 100 + i);
  }
}

TEST_F(AllReduce, ChunksLargerThanTheP2pBuffer) {
  const int n = max_ranks();
  cuda::TpCommOptions o;
  o.p2p_buffer_bytes = 64 << 10;  // 32 Ki halves per chunk
  make(n, o, 3 * 32768 + 8);
  if (comm_->p2p()) check_once(3 * 32768 + 8, AllReducePath::kP2p, 7);
  check_once(3 * 32768 + 8, AllReducePath::kNcclGather, 8);
  check_once(3 * 32768 + 8, AllReducePath::kDeterministic, 9);
}

TEST_F(AllReduce, P2pKernelReplayedFromCudaGraphs) {
  const int n = max_ranks();
  make(n, {}, 4096 * 4);
  if (!comm_->p2p()) GTEST_SKIP() << "no peer access between the GPUs";
  // Each rank captures "all-reduce A (4096), all-reduce B (16384)" once, then replays it with
  // fresh inputs; eager calls in between keep the counters moving like prefill steps do.
  const std::size_t a = 4096, b = 4096 * 3;
  std::vector<cudaGraphExec_t> graphs(n);
  on_ranks(n, [&](int r) {
    RankData& d = ranks_[r];
    cudaGraph_t g = nullptr;
    CUDA_CHECK(cudaStreamBeginCapture(d.stream, cudaStreamCaptureModeThreadLocal));
    comm_->all_reduce(r, d.dev, a, d.stream, AllReducePath::kP2p);
    comm_->all_reduce(r, d.dev + a, b, d.stream, AllReducePath::kP2p);
    CUDA_CHECK(cudaStreamEndCapture(d.stream, &g));
    CUDA_CHECK(cudaGraphInstantiate(&graphs[r], g, 0));
    CUDA_CHECK(cudaGraphDestroy(g));
  });
  for (int rep = 0; rep < 20; ++rep) {
    std::mt19937 rng(50 + rep);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<std::vector<half_bits>> in(n, std::vector<half_bits>(a + b));
    for (auto& v : in)
      for (auto& x : v) x = float_to_half(nd(rng));
    std::vector<std::vector<half_bits>> out(n, std::vector<half_bits>(a + b));
    on_ranks(n, [&](int r) {
      RankData& d = ranks_[r];
      CUDA_CHECK(
          cudaMemcpyAsync(d.dev, in[r].data(), (a + b) * 2, cudaMemcpyHostToDevice, d.stream));
      CUDA_CHECK(cudaGraphLaunch(graphs[r], d.stream));
      CUDA_CHECK(
          cudaMemcpyAsync(out[r].data(), d.dev, (a + b) * 2, cudaMemcpyDeviceToHost, d.stream));
      CUDA_CHECK(cudaStreamSynchronize(d.stream));
    });
    for (std::size_t i = 0; i < a + b; ++i) {
      float acc = 0.0f;
      for (int r = 0; r < n; ++r) acc += half_to_float(in[r][i]);
      for (int r = 0; r < n; ++r)
        ASSERT_EQ(out[r][i], float_to_half(acc))
            << "replay " << rep << " rank " << r << " at " << i;
    }
    if (rep % 3 == 0)
      check_once(8 * (rep + 1), AllReducePath::kP2p, 900 + rep);  // an odd number of eager calls
  }
  on_ranks(n, [&](int r) { CUDA_CHECK(cudaGraphExecDestroy(graphs[r])); });
}

TEST_F(AllReduce, P2pInputsHoldingTheEmptyMarkNanAndNegativeZero) {
  // The P2P receive buffers mark "not yet written" with the fp16 bits 0xFFFF (a NaN); an input
  // holding them is sent as another NaN, so the call neither hangs nor loses the NaN, and the
  // buffers are empty again afterwards (the calls after it, through all three buffers, are exact).
  const int n = max_ranks();
  make(n, {}, 4096 * 2);
  if (!comm_->p2p()) GTEST_SKIP() << "no peer access between the GPUs";
  const std::size_t count = 4096 * 2;
  for (int round = 0; round < 4; ++round) {
    std::mt19937 rng(700 + round);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<std::vector<half_bits>> in(n, std::vector<half_bits>(count));
    for (auto& v : in)
      for (auto& x : v) x = float_to_half(nd(rng));
    std::vector<bool> nan_at(count, false);
    for (std::size_t i = round; i < count; i += 97) {  // 0xFFFF, 0x7FFF, 0xFE00 on some rank
      const half_bits bits[3] = {0xFFFF, 0x7FFF, 0xFE00};
      in[i % n][i] = bits[i % 3];
      nan_at[i] = true;
    }
    for (std::size_t i = round + 5; i < count; i += 89)  // -0.0 on every rank: the sum is +0.0
      for (int r = 0; r < n; ++r) in[r][i] = nan_at[i] ? in[r][i] : half_bits{0x8000};
    std::vector<std::vector<half_bits>> out(n, std::vector<half_bits>(count));
    on_ranks(n, [&](int r) {
      RankData& d = ranks_[r];
      CUDA_CHECK(cudaMemcpyAsync(d.dev, in[r].data(), count * 2, cudaMemcpyHostToDevice, d.stream));
      comm_->all_reduce(r, d.dev, count, d.stream, AllReducePath::kP2p);
      CUDA_CHECK(
          cudaMemcpyAsync(out[r].data(), d.dev, count * 2, cudaMemcpyDeviceToHost, d.stream));
      CUDA_CHECK(cudaStreamSynchronize(d.stream));
    });
    for (int r = 0; r < n; ++r) ASSERT_EQ(out[r], out[0]) << "rank " << r;
    for (std::size_t i = 0; i < count; ++i) {
      if (nan_at[i]) {
        ASSERT_TRUE(std::isnan(half_to_float(out[0][i]))) << "at " << i << ": " << out[0][i];
        continue;
      }
      float acc = 0.0f;
      for (int r = 0; r < n; ++r) acc += half_to_float(in[r][i]);
      ASSERT_EQ(out[0][i], float_to_half(acc)) << "round " << round << " at " << i;
    }
    check_once(count - 8 * round, AllReducePath::kP2p, 710 + round);
  }
}

TEST_F(AllReduce, FusedWithResidualAddAndRmsNorm) {
  const int n = max_ranks();
  make(n, {}, 8);
  if (!comm_->p2p()) GTEST_SKIP() << "no peer access between the GPUs";
  struct Case {
    int rows, hidden;
  };
  unsigned seed = 300;
  for (const Case cs : {Case{1, 4096}, Case{3, 256}, Case{64, 4096}, Case{65, 4096},
                        Case{130, 5120}, Case{7, 16384}}) {
    SCOPED_TRACE(std::to_string(cs.rows) + " x " + std::to_string(cs.hidden));
    const std::size_t count = static_cast<std::size_t>(cs.rows) * cs.hidden;
    std::mt19937 rng(seed++);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    auto random_half = [&](std::size_t k, float scale, float mean) {
      std::vector<half_bits> v(k);
      for (auto& x : v) x = float_to_half(mean + scale * nd(rng));
      return v;
    };
    std::vector<std::vector<half_bits>> partial(n);
    for (auto& p : partial) p = random_half(count, 0.5f, 0.0f);
    const std::vector<half_bits> residual = random_half(count, 2.0f, 0.0f),
                                 weight = random_half(cs.hidden, 0.1f, 1.0f);
    // Reference: the all-reduce's fp16 sum, the rounded residual, the norm of what it holds.
    std::vector<half_bits> want_residual(count);
    std::vector<float> want_out(count);
    for (int row = 0; row < cs.rows; ++row) {
      double sum_sq = 0;
      for (int c = 0; c < cs.hidden; ++c) {
        const std::size_t i = static_cast<std::size_t>(row) * cs.hidden + c;
        float acc = 0.0f;
        for (int r = 0; r < n; ++r) acc += half_to_float(partial[r][i]);
        want_residual[i] =
            float_to_half(half_to_float(residual[i]) + half_to_float(float_to_half(acc)));
        const double v = half_to_float(want_residual[i]);
        sum_sq += v * v;
      }
      const double inv = 1.0 / std::sqrt(sum_sq / cs.hidden + 1e-5);
      for (int c = 0; c < cs.hidden; ++c) {
        const std::size_t i = static_cast<std::size_t>(row) * cs.hidden + c;
        want_out[i] =
            static_cast<float>(half_to_float(want_residual[i]) * inv * half_to_float(weight[c]));
      }
    }
    std::vector<std::vector<half_bits>> got_residual(n, std::vector<half_bits>(count)),
        got_out = got_residual;
    on_ranks(n, [&](int r) {
      cudaStream_t s = ranks_[r].stream;
      __half *p = nullptr, *res = nullptr, *out = nullptr, *w = nullptr;
      CUDA_CHECK(cudaMalloc(&p, count * 2));
      CUDA_CHECK(cudaMalloc(&res, count * 2));
      CUDA_CHECK(cudaMalloc(&out, count * 2));
      CUDA_CHECK(cudaMalloc(&w, cs.hidden * 2));
      CUDA_CHECK(cudaMemcpyAsync(p, partial[r].data(), count * 2, cudaMemcpyHostToDevice, s));
      CUDA_CHECK(cudaMemcpyAsync(res, residual.data(), count * 2, cudaMemcpyHostToDevice, s));
      CUDA_CHECK(cudaMemsetAsync(out, 0xFF, count * 2, s));  // NaN: unwritten outputs show
      CUDA_CHECK(cudaMemcpyAsync(w, weight.data(), cs.hidden * 2, cudaMemcpyHostToDevice, s));
      ASSERT_TRUE(comm_->all_reduce_add_rmsnorm(r, p, res, out, w, cs.rows, cs.hidden, 1e-5f, s));
      CUDA_CHECK(
          cudaMemcpyAsync(got_residual[r].data(), res, count * 2, cudaMemcpyDeviceToHost, s));
      CUDA_CHECK(cudaMemcpyAsync(got_out[r].data(), out, count * 2, cudaMemcpyDeviceToHost, s));
      CUDA_CHECK(cudaStreamSynchronize(s));
      for (void* q : {static_cast<void*>(p), static_cast<void*>(res), static_cast<void*>(out),
                      static_cast<void*>(w)})
        cudaFree(q);
    });
    for (int r = 0; r < n; ++r) {
      ASSERT_EQ(got_residual[r], got_residual[0]) << "rank " << r;
      ASSERT_EQ(got_out[r], got_out[0]) << "rank " << r;
    }
    for (std::size_t i = 0; i < count; ++i) {
      ASSERT_EQ(got_residual[0][i], want_residual[i]) << "residual " << i;
      const float got = half_to_float(got_out[0][i]);
      ASSERT_NEAR(got, want_out[i], 2e-3f * std::fabs(want_out[i]) + 1e-3f) << "out " << i;
    }
  }
  // Too large for one kernel: declined, nothing done.
  EXPECT_FALSE(comm_->all_reduce_add_rmsnorm(0, nullptr, nullptr, nullptr, nullptr, 1, 16392, 1e-5f,
                                             nullptr));
}

TEST_F(AllReduce, GatherToRoot) {
  const int n = max_ranks();
  make(n, {}, 8);
  std::vector<std::size_t> counts(n);
  std::vector<float*> send(n, nullptr), recv(n, nullptr);
  std::vector<std::vector<float>> want(n);
  for (int r = 0; r < n; ++r) {
    counts[r] = 1000 + 37 * r;
    want[r].resize(counts[r]);
    for (std::size_t i = 0; i < counts[r]; ++i)
      want[r][i] = static_cast<float>(r) + 0.001f * static_cast<float>(i);
  }
  std::vector<std::vector<float>> got(n);
  on_ranks(n, [&](int r) {
    CUDA_CHECK(cudaMalloc(&send[r], counts[r] * 4));
    CUDA_CHECK(cudaMemcpy(send[r], want[r].data(), counts[r] * 4, cudaMemcpyHostToDevice));
    if (r == 0) {
      for (int q = 1; q < n; ++q) {
        CUDA_CHECK(cudaMalloc(&recv[q], counts[q] * 4));
        CUDA_CHECK(cudaMemset(recv[q], 0xFF, counts[q] * 4));  // NaN: unwritten values show
      }
    }
  });
  on_ranks(n, [&](int r) {
    RankData& d = ranks_[r];
    comm_->gather_to_root(r, send[r], counts[r], recv, counts, d.stream);
    CUDA_CHECK(cudaStreamSynchronize(d.stream));
    if (r == 0)
      for (int q = 1; q < n; ++q) {
        got[q].resize(counts[q]);
        CUDA_CHECK(cudaMemcpy(got[q].data(), recv[q], counts[q] * 4, cudaMemcpyDeviceToHost));
      }
  });
  for (int q = 1; q < n; ++q) EXPECT_EQ(got[q], want[q]) << "from rank " << q;
  on_ranks(n, [&](int r) {
    cudaFree(send[r]);
    if (r == 0)
      for (int q = 1; q < n; ++q) cudaFree(recv[q]);
  });
}

}  // namespace
}  // namespace awqd
