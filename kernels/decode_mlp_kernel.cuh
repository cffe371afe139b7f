// The decode MLP kernel's device code (design: kernels/decode_mlp.cuh). Included by
// decode_mlp.cu and by the CPU emulation test (tests/emu/cuda_emulation.h, which defines
// AWQD_KERNEL_EMULATION and runs every block of the grid at once, so the grid barrier works).
#pragma once

#include <cuda_fp16.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "kernels/awq_gemm_device.cuh"
#include "kernels/half_pack.cuh"
#include "kernels/silu.cuh"

namespace awqd::cuda::decode_mlp_detail {

inline constexpr int kMaxRows = 8;         // rows (tokens) per call: one n8 tile of the mma
inline constexpr int kBatchRows = 128;     // k rows per unit: one AWQ group (G = 128 only)
inline constexpr int kSteps = 8;           // k16 steps per unit
inline constexpr int kXStride = 136;       // fp16 per staged activation row (+8: no bank conflicts)
// One ring slot: the unit's weights (8 steps x 32 lanes x 16 bytes), its group's 64 scales and
// 8 zero words (10 chunks of 16 bytes), the norm weight's 128 values, then kRows activation rows.
inline constexpr int kWeightBytes = kSteps * 32 * 16;
inline constexpr int kConstOffset = kWeightBytes;
inline constexpr int kNormOffset = kConstOffset + 10 * 16;
inline constexpr int kXOffset = kNormOffset + kBatchRows * 2;
constexpr int slot_bytes(int rows) { return kXOffset + rows * kXStride * 2; }
inline constexpr int kPartialFloats = 16 * 32;  // one warp's 64 columns x 8 rows of fp32 sums
inline constexpr int kPhases = 3;               // o_proj, gate_up_proj, down_proj
inline constexpr int kTracePoints = 2 + 2 * kPhases;

// A quantized linear in the repacked tile layout (kernels/awq_layout.cuh), K and N multiples of
// 128 and 64, G = 128.
struct Linear {
  const uint4* tiles = nullptr;
  const __half* scales = nullptr;
  const std::uint32_t* zeros = nullptr;
  const __half* bias = nullptr;  // [N] or null
  int stripes = 0;               // N / 64
  int batches = 0;               // K / 128 (= groups)
};

struct Params {
  Linear w[kPhases];          // o [q_size -> H], gate_up [H -> 2I], down [I -> H]
  const __half* attn;         // [M, attn_ld]: o_proj's input
  int attn_ld;
  __half* residual;           // [M, H], in place: + o_proj, then + down_proj
  __half* out;                // [M, H]: rmsnorm(residual) * next_norm
  __half* act;                // [M, I]: SiLU(gate) * up, down_proj's input
  const __half* post_norm;    // [H] post_attention_layernorm
  const __half* next_norm;    // [H] the next layer's input_layernorm (or the final norm)
  float eps;
  float* partials;            // [max stripes + warps][kPartialFloats]
  float* sumsq;               // [2][H / 64][kMaxRows]: per stripe, sum of the residual's squares
  int* counters;              // o stripes, gate_up pairs, down stripes (counter_base); zero between
  unsigned long long* barrier;  // grid barrier arrivals, never reset (see grid_barrier)
  // Benchmarks only (null otherwise): per block, kTracePoints %globaltimer stamps (ns): start,
  // after the PDL wait, then per phase the block's arrival at the barrier and its release.
  unsigned long long* trace;
  // Benchmarks only (0 otherwise; results are garbage when set): bit 0 leaves out the
  // dequantization and the mma (the weights' words are folded into the sums instead), bit 1 the
  // split-K join (no partial sums, counters or last-warp reduction).
  int experiment;
  int M, H, I;
};

// Where a phase's arrival counters start in Params::counters: o_proj's stripes, then gate_up's
// gate/up pairs (I / 64), then down_proj's stripes.
__host__ __device__ __forceinline__ int counter_base(const Params& p, int phase) {
  return phase == 0 ? 0 : phase == 1 ? p.w[0].stripes : p.w[0].stripes + p.I / 64;
}

// ---- the few operations the emulation supplies itself ----
#ifndef AWQD_KERNEL_EMULATION
__device__ __forceinline__ unsigned long long ld_acquire_u64(const unsigned long long* p) {
  unsigned long long v;
  asm volatile("ld.acquire.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ void spin_pause() { __nanosleep(64); }
__device__ __forceinline__ unsigned long long global_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t));
  return t;
}
__device__ __forceinline__ float warp_xor(float v, int mask) {
  return __shfl_xor_sync(0xffffffffu, v, mask);
}
__device__ __forceinline__ int warp_bcast(int v) { return __shfl_sync(0xffffffffu, v, 0); }
#endif

// Every block of the grid (all resident: one per SM, launched no wider) arrives; memory written
// before by any block is visible after. The counter counts arrivals forever (64 bits: no wrap):
// the blocks arriving at one barrier get old values g * n .. g * n + n - 1 for the same g, and
// wait for (g + 1) * n, so no reset between barriers or launches is needed.
// trace (benchmarks): where this block's arrival and release stamps go, or null.
__device__ __forceinline__ void grid_barrier(unsigned long long* counter, unsigned long long* trace) {
  __syncthreads();
  if (threadIdx.x == 0) {
    if (trace != nullptr) trace[0] = global_ns();
    __threadfence();
    const unsigned long long n = gridDim.x;
    const unsigned long long old = atomicAdd(counter, 1ull);
    const unsigned long long target = (old / n + 1) * n;
    while (ld_acquire_u64(counter) < target) spin_pause();
    __threadfence();
    if (trace != nullptr) trace[1] = global_ns();
  }
  __syncthreads();
}

// Units (stripe, 128-row batch) of a phase, stripe-major, dealt out in equal contiguous ranges to
// the first min(W, U) warps of the grid: warp w takes [w * U / warps, (w + 1) * U / warps), never
// empty, so the warps holding a stripe's units are a contiguous range. 32-bit arithmetic (the
// launcher checks U * W < 2^31): a 64-bit division is a ~70-instruction call.
struct Deal {
  unsigned units, warps;
  __device__ __forceinline__ unsigned lo(unsigned w) const { return w * units / warps; }
  // The warp whose range holds unit u.
  __device__ __forceinline__ unsigned warp_of(unsigned u) const {
    return ((u + 1) * warps + units - 1) / units - 1;
  }
  // First and last warp holding units of stripe s (of `batches` units each).
  __device__ __forceinline__ unsigned first(int s, int batches) const { return warp_of(s * batches); }
  __device__ __forceinline__ unsigned last(int s, int batches) const { return warp_of((s + 1) * batches - 1); }
};

__device__ __forceinline__ Deal deal(const Params& p, int phase, int grid_warps) {
  const unsigned units = static_cast<unsigned>(p.w[phase].stripes * p.w[phase].batches);
  return {units, units < static_cast<unsigned>(grid_warps) ? units : static_cast<unsigned>(grid_warps)};
}

// A warp's sums for a stripe live in partials[stripe + w] ([row][64 columns], rows < M): unique
// within a phase, because when warp w holds units of stripe s, warp w - 1 cannot hold units of
// s + 1.

// What a warp works on: phase `phase` (kPhases when done), unit `u` of it.
struct Cursor {
  int phase;
  int u;
};

// The kernel is compiled for 1, 2, 4 and 8 rows (the reduction's loads and the norm's loops are
// sized by it); a call takes the smallest that holds M.
constexpr int rows_variant(int M) { return M <= 1 ? 1 : M <= 2 ? 2 : M <= 4 ? 4 : 8; }

// Host side: calls f(rows, slots) with both as std::integral_constant for the compiled variant
// (rows_variant(M), rings of 2 or 3 slots), so the launcher and the emulated test pick the same way.
template <class F>
void with_variant(int M, int slots, F&& f) {
  auto rows = [&](auto s) {
    switch (rows_variant(M)) {
      case 1: return f(std::integral_constant<int, 1>{}, s);
      case 2: return f(std::integral_constant<int, 2>{}, s);
      case 4: return f(std::integral_constant<int, 4>{}, s);
      default: return f(std::integral_constant<int, 8>{}, s);
    }
  };
  if (slots == 2)
    rows(std::integral_constant<int, 2>{});
  else
    rows(std::integral_constant<int, 3>{});
}

// kSlots: ring slots (units) per warp; a warp computes one while the next kSlots - 1 stream in,
// across the grid barriers too.
template <int kRows, int kSlots>
__device__ __forceinline__ void decode_mlp_block(const Params& p) {
  constexpr int kSlotBytes = slot_bytes(kRows);
  using namespace awq_device;
#ifndef AWQD_KERNEL_EMULATION
  extern __shared__ __align__(128) std::uint8_t smem[];
#else
  std::uint8_t* smem = emu::shared_memory();
#endif
  const int warps_per_block = blockDim.x >> 5;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;
  const int W = gridDim.x * warps_per_block;
  const int gw = blockIdx.x * warps_per_block + warp;  // this warp in the grid
  const int M = p.M;
  float* block_inv = reinterpret_cast<float*>(smem + warps_per_block * kSlots * kSlotBytes);

  allow_dependents_launch();
  unsigned long long* const trace = p.trace != nullptr ? p.trace + blockIdx.x * kTracePoints : nullptr;
  if (trace != nullptr && threadIdx.x == 0) trace[0] = global_ns();

  auto first_from = [&](int phase) -> Cursor {
    for (; phase < kPhases; ++phase) {
      const Deal d = deal(p, phase, W);
      if (static_cast<unsigned>(gw) < d.warps) return {phase, static_cast<int>(d.lo(gw))};
    }
    return {kPhases, 0};
  };
  auto next_of = [&](Cursor c) -> Cursor {
    if (static_cast<unsigned>(c.u + 1) < deal(p, c.phase, W).lo(gw + 1)) return {c.phase, c.u + 1};
    return first_from(c.phase + 1);
  };
  std::uint8_t* const ring = smem + warp * kSlots * kSlotBytes;
  auto slot_ptr = [&](int s) { return ring + s * kSlotBytes; };

  // The unit's weights, scales and zeros (and for gate_up the post-attention norm's 128 values):
  // model parameters, so they may be requested before the barrier that opens their phase.
  auto issue_weights = [&](Cursor c, int s) {
    if (c.phase >= kPhases) return;
    const Linear& L = p.w[c.phase];
    const int stripe = static_cast<int>(c.u / L.batches), batch = static_cast<int>(c.u % L.batches);
    std::uint8_t* dst = slot_ptr(s);
    const uint4* src = L.tiles + (static_cast<std::size_t>(stripe) * L.batches * kSteps + batch * kSteps) * 32 + lane;
#pragma unroll
    for (int u = 0; u < kSteps; ++u)
      cp_async_16(smem_addr(dst + (u * 32 + lane) * 16), src + u * 32, true);
    const std::size_t sg = static_cast<std::size_t>(stripe) * L.batches + batch;
    if (lane < 8)
      cp_async_16(smem_addr(dst + kConstOffset + lane * 16), L.scales + sg * 64 + lane * 8, true);
    else if (lane < 10)
      cp_async_16(smem_addr(dst + kConstOffset + lane * 16), L.zeros + sg * 8 + (lane - 8) * 4, true);
    else if (lane >= 16 && c.phase == 1)
      cp_async_16(smem_addr(dst + kNormOffset + (lane - 16) * 16),
                  p.post_norm + batch * kBatchRows + (lane - 16) * 8, true);
  };
  // The unit's activation rows: written by the kernel before (attention) or by this kernel's
  // previous phase, so only after the barrier that opens the phase (cp.async.cg reads L2).
  auto issue_x = [&](Cursor c, int s) {
    if (c.phase >= kPhases) return;
    const int batch = static_cast<int>(c.u % p.w[c.phase].batches);
    const __half* base = c.phase == 0 ? p.attn : c.phase == 1 ? p.residual : p.act;
    const int ld = c.phase == 0 ? p.attn_ld : c.phase == 1 ? p.H : p.I;
    std::uint8_t* dst = slot_ptr(s) + kXOffset;
    for (int e = lane; e < M * 16; e += 32) {
      const int row = e >> 4, chunk = e & 15;
      cp_async_16(smem_addr(dst + row * kXStride * 2 + chunk * 16),
                  base + static_cast<std::size_t>(row) * ld + batch * kBatchRows + chunk * 8, true);
    }
  };

  // 1 / RMS of each row's residual from the per-stripe sums of squares (set `which`), added in
  // stripe order by a fixed butterfly: every lane of every warp gets the same bits.
  auto inv_rms = [&](int which, float (&inv)[kRows]) {
    const int stripes = p.H / 64;
    const float* sq = p.sumsq + static_cast<std::size_t>(which) * stripes * kMaxRows;
#pragma unroll
    for (int m = 0; m < kRows; ++m) {
      float s = 0.0f;
      if (m < M)
        for (int i = lane; i < stripes; i += 32) s += __ldcg(sq + i * kMaxRows + m);
#pragma unroll
      for (int x = 16; x >= 1; x >>= 1) s += warp_xor(s, x);
      inv[m] = rsqrtf(s / static_cast<float>(p.H) + p.eps);
    }
  };

  float acc[4][4];
  auto zero_acc = [&] {
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[j][r] = 0.0f;
  };
  zero_acc();

  // The last warp of a stripe adds the warps' sums in warp order. Lane l owns the kV = 2 kRows
  // consecutive outputs l * kV .. of the stripe's [kRows][64] (row (l * kV) / 64), read as float2 or
  // float4 from kUnroll warps at a time, so enough loads are in flight to hide L2's latency.
  constexpr int kV = 2 * kRows;
  constexpr int kVec = kV >= 4 ? 4 : 2;
  constexpr int kUnroll = kV >= 8 ? 32 / kV : 16;
  const int out_row = lane * kV / 64, out_col = lane * kV % 64;
  auto sum_stripe = [&](const Deal& d, int stripe, int batches, float (&sum)[kV]) {
#pragma unroll
    for (int i = 0; i < kV; ++i) sum[i] = 0.0f;
    const int w0 = static_cast<int>(d.first(stripe, batches)), w1 = static_cast<int>(d.last(stripe, batches));
    for (int w = w0; w <= w1; w += kUnroll) {
      float v[kUnroll][kV];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const float* src = p.partials + static_cast<std::size_t>(stripe + w + u) * kPartialFloats + out_row * 64 + out_col;
#pragma unroll
        for (int i = 0; i < kV; i += kVec) {
          if (w + u <= w1) {
            if constexpr (kVec == 4) {
              const float4 x = __ldcg(reinterpret_cast<const float4*>(src + i));
              v[u][i] = x.x, v[u][i + 1] = x.y, v[u][i + 2] = x.z, v[u][i + 3] = x.w;
            } else {
              const float2 x = __ldcg(reinterpret_cast<const float2*>(src + i));
              v[u][i] = x.x, v[u][i + 1] = x.y;
            }
          } else {
#pragma unroll
            for (int k = 0; k < kVec; ++k) v[u][i + k] = 0.0f;
          }
        }
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u)
#pragma unroll
        for (int i = 0; i < kV; ++i) sum[i] += v[u][i];
    }
  };

  // The warp's sums for `stripe` of `phase` go to the workspace; the last warp to arrive at the
  // stripe (gate_up: at the pair of gate and up stripes) adds every warp's sums in warp order
  // (so the result does not depend on who came last) and finishes those 64 columns.
  auto flush = [&](int phase, int stripe) {
    if (p.experiment & 2) {
      zero_acc();
      return;
    }
    const Linear& L = p.w[phase];
    const Deal d = deal(p, phase, W);
    {
      // acc[j][r]: column 16 j + g + 8 (r / 2), row 2 t + r % 2 (the mma's D).
      float* dst = p.partials + static_cast<std::size_t>(stripe + gw) * kPartialFloats;
#pragma unroll
      for (int e = 0; e < 16; ++e) {
        const int row = 2 * t + (e & 1), col = 16 * (e >> 2) + g + 8 * ((e & 3) >> 1);
        if (row < M) dst[row * 64 + col] = acc[e >> 2][e & 3];
      }
    }
    zero_acc();
    const int pairs = p.I / 64;
    const int key = phase == 1 ? stripe % pairs : stripe;
    int needed = static_cast<int>(d.last(key, L.batches) - d.first(key, L.batches)) + 1;
    if (phase == 1) needed += static_cast<int>(d.last(key + pairs, L.batches) - d.first(key + pairs, L.batches)) + 1;
    __threadfence();
    __syncwarp();
    int last = 0;
    if (lane == 0) {
      int* counter = p.counters + counter_base(p, phase) + key;
      last = atomicAdd(counter, 1) == needed - 1;
      if (last) *counter = 0;  // every warp of the stripe has arrived: reset for the next use
    }
    last = warp_bcast(last);
    if (!last) return;
    __threadfence();
    float sum[kV];
    sum_stripe(d, key, L.batches, sum);
    if (phase == 1) {
      // act = SiLU(gate) * up: gate is column key * 64 + c of the output, up column I + that.
      float up[kV];
      sum_stripe(d, key + pairs, L.batches, up);
      if (out_row < M) {
#pragma unroll
        for (int i = 0; i < kV; ++i) {
          const int col = key * 64 + out_col + i;
          float gv = sum[i], uv = up[i];
          if (L.bias != nullptr) {
            gv += __half2float(L.bias[col]);
            uv += __half2float(L.bias[p.I + col]);
          }
          // The GEMM's fp16 outputs, then silu_mul's arithmetic.
          p.act[static_cast<std::size_t>(out_row) * p.I + col] = silu_mul1(__float2half_rn(gv), __float2half_rn(uv));
        }
      }
      return;
    }
    // o_proj, down_proj: residual = fp16(residual + fp16(y)) (add_rmsnorm's order), and the
    // stripe's sum of squares of what is stored, per row (the 64 / kV lanes of a row).
    float sq = 0.0f;
    if (out_row < M) {
#pragma unroll
      for (int i = 0; i < kV; ++i) {
        const int col = stripe * 64 + out_col + i;
        float v = sum[i];
        if (L.bias != nullptr) v += __half2float(L.bias[col]);
        __half* r = p.residual + static_cast<std::size_t>(out_row) * p.H + col;
        const float stored = __half2float(__float2half_rn(__half2float(__float2half_rn(v)) + __half2float(__ldcg(r))));
        *r = __float2half_rn(stored);
        sq += stored * stored;
      }
    }
#pragma unroll
    for (int x = 1; x < 64 / kV; x <<= 1) sq += warp_xor(sq, x);
    if (out_col == 0 && out_row < M)
      p.sumsq[static_cast<std::size_t>(phase == 0 ? 0 : 1) * (p.H / 64) * kMaxRows + stripe * kMaxRows + out_row] = sq;
  };

  // One unit: 8 k16 steps of 64 columns against the staged rows (B = the rows, as in the stream
  // kernel: mma.m16n8k16 with the weights as A).
  auto compute = [&](const std::uint8_t* slot) {
    const uint4* wslot = reinterpret_cast<const uint4*>(slot);
    const uint4* consts_src = reinterpret_cast<const uint4*>(slot + kConstOffset);
    GroupConsts consts{};
    load_group_consts(consts_src[g], reinterpret_cast<const std::uint32_t*>(consts_src + 8)[g], consts);
    const __half* xs = reinterpret_cast<const __half*>(slot + kXOffset) + g * kXStride + 2 * t;
    const bool row_ok = g < M;
    if (p.experiment & 1) {
#pragma unroll
      for (int u = 0; u < kSteps; ++u) {
        const uint4 wu = wslot[u * 32 + lane];
        acc[u & 3][0] += __uint_as_float((wu.x ^ wu.y ^ wu.z ^ wu.w) & 0x3FFFFFFFu);
      }
      return;
    }
#pragma unroll
    for (int u = 0; u < kSteps; ++u) {
      std::uint32_t xb0 = 0, xb1 = 0;
      if (row_ok) {
        xb0 = *reinterpret_cast<const std::uint32_t*>(xs + u * 16);
        xb1 = *reinterpret_cast<const std::uint32_t*>(xs + u * 16 + 8);
      }
      const uint4 wu = wslot[u * 32 + lane];
      const std::uint32_t words[4] = {wu.x, wu.y, wu.z, wu.w};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        std::uint32_t bq[2][2];
        dequant_word<true>(words[j], consts, j, bq);
        const std::uint32_t a[4] = {bq[0][0], bq[1][0], bq[0][1], bq[1][1]};
        mma_m16n8k16(acc[j], a, xb0, xb1);
      }
    }
  };

  // gate_up's input: rmsnorm(residual) * post_norm over the slot's 128 columns, in place, with
  // rmsnorm's arithmetic (x * inv_rms * w in fp32, one rounding).
  auto normalize_slot = [&](std::uint8_t* slot, const float (&inv)[kRows]) {
    __half* xs = reinterpret_cast<__half*>(slot + kXOffset);
    const __half* wn = reinterpret_cast<const __half*>(slot + kNormOffset);
    float wf[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) wf[i] = __half2float(wn[4 * lane + i]);
#pragma unroll
    for (int m = 0; m < kRows; ++m) {
      if (m >= M) continue;
      __half* x = xs + m * kXStride + 4 * lane;
#pragma unroll
      for (int i = 0; i < 4; ++i) x[i] = __float2half_rn(__half2float(x[i]) * inv[m] * wf[i]);
    }
  };

  // Each warp walks its units of the three phases in order. Units cur and ahead[0 .. kSlots - 3]
  // are in flight (slots slot, slot + 1, ...); before computing cur the warp requests the next
  // one, so kSlots - 1 units stream in while it computes. Weights are requested whenever a slot
  // frees, also across a grid barrier; a unit's activations only once its phase is open: with its
  // weights if so, else at the phase's start for the units already in flight.
  constexpr int kAhead = kSlots - 2 > 0 ? kSlots - 2 : 1;  // (array size; kSlots - 2 used)
  Cursor cur = first_from(0);
  Cursor ahead[kAhead];
  int slot = 0;
  issue_weights(cur, 0);
  cp_async_commit();
  {
    Cursor c = cur;
#pragma unroll
    for (int i = 0; i < kSlots - 2; ++i) {
      c = c.phase < kPhases ? next_of(c) : c;
      ahead[i] = c;
      issue_weights(c, 1 + i);
      cp_async_commit();
    }
  }
  auto ring_slot = [&](int i) { return slot + i >= kSlots ? slot + i - kSlots : slot + i; };
  grid_dependency_wait();  // attn and the residual come from the kernels before
  if (trace != nullptr && threadIdx.x == 0) trace[1] = global_ns();
  float inv[kRows];
#pragma unroll
  for (int m = 0; m < kRows; ++m) inv[m] = 0.0f;
  for (int phase = 0; phase < kPhases; ++phase) {
    if (phase > 0) grid_barrier(p.barrier, trace != nullptr ? trace + 2 * phase : nullptr);
    // The phase is open: activations of the units in flight that belong to it, one group per
    // unit in their order, so that the loop's wait (all but the kSlots - 1 newest groups) still
    // finds each unit's copies complete when it comes to compute it, and nothing is drained.
    if (cur.phase == phase) issue_x(cur, slot);
    cp_async_commit();
#pragma unroll
    for (int i = 0; i < kSlots - 2; ++i) {
      if (ahead[i].phase == phase) issue_x(ahead[i], ring_slot(1 + i));
      cp_async_commit();
    }
    if (phase == 1 && cur.phase == 1) inv_rms(0, inv);
    const int batches = p.w[phase].batches;
    while (cur.phase == phase) {
      const Cursor last_issued = kSlots > 2 ? ahead[kSlots > 2 ? kSlots - 3 : 0] : cur;
      const Cursor nx_issue = last_issued.phase < kPhases ? next_of(last_issued) : last_issued;
      __syncwarp();  // every lane is done with the slot about to be refilled (computed last)
      if (nx_issue.phase < kPhases) {
        issue_weights(nx_issue, ring_slot(kSlots - 1));
        if (nx_issue.phase == phase) issue_x(nx_issue, ring_slot(kSlots - 1));
      }
      cp_async_commit();
      cp_async_wait<kSlots - 1>();  // all but the kSlots - 1 newest groups: this unit's copies
      __syncwarp();                 // ... of every lane
      if (phase == 1) {
        normalize_slot(slot_ptr(slot), inv);
        __syncwarp();
      }
      compute(slot_ptr(slot));
      const Cursor nx = kSlots > 2 ? ahead[0] : nx_issue;
      const int stripe = cur.u / batches;
      if (nx.phase != phase || nx.u / batches != stripe) flush(phase, stripe);
#pragma unroll
      for (int i = 0; i + 1 < kSlots - 2; ++i) ahead[i] = ahead[i + 1];
      if (kSlots > 2) ahead[kSlots > 2 ? kSlots - 3 : 0] = nx_issue;
      cur = nx;
      slot = ring_slot(1);
    }
  }
  grid_barrier(p.barrier, trace != nullptr ? trace + 2 * kPhases : nullptr);

  // out = rmsnorm(residual) * next_norm, spread over the whole grid, 8 values per thread.
  if (warp == 0) {
    float inv2[kRows];
    inv_rms(1, inv2);
    if (lane == 0)
#pragma unroll
      for (int m = 0; m < kRows; ++m) block_inv[m] = inv2[m];
  }
  __syncthreads();
  const int chunks = p.H / 8;
  for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < M * chunks; e += gridDim.x * blockDim.x) {
    const int row = e / chunks, c = e - row * chunks;
    const uint4 rv = __ldcg(reinterpret_cast<const uint4*>(p.residual + static_cast<std::size_t>(row) * p.H) + c);
    const uint4 wv = *(reinterpret_cast<const uint4*>(p.next_norm) + c);
    // rmsnorm's arithmetic and packing (kernels/norm.cu).
    float v[8], wf[8];
    ptx::unpack8(rv, v);
    ptx::unpack8(wv, wf);
    const float inv_row = block_inv[row];
#pragma unroll
    for (int i = 0; i < 8; ++i) v[i] = v[i] * inv_row * wf[i];
    const uint4 ov = ptx::pack8(v);
    *(reinterpret_cast<uint4*>(p.out + static_cast<std::size_t>(row) * p.H) + c) = ov;
  }
}

}  // namespace awqd::cuda::decode_mlp_detail
