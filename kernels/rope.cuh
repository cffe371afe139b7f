// The attention-input stage, fused: (Qwen3) per-head q/k RMSNorm, rotary position embedding and
// the write of the new tokens' K and V into the paged cache.
//
// Input is the fused qkv projection, [tokens, (num_heads + 2 * num_kv_heads) * head_dim] fp16:
// q heads, then k heads, then v heads. For each token t:
//   q_h    = rope(norm_q(q_h), positions[t])            -> q_out[t, h * head_dim ...]
//   k_h    = rope(norm_k(k_h), positions[t])            -> k_cache at slot_mapping[t]
//   v_h                                                  -> v_cache at slot_mapping[t]
// norm_x(v) = v * rsqrt(mean(v^2) + eps) * weight (Qwen3 q_norm/k_norm; identity when the
// weights are null). rope is HF's half-rotation ("rotate_half") layout: for i < head_dim / 2,
//   out[i]              = x[i] cos(p f_i) - x[i + head_dim/2] sin(p f_i)
//   out[i + head_dim/2] = x[i + head_dim/2] cos(p f_i) + x[i] sin(p f_i)
// with f = inv_freq, the [head_dim / 2] fp32 table the engine computes once per model with
// cpu::rope_inv_freq (default, linear and llama3 scaling), so the CPU reference and the GPU
// rotate by identical angles. All arithmetic in fp32 (angle p * f_i in fp32 as HF does), one
// rounding to fp16 at the store. A negative slot
// means "do not cache this token" (padding). q_out may be the qkv buffer itself (in place; pass
// q_out_stride = (num_heads + 2 * num_kv_heads) * head_dim).
//
// Design: one block per token; cos/sin of the token's position computed once into shared
// memory; each head handled by head_dim/16 threads, each owning one 16-byte chunk of the first
// half and its partner chunk of the second half (the pair a rotation mixes), so loads and stores
// are 16 bytes and the per-head norm is a 4- or 8-lane shuffle reduction. Same code on all
// archs. Launch constraints: head_dim 64 or 128; 16-byte aligned buffers and strides.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace awqd::cuda {

struct QkvRopeCacheArgs {
  const __half* qkv = nullptr;            // [num_tokens, (num_heads + 2 * num_kv_heads) * head_dim]
  __half* q_out = nullptr;                // [num_tokens, q_out_stride], heads at h * head_dim
  int q_out_stride = 0;                   // elements between tokens of q_out
  __half* k_cache = nullptr;              // [num_blocks, num_kv_heads, 16, head_dim]
  __half* v_cache = nullptr;              // [num_blocks, num_kv_heads, 16, head_dim]
  const int* positions = nullptr;         // [num_tokens]
  const int* slot_mapping = nullptr;      // [num_tokens]; < 0: not cached
  const float* inv_freq = nullptr;        // [head_dim / 2]
  const __half* q_norm_weight = nullptr;  // [head_dim] or null (Qwen3 only)
  const __half* k_norm_weight = nullptr;  // [head_dim] or null (both or neither)
  float norm_eps = 1e-6f;
  int num_tokens = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  // Programmatic Dependent Launch (sm_90+, kernels/launch.cuh): the kernel computes its angles
  // while the kernel before it on the stream finishes. Only when that kernel writes none of
  // positions, slot_mapping and inv_freq (the engine stages them from the host before a step).
  bool pdl = false;
};

void qkv_rope_cache(const QkvRopeCacheArgs& args, cudaStream_t stream);

}  // namespace awqd::cuda
