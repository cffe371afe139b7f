// The second half of a decoder layer for decode-sized steps, as one persistent kernel:
//
//   residual += o_proj(attn)                        (add_rmsnorm's rounding: fp16(r + fp16(y)))
//   act       = SiLU(gate) * up,  [gate | up] = gate_up_proj(rmsnorm(residual) * post_norm)
//   residual += down_proj(act)
//   out       = rmsnorm(residual) * next_norm       (the next layer's qkv input)
//
// Why one kernel: at M <= 8 these three AWQ GEMMs are passes over 100 MB of weights (Llama-3-8B)
// and the separate kernels (GEMM, add_rmsnorm, GEMM, GEMM, add_rmsnorm) each pay a fill and a
// tail in which the weight stream stops (docs/PERF.md, runs 20 and 39: o_proj takes 7 us for 3
// us of bytes; the norms 4 us each). Here the weights never wait for the activations: a warp
// requests its next unit's weights before it computes the current one, across the phases, so
// the stream runs through the grid barriers between them.
//
// Design. Grid: one block per SM (all resident: the grid barrier needs it), 16 warps (12 below
// sm_90's shared memory), each warp a ring of 2 slots in shared memory filled by cp.async. A
// unit is one 64-column stripe x 128 k-rows (one AWQ group) of one weight: 4 KB of int4, its
// scales and zeros, the 128 x M activations it multiplies (and for gate_up the norm weight's 128
// values). Each phase's units, stripe-major, are dealt in equal contiguous ranges to all warps of
// the grid (stream-K): a warp's range covers at most a few stripes, whose sums it keeps in
// registers (mma.m16n8k16 with the dequantized weights as A, the rows as B: the stream kernel's
// inner loop, kernels/awq_gemm_stream.cuh) and writes to the workspace per stripe. The last warp
// to finish a stripe (counter per stripe; gate_up: per pair of gate and up stripes) adds the
// warps' sums in warp order (deterministic for a given GPU) and finishes the stripe: o/down add
// into the residual and write the stripe's per-row sum of squares; gate_up writes SiLU(g) * u.
// A grid barrier ends each phase; gate_up's warps normalize their units' activations in shared
// memory from the residual and the per-stripe sums of squares; after down, the grid writes out.
//
// Constraints (decode_mlp_supported): sm_80+ (cp.async), rows 1..8, all three weights AWQ with
// G = 128, K % 128 == 0 and N % 64 == 0, gate_up's N = 2 I with gate before up. Results equal
// the separate kernels' up to the order of fp32 additions (split-K and the sums of squares).
// Not batch invariant across the separate path, so the engine keeps it out of deterministic mode.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <string>

#include "kernels/awq_gemm.cuh"

namespace awqd::cuda {

inline constexpr int kDecodeMlpMaxRows = 8;  // tokens per call at most

struct DecodeMlpArgs {
  AwqWeight o, gate_up, down;  // repacked AWQ weights (kernels/awq_layout.cuh)
  const __half* o_bias = nullptr;
  const __half* gate_up_bias = nullptr;
  const __half* down_bias = nullptr;
  const __half* attn = nullptr;  // [M, attn_ld]: o_proj's input
  int attn_ld = 0;
  __half* residual = nullptr;    // [M, H] in/out
  __half* out = nullptr;         // [M, H]
  const __half* post_norm = nullptr;  // [H]
  const __half* next_norm = nullptr;  // [H]
  float eps = 1e-6f;
  int M = 0;
  bool pdl = false;  // sm_90: Programmatic Dependent Launch (weights requested before the wait)
  void* workspace = nullptr;  // decode_mlp_workspace_bytes, zeroed once by decode_mlp_workspace_init
  std::size_t workspace_bytes = 0;
  int blocks = 0;             // 0: one per SM (tests use fewer)
  int ring_slots = 0;         // units in flight per warp + 1: 2 or 3 (0: the default, 3)
  // Benchmarks: per block decode_mlp_trace_points() %globaltimer stamps (ns), or null.
  unsigned long long* trace = nullptr;
  int experiment = 0;  // benchmarks: decode_mlp_detail::Params::experiment (garbage results)
};

// Empty when decode_mlp can run these weights at M rows on the current device, else why not.
std::string decode_mlp_unsupported(const AwqWeight& o, const AwqWeight& gate_up,
                                   const AwqWeight& down, int M);
std::size_t decode_mlp_workspace_bytes(const AwqWeight& o, const AwqWeight& gate_up,
                                       const AwqWeight& down);
// Zeroes the counters and the barrier (once, before the first call on this workspace).
void decode_mlp_workspace_init(void* workspace, std::size_t bytes, cudaStream_t stream);
void decode_mlp(const DecodeMlpArgs& args, cudaStream_t stream);
// Stamps per block of DecodeMlpArgs::trace: start, after the PDL wait, then for o_proj, gate_up
// and down_proj the block's arrival at the barrier ending the phase and its release.
int decode_mlp_trace_points();
// Threads blocks a call launches (one per SM unless DecodeMlpArgs::blocks says fewer).
int decode_mlp_blocks(int requested);

}  // namespace awqd::cuda
