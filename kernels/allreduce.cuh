// Collectives between the GPUs of one tensor-parallel engine, all driven by this process (one
// thread and one stream per GPU, engine/cuda_executor.cc): the all-reduce after the row-parallel
// o_proj and down_proj, and the gather of the vocabulary-split logits onto rank 0.
//
// All-reduce paths (every rank gets the same bits on every path):
//   P2P one-shot kernel   for small messages (decode steps) when every pair of GPUs has peer
//                         access. Each rank writes its input into a slot of every rank's receive
//                         buffer (stores over NVLink/PCIe, which need no round trip), then waits
//                         in its own memory until every slot of its buffer holds data, and sums
//                         the slots in fp32 in rank order 0..N-1, writing fp16 in place. One
//                         launch, no flags, no host involvement, so it is captured in decode
//                         CUDA graphs. Latency: one one-way transfer.
//   NCCL ncclAllReduce    in place, fp16, for larger messages (prefill) and where there is no
//                         peer access (e.g. GeForce cards over PCIe).
//   NCCL gather + sum     ncclAllGather of every rank's input, then the same fp32 rank-order sum
//                         as the P2P kernel: bit-identical to it and batch-invariant; the
//                         `deterministic` path where there is no peer access.
// kDeterministic takes the P2P kernel for every size (in chunks of the receive slot) or,
// without peer access, NCCL gather + sum: a row's result never depends on the message size, so
// engine `deterministic` mode stays batch-invariant under tensor parallelism.
//
// P2P protocol (data that carries its own arrival mark, as in Lamport's one-way protocols).
// Registered once at construction (one process: cudaDeviceEnablePeerAccess, plain device
// pointers, no IPC): per rank a receive area of 3 buffers x N slots (one per sending rank) x
// p2p_buffer_bytes, every half of it initialised to 0xFFFF ("empty", a NaN), and a call
// counter in device memory. Call n uses buffer n % 3 on every rank:
//   - rank r stores its vector i into slot r of every rank's buffer, with the one fp16 bit
//     pattern 0xFFFF replaced by 0x7FFF (another NaN), so a sent half is never "empty";
//   - it then reads slot s's vector i of its own buffer (volatile loads, no cache) until none of
//     its 8 halves is empty (a 16-byte store may land in parts; the halves cannot), sums, and
//     stores "empty" back into the slots it read: each rank only ever clears its own buffer.
// Why three buffers: a rank that writes call n's data into a peer's buffer has completed call
// n - 1, which needed the peer's call n - 1 data, which the peer sends only after griddepcontrol
// .wait, i.e. after the kernels before it completed, its call n - 2 among them (reads and
// clears). So two buffers would do as long as every kernel launched with PDL waits for its
// predecessor before it completes (the contract of kernels/launch.cuh); with three, a peer that
// is still reading call n - 2's data (one kernel between two calls broke that contract) is
// still never written over: call n goes to buffer n % 3, last used by call n - 3.
// Every block of a call reads the counter after griddepcontrol.wait; the last block to finish
// advances it, so the next kernel on the stream sees the new value. The counters live on the
// device, so CUDA graph replays advance them like eager launches, and block counts may differ
// from call to call. A wait longer than 30 s (a peer that died or runs different collectives)
// traps instead of hanging the GPU forever. The kernels launch with Programmatic Dependent
// Launch and let the next kernel start at once, so a GEMM after them streams its weights while
// they wait for the peers.
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
  // kAuto's switch from P2P to NCCL; 0: by the rank count, min(4 MiB, 6 MiB / (ranks - 1)), as
  // each rank sends (ranks - 1) x the message (H200, docs/PERF.md runs 64 and 69: P2P ahead of
  // NCCL to 4 MiB and beyond with 2 GPUs, to 2 MiB with 4, behind at 4 MiB with 4). options()
  // reports the value in force.
  std::size_t p2p_max_bytes = 0;
  // Per receive slot: each GPU holds 3 x ranks of them (12 MiB at 2 GPUs); larger P2P messages
  // go in chunks. 2 MiB holds a decode step of 256 sequences at hidden 4096.
  std::size_t p2p_buffer_bytes = 2u << 20;
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
