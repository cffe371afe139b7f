// Tile shapes of the AWQ GEMM kernel and the host entry points of their instantiations. Light
// (no kernel code): the dispatcher (awq_gemm.cu) includes this; the instantiation files
// awq_gemm_{sm80,sm75}_<tile>.cu include awq_gemm_kernel.cuh, which defines the templates.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/awq_layout.cuh"

namespace awqd::cuda::awq_gemm_detail {

// Kernel arguments (checked and derived by the launcher in awq_gemm.cu).
struct Params {
  const __half* x;             // [M, K] row-major
  const uint4* tiles;          // [n_stripes][k_tiles * 4][32 lanes] (16 bytes each)
  const __half* scales;        // [n_stripes][groups][64]
  const std::uint32_t* zeros;  // [n_stripes][groups][8]
  const __half* bias;          // [N] or nullptr
  __half* y;                   // [M, N] row-major
  float* partials;             // [splits][M][N] fp32, when splits > 1
  int* counters;               // [gridDim.y][gridDim.x] arrival counters, zero between launches
  int M, N, K;
  int k_tiles;      // k_pad / 64
  int n_stripes;    // n_pad / 64
  int groups;       // k_pad / G
  int group_shift;  // log2(G)
  int splits;       // gridDim.z
  // Stream kernel only (StreamConfig):
  int batches;        // 128-row batches of k_pad (the last one may hold only 64 rows)
  int phase_batches;  // batches whose activations are staged at once, a multiple of 4 (warps)
  int x_stride;       // row stride of the staged activations in shared memory, in halves
  int cluster_reduce;  // sm_90: the splits of a stripe are one thread-block cluster (grid z) and
                       // add their sums through distributed shared memory, not the workspace
  int x_ld;            // stream kernel: row stride of x in halves (K unless silu_mul)
  int silu_mul;        // stream kernel: the input is SiLU(x[:, 0..K)) * x[:, K..2K)
};

// Stream kernel only, its second parameter: the residual add and RMSNorm between two linears
// folded into them (AwqGemmOptions::norm_out, norm_in_sumsq; awq_gemm_stream.cuh). Apart from
// Params so that the other kernels' parameters stay as they are: 36 more bytes of Params made
// ptxas serialize the Hopper kernel's wgmma (ctest ptxas_wgmma_pipelined_*).
struct NormFold {
  __half* residual;        // [M, N]: += y in place, and y = fp16(residual * weight)
  const __half* weight;    // [N]
  float* sumsq_out;        // [M][N / 64]: the sum of residual^2 over each 64-column stripe
  const float* sumsq_in;   // [M][K / 64] such sums: rows of y * rsqrt(sum / K + eps)
  float eps;
};

template <int WarpsM, int WarpsN, int WarpsK, int MTiles, bool Turing, int MinBlocks, int Stages>
struct TileConfig {
  static constexpr bool kStream = false;
  static constexpr bool kWgmma = false;
  static constexpr int kWarpsM = WarpsM, kWarpsN = WarpsN, kWarpsK = WarpsK, kMTiles = MTiles;
  static constexpr bool kTuring = Turing;
  static constexpr int kMinBlocks = MinBlocks;
  static constexpr int kThreads = 32 * WarpsM * WarpsN * WarpsK;
  static constexpr int kBM = WarpsM * MTiles * 16;
  static constexpr int kBN = WarpsN * 64;
  static constexpr int kBK = 64;
  static constexpr int kK16PerWarp = 4 / WarpsK;       // k16 steps of each k-tile per warp
  static constexpr int kStages = Turing ? 2 : Stages;  // sm_80+: cp.async stages
  static constexpr int kABytes = kBM * kBK * 2;
  static constexpr int kBBytes = WarpsN * 4 * awq_layout::kTileBytes;
  static constexpr int kSSlotBytes = 160;  // one (stripe, group): 64 fp16 scales + 8 zero words
  static constexpr int kSBytes = 2 * WarpsN * kSSlotBytes;
  static constexpr int kStageBytes = kABytes + kBBytes + kSBytes;
  static constexpr int kAcc = MTiles * 8 * 4;  // fp32 accumulators per thread
  static constexpr int kRedBytes = (WarpsK - 1) * WarpsM * WarpsN * kAcc * 32 * 4;
  static constexpr int kPipeBytes = kStages * kStageBytes;
  static constexpr int kSmemBytes = kPipeBytes > kRedBytes ? kPipeBytes : kRedBytes;
  // 16-byte chunks per stage, and per-thread iterations over them.
  static constexpr int kAChunks = kBM * 8;
  static constexpr int kBChunks = WarpsN * 4 * 32;
  static constexpr int kSChunks = 2 * WarpsN * 10;
  static constexpr int kAIters = (kAChunks + kThreads - 1) / kThreads;
  static constexpr int kBIters = (kBChunks + kThreads - 1) / kThreads;
  static constexpr int kSIters = (kSChunks + kThreads - 1) / kThreads;
  static constexpr int kRegChunks = kAIters + kBIters + kSIters;  // Turing register staging

  static_assert(4 % WarpsK == 0, "a k-tile has 4 k16 steps");
  static_assert(kStageBytes % 128 == 0, "stages must stay 128-byte aligned");
};

// The tile shapes (kernels/awq_gemm.cuh explains the choice). MinBlocks caps registers so that
// that many blocks fit on an SM (65536 registers): s16/s32 run 2 blocks of 8 warps, m64 2 blocks
// of 4 warps, l128 one block of 8 warps. The weight-streaming tiles (s16, s32) keep 5-6 k-tiles in
// flight (s32's 5 stages fit in the shared memory its k-split reduction needs anyway).
template <bool Turing>
using TileS16 = TileConfig<1, 2, 4, 1, Turing, 2, 6>;
template <bool Turing>
using TileS32 = TileConfig<1, 2, 4, 2, Turing, 2, 5>;
template <bool Turing>
using TileM64 = TileConfig<1, 2, 2, 4, Turing, 1, 4>;
template <bool Turing>
using TileL128 = TileConfig<2, 4, 1, 4, Turing, 1, 4>;

// The stream kernel (awq_gemm_stream.cuh) for M <= 8 * MGroups rows per m-block: every warp
// streams whole 128-row batches of one stripe (8 tiles, 4 KB) through its own 2-slot cp.async
// ring in shared memory (sm_80+; 16-byte loads into registers on the Turing path), multiplies
// them with mma (weights as the A operand, activation rows as the n8 side); the WarpsK warps of a
// stripe add their sums in shared memory. A block holds Stripes stripes, which share its staged
// activations. Sized for the H100's 228 KB per SM (st8: 55 KB, 4 blocks; st16: 108 KB, 2; st8w:
// 182 KB, 1); on the A100 (164 KB) st8 fits 2 blocks and st8w none (the planner then keeps st8).
template <int MGroups, int Stripes, bool Turing, int WarpsK = 4, int XBytes = 34816,
          bool DirectX = false, bool Fold = false>
struct StreamConfig {
  static constexpr bool kStream = true;
  static constexpr bool kWgmma = false;
  static constexpr bool kTuring = Turing;
  static constexpr int kMGroups = MGroups;   // n8 groups of activation rows
  static constexpr int kRows = 8 * MGroups;  // activation rows per m-block
  static constexpr int kStripes = Stripes;
  static constexpr int kWarpsK = WarpsK;  // warps per stripe, taking its batches round-robin
  static constexpr int kWarps = kWarpsK * Stripes;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kMinBlocks = kWarps >= 16 ? 1 : 16 / kWarps;  // 16 warps per SM: <= 128 registers
  static constexpr int kBM = kRows;               // for the launcher's tables
  static constexpr int kWarpsN = Stripes;
  static constexpr int kSteps = 8;  // k16 steps per batch: 128 rows, 8 x 512 bytes per warp
  static constexpr int kBatchRows = 16 * kSteps;
  static constexpr int kAcc = 4 * MGroups * 4;  // fp32 accumulators per lane
  // Activations [rows][x_stride] fp16 for the block's K range, and later the warps' sums (34 KB:
  // 1024 rows at M = 16, K = 16384 at M = 1; st8 has 18 KB, so that 4 blocks with their rings fit
  // an SM). Half on the Turing path, for Turing's 64 KB of shared memory per SM.
  static constexpr int kXBytes = Turing ? 17408 : XBytes;
  static constexpr int kRedBytes = kWarps * kAcc * 32 * 4;
  static constexpr int kAreaBytes = kXBytes > kRedBytes ? kXBytes : kRedBytes;
  // sm_80+: each warp's ring of batch slots in shared memory, after that area (awq_gemm_stream.cuh):
  // 2 slots, one computed while the next arrives. The Turing path loads into registers.
  static constexpr int kRing = Turing ? 0 : 2;
  static constexpr int kSlotBytes = kSteps * 512 + 4 * 160;  // weights + 4 groups' scales, zeros
  static constexpr int kRingBytes = kWarps * kRing * kSlotBytes;
  static constexpr int kSmemBytes = kAreaBytes + kRingBytes;
  // Batches a warp requests before griddepcontrol.wait: its whole ring where that keeps a block's
  // requests ahead of its activations small (st8: 38 KB), else kRing - 1 (st8w's 16 warps would
  // queue 148 KB ahead of them). Run 88 (H200, with PDL): the whole ring took gate_up at M = 1-8
  // 2-7 % faster (st8) and down 5-11 % slower (st8w).
  static constexpr int kPrefetch = kRing == 0 ? 0 : kRingBytes <= 40 * 1024 ? kRing : kRing - 1;
  // sm_80+: the mma multiply the exact integers q - z and each group's sums are scaled in fp32
  // (awq_gemm_stream.cuh), 4 of the 13 dequantization instructions per 8 weights fewer; the
  // Turing tiles keep W = fp16((q - z) * s) (their registers have no room for the group sums).
  static constexpr bool kExactWeights = !Turing;
  // DirectX (sm_80+, M <= 8: st8d, st8wd): each lane loads the activations of its mma fragments
  // itself (and computes the fused SiLU input's SiLU for them), from global memory (L1, else L2)
  // one batch ahead, instead of the block staging them in shared memory by phases between block
  // barriers (awq_gemm_stream.cuh). A separate instantiation: compiled into the staging kernel it
  // made M = 1 5 % slower (run 98); the launcher picks it from kDirectXMinRows rows (awq_gemm.cu).
  static constexpr bool kDirectX = DirectX && !Turing && MGroups == 1;
  // Fold: the variant that takes a folded norm (NormFold; awq_gemm_stream.cuh, fold_epilogue),
  // its own instantiation so that the others' code stays as it was (compiled into every stream
  // kernel, the fold's code made them 2-11 % slower: docs/PERF.md run 120).
  static constexpr bool kFold = Fold;
  using Folded = StreamConfig<MGroups, Stripes, Turing, WarpsK, XBytes, DirectX, true>;
  static_assert(kMGroups == 1 || kMGroups == 2, "the stream kernel serves M <= 16 per m-block");
  static_assert(kAreaBytes % 16 == 0 && kSlotBytes % 16 == 0, "16-byte cp.async slots");
  static_assert((kXBytes / (2 * kRows) - 8) / kBatchRows >= kWarpsK,
                "a phase must give every warp a batch");
};
// st8: one stripe per block (at M <= 8 the activations a block stages are at most half the
// weights it streams); st16: two, so each staged activation serves 128 columns.
template <bool Turing>
using StreamM8 = StreamConfig<1, 1, Turing, 4, 18432>;
template <bool Turing>
using StreamM16 = StreamConfig<2, 2, Turing>;
// st8 with the lanes' own activation loads (DirectX).
template <bool Turing>
using StreamM8Direct = StreamConfig<1, 1, Turing, 4, 18432, true>;
// st8w: st8 with 16 warps on its stripe (8 on the Turing path, whose activation buffer holds 8
// batches at 8 rows), one block per SM: for weights with fewer stripes than the GPU has SMs (o,
// qkv), a stripe's K splits over the warps of one block instead of over blocks, so the split-K
// sums meet in shared memory, and across at most a cluster of a few blocks (run 30: o at M = 1
// 9.3 us with 2 splits against st8's best 10.8; down, 3.5 batches per warp, stays with st8).
template <bool Turing>
using StreamM8Wide = StreamConfig<1, 1, Turing, Turing ? 8 : 16>;
template <bool Turing>
using StreamM8WideDirect = StreamConfig<1, 1, Turing, Turing ? 8 : 16, 34816, true>;

// The Hopper kernel (awq_gemm_wgmma.cuh, sm_90a only): two warpgroups share an output tile of
// 4 stripes (256 columns) x BM activation rows. Warp w of a warpgroup streams stripe w; warpgroup
// h dequantizes words 2h and 2h+1 of each lane's 16 bytes (columns 32h..32h+31 of every stripe)
// into the A operand of wgmma.m64nBMk16 (A from registers), the activations are B, from shared
// memory. Stages of one 64-row k-tile: activations in wgmma's K-major 128-byte-swizzle layout,
// the 4 stripes' weight tiles verbatim, their scales and zeros as in the tiled kernel.
template <int BM, int Stages, int MinBlocks>
struct WgmmaConfig {
  static constexpr bool kStream = false;
  static constexpr bool kWgmma = true;
  static constexpr bool kTuring = false;
  static constexpr int kBM = BM;  // activation rows per block: the wgmma N
  static constexpr int kWarpsN = 4;
  static constexpr int kBN = 64 * kWarpsN;
  static constexpr int kThreads = 256;
  static constexpr int kMinBlocks = MinBlocks;
  static constexpr int kStages = Stages;
  static constexpr int kXBytes = BM * 64 * 2;
  static constexpr int kWBytes = kWarpsN * 4 * awq_layout::kTileBytes;
  static constexpr int kSSlotBytes = 160;
  static constexpr int kSBytes = 2 * kWarpsN * kSSlotBytes;
  static constexpr int kWSBytes = kWBytes + kSBytes;  // weights + scales/zeros of a stage
  // X of every stage first (1024-byte aligned for the 128-byte swizzle), then W + S; 1 KB of
  // slack to align the dynamic shared memory's start.
  static constexpr int kSmemBytes = kStages * (kXBytes + kWSBytes) + 1024;
  static constexpr int kAccPerJ = BM / 2;  // fp32 accumulators per thread and wgmma
  static_assert(BM % 16 == 0 && BM >= 16 && BM <= 256, "wgmma N: a multiple of 8 up to 256");
  static_assert(kXBytes % 1024 == 0 && kWSBytes % 128 == 0, "stage alignment");
  static_assert(kStages >= 3, "the pipeline refills the stage computed two k-tiles ago");
};
// w64: M <= 64 per block, 11 stages (191 KB: 9 k-tiles in flight; 6 stages measured 2-4 % slower
// on the H200, docs/PERF.md run 80); w128: 128 rows, 5 stages (129 KB). One block per SM by
// registers (accumulators plus two buffers of dequantized A fragments).
using TileW64 = WgmmaConfig<64, 11, 1>;
using TileW128 = WgmmaConfig<128, 5, 1>;

// Batches (128 rows each) of activations the stream kernel stages at once for `rows` rows: as
// many as fit kXBytes with the padded row stride the kernel uses (phase rows + 8 halves), a
// multiple of kWarpsK, at most `wanted` rounded up to one.
template <class C>
constexpr int stream_phase_batches(int rows, int wanted) {
  const int fit = (C::kXBytes / (2 * rows) - 8) / C::kBatchRows / C::kWarpsK * C::kWarpsK;
  const int want = (wanted + C::kWarpsK - 1) / C::kWarpsK * C::kWarpsK;
  return want < fit ? want : fit;
}

// Defined in awq_gemm_kernel.cuh, instantiated once per tile in awq_gemm_{sm80,sm75}_<tile>.cu.
// pdl: launch with Programmatic Dependent Launch (only where the kernel's code is sm_90+).
template <class C>
const void* kernel_fn();
template <class C>
void launch(const Params& p, const NormFold& f, dim3 grid, cudaStream_t stream, bool pdl);

}  // namespace awqd::cuda::awq_gemm_detail
