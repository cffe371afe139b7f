// AWQ W4A16 GEMM: y[M, N] = x[M, K] (fp16) * W[K, N] (+ bias[N]), W dequantized from AWQ 4-bit
// weights (group size G = 32, 64 or 128, unsigned zero points, fp16 scales), fp32 accumulation,
// fp16 output. Every M from 1 to many thousands, on Turing (sm_75), Ampere (sm_80) and Hopper.
//
// Design (issue 5; measurements and limits in docs/PERF.md):
// - Load time: awq_repack turns the checkpoint tensors (SPEC section 2) into the tile layout of
//   kernels/awq_layout.cuh, once, on the host. A lane's 16-byte load then holds the int4 values of
//   its mma fragments; 1 shift, 4 lop3 and 8 fp16 ops turn 8 of them into fp16
//   (awq_device::dequant_word: the exact q - z times the fp16 scale, rounded once). Every path
//   reads this one layout. The stream kernel's sm_80+ tiles skip the 4 scale multiplications
//   (dequant_word_unscaled): their mma multiply the exact integers q - z, and each group's fp32
//   sums are scaled at the group's end (docs/PERF.md run 95: gate_up at M = 1 11 % faster).
// - M <= 16 (decode): the stream kernel (awq_gemm_stream.cuh), tiles st8 (M <= 8) and st16 (9-16;
//   with the Hopper tiles st8w as two 8-row m-blocks where they fit one wave, else st16 only on
//   weights above 32 M elements, K above 5120 or a fused SiLU input, s16 otherwise). The
//   GEMM is a pass over the weights, so each warp streams whole 128-row batches of one 64-column
//   stripe (8 x 512 contiguous bytes) through a 2-slot cp.async ring per warp in shared memory
//   (sm_80+; the next batch arrives while the warp computes one) or, on the Turing path, 16-byte
//   loads into registers; no barrier in the main loop; the dequantized weights are the mma A
//   operand (16 columns x 16 k) and the activation rows the n8 side, so M <= 8 costs 4 mma per
//   k16 step and stripe. The 4 warps of a stripe split its K in-block (their sums meet in shared
//   memory); the activations are staged in shared memory by phases (sm_80+ st8/st8w from 5 rows:
//   each lane loads its own, AwqGemmPlan::direct_x). Split-K across blocks where
//   the stripes alone cannot fill the GPU (about 3.4 blocks per SM: stream_splits). Where a weight
//   has fewer stripes than the GPU has SMs and short K (o, qkv at M <= 8), tile st8w puts 16
//   warps on one stripe instead, one block per SM, and splits across at most a cluster of 4
//   (chosen with the Hopper tiles, where it was measured; forced, it runs on every path).
// - 16 < M < 128 (and 128..255 on large weights): the tiled tensor-core kernel
//   (awq_gemm_kernel.cuh). A block owns a BM x BN output tile and a range of K (split-K); its warps
//   split the tile along M and N and the k-tile along K (their partial sums meet in shared
//   memory). Activations are staged in shared memory (XOR-swizzled rows, ldmatrix); weights,
//   scales and zeros are staged raw and each warp dequantizes its own B fragments in registers.
//     tile  BM x BN    warps M x N x K   used for
//     s16   16 x 128   1 x 2 x 4         batch_invariant (every M)
//     s32   32 x 128   1 x 2 x 4         M <= 32
//     m64   64 x 128   1 x 2 x 2         M <= 64             4 m16 tiles share each dequantized B
//     l128  128 x 256  2 x 4 x 1         M > 64              tensor-core bound: big tile, reuse
//   sm_80/sm_90: mma.sync m16n8k16 + ldmatrix + cp.async, 4- to 6-stage pipeline.
// - Hopper (sm_90a code on an sm_90 GPU), 16 < M below the dequantize threshold: the wgmma
//   kernel (awq_gemm_wgmma.cuh), tiles w64 / w128 (64 / 128 activation rows x 256 columns).
//   The dequantized weights are wgmma's A operand straight from registers (each weight is
//   dequantized once per block, by one warp), the activations B from shared memory; tensor cores
//   at wgmma's rate instead of mma.sync's, which the tiles above are bound by from M ~ 32.
// - Turing (sm_75): both kernels with two mma.m16n8k8 per k16 step; the tiled kernel's pipeline
//   goes through registers (ld.global -> st.shared, no cp.async). It also runs on newer GPUs when
//   forced (AwqGemmPath::kTuring), which is how it is tested on the H100.
// - Split-K (all kernels): each split writes fp32 partial sums to the workspace; the block that
//   finishes last (an atomic counter per tile) adds them in split order (deterministic), adds the
//   bias, writes fp16 and resets the counter. One launch. On sm_90 the stream kernel's splits
//   (up to 4) form a thread-block cluster instead and add their sums through distributed shared
//   memory, rank 0 in rank order (AwqGemmOptions::cluster_reduce).
// - Fused MLP input (AwqGemmOptions::silu_mul_ld, stream kernel): x = SiLU(gate) * up of the
//   gate_up projection's output, computed while loading it (kernels/silu.cuh, the activation
//   kernel's own arithmetic).
// - Large M: dequantize W to fp16 in the workspace, chunk by chunk of columns, and run cuBLASLt
//   (as vLLM does at >= 256 tokens): from M = 128 where K * N <= 32 M, from M = 256 always
//   (where it measured faster than the l128 tile on the H100; with the Hopper tiles from 256 and
//   512; dequant_beats_tiles in awq_gemm.cu). A chunk is sized to stay in L2 between the two
//   kernels when M leaves cuBLASLt enough tiles.
// - sm_90: the GEMM kernels are launched with Programmatic Dependent Launch (AwqGemmOptions::pdl):
//   a kernel may start while the previous kernel on the stream finishes; the stream kernel
//   requests its first weight batches before it waits for that kernel (griddepcontrol.wait), and
//   touches activations, workspace and output only after. So the previous kernel must not write
//   the weights.
// - batch_invariant: the s16 tile for every M and a split count that depends on N and K only, so
//   a row's result does not depend on the other rows of the batch (engine `deterministic`).
//
// Launch constraints (checked, std::invalid_argument otherwise): G in {32, 64, 128}, K % G == 0,
// N % 8 == 0, x 16-byte aligned, y and bias 4-byte aligned, M >= 0 (M == 0 does nothing).
// Covers every linear of Llama-3-8B/70B, Qwen2.5-7B/14B/32B and Mistral-7B and their TP = 2, 3, 4
// shards (column shards any multiple of 8 columns, row shards any multiple of G rows).
// Workspace: one per stream (split-K counters and partial sums, the dequantized weight chunk and
// cuBLASLt's workspace); zero it once after allocation (awq_gemm_workspace_init); the kernels
// leave it ready for the next call. A smaller workspace is never wrong, only slower.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace awqd::cuda {

// Repacked weights in host memory (kernels/awq_layout.cuh).
struct AwqPackedWeight {
  int K = 0, N = 0, group_size = 0;   // the Linear: K inputs, N outputs, group size G
  int k_pad = 0, n_pad = 0;           // K rounded up to 64, N to 64
  std::vector<std::uint32_t> tiles;   // [n_pad/64][k_pad/16][32][4] int4 fragments
  std::vector<std::uint16_t> scales;  // [n_pad/64][k_pad/G][8][8] fp16 bits
  std::vector<std::uint32_t> zeros;   // [n_pad/64][k_pad/G][8] 4-bit zero points
};

// Repacks the AWQ GEMM checkpoint tensors of one Linear (SPEC section 2):
//   qweight int32 [K, N/8], qzeros int32 [K/G, N/8], scales fp16 bits [K/G, N].
// Throws std::invalid_argument on unsupported sizes. Uses several threads for large tensors.
AwqPackedWeight awq_repack(const std::int32_t* qweight, const std::int32_t* qzeros,
                           const std::uint16_t* scales, int K, int N, int group_size);

// Device view of a repacked weight (pointers into device memory, layout of awq_layout.cuh).
struct AwqWeight {
  const uint4* tiles = nullptr;
  const __half* scales = nullptr;
  const std::uint32_t* zeros = nullptr;
  int K = 0, N = 0, group_size = 0;
};

// Owns a repacked weight in device memory.
class AwqDeviceWeight {
 public:
  AwqDeviceWeight() = default;
  explicit AwqDeviceWeight(const AwqPackedWeight& packed);  // synchronous upload
  ~AwqDeviceWeight();
  AwqDeviceWeight(AwqDeviceWeight&& other) noexcept;
  AwqDeviceWeight& operator=(AwqDeviceWeight&& other) noexcept;
  AwqDeviceWeight(const AwqDeviceWeight&) = delete;
  AwqDeviceWeight& operator=(const AwqDeviceWeight&) = delete;

  AwqWeight view() const { return view_; }
  std::size_t bytes() const;  // device bytes of tiles + scales + zeros

 private:
  void release() noexcept;
  AwqWeight view_;
};

// Device bytes of a repacked weight of this shape: what streams from memory per GEMM.
std::size_t awq_weight_bytes(int K, int N, int group_size);

enum class AwqGemmPath {
  kAuto,           // pick by M and architecture
  kTensorCore,     // mma.m16n8k16 + ldmatrix + cp.async (sm_80+)
  kTuring,         // mma.m16n8k8, loads through registers (sm_75+; forced on newer GPUs for tests)
  kDequantCublas,  // dequantize to fp16 in the workspace + cuBLASLt
};
const char* awq_gemm_path_name(AwqGemmPath path);

// s16..l128: the tiled kernel (awq_gemm_kernel.cuh); st8, st16: the stream kernel for M <= 8, 16
// (awq_gemm_stream.cuh), st8w the same with 16 warps per stripe (awq_gemm_tiles.cuh); w64, w128:
// the Hopper kernel (awq_gemm_wgmma.cuh; sm_90a code on an sm_90 GPU, tensor-core path only).
enum class AwqTile {
  kAuto = -1,
  kS16 = 0,
  kS32,
  kM64,
  kL128,
  kSt8,
  kSt16,
  kW64,
  kW128,
  kSt8w,
  kCount
};
const char* awq_tile_name(AwqTile tile);

struct AwqGemmOptions {
  AwqGemmPath path = AwqGemmPath::kAuto;
  AwqTile tile = AwqTile::kAuto;  // tensor-core/Turing paths: force a tile shape (tests, bench)
  int splits = 0;                 // tensor-core/Turing paths: force split-K (0 = planner)
  bool batch_invariant = false;   // a row's result independent of M (see the top of this file)
  int dequant_chunk_cols = 0;     // dequant path: columns per cuBLASLt call (0 = by M and L2)
  // sm_90+: Programmatic Dependent Launch. The kernel may start while the previous kernel on the
  // stream runs, streaming weights before it waits for that kernel's results, so the previous
  // kernel must not write the weights. Ignored where the kernel's code is older than sm_90, on
  // the legacy default stream, and for M > 64 (where it measured slower). Off by default; the
  // engine turns it on (the kernels before its GEMMs trigger their dependents early). Run 14 on
  // the H100 (docs/PERF.md): 8-21 % faster at M <= 16 back to back; run 7, with other split
  // counts, had measured it up to 1.7x slower on down at M = 1-2.
  bool pdl = false;
  // sm_90+: the stream kernel's split-K partial sums meet in distributed shared memory (the
  // splits of a stripe are one thread-block cluster) instead of the workspace.
  bool cluster_reduce = true;
  // st8 / st8w from 5 rows: the variant whose lanes load their own activations instead of the
  // block staging them (AwqGemmPlan::direct_x). False: always stage (the benchmark's A/B).
  bool direct_x = true;
  // > 0: the GEMM's input is SiLU(x[:, 0..K)) * x[:, K..2K) of x [M, silu_mul_ld] (row-major,
  // the fused gate_up projection's output; silu_mul_ld >= 2K, a multiple of 8), computed while the
  // stream kernel loads it with silu_mul's arithmetic (identical bits): the MLP's activation
  // fused into the down projection. Stream kernel only (M <= awq_gemm_stream_max_m(), not
  // batch_invariant, no forced tiled tile): std::invalid_argument otherwise.
  int silu_mul_ld = 0;
  // The residual add and RMSNorm between two linears of a decode step, folded into them so that
  // no kernel runs between the two (docs/PERF.md runs 118-119): the norm's 1 / rms, a per-row
  // scalar, moves to the end of the linear after it, which scales its fp32 sums by it.
  // - norm_out (the linear before the norm: o_proj, down_proj), with all three pointers set:
  //   instead of y itself the kernel writes residual[M, N] = fp16(residual + fp16(y)) in place,
  //   y = fp16(residual * weight[N]), and sumsq[M][N / 64] = the sum of residual^2 over each
  //   64-column stripe, in column order. N % 64 == 0.
  // - norm_in_sumsq (the linear after it, whose x is that y): sums [M][K / 64] as norm_out wrote
  //   them; each row of the result is multiplied by rsqrt(sum of the row's sums / K + norm_eps)
  //   before the bias. K % 64 == 0.
  // Together: residual and y as add_rmsnorm followed by the next linear compute them, with the
  // 1 / rms applied to the products' sums instead of to the products' input (fp16 roundings of
  // the same size). Plans whose AwqGemmPlan::fold is true only (the stream tiles, M <= the
  // stream kernel's rows, not batch_invariant, their fold variants fit this GPU);
  // std::invalid_argument otherwise.
  struct NormOut {
    __half* residual = nullptr;
    const __half* weight = nullptr;
    float* sumsq = nullptr;
  } norm_out;
  const float* norm_in_sumsq = nullptr;
  float norm_eps = 0.0f;
};

// What awq_gemm chose (for logs, tests and the benchmark).
struct AwqGemmPlan {
  AwqGemmPath path = AwqGemmPath::kAuto;
  AwqTile tile = AwqTile::kAuto;
  int splits = 1;       // split-K factor (tensor-core/Turing paths)
  int grid_blocks = 0;  // thread blocks launched (tensor-core/Turing paths)
  int chunk_cols = 0;   // columns dequantized per cuBLASLt call (dequant path)
  bool pdl = false;     // launched with Programmatic Dependent Launch
  bool cluster = false;  // stream kernel: split-K through a thread-block cluster
  bool direct_x = false;  // stream kernel (st8, st8w): the lanes load their own activations
  bool fold = false;      // stream kernel: can take a folded norm (AwqGemmOptions::norm_out)
  std::size_t workspace_used = 0;
};

struct AwqWorkspace {
  void* ptr = nullptr;  // device memory, 256-byte aligned (cudaMalloc)
  std::size_t bytes = 0;
};

// Workspace that lets every call with M <= max_M take its fastest plan on the current device.
std::size_t awq_gemm_workspace_bytes(int max_M, int K, int N, int group_size);
// Zeroes the split-K counters; call once after allocating the workspace.
void awq_gemm_workspace_init(AwqWorkspace ws, cudaStream_t stream);

// The plan awq_gemm would run (no launch). Throws std::invalid_argument on bad arguments.
AwqGemmPlan awq_gemm_plan(int M, const AwqWeight& w, AwqWorkspace ws,
                          const AwqGemmOptions& options = {});

// y[M, N] = x[M, K] * W + bias. x, y: row-major fp16 device arrays; bias: fp16 [N] or nullptr.
// Asynchronous on `stream`; throws std::invalid_argument on bad arguments, CudaError on CUDA
// errors.
AwqGemmPlan awq_gemm(const __half* x, const AwqWeight& w, const __half* bias, __half* y, int M,
                     AwqWorkspace ws, cudaStream_t stream, const AwqGemmOptions& options = {});

// The largest M the stream kernel serves on the current device (and so
// AwqGemmOptions::silu_mul_ld): 16, or 0 where its tiles do not fit the GPU's shared memory.
int awq_gemm_stream_max_m();

// The M from which cuBLASLt on an fp16 copy of a [K, N] weight beats the AWQ plans, as measured
// on an H100, for callers that keep such copies and cannot time both (the engine's
// fp16_weight_cache measures each shape at load and keeps this only where it cannot). With the
// Hopper tiles it grows with the weight (H100, docs/PERF.md run 25: Llama-3-8B's o from 17, qkv
// from 40, down from 72, gate_up from 128); else 64 for every weight (run 7).
int awq_gemm_fp16_crossover_m(int K, int N);

// Dequantizes columns [n_begin, n_begin + n_count) of W into out[K, ld_out] (row-major fp16,
// n_begin and n_count multiples of 64 within n_pad; columns >= N come out 0). The exact fp16 values
// the GEMM kernels multiply by.
void awq_dequantize_f16(const AwqWeight& w, int n_begin, int n_count, __half* out, int ld_out,
                        cudaStream_t stream);

}  // namespace awqd::cuda
