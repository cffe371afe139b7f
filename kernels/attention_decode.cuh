// Paged decode attention: one new token per sequence attends to its whole cached context
// (flash-decoding). fp16 storage, fp32 math, softmax scale 1/sqrt(head_dim).
//
//   out[b, h, :] = softmax(q[b, h, :] . K[b, kvh, 0..ctx_b)^T / sqrt(d)) V[b, kvh, 0..ctx_b)
//   with kvh = h / (num_heads / num_kv_heads) (GQA) and ctx_b = context_lens[b], the token's
//   own K/V included (kernels/rope.cuh writes it before this runs).
//
// Design
//   Work unit = (sequence, KV head, group of <= 16 query heads of that KV head). The unit's
//   query heads are the 16 rows (M) of tensor-core tiles, so each K/V element is loaded once
//   and used by every query head that shares it (GQA ratio 1..16 costs the same bytes; a ratio
//   above 16 takes several groups).
//   The context is split into `splits` ranges of whole KV blocks; grid = (splits, kv heads x
//   groups, sequences), 4 warps per CTA, and warp w takes blocks w, w+4, ... of its CTA's range.
//   A warp streams one 16-token KV block (K and V slices, 2 x 16 x head_dim fp16, contiguous in
//   the cache) at a time through its own shared-memory stages, one of two ways:
//     cp.async:  3 stages (two blocks in flight per warp), 96 KiB per CTA (2 CTAs per SM); its
//                first blocks go out before the PDL wait (below); sm_80+ only;
//     registers: 16-byte register loads of the next block while the current one is computed,
//                32 KiB per CTA (more CTAs per SM), mma.m16n8k8; the only way on sm_75.
//   On sm_80+ the registers variant is taken where a warp's range is long (at least 16 blocks,
//   or 8 when the grid needs more than one CTA per SM): there occupancy beats the early
//   requests (H200, docs/PERF.md run 70: batch 64 x 4096 245.7 us against 289.0, 1 x 16384
//   26.2 against 27.3; batch 16 x 512, 4 blocks per warp, 14.5 against 13.5 with PDL).
//   Shared-memory rows are XOR-swizzled (chunk ^ row % 8) so ldmatrix reads are conflict-free.
//   Per block: S = Q K^T (2 n8 tiles x head_dim/16 k-steps, K via ldmatrix), online softmax in
//   fp32 (exp2 with the scale folded in), O += P V (P re-packed from the S accumulators as the
//   A operand, V via ldmatrix.trans). Keys at or past ctx_b are masked and their V rows zeroed.
//   The 4 warps' (max, sum, O) are merged in shared memory. With one split the CTA normalises
//   and writes fp16; otherwise it writes an fp32 partial (O, max, sum) to the workspace and the
//   last CTA of the unit to finish (an atomic counter that the last one resets) merges all the
//   unit's partials in a fixed order: one launch, deterministic results. Each of its threads
//   merges one (row, 4 columns) item as a running (max, sum, O), requesting up to 16 splits'
//   partials at once, so the merge costs one L2 round trip per 16 splits.
//   Split choice: with units for less than half the SMs (batch 1-8 at 8 KV heads), one CTA per
//   SM and at least one block per warp; otherwise as many splits as fit one wave of the GPU (2
//   resident CTAs per SM; a second, partial wave costs more than it balances), at least 16
//   blocks per split; at most 32 either way (the merge of more partials costs more than it
//   gives; up to kMaxSplits = 64 when forced); from 264 units (132 SMs) on, unsplit.
//   Programmatic Dependent Launch (args.pdl, sm_90+): each warp requests its first two KV blocks
//   before griddepcontrol.wait, so they stream while the kernel before it finishes (in the
//   engine, the RoPE / cache-write kernel and the tail of the qkv projection); q, the sequence's
//   last block (this step's token), the workspace and the output come after the wait.
//   Variants: <head_dim, registers?> instantiations in attention_decode_hd{64,128}.cu (the
//   registers one is the sm_75 path, tested on sm_80+ by forcing it: kernels/launch.cuh).
//   Bytes moved: 4 * ctx * num_kv_heads * head_dim per sequence (K and V once), plus q/out.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>

namespace awqd::cuda {

struct DecodeAttentionArgs {
  __half* out = nullptr;              // [num_seqs, out_stride]; head h at h * head_dim
  int out_stride = 0;                 // elements between sequences of out
  const __half* q = nullptr;          // [num_seqs, q_stride]; head h at h * head_dim
  int q_stride = 0;                   // elements between sequences of q
  const __half* k_cache = nullptr;    // [num_blocks, num_kv_heads, 16, head_dim]
  const __half* v_cache = nullptr;    // [num_blocks, num_kv_heads, 16, head_dim]
  const int* context_lens = nullptr;  // [num_seqs] tokens in the cache, this step's included
  const int* block_tables = nullptr;  // [num_seqs, max_blocks_per_seq]
  int max_blocks_per_seq = 0;
  int num_seqs = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;           // 64 or 128
  int max_context_len = 0;    // host-side bound on context_lens; sizes the split
  void* workspace = nullptr;  // decode_attention_workspace_bytes(head_dim), zeroed once
  std::size_t workspace_bytes = 0;
  int num_splits = 0;  // 0: automatic; > 0 forces a split count (tests, benchmarks)
  // The staging variant (see Design): automatic, or forced (tests, benchmarks). Below sm_80, or
  // with the sm_75 path forced (kernels/launch.cuh), always registers.
  enum class Staging { kAuto, kCpAsync, kRegisters };
  Staging staging = Staging::kAuto;
  // Programmatic Dependent Launch (sm_90+, kernels/launch.cuh): the kernel reads context_lens,
  // block_tables and every sequence's KV blocks but its last one before the kernel ahead of it
  // on the stream has finished. Only when that kernel (and any it overlaps) writes none of
  // those: in the engine it is qkv_rope_cache, which writes q and this step's token, in the last
  // block, while the block tables and lengths were staged from the host before the step.
  bool pdl = false;
};

// Workspace the current device needs for any batch (partial results and counters). Allocate it
// once, zero it once (cudaMemset); every launch leaves its counters at zero again. One workspace
// per stream: launches that may run concurrently must not share one.
// CUDA graphs: the grid (split count) is fixed at capture from num_seqs and max_context_len,
// while context_lens and block_tables are read at replay; capture with the largest context the
// graph will serve (any shorter context runs correctly, with idle CTAs exiting at once).
std::size_t decode_attention_workspace_bytes(int head_dim);

// The split count decode_attention will use for these arguments (for tests and benchmarks).
int decode_attention_splits(const DecodeAttentionArgs& args);
// Whether it will stage the KV blocks through registers (else cp.async); same purpose.
bool decode_attention_register_staging(const DecodeAttentionArgs& args);

void decode_attention(const DecodeAttentionArgs& args, cudaStream_t stream);

}  // namespace awqd::cuda
