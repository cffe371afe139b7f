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
};

template <int WarpsM, int WarpsN, int WarpsK, int MTiles, bool Turing, int MinBlocks, int Stages>
struct TileConfig {
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

// Defined in awq_gemm_kernel.cuh, instantiated once per tile in awq_gemm_{sm80,sm75}_<tile>.cu.
template <class C>
const void* kernel_fn();
template <class C>
void launch(const Params& p, dim3 grid, cudaStream_t stream);

}  // namespace awqd::cuda::awq_gemm_detail
