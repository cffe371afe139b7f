// Collectives between the GPUs of one tensor-parallel engine, all driven by this process (one
// thread and one stream per GPU, engine/cuda_executor.cc): the all-reduce after the row-parallel
// o_proj and down_proj, and the gather of the vocabulary-split logits onto rank 0.
//
// All-reduce paths (every rank gets the same bits on every path):
//   P2P one-shot kernel   for small messages (decode steps) when every pair of GPUs has peer
//                         access. Each rank copies its input into its own registered buffer,
//                         writes a flag into every peer's memory, waits for every peer's flag,
//                         then reads all ranks' buffers over NVLink/PCIe and sums them in fp32
//                         in rank order 0..N-1, writing fp16 in place. One launch, no host
//                         involvement, so it is captured in decode CUDA graphs. Latency: one
//                         flag round trip plus one read of the peers' data, where NCCL's
//                         small-message all-reduce costs ~30 us.
//   NCCL ncclAllReduce    in place, fp16, for larger messages (prefill) and where there is no
//                         peer access (e.g. GeForce cards over PCIe).
//   NCCL gather + sum     ncclAllGather of every rank's input, then the same fp32 rank-order sum
//                         as the P2P kernel: bit-identical to it and batch-invariant; the
//                         `deterministic` path where there is no peer access.
// kDeterministic takes the P2P kernel for every size (in chunks of the registered buffer) or,
// without peer access, NCCL gather + sum: a row's result never depends on the message size, so
// engine `deterministic` mode stays batch-invariant under tensor parallelism.
//
// P2P protocol. Registered once at construction (one process: cudaDeviceEnablePeerAccess, plain
// device pointers, no IPC): per rank a data buffer of two halves (parities) and a signal block
//   flag[parity][block][from_rank]  written by peers (st.release.sys), polled locally
//   (ld.acquire.sys) calls[block]                    this rank's call counter, kept in device
//   memory
// The grid is fixed (kP2pBlocks), so every block of every rank sees the same call sequence; call
// n (counting from 1) of block b uses parity n % 2 for both its flags and its data buffer and
// waits until every peer's flag[n % 2][b] == n. Block b copies, signals and reads only its own
// grid-stride slice, so blocks never wait for each other. No closing barrier: a rank can only
// start writing a buffer half again at call n + 2 after passing call n + 1, which every peer
// entered only after its call n (and its reads of that half) had completed. The counters live
// on the device, so graph replays advance them like eager launches. A wait longer than 30 s
// (a peer that died or runs different collectives) traps instead of hanging the GPU forever.
//
// Threading: construct and destroy from one thread; then rank r's calls come from rank r's
// thread only (each call touches only rank r's state), with the current device = device(r).
// Every rank must issue the same sequence of collectives with the same sizes.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstddef>
#include <string>
#include <vector>

#include "kernels/nccl.h"

namespace awqd::cuda {

inline constexpr int kMaxTpRanks = 8;

enum class AllReducePath {
  kAuto,           // P2P up to TpCommOptions::p2p_max_bytes (when available), NCCL all-reduce above
  kDeterministic,  // P2P at every size, else NCCL gather + sum (batch-invariant, see above)
  kP2p,            // the P2P kernel (throws without peer access)
  kNccl,           // ncclAllReduce
  kNcclGather,     // ncclAllGather + fp32 rank-order sum
};
const char* all_reduce_path_name(AllReducePath path);

struct TpCommOptions {
  // kAuto's switch from P2P to NCCL. One-shot reads (ranks - 1) x the message from peers; NCCL's
  // small-message all-reduce costs ~30 us, which NVLink reads cover up to several MiB. 4 MiB holds
  // a decode step of 512 sequences at hidden 4096.
  std::size_t p2p_max_bytes = 4u << 20;
  std::size_t p2p_buffer_bytes = 4u << 20;  // per parity; larger P2P messages go in chunks
  bool allow_p2p = true;                    // false: NCCL only (tests, benchmarks)
};

class TpComm {
 public:
  // Creates the NCCL communicators of `devices` (rank r on devices[r]) and, where every pair has
  // peer access, the P2P buffers. Throws CudaError (NCCL missing, a device absent, ...).
  TpComm(const std::vector<int>& devices, const TpCommOptions& options = {});
  ~TpComm();
  TpComm(const TpComm&) = delete;
  TpComm& operator=(const TpComm&) = delete;

  int size() const { return static_cast<int>(devices_.size()); }
  int device(int rank) const { return devices_[rank]; }
  bool p2p() const { return p2p_; }
  const TpCommOptions& options() const { return options_; }
  std::string describe() const;  // e.g. "4 GPUs, P2P all-reduce up to 1024 KiB, NCCL 2.28.9 above"

  // In-place sum of data[count] (fp16, count % 8 == 0, 16-byte aligned) over the ranks.
  void all_reduce(int rank, __half* data, std::size_t count, cudaStream_t stream,
                  AllReducePath path = AllReducePath::kAuto);

  // The P2P all-reduce of partial[rows, hidden] fused with add_rmsnorm (kernels/norm.cuh):
  //   residual = fp16(residual + fp16(sum over ranks of partial)); out = rmsnorm(residual) * weight
  // One kernel instead of two, for decode steps. Returns false, having done nothing, where it
  // does not apply (no peer access, more than p2p_max_bytes, hidden > 16384): the caller then
  // runs all_reduce and add_rmsnorm. Every rank gets the same bits. Never batch-invariant
  // callers (engine `deterministic`): whether it applies depends on the batch.
  bool all_reduce_add_rmsnorm(int rank, const __half* partial, __half* residual, __half* out,
                              const __half* weight, int rows, int hidden, float eps,
                              cudaStream_t stream);

  // Rank 0 receives recv_counts[r] floats from each rank r > 0 into recv[r]; each rank r > 0
  // sends send[0 .. send_count). (recv and recv_counts are read on rank 0 only.)
  void gather_to_root(int rank, const float* send, std::size_t send_count,
                      const std::vector<float*>& recv, const std::vector<std::size_t>& recv_counts,
                      cudaStream_t stream);

  // After a failure on one rank: makes the others' pending NCCL operations return (they fail).
  // The communicators are unusable afterwards. Callable from any thread.
  void abort() noexcept;

 private:
  struct Rank;
  std::vector<int> devices_;
  TpCommOptions options_;
  bool p2p_ = false;
  std::vector<ncclComm_t> comms_;
  std::vector<Rank> ranks_;
  std::atomic<bool> aborted_{false};
};

}  // namespace awqd::cuda
