// The AWQ GEMM tiled tensor-core kernel template (design: kernels/awq_gemm.cuh), and the kernel
// entry point and launcher of both it and the stream kernel (awq_gemm_stream.cuh). Included by the
// explicit instantiation files awq_gemm_{sm80,sm75}_<tile>.cu, one per (path, tile shape), and by
// nothing else, so each compiles in its own unit.
//
// Block: output tile BM x BN (BN = 64 * WarpsN stripes) and k-tiles [kt_begin, kt_end) of 64 rows
// (its split of K). Warp (wk, wm, wn) computes rows [wm*MTiles*16, +MTiles*16) of the tile, stripe
// wn, and k16 steps [wk*4/WarpsK, +4/WarpsK) of every k-tile.
// Shared memory per stage (all offsets multiples of 128 bytes):
//   A  [BM rows][64 k] fp16; row r is 128 bytes, its 16-byte chunk c stored at slot c ^ (r % 8) so
//      the 8 row addresses of each ldmatrix phase hit 8 different 16-byte bank groups.
//   B  [WarpsN stripes][4 tiles][512 bytes], copied verbatim from the tile layout.
//   S  [2 group slots][WarpsN stripes][128 bytes scales + 32 bytes zeros]; slot 1 is used when
//      G == 32 (a 64-row k-tile spans two groups).
// sm_80+: cp.async, kStages = 4 to 6 (kStages - 1 tiles in flight while one is computed).
// sm_75:  loads of tile kt+1 go to registers before computing tile kt, then to the other of
//         2 shared-memory stages; one __syncthreads per k-tile.
#pragma once

#include <cuda_fp16.h>

#include <cstddef>
#include <cstdint>

#include "kernels/awq_gemm_device.cuh"
#include "kernels/awq_gemm_epilogue.cuh"
#include "kernels/awq_gemm_stream.cuh"
#include "kernels/awq_gemm_tiles.cuh"
#include "kernels/awq_layout.cuh"
#ifndef AWQD_KERNEL_EMULATION
#include "kernels/awq_gemm_wgmma.cuh"
#include "kernels/cuda_check.cuh"
#endif

namespace awqd::cuda::awq_gemm_detail {

// Visits the 16-byte chunks this thread moves for k-tile kt:
//   f(index, src, dst_offset_in_stage, valid, active)
// index: compile-time position (for register staging); valid == false: write zeros (activation
// rows >= M, columns >= K); active == false: nothing to move (stripes past N, unused group slot).
template <class C, class F>
__device__ __forceinline__ void for_each_chunk(const Params& p, int kt, int m0, int n_block,
                                               F&& f) {
  const int tid = threadIdx.x;
#pragma unroll
  for (int i = 0; i < C::kAIters; ++i) {
    const int c = tid + i * C::kThreads;
    if (C::kAChunks % C::kThreads == 0 || c < C::kAChunks) {
      const int r = c >> 3, cc = c & 7;
      const int m = m0 + r, k = kt * C::kBK + cc * 8;
      const bool valid = m < p.M && k < p.K;
      const __half* src = valid ? p.x + static_cast<std::size_t>(m) * p.K + k : p.x;
      f(i, static_cast<const void*>(src), r * 128 + ((cc ^ (r & 7)) << 4), valid, true);
    }
  }
#pragma unroll
  for (int i = 0; i < C::kBIters; ++i) {
    const int c = tid + i * C::kThreads;
    if (C::kBChunks % C::kThreads == 0 || c < C::kBChunks) {
      const int wn = c >> 7, q = c & 127;
      const int stripe = n_block * C::kWarpsN + wn;
      const bool active = stripe < p.n_stripes;
      const uint4* src =
          p.tiles + (static_cast<std::size_t>(stripe) * p.k_tiles + kt) * (4 * 32) + q;
      f(C::kAIters + i, static_cast<const void*>(src), C::kABytes + c * 16, true, active);
    }
  }
#pragma unroll
  for (int i = 0; i < C::kSIters; ++i) {
    const int c = tid + i * C::kThreads;
    if (C::kSChunks % C::kThreads == 0 || c < C::kSChunks) {
      const int slot = c / (C::kWarpsN * 10), rem = c % (C::kWarpsN * 10);
      const int wn = rem / 10, q = rem % 10;
      const int stripe = n_block * C::kWarpsN + wn;
      const bool active = stripe < p.n_stripes && (slot == 0 || p.group_shift == 5);
      const int group = (kt * C::kBK + 32 * slot) >> p.group_shift;
      const std::size_t sg = static_cast<std::size_t>(stripe) * p.groups + group;
      const void* src = q < 8 ? static_cast<const void*>(p.scales + sg * 64 + q * 8)
                              : static_cast<const void*>(p.zeros + sg * 8 + (q - 8) * 4);
      f(C::kAIters + C::kBIters + i, src,
        C::kABytes + C::kBBytes + (slot * C::kWarpsN + wn) * C::kSSlotBytes + q * 16, true, active);
    }
  }
}

// One warp's share of one k-tile: its k16 steps, all its m16 tiles, its stripe (8 n8 tiles).
template <class C>
__device__ __forceinline__ void compute_stage(const std::uint8_t* stage, int wm, int wn, int wk,
                                              int lane, int mt_valid, bool g32,
                                              float (&acc)[C::kMTiles][8][4]) {
  using namespace awq_device;
  const std::uint8_t* a_s = stage;
  const std::uint8_t* b_s = stage + C::kABytes + wn * 4 * awq_layout::kTileBytes;
  const std::uint8_t* s_s = stage + C::kABytes + C::kBBytes + wn * C::kSSlotBytes;
  const int g = lane >> 2;
  GroupConsts consts;
#pragma unroll
  for (int q = 0; q < C::kK16PerWarp; ++q) {
    const int kk = wk * C::kK16PerWarp + q;  // k16 step within the k-tile
    if (q == 0 || (g32 && (kk & 1) == 0)) {
      const std::uint8_t* sp = s_s + (g32 ? (kk >> 1) : 0) * C::kWarpsN * C::kSSlotBytes;
      load_group_consts(*reinterpret_cast<const uint4*>(sp + g * 16),
                        *reinterpret_cast<const std::uint32_t*>(sp + 128 + g * 4), consts);
    }
    std::uint32_t a[C::kMTiles][4];
#pragma unroll
    for (int mt = 0; mt < C::kMTiles; ++mt) {
      if (C::kMTiles == 1 || mt < mt_valid) {
        const int r = wm * C::kMTiles * 16 + mt * 16 + (lane & 15);
        const int cc = kk * 2 + (lane >> 4);
        ldmatrix_x4(a[mt], smem_addr(a_s + r * 128 + ((cc ^ (r & 7)) << 4)));
      }
    }
    const uint4 bw = *reinterpret_cast<const uint4*>(b_s + kk * awq_layout::kTileBytes + lane * 16);
    const std::uint32_t words[4] = {bw.x, bw.y, bw.z, bw.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      std::uint32_t b[2][2];
      dequant_word(words[j], consts, j, b);
#pragma unroll
      for (int mt = 0; mt < C::kMTiles; ++mt) {
        if (C::kMTiles == 1 || mt < mt_valid) {
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            if constexpr (C::kTuring)
              mma_m16n8k16_as_2x_k8(acc[mt][2 * j + h], a[mt], b[h][0], b[h][1]);
            else
              mma_m16n8k16(acc[mt][2 * j + h], a[mt], b[h][0], b[h][1]);
          }
        }
      }
    }
  }
}

template <class C>
__device__ __forceinline__ void gemm_block(const Params& p) {
  using namespace awq_device;
#ifndef AWQD_KERNEL_EMULATION
  extern __shared__ __align__(128) std::uint8_t smem[];
  __shared__ int s_is_last;
#else
  std::uint8_t* smem = emu::shared_memory();
  static int s_is_last;
#endif

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int wn = warp % C::kWarpsN;
  const int wm = C::kWarpsM == 1 ? 0 : (warp / C::kWarpsN) % C::kWarpsM;
  const int wk = C::kWarpsK == 1 ? 0 : warp / (C::kWarpsN * C::kWarpsM);
  const int n_block = blockIdx.x, m_block = blockIdx.y, split = blockIdx.z;
  const int m0 = m_block * C::kBM;
  const int stripe = n_block * C::kWarpsN + wn;
  const int warp_row0 = m0 + wm * C::kMTiles * 16;
  const int mt_valid = (p.M - warp_row0 + 15) / 16;  // m16 tiles of this warp holding rows < M
  const bool warp_active = stripe < p.n_stripes && warp_row0 < p.M;
  const bool g32 = p.group_shift == 5;
  const int kt_begin = static_cast<int>(static_cast<long long>(split) * p.k_tiles / p.splits);
  const int kt_end = static_cast<int>(static_cast<long long>(split + 1) * p.k_tiles / p.splits);

  // Launched with Programmatic Dependent Launch (sm_90), the block may start before the previous
  // kernel on the stream has finished; every load below may depend on it.
  allow_dependents_launch();
  grid_dependency_wait();

  float acc[C::kMTiles][8][4];
#pragma unroll
  for (int mt = 0; mt < C::kMTiles; ++mt)
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[mt][nt][r] = 0.0f;

  if constexpr (!C::kTuring) {
    const std::uint32_t smem_base = smem_addr(smem);
    auto issue = [&](int stage, int kt) {
      const std::uint32_t base = smem_base + stage * C::kStageBytes;
      for_each_chunk<C>(p, kt, m0, n_block,
                        [&](int, const void* src, int dst, bool valid, bool active) {
                          if (active) cp_async_16(base + dst, src, valid);
                        });
    };
#pragma unroll
    for (int s = 0; s < C::kStages - 1; ++s) {
      if (kt_begin + s < kt_end) issue(s, kt_begin + s);
      cp_async_commit();
    }
    for (int kt = kt_begin; kt < kt_end; ++kt) {
      const int i = kt - kt_begin;
      cp_async_wait<C::kStages - 2>();  // tile kt has landed (this thread's copies)...
      __syncthreads();                  // ...and everyone's; stage (i-1) % kStages is free
      if (kt + C::kStages - 1 < kt_end)
        issue((i + C::kStages - 1) % C::kStages, kt + C::kStages - 1);
      cp_async_commit();
      if (warp_active)
        compute_stage<C>(smem + (i % C::kStages) * C::kStageBytes, wm, wn, wk, lane, mt_valid, g32,
                         acc);
    }
    cp_async_wait<0>();
  } else {
    uint4 staged[C::kRegChunks];
    auto fetch = [&](int kt) {
      for_each_chunk<C>(p, kt, m0, n_block,
                        [&](int idx, const void* src, int, bool valid, bool active) {
                          // Activations (idx < kAIters) through a plain load: the read-only path
                          // may be hoisted above grid_dependency_wait, and the previous kernel
                          // writes them.
                          const uint4* v = static_cast<const uint4*>(src);
                          staged[idx] = !(valid && active) ? make_uint4(0, 0, 0, 0)
                                        : idx < C::kAIters ? *v
                                                           : __ldg(v);
                        });
    };
    auto store = [&](int stage, int kt) {
      std::uint8_t* base = smem + stage * C::kStageBytes;
      for_each_chunk<C>(p, kt, m0, n_block, [&](int idx, const void*, int dst, bool, bool active) {
        if (active) *reinterpret_cast<uint4*>(base + dst) = staged[idx];
      });
    };
    if (kt_begin < kt_end) {
      fetch(kt_begin);
      store(0, kt_begin);
    }
    __syncthreads();
    for (int kt = kt_begin; kt < kt_end; ++kt) {
      const int i = kt - kt_begin;
      const bool more = kt + 1 < kt_end;
      if (more) fetch(kt + 1);  // in flight while tile kt is computed
      if (warp_active)
        compute_stage<C>(smem + (i & 1) * C::kStageBytes, wm, wn, wk, lane, mt_valid, g32, acc);
      if (more) store((i + 1) & 1, kt + 1);  // that stage was last read before the barrier below
      __syncthreads();
    }
  }
  __syncthreads();  // the pipeline's shared memory is reused below

  // Warps that split the k-tile add their sums into warp wk == 0, in the order wk = 1, 2, ...
  if constexpr (C::kWarpsK > 1) {
    float* red = reinterpret_cast<float*>(smem);
    const int wmn = warp % (C::kWarpsM * C::kWarpsN);
    if (wk > 0 && warp_active) {
      float* dst = red + ((wk - 1) * C::kWarpsM * C::kWarpsN + wmn) * C::kAcc * 32 + lane;
#pragma unroll
      for (int mt = 0; mt < C::kMTiles; ++mt)
#pragma unroll
        for (int nt = 0; nt < 8; ++nt)
#pragma unroll
          for (int r = 0; r < 4; ++r) dst[((mt * 8 + nt) * 4 + r) * 32] = acc[mt][nt][r];
    }
    __syncthreads();
    if (wk == 0 && warp_active) {
#pragma unroll
      for (int w = 1; w < C::kWarpsK; ++w) {
        const float* src = red + ((w - 1) * C::kWarpsM * C::kWarpsN + wmn) * C::kAcc * 32 + lane;
#pragma unroll
        for (int mt = 0; mt < C::kMTiles; ++mt)
#pragma unroll
          for (int nt = 0; nt < 8; ++nt)
#pragma unroll
            for (int r = 0; r < 4; ++r) acc[mt][nt][r] += src[((mt * 8 + nt) * 4 + r) * 32];
      }
    }
  }

  // Accumulator (mt, nt, 2h + e) is row warp_row0 + 16 mt + g + 8h, column 64 stripe + 8 nt + 2t +
  // e.
  const bool writer = wk == 0 && warp_active;
  const int g = lane >> 2, t = lane & 3;

  if (p.splits == 1) {
    if (!writer) return;
#pragma unroll
    for (int mt = 0; mt < C::kMTiles; ++mt)
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int row = warp_row0 + mt * 16 + g + 8 * h, col = stripe * 64 + nt * 8 + 2 * t;
          if (row < p.M && col < p.N)
            store_y_pair(p, row, col, acc[mt][nt][2 * h], acc[mt][nt][2 * h + 1]);
        }
    return;
  }

  // Split-K: publish this split's sums; the last block of the tile to arrive adds all splits in
  // split order, so the result does not depend on which block came last.
  if (writer) {
#pragma unroll
    for (int mt = 0; mt < C::kMTiles; ++mt)
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int row = warp_row0 + mt * 16 + g + 8 * h, col = stripe * 64 + nt * 8 + 2 * t;
          if (row < p.M && col < p.N)
            *reinterpret_cast<float2*>(split_partial(p, split, row, col)) =
                make_float2(acc[mt][nt][2 * h], acc[mt][nt][2 * h + 1]);
        }
  }
  finish_split_tile<C>(p, m0, n_block, s_is_last);
}

#ifndef AWQD_KERNEL_EMULATION
// The tiled and Hopper kernels.
template <class C>
__global__ void __launch_bounds__(C::kThreads, C::kMinBlocks) awq_gemm_kernel(const Params p) {
#if defined(__CUDA_ARCH__)
  // The sm_80 paths compile to a trap for sm_75, the Hopper kernel to one for everything but
  // sm_90a (the launcher never starts them there).
  if constexpr (C::kWgmma) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    wgmma_block<C>(p);
#else
    __trap();
#endif
  } else if constexpr (C::kTuring || __CUDA_ARCH__ >= 800) {
    if constexpr (C::kStream)
      stream_block<C>(p, NormFold{});
    else
      gemm_block<C>(p);
  } else {
    __trap();
  }
#endif
}

// The stream kernel's variant with a folded norm (C::kFold), which takes NormFold.
template <class C>
__global__ void __launch_bounds__(C::kThreads, C::kMinBlocks)
    awq_gemm_stream_kernel(const Params p, const NormFold f) {
  static_assert(C::kStream && C::kFold, "the other kernels take no NormFold");
#if defined(__CUDA_ARCH__)
  if constexpr (C::kTuring || __CUDA_ARCH__ >= 800)
    stream_block<C>(p, f);
  else
    __trap();
#endif
}

// Whether C's kernel takes a NormFold (the stream kernel's fold variants).
template <class C>
constexpr bool takes_norm_fold() {
  if constexpr (C::kStream)
    return C::kFold;
  else
    return false;
}

// Host side of one instantiation (awq_gemm_{sm80,sm75,sm90}_<tile>.cu).
template <class C>
const void* kernel_fn() {
  if constexpr (takes_norm_fold<C>())
    return reinterpret_cast<const void*>(&awq_gemm_stream_kernel<C>);
  else
    return reinterpret_cast<const void*>(&awq_gemm_kernel<C>);
}

// `f` reaches the stream kernel's fold variant only (the others take no folded norm).
template <class C>
void launch(const Params& p, const NormFold& f, dim3 grid, cudaStream_t stream, bool pdl) {
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = dim3(C::kThreads);
  config.dynamicSmemBytes = C::kSmemBytes;
  config.stream = stream;
  cudaLaunchAttribute attributes[2]{};
  unsigned count = 0;
  if (pdl) {
    attributes[count].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attributes[count++].val.programmaticStreamSerializationAllowed = 1;
  }
  if (p.cluster_reduce) {  // the stream kernel's splits (grid z) as one cluster
    attributes[count].id = cudaLaunchAttributeClusterDimension;
    attributes[count].val.clusterDim.x = 1;
    attributes[count].val.clusterDim.y = 1;
    attributes[count++].val.clusterDim.z = grid.z;
  }
  config.attrs = attributes;
  config.numAttrs = count;
  if constexpr (takes_norm_fold<C>())
    CUDA_CHECK(cudaLaunchKernelEx(&config, awq_gemm_stream_kernel<C>, p, f));
  else
    CUDA_CHECK(cudaLaunchKernelEx(&config, awq_gemm_kernel<C>, p));
}

#define AWQD_INSTANTIATE_AWQ_GEMM(Cfg)   \
  template const void* kernel_fn<Cfg>(); \
  template void launch<Cfg>(const Params&, const NormFold&, dim3, cudaStream_t, bool);
// A stream tile and its variant with a folded norm (StreamConfig::Folded).
#define AWQD_INSTANTIATE_AWQ_GEMM_STREAM(Cfg) \
  AWQD_INSTANTIATE_AWQ_GEMM(Cfg)              \
  AWQD_INSTANTIATE_AWQ_GEMM(Cfg::Folded)
#endif  // AWQD_KERNEL_EMULATION

}  // namespace awqd::cuda::awq_gemm_detail
