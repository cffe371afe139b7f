// Tensor parallelism: which part of the model each GPU of an engine holds (SPEC section 7). Plain
// C++ with no CUDA, so the sharding rules are tested on the CPU (tests/test_tensor_parallel.cc).
//
// A decoder layer over tp ranks (Megatron-LM's split):
//   q, k, v   column-parallel by heads: rank r computes its query heads and the KV heads they read
//   o         row-parallel: rank r holds the rows of its query heads; partial sums are all-reduced
//   gate, up  column-parallel over the intermediate columns
//   down      row-parallel over the same intermediate rows; partial sums are all-reduced
//   norms     replicated; so is the residual stream, identical on every rank after each all-reduce
//   embedding replicated: a lookup needs no communication (the cost is memory only)
//   lm_head   split by vocabulary rows (each rank streams 1/tp of it per token, the largest single
//             matrix of a decode step); rank 0 gathers the logits and samples
//
// Heads. The attention kernels need each rank's query heads to be whole GQA groups of its KV
// heads, or part of a single KV head's group, so:
//   - num_kv_heads >= tp: the KV heads are split into contiguous, possibly uneven ranges (8 over
//     3 -> 3/3/2) and each rank takes all their query heads (llama3-8b: 12/12/8; an MHA model
//     with 32 heads: 11/11/10).
//   - num_kv_heads < tp: the ranks are spread over the KV heads (4 ranks over 2 KV heads: 2 each;
//     3 over 2: 2 and 1) and split each group's query heads between them. A KV head is then
//     replicated: every rank that reads it computes and caches it.
// Row-parallel shards start on an AWQ group boundary (a multiple of the group size G, or of 8 for
// fp16 weights), so every shard keeps whole groups with their own scales and zeros. A model that
// cannot be split that way is refused with the reason and the degrees that would work.
#pragma once

#include <string>
#include <vector>

#include "engine/model_config.h"
#include "engine/model_weights.h"

namespace awqd {

struct Span {
  int begin = 0, end = 0;  // [begin, end)
  int size() const { return end - begin; }
  bool operator==(const Span&) const = default;
};

// Rank r's share of every layer.
struct RankShard {
  Span q_heads;   // query heads; o_proj rows [begin * head_dim, end * head_dim)
  Span kv_heads;  // KV heads computed and cached here (shared with other ranks when replicated)
  Span inter;     // gate/up columns = down rows
  Span vocab;     // lm_head rows = logits columns
};

struct TensorParallelPlan {
  int tp = 1;
  bool kv_replicated = false;  // num_kv_heads < tp: some KV heads live on several ranks
  std::vector<RankShard> ranks;
  // e.g. "tp 3: q heads 12/12/8, kv heads 3/3/2, intermediate 4864/4736/4736, vocab 42752/..."
  std::string describe() const;
};

// The plan for `tp` ranks. Throws std::runtime_error saying why the model cannot be split that
// way and which degrees (up to 8) can.
TensorParallelPlan plan_tensor_parallel(const ModelConfig& config, int tp);

// The configuration rank `shard` computes with: its query heads, KV heads and intermediate size;
// hidden size, head_dim and vocabulary unchanged.
ModelConfig rank_config(const ModelConfig& config, const RankShard& shard);

// One Linear's shard. `weight` is a LinearWeight (checkpoint layout) pointing into the vectors
// below, or straight into the source where the shard is contiguous there (AWQ row shards, dense
// column shards, full spans): no copy. Move-only (the views follow the vectors' buffers).
struct LinearShard {
  LinearWeight weight;
  std::vector<std::int32_t> qweight, qzeros;
  std::vector<half_bits> scales, dense, bias;

  LinearShard() = default;
  LinearShard(LinearShard&&) = default;
  LinearShard& operator=(LinearShard&&) = default;
  LinearShard(const LinearShard&) = delete;
  LinearShard& operator=(const LinearShard&) = delete;
};

// Outputs [n.begin, n.end) of w (multiples of 8), with their bias.
LinearShard column_shard(const LinearWeight& w, Span n);
// Inputs [k.begin, k.end) of w (multiples of the group size when quantized). The bias is added
// once after the all-reduce, so only the shard with keep_bias (rank 0) has it.
LinearShard row_shard(const LinearWeight& w, Span k, bool keep_bias);

// Rank r's part of one decoder layer: `weights` is a LayerWeights of rank_config()'s shapes whose
// linears point into the shards (norms point into the source, replicated).
struct LayerShard {
  LayerWeights weights;
  LinearShard q, k, v, o, gate, up, down;
};
LayerShard shard_layer(const LayerWeights& layer, const ModelConfig& config, const RankShard& shard,
                       bool rank0);

}  // namespace awqd
