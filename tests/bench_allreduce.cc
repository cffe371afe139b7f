// All-reduce latency across the GPUs of one process (kernels/allreduce.cuh): the P2P one-shot
// kernel against NCCL's all-reduce (and NCCL gather + sum) at 8 KiB .. 4 MiB of fp16, the sizes
// of decode steps (8 KiB per token at hidden 4096; kAuto takes P2P up to 4 MiB). Each rank captures
// 50 back-to-back calls in a CUDA graph (as the engine's decode graphs hold them) and replays it; a
// call's time is a replay's time / 50, median over replays, the slowest rank's. Also eager (no
// graph) times at 8 KiB, which add the launch; and the all-reduce fused with the residual add and
// RMSNorm against the two kernels it replaces, at decode batch sizes. Prints markdown tables
// (docs/PERF.md).
//   bench_allreduce [num_gpus (default: all, at most 8)]
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <random>
#include <thread>
#include <vector>

#include "kernels/allreduce.cuh"
#include "kernels/cuda_check.cuh"
#include "kernels/device.cuh"
#include "kernels/norm.cuh"
#include "tests/on_ranks.h"

using awqd::cuda::AllReducePath;

namespace {

constexpr int kCallsPerGraph = 50;
constexpr int kReplays = 20;

using awqd::test::on_ranks;

struct Rank {
  cudaStream_t stream = nullptr;
  __half* data = nullptr;
  __half *residual = nullptr, *out = nullptr, *weight = nullptr;  // the fused add + RMSNorm
  cudaEvent_t start = nullptr, stop = nullptr;
};

// Microseconds per call of op(rank): median over replays of the slowest rank.
double time_op(awqd::cuda::TpComm& comm, std::vector<Rank>& ranks,
               const std::function<void(int)>& op, bool graph) {
  const int n = comm.size();
  std::vector<double> per_rank(n);
  on_ranks(n, [&](int r) {
    Rank& k = ranks[r];
    cudaGraphExec_t exec = nullptr;
    auto body = [&] {
      for (int i = 0; i < kCallsPerGraph; ++i) op(r);
    };
    body();  // warm-up, and NCCL's connections before capture
    if (graph) {
      cudaGraph_t g = nullptr;
      CUDA_CHECK(cudaStreamBeginCapture(k.stream, cudaStreamCaptureModeThreadLocal));
      body();
      CUDA_CHECK(cudaStreamEndCapture(k.stream, &g));
      CUDA_CHECK(cudaGraphInstantiate(&exec, g, 0));
      CUDA_CHECK(cudaGraphDestroy(g));
      for (int w = 0; w < 3; ++w) CUDA_CHECK(cudaGraphLaunch(exec, k.stream));
    }
    CUDA_CHECK(cudaStreamSynchronize(k.stream));
    std::vector<double> us;
    for (int rep = 0; rep < kReplays; ++rep) {
      CUDA_CHECK(cudaEventRecord(k.start, k.stream));
      if (graph) {
        CUDA_CHECK(cudaGraphLaunch(exec, k.stream));
      } else {
        body();
      }
      CUDA_CHECK(cudaEventRecord(k.stop, k.stream));
      CUDA_CHECK(cudaEventSynchronize(k.stop));
      float ms = 0;
      CUDA_CHECK(cudaEventElapsedTime(&ms, k.start, k.stop));
      us.push_back(1000.0 * ms / kCallsPerGraph);
    }
    if (exec) CUDA_CHECK(cudaGraphExecDestroy(exec));
    std::sort(us.begin(), us.end());
    per_rank[r] = us[us.size() / 2];
  });
  return *std::max_element(per_rank.begin(), per_rank.end());
}

double time_path(awqd::cuda::TpComm& comm, std::vector<Rank>& ranks, std::size_t count,
                 AllReducePath path, bool graph) {
  return time_op(
      comm, ranks, [&](int r) { comm.all_reduce(r, ranks[r].data, count, ranks[r].stream, path); },
      graph);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const int visible = awqd::cuda::device_count();
    const int n = argc > 1 ? std::atoi(argv[1]) : std::min(visible, 8);
    if (n < 2 || n > visible) {
      std::fprintf(stderr, "bench_allreduce: needs 2..%d GPUs (asked for %d)\n", visible, n);
      return 1;
    }
    std::vector<int> devices(n);
    for (int i = 0; i < n; ++i) devices[i] = i;
    awqd::cuda::TpComm comm(devices);
    const std::size_t max_bytes = 4u << 20, max_count = max_bytes / 2;
    std::vector<Rank> ranks(n);
    on_ranks(n, [&](int r) {
      Rank& k = ranks[r];
      CUDA_CHECK(cudaStreamCreateWithFlags(&k.stream, cudaStreamNonBlocking));
      CUDA_CHECK(cudaMalloc(&k.data, max_count * 2));
      std::vector<__half> init(max_count);
      std::mt19937 rng(r);
      for (auto& x : init) x = __float2half(static_cast<float>(rng() % 1000) / 1000.0f - 0.5f);
      CUDA_CHECK(cudaMemcpy(k.data, init.data(), max_count * 2, cudaMemcpyHostToDevice));
      CUDA_CHECK(cudaEventCreate(&k.start));
      CUDA_CHECK(cudaEventCreate(&k.stop));
      CUDA_CHECK(cudaMalloc(&k.residual, max_count * 2));
      CUDA_CHECK(cudaMalloc(&k.out, max_count * 2));
      CUDA_CHECK(cudaMalloc(&k.weight, 16384 * 2));
      CUDA_CHECK(cudaMemcpy(k.residual, init.data(), max_count * 2, cudaMemcpyHostToDevice));
      CUDA_CHECK(cudaMemcpy(k.weight, init.data(), 16384 * 2, cudaMemcpyHostToDevice));
    });
    const awqd::cuda::DeviceInfo info = awqd::cuda::device_info(0);
    std::printf("## all-reduce latency, %d x %s (%s)\n\n", n, info.name.c_str(),
                comm.describe().c_str());
    std::printf(
        "| bytes | P2P one-shot us | NCCL all-reduce us | NCCL gather+sum us | P2P speed-up | P2P "
        "algbw GB/s |\n");
    std::printf("|---:|---:|---:|---:|---:|---:|\n");
    for (std::size_t bytes = 8 << 10; bytes <= max_bytes; bytes *= 2) {
      const std::size_t count = bytes / 2;
      const double p2p =
          comm.p2p() ? time_path(comm, ranks, count, AllReducePath::kP2p, true) : 0.0;
      const double nccl = time_path(comm, ranks, count, AllReducePath::kNccl, true);
      const double gather = time_path(comm, ranks, count, AllReducePath::kNcclGather, true);
      if (comm.p2p()) {
        std::printf("| %zu | %.1f | %.1f | %.1f | %.1fx | %.1f |\n", bytes, p2p, nccl, gather,
                    nccl / p2p, static_cast<double>(bytes) / p2p / 1e3);
      } else {
        std::printf("| %zu | - | %.1f | %.1f | - | - |\n", bytes, nccl, gather);
      }
      std::fflush(stdout);
    }
    const std::size_t small = 4096;
    std::printf("\neager (no CUDA graph), 8 KiB: P2P %.1f us, NCCL %.1f us per call\n",
                comm.p2p() ? time_path(comm, ranks, small, AllReducePath::kP2p, false) : 0.0,
                time_path(comm, ranks, small, AllReducePath::kNccl, false));
    // Decode steps: the all-reduce after o_proj / down_proj with the residual add and RMSNorm that
    // follow, fused (one kernel) or as all-reduce + add_rmsnorm.
    if (comm.p2p()) {
      std::printf(
          "\n| decode rows x hidden 4096 | fused P2P + add_rmsnorm us | P2P, then add_rmsnorm us | "
          "NCCL, then add_rmsnorm us |\n");
      std::printf("|---:|---:|---:|---:|\n");
      const int hidden = 4096;
      for (int rows : {1, 8, 32, 64, 256}) {
        const std::size_t count = static_cast<std::size_t>(rows) * hidden;
        const double fused = time_op(
            comm, ranks,
            [&](int r) {
              Rank& k = ranks[r];
              comm.all_reduce_add_rmsnorm(r, k.data, k.residual, k.out, k.weight, rows, hidden,
                                          1e-5f, k.stream);
            },
            true);
        auto two_kernels = [&](AllReducePath path) {
          return time_op(
              comm, ranks,
              [&](int r) {
                Rank& k = ranks[r];
                comm.all_reduce(r, k.data, count, k.stream, path);
                awqd::cuda::add_rmsnorm(k.out, k.residual, k.data, k.weight, rows, hidden, 1e-5f,
                                        k.stream);
              },
              true);
        };
        std::printf("| %d | %.1f | %.1f | %.1f |\n", rows, fused, two_kernels(AllReducePath::kP2p),
                    two_kernels(AllReducePath::kNccl));
        std::fflush(stdout);
      }
    }
    on_ranks(n, [&](int r) {
      Rank& k = ranks[r];
      CUDA_CHECK(cudaStreamSynchronize(k.stream));
      cudaFree(k.residual);
      cudaFree(k.out);
      cudaFree(k.weight);
      cudaFree(k.data);
      cudaEventDestroy(k.start);
      cudaEventDestroy(k.stop);
      cudaStreamDestroy(k.stream);
    });
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_allreduce: %s\n", e.what());
    return 1;
  }
}
