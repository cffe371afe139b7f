// Host side of the AWQ GEMM (design: kernels/awq_gemm.cuh): argument checks, the choice of path,
// tile and split-K factor, the dequantize kernel and the dequantize + cuBLASLt path, and the
// owner of a repacked weight in device memory.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "kernels/awq_gemm.cuh"
#include "kernels/awq_gemm_device.cuh"
#include "kernels/awq_gemm_tiles.cuh"
#include "kernels/awq_layout.cuh"
#include "kernels/cublaslt_gemm.cuh"
#include "kernels/cuda_check.cuh"

namespace awqd::cuda {
namespace {

namespace D = awq_gemm_detail;
namespace L = awq_layout;

// Auto runs dequantize + cuBLASLt from M = kDequantMinM (where the workspace allows chunks of at
// least kDequantMinChunkCols columns) when it is predicted faster than the tiled kernel
// (dequant_beats_tiles). Set from bench_awq_gemm on the H100: docs/PERF.md.
constexpr int kDequantMinM = 128;
constexpr int kDequantAlwaysM = 256;
constexpr int kHopperDequantM = 512;
// Programmatic Dependent Launch (when asked for) up to this M: run 14 on the H100, back-to-back
// calls, measured it 1-21 % faster at every M <= 64 on all four Llama-3-8B shapes (most at M <= 16,
// with the stream kernel's split counts of 430c70d) and up to 13 % slower from M = 256.
constexpr int kPdlMaxM = 64;
// Stream kernel splits that go through a cluster: run 17 (H100, PDL on): 4 splits (qkv at M = 1)
// 10.7 us with a cluster vs 11.4 without; 8 splits (o) 13.2 vs 9.3 (clusters of 8 blocks are
// harder to place, the grid runs in more waves).
constexpr int kMaxClusterSplits = 4;
constexpr int kDequantMinChunkCols = 1024;
// Stream kernel split-K (stream_splits): about this many blocks per SM over the 64-column
// stripes, measured best on the H100 (docs/PERF.md, run 7's sweep).
constexpr double kStreamBlocksPerSm = 3.4;
constexpr std::size_t kCounterBytes = std::size_t{64} << 10;  // split-K counters: workspace start
constexpr int kMaxCounters = static_cast<int>(kCounterBytes / sizeof(int));
constexpr std::size_t kCublasWorkspaceBytes = std::size_t{32} << 20;
constexpr std::size_t kDequantChunkBytes = std::size_t{256}
                                           << 20;  // largest chunk worth asking for

[[noreturn]] void bad_argument(const std::string& what) {
  throw std::invalid_argument("awq_gemm: " + what);
}

// ---- tiles and what the device can run ----
struct TileEntry {
  AwqTile tile;
  bool stream;  // the stream kernel (awq_gemm_stream.cuh), else the tiled one
  bool hopper;  // the wgmma kernel (awq_gemm_wgmma.cuh): sm_90a code on an sm_90 GPU only
  int bm;       // rows per block
  int stripes;  // 64-column stripes per block
  int threads;
  int smem;                                    // dynamic shared memory, bytes
  int (*phase_batches)(int rows, int wanted);  // stream kernel: D::stream_phase_batches
  const void* (*kernel)();
  void (*launch)(const D::Params&, const D::NormFold&, dim3, cudaStream_t, bool);
  // st8 / st8w on the sm_80+ path: the same tile with the lanes' own activation loads
  // (StreamConfig::kDirectX; with the fused SiLU input too), launched from kDirectXMinRows rows.
  const void* (*kernel_direct)() = nullptr;
  void (*launch_direct)(const D::Params&, const D::NormFold&, dim3, cudaStream_t, bool) = nullptr;
  // The stream tiles' variants with a folded norm (StreamConfig::Folded), of the tile and of its
  // direct variant: used where they fit the SMs as the tile does (FamilyCaps::fold).
  const void* (*kernel_fold)() = nullptr;
  void (*launch_fold)(const D::Params&, const D::NormFold&, dim3, cudaStream_t, bool) = nullptr;
  const void* (*kernel_direct_fold)() = nullptr;
  void (*launch_direct_fold)(const D::Params&, const D::NormFold&, dim3, cudaStream_t, bool) = nullptr;
};

template <class C, class Direct = void>
TileEntry entry(AwqTile tile) {
  int (*phase_batches)(int, int) = nullptr;
  if constexpr (C::kStream) phase_batches = &D::stream_phase_batches<C>;
  TileEntry e{tile,        C::kStream,    C::kWgmma,     C::kBM,           C::kWarpsN,
              C::kThreads, C::kSmemBytes, phase_batches, &D::kernel_fn<C>, &D::launch<C>};
  if constexpr (C::kStream) {
    e.kernel_fold = &D::kernel_fn<typename C::Folded>;
    e.launch_fold = &D::launch<typename C::Folded>;
  }
  if constexpr (!std::is_void_v<Direct>) {
    static_assert(Direct::kSmemBytes == C::kSmemBytes && Direct::kThreads == C::kThreads &&
                      Direct::kMinBlocks == C::kMinBlocks,
                  "the direct variant must fit the SMs as its tile does (the planner probes one)");
    e.kernel_direct = &D::kernel_fn<Direct>;
    e.launch_direct = &D::launch<Direct>;
    e.kernel_direct_fold = &D::kernel_fn<typename Direct::Folded>;
    e.launch_direct_fold = &D::launch<typename Direct::Folded>;
  }
  return e;
}

// H200 (docs/PERF.md run 98, experiment build with both in one kernel): the lanes' own loads
// took gate_up at M = 8 from 28.5 to 23.5 us, qkv 10.2 -> 7.8, down 16.4 -> 13.5, level at M = 4,
// and lost at M = 1-2, where st8 stages K = 4096 in one phase.
constexpr int kDirectXMinRows = 5;

constexpr int kTiles = static_cast<int>(AwqTile::kCount);
using TileTable = std::array<TileEntry, kTiles>;

const TileTable& tile_table(bool turing) {
  // The Hopper tiles sit in both tables (one index per tile) but belong to the tensor-core path:
  // probe_family never makes them available to the Turing one.
  static const TileTable tensor_core = {
      entry<D::TileS16<false>>(AwqTile::kS16),
      entry<D::TileS32<false>>(AwqTile::kS32),
      entry<D::TileM64<false>>(AwqTile::kM64),
      entry<D::TileL128<false>>(AwqTile::kL128),
      entry<D::StreamM8<false>, D::StreamM8Direct<false>>(AwqTile::kSt8),
      entry<D::StreamM16<false>>(AwqTile::kSt16),
      entry<D::TileW64>(AwqTile::kW64),
      entry<D::TileW128>(AwqTile::kW128),
      entry<D::StreamM8Wide<false>, D::StreamM8WideDirect<false>>(AwqTile::kSt8w)};
  static const TileTable turing_tiles = {
      entry<D::TileS16<true>>(AwqTile::kS16),  entry<D::TileS32<true>>(AwqTile::kS32),
      entry<D::TileM64<true>>(AwqTile::kM64),  entry<D::TileL128<true>>(AwqTile::kL128),
      entry<D::StreamM8<true>>(AwqTile::kSt8), entry<D::StreamM16<true>>(AwqTile::kSt16),
      entry<D::TileW64>(AwqTile::kW64),        entry<D::TileW128>(AwqTile::kW128),
      entry<D::StreamM8Wide<true>>(AwqTile::kSt8w)};
  return turing ? turing_tiles : tensor_core;
}

#ifdef AWQD_HAS_SM90A
constexpr bool kBuiltForSm90a = true;
#else
constexpr bool kBuiltForSm90a = false;
#endif

struct FamilyCaps {
  bool available = false;
  std::string why_not;                      // when unavailable
  std::string hopper_why_not;               // when the Hopper tiles are unavailable
  std::array<int, kTiles> blocks_per_sm{};  // occupancy of each tile (0: not on this GPU)
  std::array<bool, kTiles> pdl{};           // its code is sm_90+: Programmatic Dependent Launch
  std::array<bool, kTiles> direct_x{};      // its kDirectX variant fits the SMs as it does
  std::array<bool, kTiles> fold{};          // its folded-norm variants do (AwqGemmPlan::fold)
};

struct DeviceCaps {
  int sm = 0;   // 75, 80, 90, ...
  int sms = 0;  // multiprocessors
  int l2_bytes = 0;
  double memory_bytes_per_us = 0;  // peak, from the memory clock and bus width
  FamilyCaps tensor_core, turing;
};

// Can this device run the family's kernels (code for its architecture, the instructions they
// need), and how many blocks of each tile fit on a multiprocessor?
FamilyCaps probe_family(bool turing, int sm) {
  FamilyCaps caps;
  const int min_arch = turing ? 75 : 80;
  if (sm < min_arch) {
    caps.why_not =
        "needs sm_" + std::to_string(min_arch) + "+, this GPU is sm_" + std::to_string(sm);
    return caps;
  }
  if (turing)
    caps.hopper_why_not = "the Hopper tiles belong to the tensor-core path";
  else if (sm != 90)
    caps.hopper_why_not = "the Hopper tiles need an sm_90 GPU (wgmma), this one is sm_" +
                          std::to_string(sm);
  else if (!kBuiltForSm90a)
    caps.hopper_why_not =
        "awqd_kernels was built without sm_90a code (add 90a to AWQD_CUDA_ARCHS)";
  for (int i = 0; i < kTiles; ++i) {
    const TileEntry& e = tile_table(turing)[i];
    if (e.hopper && !caps.hopper_why_not.empty()) continue;  // blocks_per_sm stays 0
    cudaFuncAttributes attr{};
    if (cudaFuncGetAttributes(&attr, e.kernel()) != cudaSuccess || attr.ptxVersion < min_arch) {
      cudaGetLastError();  // clear a "no kernel image" error
      caps.why_not =
          "awqd_kernels has no code of compute capability >= " + std::to_string(min_arch) +
          " for this GPU (sm_" + std::to_string(sm) +
          "); rebuild with AWQD_CUDA_ARCHS including it";
      return caps;
    }
    int blocks = 0;
    if (cudaFuncSetAttribute(e.kernel(), cudaFuncAttributeMaxDynamicSharedMemorySize, e.smem) !=
            cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, e.kernel(), e.threads, e.smem) !=
            cudaSuccess ||
        blocks < 1) {
      cudaGetLastError();
      // The stream tiles, sized for the H100's shared memory with their cp.async rings (st8w
      // needs 182 KB, st16 108 KB), are optional: where one does not fit (the A100's 164 KB, the
      // 99 KB of sm_86/89) tile_for takes the s16 tile instead.
      if (e.stream) continue;  // blocks_per_sm stays 0
      caps.why_not = "tile " + std::string(awq_tile_name(e.tile)) + " does not fit this GPU (" +
                     std::to_string(e.smem) + " bytes of shared memory)";
      return caps;
    }
    caps.blocks_per_sm[i] = blocks;
    // A variant of the tile (the planner probes the tile): usable where it fits as many blocks.
    auto fits_as_the_tile = [&](const void* kernel) {
      int variant_blocks = 0;
      const bool ok =
          cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, e.smem) ==
              cudaSuccess &&
          cudaOccupancyMaxActiveBlocksPerMultiprocessor(&variant_blocks, kernel, e.threads,
                                                        e.smem) == cudaSuccess &&
          variant_blocks == blocks;
      cudaGetLastError();
      return ok;
    };
    if (e.kernel_direct != nullptr) caps.direct_x[i] = fits_as_the_tile(e.kernel_direct());
    if (e.kernel_fold != nullptr)
      caps.fold[i] = fits_as_the_tile(e.kernel_fold()) &&
                     (!caps.direct_x[i] || fits_as_the_tile(e.kernel_direct_fold()));
    // griddepcontrol is compiled into code for compute_90+ only: without it a PDL launch would
    // race. ptxVersion, not binaryVersion: PTX for compute_75 JIT-compiled on an H100 has a
    // binaryVersion of 90 and no griddepcontrol.
    caps.pdl[i] = sm >= 90 && attr.ptxVersion >= 90;
  }
  caps.available = true;
  return caps;
}

const DeviceCaps& device_caps() {
  static std::mutex mutex;
  static std::map<int, DeviceCaps> by_device;
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = by_device.find(device);
    if (it != by_device.end()) return it->second;
  }
  // Probed without the lock (cudaFuncSetAttribute can wait for a busy device: see
  // kernels/cublaslt_gemm.cc on tensor parallelism); a thread that raced us keeps its equal copy.
  DeviceCaps caps;
  int major = 0, minor = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
  CUDA_CHECK(cudaDeviceGetAttribute(&caps.sms, cudaDevAttrMultiProcessorCount, device));
  CUDA_CHECK(cudaDeviceGetAttribute(&caps.l2_bytes, cudaDevAttrL2CacheSize, device));
  int memory_khz = 0, bus_bits = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&memory_khz, cudaDevAttrMemoryClockRate, device));
  CUDA_CHECK(cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, device));
  caps.memory_bytes_per_us = std::max(2.0 * memory_khz * 1e3 * bus_bits / 8 / 1e6, 1e5);
  caps.sm = major * 10 + minor;
  caps.tensor_core = probe_family(false, caps.sm);
  caps.turing = probe_family(true, caps.sm);
  std::lock_guard<std::mutex> lock(mutex);
  return by_device.emplace(device, std::move(caps)).first->second;
}

// ---- planning ----
void check_weight(const AwqWeight& w) {
  if (w.group_size != 32 && w.group_size != 64 && w.group_size != 128)
    bad_argument("group size " + std::to_string(w.group_size) + " is not supported (32, 64, 128)");
  if (w.K <= 0 || w.K % w.group_size != 0)
    bad_argument("K=" + std::to_string(w.K) +
                 " must be a positive multiple of G=" + std::to_string(w.group_size));
  if (w.N <= 0 || w.N % 8 != 0)
    bad_argument("N=" + std::to_string(w.N) + " must be a positive multiple of 8");
  if (w.tiles == nullptr || w.scales == nullptr || w.zeros == nullptr)
    bad_argument("the weight has a null tensor");
  if (reinterpret_cast<std::uintptr_t>(w.tiles) % 16 != 0 ||
      reinterpret_cast<std::uintptr_t>(w.scales) % 16 != 0 ||
      reinterpret_cast<std::uintptr_t>(w.zeros) % 16 != 0)
    bad_argument("the weight tensors must be 16-byte aligned");
}

// Measured on the H100 (docs/PERF.md, run 3): dequantize + cuBLASLt beat the l128 tile from
// M = 128 on qkv and o (K * N <= 25 M) and from M = 256 on gate_up and down (58 M, 117 M), where
// dequantizing (a K x N fp16 write) costs more against the tile's time.
bool hopper_tiles(const FamilyCaps& family) {
  return family.blocks_per_sm[static_cast<int>(AwqTile::kW64)] > 0 &&
         family.blocks_per_sm[static_cast<int>(AwqTile::kW128)] > 0;
}

// With the Hopper tiles (wgmma; run 15): from M = 256 on qkv and o (o at 256: 31.0 us vs w64's
// 40.0; at 128 the tiles win: qkv 38.4 vs 46.6), from kHopperDequantM on all (gate_up at 256:
// w128 152 us vs 210; at 512: 305 vs 269).
bool dequant_beats_tiles(int M, int K, int N, bool hopper) {
  const bool small_weight = static_cast<long long>(K) * N <= (32ll << 20);
  if (hopper) return M >= kHopperDequantM || (M >= 2 * kDequantMinM && small_weight);
  return M >= kDequantAlwaysM || (M >= kDequantMinM && small_weight);
}

// M <= 16: the stream kernel (up to 8 rows; 9-16 on the smaller weights with the Hopper tiles:
// the s16 tile, below). Beyond, the s32 and m64 tiles: st16 with ceil(M / 16) m-blocks measured
// 1.3-2.2x slower than them at M = 32-64 on the H100 (run 7, docs/PERF.md).
constexpr int kStreamMaxM = 16;
static_assert(kStreamMaxM >= 16, "the stream kernel serves decode (M <= 16) in any case");

// Split-K factor for `tiles` output tiles of `k_tiles` k-tiles each. Cost, in k-tiles of one
// block: waves of blocks x k-tiles per block, inflated when the blocks fill only part of the
// GPU's block slots (the weights then stream with fewer bytes in flight); each split adds the
// writing of its partial tile and, for the last block, the reading of all of them (rows_eff rows
// of fp32 against 64 rows of int4 per k-tile, from L2, counted at a quarter of their size).
int choose_splits(int tiles, int k_tiles, int sms, int blocks_per_sm, int rows_eff) {
  const long long capacity = static_cast<long long>(sms) * blocks_per_sm;
  if (tiles >= capacity) return 1;
  int best = 1;
  double best_cost = std::numeric_limits<double>::infinity();
  for (int s = 1; s <= std::min(k_tiles, 32); ++s) {
    const long long blocks = static_cast<long long>(tiles) * s;
    const double waves = std::ceil(static_cast<double>(blocks) / capacity);
    const double fill = static_cast<double>(std::min(blocks, capacity)) / capacity;
    const double per_block =
        std::ceil(static_cast<double>(k_tiles) / s) + (s > 1 ? rows_eff / 32.0 : 0.0);
    const double cost = waves * per_block / fill + (s > 1 ? s * rows_eff / 48.0 : 0.0);
    if (cost < best_cost * 0.999) {
      best_cost = cost;
      best = s;
    }
  }
  return best;
}

struct Shape {
  int k_pad, n_pad, k_tiles, n_stripes;
};
Shape shape_of(const AwqWeight& w) {
  const int k_pad = L::pad_k(w.K), n_pad = L::pad_n(w.N);
  return {k_pad, n_pad, k_pad / 64, n_pad / L::kStripeCols};
}

// Workspace split of the dequant path: [counters][cuBLASLt workspace][fp16 weight chunk].
struct DequantLayout {
  std::size_t cublas_bytes = 0;
  int max_chunk_cols = 0;  // what the workspace holds; 0: not even one stripe
  int chunk_cols = 0;      // what a call uses
};
DequantLayout dequant_layout(const AwqWorkspace& ws, int K, int n_pad) {
  DequantLayout d;
  if (ws.ptr == nullptr || ws.bytes <= kCounterBytes) return d;
  const std::size_t avail = ws.bytes - kCounterBytes;
  d.cublas_bytes = std::min(kCublasWorkspaceBytes, avail / 2) / 256 * 256;
  const std::size_t cols = (avail - d.cublas_bytes) / (static_cast<std::size_t>(K) * 2) / 64 * 64;
  d.max_chunk_cols = static_cast<int>(std::min<std::size_t>(cols, n_pad));
  return d;
}

// Columns dequantized per cuBLASLt call: small enough that the fp16 chunk (K x cols) stays in
// about 40% of the L2 between the dequantize kernel writing it and cuBLASLt reading it, but wide
// enough for two waves of 128 x 256 cuBLASLt tiles at this M.
int dequant_chunk_cols(int M, int K, const DeviceCaps& caps) {
  const long long l2_cols = static_cast<long long>(0.4 * caps.l2_bytes) / (2ll * K) / 64 * 64;
  const long long wave_cols = (2ll * caps.sms * 128 * 256 / std::max(M, 1) + 63) / 64 * 64;
  return static_cast<int>(std::min<long long>(std::max({l2_cols, wave_cols, 256ll}), 1 << 30));
}

// Split-K factor of the stream kernel: the power of two nearest kStreamBlocksPerSm x SMs /
// stripes, at most 8. An earlier latency model chose 1-4 splits where 4-8 measured up to 2.2x
// faster (down at M = 1: 40.1 us with 4 splits, 17.9 us with 8); run 7's sweep found the best
// split of every Llama-3-8B shape at M = 1..16 on this rule: qkv (96 stripes) 4, o and down
// (64) 8, gate_up (448) 1.
int stream_splits(int n_stripes, const DeviceCaps& caps) {
  const double ideal = kStreamBlocksPerSm * caps.sms / std::max(n_stripes, 1);
  const int p = static_cast<int>(std::lround(std::log2(std::max(ideal, 1.0))));
  return 1 << std::clamp(p, 0, 3);
}

// st8w (16 warps on one stripe per block, one block per SM) instead of st8, for M <= 8: where the
// stripes alone leave SMs idle, st8 splits K over up to 8 blocks per stripe that meet in the
// workspace or a cluster; st8w splits it over its 16 warps and across at most
// kMaxClusterSplits blocks, as many as the SMs allow. Run 30 (H100, M = 1 and 8, sweep without
// PDL): o (64 stripes, 2 splits, 1 batch per warp) 9.3 / 10.0 us against st8's best 10.8 / 11.9,
// qkv (96 stripes, 1 split, 2 batches) 12.0 / 13.3 against 12.6 / 14.0; down (64 stripes, 3.5
// batches per warp) 20.7 / 26.0 against 20.1 / 23.0: so at first only up to 2 batches per warp.
// With the cp.async ring (run 36), which keeps a warp's next batch streaming, run 61's sweep (an
// H200, without PDL) put down at M = 1 / 4 / 8 at 13.56 / 16.39 / 19.22 us with st8w and 2
// splits against st8's best 15.84 / 17.33 / 19.96 (8 splits): so up to 4 (down's 3.5). Not yet
// re-measured on an H100.
constexpr int kWideMaxBatchesPerWarp = 4;

int wide_stream_splits(int n_stripes, int blocks_per_sm, const DeviceCaps& caps) {
  return std::clamp(blocks_per_sm * caps.sms / std::max(n_stripes, 1), 1, kMaxClusterSplits);
}

// st8w's blocks (one per stripe and m-block) fit one wave of the GPU, with the Hopper tiles: the
// precondition of st8w at M <= 8 (wide_stream_pays), and at M = 9-16 the whole rule, st8w then
// running as two m-blocks of 8 rows (each launch of its per-lane variant) however many batches
// per warp. Run 104 (H200, sweep with PDL, M = 16, us): o 8.06 (st8w, 1 split) against s16's
// 11.82, down 19.25 against st16's 22.32, the TP-2 shards 2048x4096 5.66 / 9.35, 4096x3072 7.60 /
// 10.66, 7168x4096 11.49 / 15.18; qkv (96 stripes, 192 blocks: 1.5 waves) 14.50 against s16's
// 13.71 (so not there).
bool wide_stream_fits_one_wave(const Shape& sh, int m_blocks, bool turing, const DeviceCaps& caps) {
  const FamilyCaps& family = turing ? caps.turing : caps.tensor_core;
  const int per_sm = family.blocks_per_sm[static_cast<int>(AwqTile::kSt8w)];
  return hopper_tiles(family) && per_sm > 0 &&
         static_cast<long long>(sh.n_stripes) * m_blocks <= static_cast<long long>(per_sm) * caps.sms;
}

// Measured on the H100 only: other GPUs (Ampere, the Turing path) keep st8 until measured there.
bool wide_stream_pays(const Shape& sh, bool turing, const DeviceCaps& caps) {
  if (!wide_stream_fits_one_wave(sh, 1, turing, caps)) return false;
  const FamilyCaps& family = turing ? caps.turing : caps.tensor_core;
  const TileEntry& e = tile_table(turing)[static_cast<int>(AwqTile::kSt8w)];
  const int per_sm = family.blocks_per_sm[static_cast<int>(AwqTile::kSt8w)];
  const int splits = wide_stream_splits(sh.n_stripes, per_sm, caps);
  const int batches = (sh.k_pad + 127) / 128;
  const int warps = e.threads / 32;
  return batches <= kWideMaxBatchesPerWarp * warps * splits;
}

// M = 9-16 with the Hopper tiles (runs 30-31, H100): the s16 tile beats st16 on weights up to
// kS16MaxWeight (at M = 16 without PDL qkv 14.5 vs 16.8 us, o 12.3 vs 16.3, down 26.5 vs 29.5;
// gate_up, 117 M, 50.4 vs 39.8). Since the stream kernel's exact-integer weights (run 96, H200,
// PDL, M = 9 / 16, st16 at its planned split): K = 14336 (down) st16 20.7 / 22.2 us vs s16 25.7 /
// 25.9, K = 7168 (down's TP-2 shard) 14.6 / 15.2 vs 15.8 / 16.1, while at K <= 4096 s16 stays
// ahead or level (o 11.7 / 11.8 vs st16 11.8 / 12.3, 2048x4096 8.6 / 9.4 vs 10.6 / 11.1; qkv
// 13.5 / 13.8 vs 12.8 / 13.8): so s16 only up to kS16MaxK as well. A fused SiLU input (down's,
// silu_mul_ld) keeps the stream kernel. Run 104 (H200, PDL, M = 12 / 16): gate_up's TP-2 shard
// (4096 x 14336, 58.7 M elements) st16 with its 2 splits 19.5 / 20.2 us against s16's 27.3 /
// 27.7, qkv (25.2 M) level (st16 13.0 / 13.8 against 13.6 / 13.7): so s16 up to 32 M elements.
constexpr long long kS16MaxWeight = 32ll << 20;
constexpr int kS16MaxK = 5120;

// The tile auto runs: M <= 8 st8, or st8w where it pays (above); 9-16 st8w where its two
// m-blocks per stripe fit one wave, else st16 or s16 (above).
// With the Hopper tiles (run 15, H100): w64 from M = 17 (it computes 64 rows whatever M is: at
// M = 32 gate_up 51.6 us vs s32's 62.5, down 31.3 vs 33.5), except on the smallest weights
// (K * N <= 16 M, o: s32 15.2 / 21.1 us at 32 / 64 vs 16.6 / 22.5); beyond 64, w128, except up
// to 128 where two m-blocks of w64 fit one wave (down at 128: 54.6 us vs w128's 77; at 256 w128
// 82 vs w64 123). Run 91 (H200, PDL) moved that line from "N < 6144" to the wave: at M = 128 qkv
// w64/s2 34.4 us vs w128/s5 42.5, gate_up's tensor-parallel-2 shard (N = 14336, 112 w64 tiles)
// w64/s1 45.3 vs w128/s2 58.2; gate_up (224 w64 tiles) keeps w128/s1, 68.6 vs w64's 89.7.
AwqTile tile_for(int M, const AwqWeight& w, const Shape& sh, bool turing, const DeviceCaps& caps,
                 bool stream_only) {
  const FamilyCaps& family = turing ? caps.turing : caps.tensor_core;
  const int K = w.K, N = w.N;
  // A stream tile that does not fit this GPU (device_caps) falls back to the s16 tile.
  auto fits = [&](AwqTile t) { return family.blocks_per_sm[static_cast<int>(t)] > 0; };
  if (M <= 8) {
    if (wide_stream_pays(sh, turing, caps)) return AwqTile::kSt8w;
    return fits(AwqTile::kSt8) ? AwqTile::kSt8 : AwqTile::kS16;
  }
  if (M <= kStreamMaxM && wide_stream_fits_one_wave(sh, (M + 7) / 8, turing, caps))
    return AwqTile::kSt8w;
  if (M <= kStreamMaxM)
    return (hopper_tiles(family) && !stream_only && K <= kS16MaxK &&
            static_cast<long long>(K) * N <= kS16MaxWeight) ||
                   !fits(AwqTile::kSt16)
               ? AwqTile::kS16
               : AwqTile::kSt16;
  if (hopper_tiles(family)) {
    if (M <= 64 && static_cast<long long>(K) * N <= (16ll << 20)) return AwqTile::kS32;
    if (M <= 64) return AwqTile::kW64;
    const int w64 = static_cast<int>(AwqTile::kW64);
    const int w64_stripes = tile_table(turing)[w64].stripes;
    const long long w64_tiles = static_cast<long long>((M + 63) / 64) *
                                ((sh.n_stripes + w64_stripes - 1) / w64_stripes);
    const long long wave = static_cast<long long>(caps.sms) * family.blocks_per_sm[w64];
    return M <= 128 && w64_tiles <= wave ? AwqTile::kW64 : AwqTile::kW128;
  }
  if (M <= 32) return AwqTile::kS32;  // (with kStreamMaxM below 64)
  if (M <= 64) return AwqTile::kM64;
  return AwqTile::kL128;
}

// Split-K of the Hopper (wgmma) tiles: as many splits as fill one wave (run 13's sweep: the best
// split count of every shape and M; the model of choose_splits picked 2 for gate_up's 112 tiles,
// 24 % slower), stepped down to a count that divides the k-tiles evenly where one at least 3/4
// of it does. Run 91 (H200, PDL): qkv (24 tiles, 64 k-tiles) at M = 64 w64/s4 21.5 us against
// s5 23.6, its tensor-parallel-2 shard at M = 128 21.9 against 24.1; at M = 32 16.95 against 17.1.
int hopper_splits(int tiles, int k_tiles, int blocks_per_sm, const DeviceCaps& caps) {
  const int wave = std::max(1, caps.sms * blocks_per_sm / std::max(tiles, 1));
  for (int s = wave; 4 * s >= 3 * wave; --s)
    if (k_tiles % s == 0) return s;
  return wave;
}

struct TensorCorePlan {
  const TileEntry* tile = nullptr;
  int n_blocks = 0, m_blocks = 0, splits = 1;
  int rows_per_launch = 0;  // M is split into launches of at most this many rows
  int batches = 0;          // stream kernel: 128-row batches of K
  int phase_batches = 0;    // stream kernel: batches of activations staged at once
  int x_stride = 0;         // stream kernel: shared-memory row stride of the activations, halves
  bool pdl = false;
  bool cluster = false;   // stream kernel: split-K through a cluster of the stripe's splits
  bool direct_x = false;  // stream kernel: launches of kDirectXMinRows+ rows take kDirectX
  bool fold = false;      // stream kernel: its folded-norm variants can run (FamilyCaps::fold)
};

TensorCorePlan plan_stream(int M, const AwqWeight& w, const Shape& sh, const TileEntry& e,
                           int blocks_per_sm, const DeviceCaps& caps, const AwqGemmOptions& o,
                           std::size_t partial_bytes, bool cluster_ok) {
  TensorCorePlan plan;
  plan.tile = &e;
  plan.n_blocks = (sh.n_stripes + e.stripes - 1) / e.stripes;
  plan.rows_per_launch = std::min(M, 65535 * e.bm);
  plan.m_blocks = (plan.rows_per_launch + e.bm - 1) / e.bm;
  const int rows = std::min(plan.rows_per_launch, e.bm);
  plan.batches = (sh.k_pad + 127) / 128;
  int splits = o.splits > 0                  ? o.splits
               : e.tile == AwqTile::kSt8w ? wide_stream_splits(sh.n_stripes * plan.m_blocks, blocks_per_sm, caps)
                                          : stream_splits(sh.n_stripes, caps);
  splits = std::min(splits, plan.batches);
  // sm_90: up to 8 splits (the portable cluster size) add through a cluster, no workspace.
  plan.cluster = o.cluster_reduce && cluster_ok && splits > 1 && splits <= kMaxClusterSplits;
  if (!plan.cluster) {
    // What the workspace allows: a counter per (stripe, m-block), the partial sums of each split.
    const std::size_t split_bytes =
        static_cast<std::size_t>(plan.rows_per_launch) * w.N * sizeof(float);
    if (splits > 1 && (partial_bytes == 0 || plan.n_blocks * plan.m_blocks > kMaxCounters))
      splits = 1;
    if (splits > 1)
      splits = static_cast<int>(std::min<std::size_t>(splits, partial_bytes / split_bytes));
  }
  plan.splits = std::max(splits, 1);
  plan.phase_batches = e.phase_batches(rows, (plan.batches + plan.splits - 1) / plan.splits);
  plan.x_stride = plan.phase_batches * 128 + 8;
  return plan;
}

TensorCorePlan plan_tensor_core(int M, const AwqWeight& w, const Shape& sh, bool turing,
                                const DeviceCaps& caps, const AwqGemmOptions& o,
                                std::size_t partial_bytes) {
  const FamilyCaps& family = turing ? caps.turing : caps.tensor_core;
  AwqTile tile =
      o.tile == AwqTile::kAuto ? tile_for(M, w, sh, turing, caps, o.silu_mul_ld > 0) : o.tile;
  if (o.batch_invariant) tile = AwqTile::kS16;
  if (family.blocks_per_sm[static_cast<int>(tile)] == 0)
    bad_argument(std::string("tile ") + awq_tile_name(tile) + " is unavailable: " +
                 family.hopper_why_not);
  if (tile_table(turing)[static_cast<int>(tile)].stream) {
    const int si = static_cast<int>(tile);
    // Clusters need the same sm_90 code as PDL (family.pdl).
    TensorCorePlan plan = plan_stream(M, w, sh, tile_table(turing)[si], family.blocks_per_sm[si],
                                      caps, o, partial_bytes, family.pdl[si]);
    plan.pdl = o.pdl && family.pdl[si] && M <= kPdlMaxM;
    plan.direct_x = family.direct_x[si] && o.direct_x;
    plan.fold = family.fold[si];
    return plan;
  }
  TensorCorePlan plan;
  const int ti = static_cast<int>(tile);
  plan.tile = &tile_table(turing)[ti];
  plan.pdl = o.pdl && family.pdl[ti] && M <= kPdlMaxM;
  const int bm = plan.tile->bm;
  plan.n_blocks = (sh.n_stripes + plan.tile->stripes - 1) / plan.tile->stripes;
  const int blocks_per_sm = family.blocks_per_sm[ti];
  const std::size_t row_bytes = static_cast<std::size_t>(w.N) * sizeof(float);
  const bool have_counters = partial_bytes > 0;

  if (o.batch_invariant) {
    // Splits from N and K only; rows go in launches small enough for the counters and partials.
    plan.splits = o.splits > 0
                      ? std::min(o.splits, sh.k_tiles)
                      : choose_splits(plan.n_blocks, sh.k_tiles, caps.sms, blocks_per_sm, 1);
    long long rows = std::min<long long>(M, 65535ll * bm);
    if (plan.splits > 1) {
      rows = std::min<long long>(rows, static_cast<long long>(kMaxCounters / plan.n_blocks) * bm);
      rows = std::min<long long>(rows,
                                 static_cast<long long>(partial_bytes / (row_bytes * plan.splits)));
      if (!have_counters || rows < 1)
        bad_argument("batch_invariant needs a workspace of at least " +
                     std::to_string(kCounterBytes + row_bytes * plan.splits) +
                     " bytes (awq_gemm_workspace_bytes)");
    }
    plan.rows_per_launch = static_cast<int>(rows);
  } else {
    plan.rows_per_launch = std::min(M, 65535 * bm);
    const int m_blocks = (plan.rows_per_launch + bm - 1) / bm;
    const int tiles = plan.n_blocks * m_blocks;
    int splits = o.splits > 0      ? o.splits
                 : plan.tile->hopper ? hopper_splits(tiles, sh.k_tiles, blocks_per_sm, caps)
                                   : choose_splits(tiles, sh.k_tiles, caps.sms, blocks_per_sm,
                                                   std::min(M, bm));
    splits = std::min(splits, sh.k_tiles);
    // What the workspace allows: a counter per tile, the partial sums of every split.
    if (splits > 1 && (!have_counters || tiles > kMaxCounters)) splits = 1;
    if (splits > 1)
      splits = static_cast<int>(
          std::min<std::size_t>(splits, partial_bytes / (row_bytes * static_cast<std::size_t>(M))));
    plan.splits = std::max(splits, 1);
    if (M > plan.rows_per_launch) plan.splits = 1;  // more than 65535 row blocks: one pass each
  }
  plan.m_blocks = (plan.rows_per_launch + bm - 1) / bm;
  return plan;
}

struct Resolved {
  AwqGemmPath path;
  TensorCorePlan tc;
  DequantLayout dq;
};

Resolved resolve(int M, const AwqWeight& w, const AwqWorkspace& ws, const AwqGemmOptions& o,
                 const DeviceCaps& caps) {
  check_weight(w);
  if (M < 0) bad_argument("M=" + std::to_string(M) + " is negative");
  if (ws.ptr == nullptr && ws.bytes != 0)
    bad_argument("workspace of " + std::to_string(ws.bytes) + " bytes at nullptr");
  if (reinterpret_cast<std::uintptr_t>(ws.ptr) % 256 != 0)
    bad_argument("the workspace must be 256-byte aligned");
  if (o.splits < 0) bad_argument("options.splits must be >= 0");
  if (o.tile != AwqTile::kAuto && (static_cast<int>(o.tile) < 0 || o.tile >= AwqTile::kCount))
    bad_argument("unknown tile");
  const Shape sh = shape_of(w);
  Resolved r;
  r.dq = dequant_layout(ws, w.K, sh.n_pad);
  r.path = o.path;
  if (r.path == AwqGemmPath::kAuto) {
    const bool forced_shape = o.tile != AwqTile::kAuto || o.splits != 0 || o.batch_invariant;
    if (!forced_shape && dequant_beats_tiles(M, w.K, w.N, hopper_tiles(caps.tensor_core)) &&
        r.dq.max_chunk_cols >= std::min(sh.n_pad, kDequantMinChunkCols))
      r.path = AwqGemmPath::kDequantCublas;
    else
      r.path = caps.tensor_core.available ? AwqGemmPath::kTensorCore : AwqGemmPath::kTuring;
  }
  switch (r.path) {
    case AwqGemmPath::kTensorCore:
      if (!caps.tensor_core.available)
        bad_argument("the tensor-core path is unavailable: " + caps.tensor_core.why_not);
      break;
    case AwqGemmPath::kTuring:
      if (!caps.turing.available)
        bad_argument("the Turing path is unavailable: " + caps.turing.why_not);
      break;
    case AwqGemmPath::kDequantCublas:
      if (r.dq.max_chunk_cols < 64)
        bad_argument("the dequantize + cuBLASLt path needs a workspace of at least " +
                     std::to_string(kCounterBytes + 2 * (std::size_t{64} * w.K * 2)) + " bytes");
      if (o.batch_invariant) bad_argument("batch_invariant runs the tensor-core kernels only");
      break;
    default:
      bad_argument("unknown path");
  }
  if (r.path == AwqGemmPath::kDequantCublas) {
    if (o.dequant_chunk_cols < 0 || o.dequant_chunk_cols % 64 != 0)
      bad_argument("options.dequant_chunk_cols must be a multiple of 64");
    const int want =
        o.dequant_chunk_cols > 0 ? o.dequant_chunk_cols : dequant_chunk_cols(M, w.K, caps);
    r.dq.chunk_cols = std::min({want, r.dq.max_chunk_cols, sh.n_pad});
  } else if (M > 0) {
    const std::size_t partial_bytes = ws.bytes > kCounterBytes ? ws.bytes - kCounterBytes : 0;
    r.tc = plan_tensor_core(M, w, sh, r.path == AwqGemmPath::kTuring, caps, o, partial_bytes);
  }
  if (o.silu_mul_ld != 0) {
    if (o.silu_mul_ld < 2 * w.K || o.silu_mul_ld % 8 != 0)
      bad_argument("silu_mul_ld=" + std::to_string(o.silu_mul_ld) +
                   " must be a multiple of 8 and at least 2K=" + std::to_string(2 * w.K));
    if (M > 0 && (r.path == AwqGemmPath::kDequantCublas || !r.tc.tile->stream))
      bad_argument("silu_mul_ld needs the stream kernel (M <= " + std::to_string(kStreamMaxM) +
                   ", not batch_invariant, no tiled tile forced); M=" + std::to_string(M));
  }
  const AwqGemmOptions::NormOut& no = o.norm_out;
  const bool fold_out = no.residual != nullptr || no.weight != nullptr || no.sumsq != nullptr;
  if (fold_out || o.norm_in_sumsq != nullptr) {
    if (M > 0 && (r.path == AwqGemmPath::kDequantCublas || !r.tc.tile->stream || !r.tc.fold))
      bad_argument("a folded norm (norm_out, norm_in_sumsq) needs the stream kernel (M <= " +
                   std::to_string(kStreamMaxM) + ", not batch_invariant, no tiled tile forced) "
                   "with its folded-norm variant on this GPU (AwqGemmPlan::fold); M=" +
                   std::to_string(M));
    if (!(o.norm_eps >= 0.0f)) bad_argument("norm_eps must be >= 0");
  }
  if (fold_out) {
    if (no.residual == nullptr || no.weight == nullptr || no.sumsq == nullptr)
      bad_argument("norm_out needs residual, weight and sumsq");
    if (w.N % 64 != 0) bad_argument("norm_out needs N % 64 == 0; N=" + std::to_string(w.N));
    if (reinterpret_cast<std::uintptr_t>(no.residual) % 16 != 0 ||
        reinterpret_cast<std::uintptr_t>(no.weight) % 16 != 0 ||
        reinterpret_cast<std::uintptr_t>(no.sumsq) % 16 != 0)
      bad_argument("norm_out's residual, weight and sumsq must be 16-byte aligned");
  }
  if (o.norm_in_sumsq != nullptr && w.K % 64 != 0)
    bad_argument("norm_in_sumsq needs K % 64 == 0; K=" + std::to_string(w.K));
  return r;
}

AwqGemmPlan describe(int M, const AwqWeight& w, const Resolved& r) {
  AwqGemmPlan plan;
  plan.path = r.path;
  if (r.path == AwqGemmPath::kDequantCublas) {
    plan.chunk_cols = r.dq.chunk_cols;
    const int chunk = std::min(r.dq.chunk_cols, L::pad_n(w.N));
    plan.workspace_used =
        kCounterBytes + r.dq.cublas_bytes + static_cast<std::size_t>(chunk) * w.K * 2;
  } else if (r.tc.tile != nullptr) {
    plan.tile = r.tc.tile->tile;
    plan.splits = r.tc.splits;
    plan.grid_blocks = r.tc.n_blocks * r.tc.m_blocks * r.tc.splits;
    plan.pdl = r.tc.pdl;
    plan.cluster = r.tc.cluster;
    plan.direct_x = r.tc.direct_x && M >= kDirectXMinRows;
    plan.fold = r.tc.fold;
    plan.workspace_used = r.tc.splits > 1 && !r.tc.cluster
                              ? kCounterBytes + static_cast<std::size_t>(r.tc.splits) *
                                                                std::min(M, r.tc.rows_per_launch) *
                                                                w.N * sizeof(float)
                                          : 0;
  }
  return plan;
}

// ---- dequantize kernel ----
// Block: 4 warps, one stripe, 64 k-rows (a warp per 16-row tile). Each lane dequantizes its 32
// values with the GEMM kernels' own code (so the fp16 values are identical), the block transposes
// them through shared memory and writes 64 rows x 128 bytes, coalesced.
__global__ void __launch_bounds__(128)
    awq_dequantize_kernel(const uint4* tiles, const __half* scales, const std::uint32_t* zeros,
                          int k_pad, int groups, int group_shift, int K, int stripe_begin,
                          __half* out, int ld_out) {
  using namespace awq_device;
  __shared__ __align__(16) __half tile[64][64 + 8];  // +8: rows stay 16-byte aligned, banks spread
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;
  const int stripe = stripe_begin + blockIdx.x;
  const int kb = blockIdx.y * 4 + warp;  // 16-row tile
  const uint4 w = tiles[(static_cast<std::size_t>(stripe) * (k_pad / 16) + kb) * 32 + lane];
  const std::size_t sg = static_cast<std::size_t>(stripe) * groups + ((kb * 16) >> group_shift);
  GroupConsts consts;
  load_group_consts(*reinterpret_cast<const uint4*>(scales + sg * 64 + g * 8), zeros[sg * 8 + g],
                    consts);
  const std::uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    std::uint32_t b[2][2];
    dequant_word(words[j], consts, j, b);
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int k = warp * 16 + 2 * t + 8 * r, n = 16 * j + 8 * h + g;
        __half2 pair;
        std::memcpy(&pair, &b[h][r], sizeof(pair));
        tile[k][n] = __low2half(pair);
        tile[k + 1][n] = __high2half(pair);
      }
  }
  __syncthreads();
  for (int c = threadIdx.x; c < 64 * 8; c += 128) {
    const int r = c >> 3, cc = c & 7;
    const int k = blockIdx.y * 64 + r;
    if (k < K)
      *reinterpret_cast<uint4*>(out + static_cast<std::size_t>(k) * ld_out + blockIdx.x * 64 +
                                cc * 8) = *reinterpret_cast<const uint4*>(&tile[r][cc * 8]);
  }
}

int log2_of(int v) {
  int s = 0;
  while ((1 << s) < v) ++s;
  return s;
}

void run_tensor_core(const __half* x, const AwqWeight& w, const __half* bias, __half* y, int M,
                     const AwqWorkspace& ws, const TensorCorePlan& plan, const AwqGemmOptions& o,
                     cudaStream_t stream) {
  const int silu_mul_ld = o.silu_mul_ld;
  const Shape sh = shape_of(w);
  D::Params p{};
  p.tiles = w.tiles;
  p.scales = w.scales;
  p.zeros = w.zeros;
  p.bias = bias;
  p.N = w.N;
  p.K = w.K;
  p.k_tiles = sh.k_tiles;
  p.n_stripes = sh.n_stripes;
  p.groups = sh.k_pad / w.group_size;
  p.group_shift = log2_of(w.group_size);
  p.splits = plan.splits;
  p.batches = plan.batches;
  p.phase_batches = plan.phase_batches;
  p.x_stride = plan.x_stride;
  p.cluster_reduce = plan.cluster ? 1 : 0;
  p.silu_mul = silu_mul_ld > 0 ? 1 : 0;
  p.x_ld = silu_mul_ld > 0 ? silu_mul_ld : w.K;
  if (plan.splits > 1 && !plan.cluster) {
    p.counters = static_cast<int*>(ws.ptr);
    p.partials = reinterpret_cast<float*>(static_cast<char*>(ws.ptr) + kCounterBytes);
  }
  D::NormFold f{};
  f.weight = o.norm_out.weight;
  f.eps = o.norm_eps;
  for (int row0 = 0; row0 < M; row0 += plan.rows_per_launch) {
    p.M = std::min(plan.rows_per_launch, M - row0);
    p.x = x + static_cast<std::size_t>(row0) * p.x_ld;
    p.y = y + static_cast<std::size_t>(row0) * w.N;
    const std::size_t r0 = static_cast<std::size_t>(row0);
    f.residual = o.norm_out.residual != nullptr ? o.norm_out.residual + r0 * w.N : nullptr;
    f.sumsq_out = o.norm_out.sumsq != nullptr ? o.norm_out.sumsq + r0 * (w.N / 64) : nullptr;
    f.sumsq_in = o.norm_in_sumsq != nullptr ? o.norm_in_sumsq + r0 * (w.K / 64) : nullptr;
    const unsigned m_blocks = (p.M + plan.tile->bm - 1) / plan.tile->bm;
    const dim3 grid = plan.tile->stream ? dim3(m_blocks, plan.n_blocks, plan.splits)
                                        : dim3(plan.n_blocks, m_blocks, plan.splits);
    const bool direct = plan.direct_x && p.M >= kDirectXMinRows;
    const bool fold = f.residual != nullptr || f.sumsq_in != nullptr;
    (fold ? (direct ? plan.tile->launch_direct_fold : plan.tile->launch_fold)
          : (direct ? plan.tile->launch_direct : plan.tile->launch))(p, f, grid, stream, plan.pdl);
    CUDA_CHECK_LAUNCH();
  }
}

void run_dequant_cublas(const __half* x, const AwqWeight& w, const __half* bias, __half* y, int M,
                        const AwqWorkspace& ws, const DequantLayout& dq, cudaStream_t stream) {
  char* base = static_cast<char*>(ws.ptr) + kCounterBytes;
  void* cublas_ws = base;
  auto* chunk = reinterpret_cast<__half*>(base + dq.cublas_bytes);
  const int n_pad = L::pad_n(w.N);
  for (int n0 = 0; n0 < w.N; n0 += dq.chunk_cols) {
    const int cols = std::min(dq.chunk_cols, n_pad - n0);
    awq_dequantize_f16(w, n0, cols, chunk, cols, stream);
    cublaslt_gemm_f16(x, w.K, chunk, cols, bias != nullptr ? bias + n0 : nullptr, y + n0, w.N, M,
                      std::min(cols, w.N - n0), w.K, cublas_ws, dq.cublas_bytes, stream);
  }
}

}  // namespace

// ---- public API ----
int awq_gemm_stream_max_m() {
  // 0 where auto would not run the stream kernel at M <= 16 (its tiles do not fit this GPU), so
  // callers do not ask for the inputs only it can fuse.
  const DeviceCaps& caps = device_caps();
  const FamilyCaps& family = caps.tensor_core.available ? caps.tensor_core : caps.turing;
  if (!family.available) return kStreamMaxM;  // awq_gemm will say why it cannot run at all
  for (AwqTile t : {AwqTile::kSt8, AwqTile::kSt16})
    if (family.blocks_per_sm[static_cast<int>(t)] == 0) return 0;
  return kStreamMaxM;
}

int awq_gemm_fp16_crossover_m(int K, int N) {
  // Without the Hopper tiles (run 7) fp16 matched the AWQ tiles from 64 on every shape.
  if (!hopper_tiles(device_caps().tensor_core)) return 64;
  // Run 25 (H100, auto with PDL against cuBLASLt fp16 on the same shapes, M = 17..128): the fp16
  // GEMM's time is flat in M there (its weight read), the AWQ plans' grows, and the smaller the
  // weight the earlier they meet: o (K * N = 16.8 M) ties at 17 (13.5 vs 13.4 us) and loses
  // from 24; qkv (25.2 M) crosses at ~40 (20.5 vs 20.7 us); down (58.7 M) between 64 (36.6 vs
  // 44.7) and 80 (53.6 vs 46.0); gate_up (117 M) still wins at 128 (77.6 vs 86.1).
  const double kn = static_cast<double>(K) * N;
  return kn <= 20e6 ? kStreamMaxM + 1 : kn <= 40e6 ? 40 : kn <= 80e6 ? 72 : 128;
}


const char* awq_gemm_path_name(AwqGemmPath path) {
  switch (path) {
    case AwqGemmPath::kAuto:
      return "auto";
    case AwqGemmPath::kTensorCore:
      return "tensor-core";
    case AwqGemmPath::kTuring:
      return "turing";
    case AwqGemmPath::kDequantCublas:
      return "dequant+cublaslt";
  }
  return "?";
}

const char* awq_tile_name(AwqTile tile) {
  switch (tile) {
    case AwqTile::kAuto:
      return "auto";
    case AwqTile::kS16:
      return "s16";
    case AwqTile::kS32:
      return "s32";
    case AwqTile::kM64:
      return "m64";
    case AwqTile::kL128:
      return "l128";
    case AwqTile::kSt8:
      return "st8";
    case AwqTile::kSt16:
      return "st16";
    case AwqTile::kW64:
      return "w64";
    case AwqTile::kW128:
      return "w128";
    case AwqTile::kSt8w:
      return "st8w";
    case AwqTile::kCount:
      break;
  }
  return "?";
}

AwqGemmPlan awq_gemm_plan(int M, const AwqWeight& w, AwqWorkspace ws,
                          const AwqGemmOptions& options) {
  return describe(M, w, resolve(M, w, ws, options, device_caps()));
}

AwqGemmPlan awq_gemm(const __half* x, const AwqWeight& w, const __half* bias, __half* y, int M,
                     AwqWorkspace ws, cudaStream_t stream, const AwqGemmOptions& options) {
  Resolved r = resolve(M, w, ws, options, device_caps());
  // PDL orders a kernel after the previous one of its own stream; the legacy default stream also
  // synchronizes with every other blocking stream, so it gets plain launches.
  if (stream == nullptr || stream == cudaStreamLegacy) r.tc.pdl = false;
  if (M == 0) return describe(M, w, r);
  if (x == nullptr || y == nullptr) bad_argument("x or y is null");
  if (reinterpret_cast<std::uintptr_t>(x) % 16 != 0) bad_argument("x must be 16-byte aligned");
  if (reinterpret_cast<std::uintptr_t>(y) % 4 != 0) bad_argument("y must be 4-byte aligned");
  if (bias != nullptr && reinterpret_cast<std::uintptr_t>(bias) % 4 != 0)
    bad_argument("bias must be 4-byte aligned");
  if (r.path == AwqGemmPath::kDequantCublas)
    run_dequant_cublas(x, w, bias, y, M, ws, r.dq, stream);
  else
    run_tensor_core(x, w, bias, y, M, ws, r.tc, options, stream);
  return describe(M, w, r);
}

void awq_dequantize_f16(const AwqWeight& w, int n_begin, int n_count, __half* out, int ld_out,
                        cudaStream_t stream) {
  check_weight(w);
  const Shape sh = shape_of(w);
  if (n_begin < 0 || n_count <= 0 || n_begin % 64 != 0 || n_count % 64 != 0 ||
      n_begin + n_count > sh.n_pad)
    bad_argument("dequantize: columns [" + std::to_string(n_begin) + ", +" +
                 std::to_string(n_count) + ") are not whole stripes of N=" + std::to_string(w.N));
  if (out == nullptr || reinterpret_cast<std::uintptr_t>(out) % 16 != 0 || ld_out < n_count ||
      ld_out % 8 != 0)
    bad_argument("dequantize: out must be 16-byte aligned with ld_out >= n_count, a multiple of 8");
  const dim3 grid(n_count / 64, sh.k_pad / 64);
  awq_dequantize_kernel<<<grid, 128, 0, stream>>>(w.tiles, w.scales, w.zeros, sh.k_pad,
                                                  sh.k_pad / w.group_size, log2_of(w.group_size),
                                                  w.K, n_begin / 64, out, ld_out);
  CUDA_CHECK_LAUNCH();
}

std::size_t awq_gemm_workspace_bytes(int max_M, int K, int N, int group_size) {
  const std::size_t n_pad = L::pad_n(N);
  std::size_t need = kCounterBytes;
  if (max_M >= kDequantMinM) {
    const std::size_t chunk =
        std::max<std::size_t>(std::min(kDequantChunkBytes, static_cast<std::size_t>(K) * n_pad * 2),
                              static_cast<std::size_t>(K) * 64 * 2);
    need = std::max(need, kCounterBytes + kCublasWorkspaceBytes + chunk);
  }
  // Split-K partial sums of the tensor-core plans below the dequant threshold, of every M up to
  // max_M (not samples of them: within one plan the need grows with M, so an M just below a
  // sample, or a max_M between two, could need more than any sample, and the planner would quietly
  // take fewer splits there). At most 511 plans of a few arithmetic steps each.
  AwqWeight probe;
  probe.K = K;
  probe.N = N;
  probe.group_size = group_size;
  const DeviceCaps& caps = device_caps();
  const bool turing = !caps.tensor_core.available;
  if (turing && !caps.turing.available) return need;
  const Shape sh{L::pad_k(K), static_cast<int>(n_pad), L::pad_k(K) / 64,
                 static_cast<int>(n_pad) / L::kStripeCols};
  const int tiled_max_M = (hopper_tiles(caps.tensor_core) ? kHopperDequantM : kDequantAlwaysM) - 1;
  for (int M = 1; M <= std::min(max_M, tiled_max_M); ++M) {
    const TensorCorePlan plan = plan_tensor_core(M, probe, sh, turing, caps, AwqGemmOptions{},
                                                 std::numeric_limits<std::size_t>::max() / 4);
    if (plan.splits > 1)
      need = std::max(
          need, kCounterBytes + static_cast<std::size_t>(plan.splits) * M * N * sizeof(float));
  }
  return need;
}

void awq_gemm_workspace_init(AwqWorkspace ws, cudaStream_t stream) {
  if (ws.ptr == nullptr) return;
  CUDA_CHECK(cudaMemsetAsync(ws.ptr, 0, std::min(ws.bytes, kCounterBytes), stream));
}

// ---- device weights ----
AwqDeviceWeight::AwqDeviceWeight(const AwqPackedWeight& packed) {
  if (packed.tiles.empty() || packed.scales.empty() || packed.zeros.empty())
    throw std::invalid_argument("AwqDeviceWeight: empty packed weight");
  try {
    void* tiles = nullptr;
    void* scales = nullptr;
    void* zeros = nullptr;
    view_.K = packed.K;
    view_.N = packed.N;
    view_.group_size = packed.group_size;
    CUDA_CHECK(cudaMalloc(&tiles, packed.tiles.size() * sizeof(std::uint32_t)));
    view_.tiles = static_cast<const uint4*>(tiles);
    CUDA_CHECK(cudaMalloc(&scales, packed.scales.size() * sizeof(std::uint16_t)));
    view_.scales = static_cast<const __half*>(scales);
    CUDA_CHECK(cudaMalloc(&zeros, packed.zeros.size() * sizeof(std::uint32_t)));
    view_.zeros = static_cast<const std::uint32_t*>(zeros);
    CUDA_CHECK(cudaMemcpy(tiles, packed.tiles.data(), packed.tiles.size() * sizeof(std::uint32_t),
                          cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(scales, packed.scales.data(),
                          packed.scales.size() * sizeof(std::uint16_t), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(zeros, packed.zeros.data(), packed.zeros.size() * sizeof(std::uint32_t),
                          cudaMemcpyHostToDevice));
  } catch (...) {
    release();
    throw;
  }
}

AwqDeviceWeight::~AwqDeviceWeight() { release(); }

AwqDeviceWeight::AwqDeviceWeight(AwqDeviceWeight&& other) noexcept : view_(other.view_) {
  other.view_ = AwqWeight{};
}

AwqDeviceWeight& AwqDeviceWeight::operator=(AwqDeviceWeight&& other) noexcept {
  if (this != &other) {
    release();
    view_ = other.view_;
    other.view_ = AwqWeight{};
  }
  return *this;
}

void AwqDeviceWeight::release() noexcept {
  cudaFree(const_cast<uint4*>(view_.tiles));
  cudaFree(const_cast<__half*>(view_.scales));
  cudaFree(const_cast<std::uint32_t*>(view_.zeros));
  view_ = AwqWeight{};
}

std::size_t AwqDeviceWeight::bytes() const {
  return view_.tiles == nullptr ? 0 : awq_weight_bytes(view_.K, view_.N, view_.group_size);
}

}  // namespace awqd::cuda
