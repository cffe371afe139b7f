// Prefill attention: variable-length, causal, GQA, over the paged KV cache (flash-attention 2
// style: online softmax, no score matrix in memory). fp16 storage, fp32 math, scale 1/sqrt(d).
//
//   For sequence b with new tokens cu_seqlens_q[b] .. cu_seqlens_q[b+1]-1, new token t at
//   position positions[t] attends to the cached keys 0 .. positions[t] of its sequence:
//     out[t, h, :] = softmax(q[t, h, :] . K[b, kvh, 0..pos]^T / sqrt(d)) V[b, kvh, 0..pos]
//   kvh = h / (num_heads / num_kv_heads). Every key comes from the cache (the new tokens' K/V
//   are written by kernels/rope.cuh first), so chunked prefill and prefix caching need nothing
//   special: a chunk's tokens attend to the cached prefix plus themselves. Any mix of sequence
//   lengths works, decode tokens included (though decode_attention is faster for those).
//
// Design
//   A CTA (4 warps) takes 64 query rows of one sequence and one KV head, where rows are
//   (token, query head of that KV head) pairs in token-major order: the ratio query heads of a
//   KV head share every K/V tile a CTA loads (GQA packing, as in decode). Warp w owns rows
//   16w..16w+15 as the M of m16n8k16 tiles. Keys stream in tiles of 64 (4 KV blocks, through
//   the block table) into XOR-swizzled shared memory:
//     sm_80+: cp.async, two stages (tile j+1 loads while tile j is computed);
//     sm_75:  16-byte register loads, one stage, mma.m16n8k8.
//   Per tile and warp: S = Q K^T (8 n8 tiles), causal mask by each row's own position, online
//   softmax (exp2, scale folded in), O += P V with P re-packed from the accumulators and V via
//   ldmatrix.trans. A warp skips the compute of tiles entirely in its rows' future.
//   Q is staged through the second stage's K area, then kept in registers.
//   Grid: (upper bound of 64-row tiles over all sequences, KV heads); a CTA finds its sequence
//   by a warp scan over cu_seqlens_q, so the launch needs only the host's token count.
//   Instantiations: <head_dim 64|128, sm_75?> in attention_prefill_hd{64,128}.cu.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace awqd::cuda {

struct PrefillAttentionArgs {
  __half* out = nullptr;  // [num_tokens, out_stride]; head h at h * head_dim
  int out_stride = 0;
  const __half* q = nullptr;  // [num_tokens, q_stride]; head h at h * head_dim
  int q_stride = 0;
  const __half* k_cache = nullptr;  // [num_blocks, num_kv_heads, 16, head_dim]
  const __half* v_cache = nullptr;
  const int* cu_seqlens_q = nullptr;  // [num_seqs + 1]
  const int* positions = nullptr;     // [num_tokens]
  const int* block_tables = nullptr;  // [num_seqs, max_blocks_per_seq]
  int max_blocks_per_seq = 0;
  int num_seqs = 0;
  int num_tokens = 0;  // host copy of cu_seqlens_q[num_seqs]
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;  // 64 or 128
};

void prefill_attention(const PrefillAttentionArgs& args, cudaStream_t stream);

}  // namespace awqd::cuda
