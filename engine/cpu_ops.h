// Reference operators in fp32 on the CPU. The CPU executor is built from them, and they are the
// oracle the CUDA kernels are tested against. Plain loops in a fixed order, parallel over
// independent outputs only, so results do not depend on the thread count.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "engine/model_config.h"

namespace awqd::cpu {

// out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w, for rows x (rows, dim). out may alias x.
void rms_norm(const float* x, const float* w, float* out, int rows, int dim, float eps);

// Rotary inverse frequencies (head_dim / 2) as HF computes them, with llama3 or linear scaling.
std::vector<float> rope_inv_freq(const ModelConfig& config);

// HF half-rotation RoPE in place on x (tokens, heads, head_dim): for i < head_dim / 2,
// (x[i], x[i + hd/2]) <- (x[i] cos - x[i + hd/2] sin, x[i + hd/2] cos + x[i] sin),
// angle = position * inv_freq[i] computed in fp32.
void apply_rope(float* x, const std::int32_t* positions, int tokens, int heads, int head_dim,
                const float* inv_freq);

// y (M, N) = x (M, K) W^T + b with W (N, K) row-major; b may be null. Parallel over 64 x 64
// output blocks; each output is one dot product with eight partial sums in a fixed order.
void matmul_nt(const float* x, const float* W, const float* b, float* y, int M, int N, int K);

// out (rows, n) = silu(gate) * up, from gate_up halves given separately.
void silu_mul(const float* gate, const float* up, float* out, std::int64_t count);

// A paged KV cache for one layer: cache[num_blocks][num_kv_heads][block_size][head_dim].
struct PagedKv {
  float* k = nullptr;
  float* v = nullptr;
  int num_kv_heads = 0;
  int head_dim = 0;
  int block_size = 16;
};

// Writes k, v (tokens, kv_heads, head_dim) to their slots.
void write_kv(const PagedKv& cache, const float* k, const float* v, const std::int32_t* slot_mapping,
              int tokens);

// Causal attention of each new token over its sequence's cached context (which already holds the
// new tokens' own K/V): token i of sequence b at position p attends to positions 0..p. GQA: query
// head h reads KV head h / (num_heads / num_kv_heads). q, out: (tokens, num_heads, head_dim).
void paged_attention(const float* q, const PagedKv& cache, const std::int32_t* cu_seqlens_q,
                     const std::int32_t* positions, const std::int32_t* block_tables,
                     int max_blocks_per_seq, int num_seqs, int num_heads, float* out);

}  // namespace awqd::cpu
