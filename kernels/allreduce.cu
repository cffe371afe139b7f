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

constexpr int kP2pThreads = 512;
constexpr int kP2pMaxBlocks = 256;  // plain all-reduce: grid-stride beyond 256 x 512 vectors
constexpr int kMaxRowChunks = 4;    // fused norm: 16-byte chunks per thread, hidden <= 16384
constexpr int kReduceThreads = 256;
constexpr int kP2pBuffers = 3;  // receive buffers used in turn (why three: the header)
constexpr unsigned long long kWaitTimeoutNs = 30ull * 1000 * 1000 * 1000;

// A rank's call state, in its own device memory.
struct P2pState {
  std::uint32_t call;     // completed P2P calls: call % kP2pBuffers picks the receive buffer
  std::uint32_t arrived;  // blocks of the running call that have finished (the last one resets it)
};

struct P2pPeers {
  // Rank i's receive area: kP2pBuffers buffers of [ranks slots (from rank)][slot_vecs].
  uint4* receive[kMaxTpRanks];
};

__device__ __forceinline__ unsigned long long global_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

__device__ __forceinline__ uint4 load_volatile(const uint4* p) {
  uint4 v;
  asm volatile("ld.volatile.global.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p)
               : "memory");
  return v;
}

__device__ __forceinline__ void store_volatile(uint4* p, const uint4& v) {
  asm volatile("st.volatile.global.v4.u32 [%0], {%1, %2, %3, %4};" ::"l"(p), "r"(v.x), "r"(v.y),
               "r"(v.z), "r"(v.w)
               : "memory");
}

// The receive buffers' "not yet written" mark: fp16 bits 0xFFFF (a NaN), here in both halves of
// a word; the buffers are initialised (cudaMemset 0xFF) and emptied again with it.
constexpr std::uint32_t kEmptyPair = 0xFFFFFFFFu;

// True while any half of v is still empty.
__device__ __forceinline__ bool has_empty(const uint4& v) {
  return (__vcmpeq2(v.x, kEmptyPair) | __vcmpeq2(v.y, kEmptyPair) | __vcmpeq2(v.z, kEmptyPair) |
          __vcmpeq2(v.w, kEmptyPair)) != 0;
}

// The value as sent: the NaN 0xFFFF becomes the NaN 0x7FFF, so no sent half reads as empty.
__device__ __forceinline__ std::uint32_t no_empty(std::uint32_t w) {
  return w ^ (__vcmpeq2(w, kEmptyPair) & 0x80008000u);
}
__device__ __forceinline__ uint4 no_empty(const uint4& v) {
  return make_uint4(no_empty(v.x), no_empty(v.y), no_empty(v.z), no_empty(v.w));
}

__device__ __forceinline__ void add8(float (&acc)[8], const uint4& v) {
  float f[8];
  ptx::unpack8(v, f);
#pragma unroll
  for (int k = 0; k < 8; ++k) acc[k] += f[k];
}

__device__ __noinline__ void wait_timed_out(int rank, int from, std::uint32_t call) {
  printf(
      "awqd all-reduce: rank %d waited 30 s for rank %d's data of call %u; a peer GPU failed or "
      "ran different collectives\n",
      rank, from, call);
  __trap();
}

// Reads a receive slot's vector once every half holds a peer's value. Traps after 30 s (a peer
// that died or runs different collectives) instead of hanging the GPU forever.
__device__ __forceinline__ uint4 wait_vector(const uint4* p, int rank, int from,
                                             std::uint32_t call) {
  uint4 v = load_volatile(p);
  if (!has_empty(v)) return v;
  const unsigned long long start = global_ns();
  while (has_empty(v = load_volatile(p)))
    if (global_ns() - start > kWaitTimeoutNs) wait_timed_out(rank, from, call);
  return v;
}

// Rank `rank`'s view of call `call`: where it writes its vector i in every rank's receive area,
// and where it reads rank r's.
template <int W>
struct CallBuffers {
  const P2pPeers& peers;
  int rank;
  std::uint32_t call;
  std::size_t buffer;  // offset of this call's buffer in every receive area
  unsigned slot_vecs;

  __device__ CallBuffers(const P2pPeers& p, int r, std::uint32_t c, unsigned slot)
      : peers(p),
        rank(r),
        call(c),
        buffer(static_cast<std::size_t>(c % kP2pBuffers) * W * slot),
        slot_vecs(slot) {}

  // Sends vector i of this rank's input to every rank (itself included).
  __device__ __forceinline__ void push(std::size_t i, const uint4& v) const {
    const uint4 sent = no_empty(v);
    const std::size_t at = buffer + static_cast<std::size_t>(rank) * slot_vecs + i;
#pragma unroll
    for (int r = 0; r < W; ++r) store_volatile(peers.receive[r] + at, sent);
  }

  // fp32 sum in rank order of every rank's vector i, waiting for each; then marks the slots
  // empty again for the call that will reuse this buffer.
  __device__ __forceinline__ void sum(std::size_t i, float (&acc)[8]) const {
    uint4* mine = peers.receive[rank] + buffer + i;
    uint4 v[W];
#pragma unroll
    for (int r = 0; r < W; ++r)
      v[r] = wait_vector(mine + static_cast<std::size_t>(r) * slot_vecs, rank, r, call);
#pragma unroll
    for (int k = 0; k < 8; ++k) acc[k] = 0.0f;
#pragma unroll
    for (int r = 0; r < W; ++r) add8(acc, v[r]);
    const uint4 empty = make_uint4(kEmptyPair, kEmptyPair, kEmptyPair, kEmptyPair);
#pragma unroll
    for (int r = 0; r < W; ++r)
      store_volatile(mine + static_cast<std::size_t>(r) * slot_vecs, empty);
  }
};

// The call number every block of this grid uses; call after grid_dependency_wait().
__device__ __forceinline__ std::uint32_t begin_call(const P2pState* state) {
  return *reinterpret_cast<const volatile std::uint32_t*>(&state->call);
}

// The last block of the grid to finish advances the call number (for the next kernel on the
// stream, which starts after this grid has completed, or waits for that with
// griddepcontrol.wait).
__device__ __forceinline__ void end_call(P2pState* state, std::uint32_t call) {
  __syncthreads();
  if (threadIdx.x == 0 && atomicAdd(&state->arrived, 1u) == gridDim.x - 1) {
    state->arrived = 0;
    state->call = call + 1;
  }
}

// One-shot all-reduce of data[vecs] (8 halves each) over W ranks, in place; see the header.
template <int W>
__global__ void __launch_bounds__(kP2pThreads)
    p2p_all_reduce_kernel(P2pPeers peers, int rank, P2pState* state, uint4* data, unsigned vecs,
                          unsigned slot_vecs) {
  ptx::grid_dependency_wait();
  ptx::launch_dependents();  // the next kernel may start (it waits for this one's data)
  const CallBuffers<W> call(peers, rank, begin_call(state), slot_vecs);
  const unsigned stride = gridDim.x * kP2pThreads;
  for (unsigned i = blockIdx.x * kP2pThreads + threadIdx.x; i < vecs; i += stride)
    call.push(i, data[i]);
  for (unsigned i = blockIdx.x * kP2pThreads + threadIdx.x; i < vecs; i += stride) {
    float acc[8];
    call.sum(i, acc);
    data[i] = ptx::pack8(acc);
  }
  end_call(state, call.call);
}

// The P2P all-reduce of partial[rows, hidden] fused with add_rmsnorm (kernels/norm.cuh):
//   sum = fp16(fp32 rank-order sum of the partials); residual = fp16(residual + sum);
//   out = residual * rsqrt(mean(residual^2) + eps) * weight
// Block b owns rows b, b + gridDim.x, ...: it sends them all, then reduces and normalises each
// row with the row held in registers.
template <int W>
__global__ void __launch_bounds__(kP2pThreads)
    p2p_all_reduce_add_rmsnorm_kernel(P2pPeers peers, int rank, P2pState* state,
                                      const uint4* partial, uint4* residual, uint4* out,
                                      const uint4* weight, int rows, int chunks, unsigned slot_vecs,
                                      float eps) {
  __shared__ float scratch[32];
  uint4 wv[kMaxRowChunks];  // the norm weight (no kernel writes it), loaded before the wait
#pragma unroll
  for (int k = 0; k < kMaxRowChunks; ++k) {
    const int c = threadIdx.x + k * blockDim.x;
    wv[k] = c < chunks ? weight[c] : make_uint4(0, 0, 0, 0);
  }
  ptx::grid_dependency_wait();
  ptx::launch_dependents();
  const CallBuffers<W> call(peers, rank, begin_call(state), slot_vecs);
  for (int row = blockIdx.x; row < rows; row += gridDim.x)
#pragma unroll
    for (int k = 0; k < kMaxRowChunks; ++k) {
      const int c = threadIdx.x + k * blockDim.x;
      if (c < chunks) {
        const std::size_t i = static_cast<std::size_t>(row) * chunks + c;
        call.push(i, partial[i]);
      }
    }
  for (int row = blockIdx.x; row < rows; row += gridDim.x) {
    float v[kMaxRowChunks][8];
    float sum_sq = 0.0f;
#pragma unroll
    for (int k = 0; k < kMaxRowChunks; ++k) {
      const int c = threadIdx.x + k * blockDim.x;
      if (c < chunks) {
        const std::size_t i = static_cast<std::size_t>(row) * chunks + c;
        float acc[8];
        call.sum(i, acc);
        ptx::unpack8(ptx::pack8(acc), v[k]);  // the all-reduce's fp16 result
        ptx::add_to_residual8(v[k], residual[i]);
#pragma unroll
        for (int e = 0; e < 8; ++e) sum_sq += v[k][e] * v[k][e];
      }
    }
    const float inv_rms = rsqrtf(block_sum(sum_sq, scratch) / static_cast<float>(chunks * 8) + eps);
#pragma unroll
    for (int k = 0; k < kMaxRowChunks; ++k) {
      const int c = threadIdx.x + k * blockDim.x;
      if (c < chunks) {
        float wf[8];
        ptx::unpack8(wv[k], wf);
#pragma unroll
        for (int e = 0; e < 8; ++e) v[k][e] = v[k][e] * inv_rms * wf[e];
        out[static_cast<std::size_t>(row) * chunks + c] = ptx::pack8(v[k]);
      }
    }
  }
  end_call(state, call.call);
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
  uint4* receive = nullptr;  // P2P receive area: kP2pBuffers x ranks slots
  P2pState* state = nullptr;
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
  if (options_.p2p_max_bytes == 0)
    options_.p2p_max_bytes = std::min<std::size_t>(4u << 20, (6u << 20) / (n - 1) / 16 * 16);
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
      const std::size_t receive_bytes =
          static_cast<std::size_t>(kP2pBuffers) * n * options_.p2p_buffer_bytes;
      CUDA_CHECK(cudaMalloc(&r.receive, receive_bytes));
      CUDA_CHECK(cudaMemset(r.receive, 0xFF, receive_bytes));  // every half empty (kEmptyPair)
      CUDA_CHECK(cudaMalloc(&r.state, sizeof(P2pState)));
      CUDA_CHECK(cudaMemset(r.state, 0, sizeof(P2pState)));
    }
    CUDA_CHECK(cudaMalloc(&r.gathered, static_cast<std::size_t>(n) * options_.p2p_buffer_bytes));
  }
  for (int i = 0; i < n && p2p_; ++i)
    for (int j = 0; j < n; ++j) ranks_[i].peers.receive[j] = ranks_[j].receive;
  for (int i = 0; i < n; ++i) {
    CUDA_CHECK(cudaSetDevice(devices_[i]));
    CUDA_CHECK(cudaDeviceSynchronize());  // the memsets, before any peer writes a slot
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
    if (r.receive) cudaFree(r.receive);
    if (r.state) cudaFree(r.state);
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
      using Kernel = void (*)(P2pPeers, int, P2pState*, uint4*, unsigned, unsigned);
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
        const unsigned vecs = static_cast<unsigned>(std::min(chunk, count - off) / 8);
        const unsigned blocks =
            std::min<unsigned>(kP2pMaxBlocks, (vecs + kP2pThreads - 1) / kP2pThreads);
        launch_pdl(true, kernels[size()], dim3(blocks), dim3(kP2pThreads), 0, stream, r.peers, rank,
                   r.state, reinterpret_cast<uint4*>(data + off), vecs,
                   static_cast<unsigned>(chunk / 8));
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
  using Kernel = void (*)(P2pPeers, int, P2pState*, const uint4*, uint4*, uint4*, const uint4*,
                          int, int, unsigned, float);
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
  const int chunks = hidden / 8;
  const int threads = std::min(kP2pThreads, (chunks + 31) / 32 * 32);
  launch_pdl(true, kernels[size()], dim3(std::min(rows, kP2pMaxBlocks)), dim3(threads), 0, stream,
             r.peers, rank, r.state, reinterpret_cast<const uint4*>(partial),
             reinterpret_cast<uint4*>(residual), reinterpret_cast<uint4*>(out),
             reinterpret_cast<const uint4*>(weight), rows, chunks,
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
