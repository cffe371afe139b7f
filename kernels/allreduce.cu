#include <algorithm>
#include <cstdint>
#include <cstdio>

#include "kernels/allreduce.cuh"
#include "kernels/common.cuh"
#include "kernels/cuda_check.cuh"
#include "kernels/launch.cuh"
#include "kernels/ptx.cuh"

namespace awqd::cuda {

namespace {

constexpr int kP2pBlocks = 64;  // fixed grid: the call counters of every block stay equal
constexpr int kP2pThreads = 512;
constexpr int kMaxRowChunks = 4;  // fused norm: 16-byte chunks per thread, hidden <= 16384
constexpr int kReduceThreads = 256;
constexpr unsigned long long kWaitTimeoutNs = 30ull * 1000 * 1000 * 1000;

struct P2pSignal {
  std::uint32_t flag[2][kP2pBlocks][kMaxTpRanks];  // [parity][block][from rank], written by peers
  std::uint32_t calls[kP2pBlocks];                 // this rank's completed calls per block
};

struct P2pPeers {
  uint4* buffer[kMaxTpRanks];      // rank i's data buffer: two parities of buffer_vecs each
  P2pSignal* signal[kMaxTpRanks];  // rank i's signal block
};

__device__ __forceinline__ void store_release_sys(std::uint32_t* p, std::uint32_t v) {
  asm volatile("st.release.sys.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}

__device__ __forceinline__ std::uint32_t load_acquire_sys(const std::uint32_t* p) {
  std::uint32_t v;
  asm volatile("ld.acquire.sys.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

__device__ __forceinline__ unsigned long long global_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

__device__ __forceinline__ void add8(float (&acc)[8], const uint4& v) {
  float f[8];
  ptx::unpack8(v, f);
#pragma unroll
  for (int k = 0; k < 8; ++k) acc[k] += f[k];
}

// The block's barrier of call `call`: announce this block's slice of the own buffer to every
// peer, wait for every peer's announcement. Call after the block's writes to the own buffer.
template <int W>
__device__ __forceinline__ void block_barrier(const P2pPeers& peers, int rank, P2pSignal* self,
                                              std::uint32_t call) {
  const int b = blockIdx.x, parity = call & 1;
  __syncthreads();
  if (threadIdx.x < W) {
    const int peer = threadIdx.x;
    P2pSignal* peer_signal =
        nullptr;  // peers.signal[peer] without a dynamic index (no local-memory copy)
#pragma unroll
    for (int r = 0; r < W; ++r)
      if (r == peer) peer_signal = peers.signal[r];
    if (peer == 0) self->calls[b] = call;
    __threadfence_system();  // this block's slice of the buffer before the flag that announces it
    store_release_sys(&peer_signal->flag[parity][b][rank], call);
    const std::uint32_t* mine_flag = &self->flag[parity][b][peer];
    const unsigned long long start = global_ns();
    while (load_acquire_sys(mine_flag) != call) {
      if (global_ns() - start > kWaitTimeoutNs) {
        printf(
            "awqd all-reduce: rank %d block %d waited 30 s for rank %d at call %u; a peer GPU "
            "failed or "
            "ran different collectives\n",
            rank, b, peer, call);
        __trap();
      }
    }
  }
  __syncthreads();
}

// fp32 sum in rank order of vector i of every rank's buffer half.
template <int W>
__device__ __forceinline__ void sum_ranks(const P2pPeers& peers, std::size_t index,
                                          float (&acc)[8]) {
  uint4 v[W];
#pragma unroll
  for (int r = 0; r < W; ++r) v[r] = peers.buffer[r][index];  // all loads in flight first
#pragma unroll
  for (int k = 0; k < 8; ++k) acc[k] = 0.0f;
#pragma unroll
  for (int r = 0; r < W; ++r) add8(acc, v[r]);
}

// One-shot all-reduce of data[vecs] (8 halves each) over W ranks; see the header for the protocol.
template <int W>
__global__ void __launch_bounds__(kP2pThreads)
    p2p_all_reduce_kernel(P2pPeers peers, int rank, P2pSignal* self, uint4* own_buffer, uint4* data,
                          unsigned vecs, unsigned buffer_vecs) {
  const int b = blockIdx.x;
  // Every thread reads the counter before thread 0 advances it (inside block_barrier).
  const std::uint32_t call = self->calls[b] + 1;
  const std::size_t base = static_cast<std::size_t>(call & 1) * buffer_vecs;
  uint4* mine = own_buffer + base;
  const unsigned stride = kP2pBlocks * kP2pThreads;
  for (unsigned i = b * kP2pThreads + threadIdx.x; i < vecs; i += stride) mine[i] = data[i];
  block_barrier<W>(peers, rank, self, call);
  for (unsigned i = b * kP2pThreads + threadIdx.x; i < vecs; i += stride) {
    float acc[8];
    sum_ranks<W>(peers, base + i, acc);
    data[i] = ptx::pack8(acc);
  }
}

// The P2P all-reduce of partial[rows, hidden] fused with add_rmsnorm (kernels/norm.cuh):
//   sum = fp16(fp32 rank-order sum of the partials); residual = fp16(residual + sum);
//   out = residual * rsqrt(mean(residual^2) + eps) * weight
// Block b owns rows b, b + kP2pBlocks, ...: it copies them, passes one barrier, then reduces and
// normalises each row with the row held in registers.
template <int W>
__global__ void __launch_bounds__(kP2pThreads)
    p2p_all_reduce_add_rmsnorm_kernel(P2pPeers peers, int rank, P2pSignal* self, uint4* own_buffer,
                                      const uint4* partial, uint4* residual, uint4* out,
                                      const uint4* weight, int rows, int chunks,
                                      unsigned buffer_vecs, float eps) {
  __shared__ float scratch[32];
  const int b = blockIdx.x;
  const std::uint32_t call = self->calls[b] + 1;
  const std::size_t base = static_cast<std::size_t>(call & 1) * buffer_vecs;
  uint4* mine = own_buffer + base;
  for (int row = b; row < rows; row += kP2pBlocks)
    for (int c = threadIdx.x; c < chunks; c += kP2pThreads) {
      const std::size_t i = static_cast<std::size_t>(row) * chunks + c;
      mine[i] = partial[i];
    }
  uint4 wv[kMaxRowChunks];  // the norm weight, loaded while the barrier waits for the peers
#pragma unroll
  for (int k = 0; k < kMaxRowChunks; ++k) {
    const int c = threadIdx.x + k * kP2pThreads;
    wv[k] = b < rows && c < chunks ? weight[c] : make_uint4(0, 0, 0, 0);
  }
  block_barrier<W>(peers, rank, self, call);
  for (int row = b; row < rows; row += kP2pBlocks) {
    float v[kMaxRowChunks][8];
    float sum_sq = 0.0f;
#pragma unroll
    for (int k = 0; k < kMaxRowChunks; ++k) {
      const int c = threadIdx.x + k * kP2pThreads;
      if (c < chunks) {
        const std::size_t i = static_cast<std::size_t>(row) * chunks + c;
        float acc[8];
        sum_ranks<W>(peers, base + i, acc);
        ptx::unpack8(ptx::pack8(acc), v[k]);  // the all-reduce's fp16 result
        ptx::add_to_residual8(v[k], residual[i]);
#pragma unroll
        for (int e = 0; e < 8; ++e) sum_sq += v[k][e] * v[k][e];
      }
    }
    const float inv_rms = rsqrtf(block_sum(sum_sq, scratch) / static_cast<float>(chunks * 8) + eps);
#pragma unroll
    for (int k = 0; k < kMaxRowChunks; ++k) {
      const int c = threadIdx.x + k * kP2pThreads;
      if (c < chunks) {
        float wf[8];
        ptx::unpack8(wv[k], wf);
#pragma unroll
        for (int e = 0; e < 8; ++e) v[k][e] = v[k][e] * inv_rms * wf[e];
        out[static_cast<std::size_t>(row) * chunks + c] = ptx::pack8(v[k]);
      }
    }
  }
}

// out[i] = sum over r in rank order of gathered[r * vecs + i], the P2P kernel's arithmetic.
__global__ void __launch_bounds__(kReduceThreads)
    rank_order_sum_kernel(const uint4* gathered, int world, unsigned vecs, uint4* out) {
  for (unsigned i = blockIdx.x * kReduceThreads + threadIdx.x; i < vecs;
       i += gridDim.x * kReduceThreads) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int r = 0; r < world; ++r) add8(acc, gathered[static_cast<std::size_t>(r) * vecs + i]);
    out[i] = ptx::pack8(acc);
  }
}

}  // namespace

struct TpComm::Rank {
  uint4* buffer = nullptr;  // P2P data buffer (2 parities)
  P2pSignal* signal = nullptr;
  uint4* gathered = nullptr;  // NCCL gather + sum staging: [size][chunk]
  P2pPeers peers{};
};

const char* all_reduce_path_name(AllReducePath path) {
  switch (path) {
    case AllReducePath::kAuto:
      return "auto";
    case AllReducePath::kDeterministic:
      return "deterministic";
    case AllReducePath::kP2p:
      return "p2p";
    case AllReducePath::kNccl:
      return "nccl";
    case AllReducePath::kNcclGather:
      return "nccl-gather";
  }
  return "?";
}

TpComm::TpComm(const std::vector<int>& devices, const TpCommOptions& options)
    : devices_(devices), options_(options) {
  const int n = size();
  if (n < 2 || n > kMaxTpRanks)
    throw CudaError("tensor parallelism needs 2 to " + std::to_string(kMaxTpRanks) + " GPUs, got " +
                    std::to_string(n));
  if (options_.p2p_buffer_bytes % 16 != 0 || options_.p2p_buffer_bytes == 0)
    throw CudaError("TpCommOptions::p2p_buffer_bytes must be a positive multiple of 16");
  const NcclApi& api = nccl();  // before any allocation: a missing NCCL leaks nothing
  int previous = 0;
  CUDA_CHECK(cudaGetDevice(&previous));
  ranks_.resize(n);

  p2p_ = options_.allow_p2p;
  for (int i = 0; i < n && p2p_; ++i)
    for (int j = 0; j < n; ++j) {
      if (i == j) continue;
      int ok = 0;
      CUDA_CHECK(cudaDeviceCanAccessPeer(&ok, devices_[i], devices_[j]));
      p2p_ = p2p_ && ok != 0;
    }
  for (int i = 0; i < n; ++i) {
    CUDA_CHECK(cudaSetDevice(devices_[i]));
    Rank& r = ranks_[i];
    if (p2p_) {
      for (int j = 0; j < n; ++j) {
        if (i == j) continue;
        const cudaError_t e = cudaDeviceEnablePeerAccess(devices_[j], 0);
        if (e == cudaErrorPeerAccessAlreadyEnabled) {
          cudaGetLastError();
        } else {
          CUDA_CHECK(e);
        }
      }
      CUDA_CHECK(cudaMalloc(&r.buffer, 2 * options_.p2p_buffer_bytes));
      CUDA_CHECK(cudaMalloc(&r.signal, sizeof(P2pSignal)));
      CUDA_CHECK(cudaMemset(r.signal, 0, sizeof(P2pSignal)));
    }
    CUDA_CHECK(cudaMalloc(&r.gathered, static_cast<std::size_t>(n) * options_.p2p_buffer_bytes));
  }
  for (int i = 0; i < n && p2p_; ++i)
    for (int j = 0; j < n; ++j) {
      ranks_[i].peers.buffer[j] = ranks_[j].buffer;
      ranks_[i].peers.signal[j] = ranks_[j].signal;
    }
  for (int i = 0; i < n; ++i) {
    CUDA_CHECK(cudaSetDevice(devices_[i]));
    CUDA_CHECK(cudaDeviceSynchronize());  // the memsets, before any peer reads a flag
  }

  comms_.assign(n, nullptr);
  NCCL_CHECK(api.CommInitAll(comms_.data(), n, devices_.data()));
  CUDA_CHECK(cudaSetDevice(previous));
}

TpComm::~TpComm() {
  int previous = 0;
  cudaGetDevice(&previous);
  for (int i = 0; i < size(); ++i) {
    cudaSetDevice(devices_[i]);
    cudaDeviceSynchronize();
    if (!aborted_ && i < static_cast<int>(comms_.size()) && comms_[i] != nullptr)
      nccl().CommDestroy(comms_[i]);
    Rank& r = ranks_[i];
    if (r.buffer) cudaFree(r.buffer);
    if (r.signal) cudaFree(r.signal);
    if (r.gathered) cudaFree(r.gathered);
  }
  cudaSetDevice(previous);
}

std::string TpComm::describe() const {
  const int v = nccl().version;
  const std::string nccl_version = std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) +
                                   "." + std::to_string(v % 100);
  return std::to_string(size()) + " GPUs, " +
         (p2p_ ? "P2P all-reduce up to " + std::to_string(options_.p2p_max_bytes >> 10) +
                     " KiB, NCCL " + nccl_version + " above"
               : "no peer access: NCCL " + nccl_version);
}

void TpComm::all_reduce(int rank, __half* data, std::size_t count, cudaStream_t stream,
                        AllReducePath path) {
  static constexpr const char* kName = "all_reduce";
  AWQD_ARG_CHECK(kName, rank >= 0 && rank < size(), "rank " + std::to_string(rank));
  AWQD_ARG_CHECK(kName, count % 8 == 0 && aligned16(data), "count " + std::to_string(count));
  if (count == 0) return;
  const std::size_t bytes = count * sizeof(__half);
  if (path == AllReducePath::kAuto)
    path = p2p_ && bytes <= options_.p2p_max_bytes ? AllReducePath::kP2p : AllReducePath::kNccl;
  if (path == AllReducePath::kDeterministic)
    path = p2p_ ? AllReducePath::kP2p : AllReducePath::kNcclGather;
  const std::size_t chunk = options_.p2p_buffer_bytes / sizeof(__half);  // elements per call
  Rank& r = ranks_[rank];
  switch (path) {
    case AllReducePath::kP2p: {
      if (!p2p_)
        throw CudaError("all_reduce: the P2P path needs peer access between every pair of GPUs");
      using Kernel = void (*)(P2pPeers, int, P2pSignal*, uint4*, uint4*, unsigned, unsigned);
      static constexpr Kernel kernels[kMaxTpRanks + 1] = {nullptr,
                                                          nullptr,
                                                          p2p_all_reduce_kernel<2>,
                                                          p2p_all_reduce_kernel<3>,
                                                          p2p_all_reduce_kernel<4>,
                                                          p2p_all_reduce_kernel<5>,
                                                          p2p_all_reduce_kernel<6>,
                                                          p2p_all_reduce_kernel<7>,
                                                          p2p_all_reduce_kernel<8>};
      for (std::size_t off = 0; off < count; off += chunk) {
        const std::size_t n = std::min(chunk, count - off);
        launch(kernels[size()], dim3(kP2pBlocks), dim3(kP2pThreads), 0, stream, r.peers, rank,
               r.signal, r.buffer, reinterpret_cast<uint4*>(data + off),
               static_cast<unsigned>(n / 8), static_cast<unsigned>(chunk / 8));
      }
      return;
    }
    case AllReducePath::kNcclGather:
      for (std::size_t off = 0; off < count; off += chunk) {
        const std::size_t n = std::min(chunk, count - off);
        NCCL_CHECK(nccl().AllGather(data + off, r.gathered, n, ncclFloat16, comms_[rank], stream));
        const unsigned vecs = static_cast<unsigned>(n / 8);
        const unsigned blocks =
            std::max(1u, std::min(1024u, (vecs + kReduceThreads - 1) / kReduceThreads));
        launch(rank_order_sum_kernel, dim3(blocks), dim3(kReduceThreads), 0, stream,
               static_cast<const uint4*>(r.gathered), size(), vecs,
               reinterpret_cast<uint4*>(data + off));
      }
      return;
    case AllReducePath::kNccl:
    default:
      NCCL_CHECK(nccl().AllReduce(data, data, count, ncclFloat16, ncclSum, comms_[rank], stream));
      return;
  }
}

bool TpComm::all_reduce_add_rmsnorm(int rank, const __half* partial, __half* residual, __half* out,
                                    const __half* weight, int rows, int hidden, float eps,
                                    cudaStream_t stream) {
  static constexpr const char* kName = "all_reduce_add_rmsnorm";
  const std::size_t bytes = static_cast<std::size_t>(rows) * hidden * sizeof(__half);
  if (!p2p_ || bytes > options_.p2p_max_bytes || bytes > options_.p2p_buffer_bytes ||
      hidden % 8 != 0 || hidden > 8 * kP2pThreads * kMaxRowChunks)
    return false;
  AWQD_ARG_CHECK(kName, rank >= 0 && rank < size() && rows >= 0 && eps > 0.0f,
                 "rank " + std::to_string(rank));
  AWQD_ARG_CHECK(kName,
                 aligned16(partial) && aligned16(residual) && aligned16(out) && aligned16(weight),
                 "pointers must be 16-byte aligned");
  if (rows == 0) return true;
  using Kernel = void (*)(P2pPeers, int, P2pSignal*, uint4*, const uint4*, uint4*, uint4*,
                          const uint4*, int, int, unsigned, float);
  static constexpr Kernel kernels[kMaxTpRanks + 1] = {nullptr,
                                                      nullptr,
                                                      p2p_all_reduce_add_rmsnorm_kernel<2>,
                                                      p2p_all_reduce_add_rmsnorm_kernel<3>,
                                                      p2p_all_reduce_add_rmsnorm_kernel<4>,
                                                      p2p_all_reduce_add_rmsnorm_kernel<5>,
                                                      p2p_all_reduce_add_rmsnorm_kernel<6>,
                                                      p2p_all_reduce_add_rmsnorm_kernel<7>,
                                                      p2p_all_reduce_add_rmsnorm_kernel<8>};
  Rank& r = ranks_[rank];
  launch(kernels[size()], dim3(kP2pBlocks), dim3(kP2pThreads), 0, stream, r.peers, rank, r.signal,
         r.buffer, reinterpret_cast<const uint4*>(partial), reinterpret_cast<uint4*>(residual),
         reinterpret_cast<uint4*>(out), reinterpret_cast<const uint4*>(weight), rows, hidden / 8,
         static_cast<unsigned>(options_.p2p_buffer_bytes / sizeof(uint4)), eps);
  return true;
}

void TpComm::gather_to_root(int rank, const float* send, std::size_t send_count,
                            const std::vector<float*>& recv,
                            const std::vector<std::size_t>& recv_counts, cudaStream_t stream) {
  const NcclApi& api = nccl();
  if (rank != 0) {
    NCCL_CHECK(api.Send(send, send_count, ncclFloat32, 0, comms_[rank], stream));
    return;
  }
  NCCL_CHECK(api.GroupStart());
  for (int r = 1; r < size(); ++r)
    NCCL_CHECK(api.Recv(recv[r], recv_counts[r], ncclFloat32, r, comms_[0], stream));
  NCCL_CHECK(api.GroupEnd());
}

void TpComm::abort() noexcept {
  if (aborted_.exchange(true)) return;
  for (ncclComm_t c : comms_)
    if (c != nullptr) nccl().CommAbort(c);
}

}  // namespace awqd::cuda
