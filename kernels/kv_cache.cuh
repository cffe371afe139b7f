// The paged KV cache, as every attention kernel and the cache writer see it (the engine's
// layout, engine/executor.h, restated here because kernels do not include engine headers).
//
// Per layer, K and V live in two pools of fp16:
//   cache[num_blocks][num_kv_heads][kKvCacheBlockSize][head_dim]
// A token at position p of a sequence sits in block block_table[p / 16] at offset p % 16; its
// slot is block * 16 + offset (slot_mapping gives it for the step's new tokens).
//
// Why this layout: one (block, kv head) slice is 16 * head_dim contiguous fp16 (4 KiB at
// head_dim 128, 2 KiB at 64), so a warp reading one KV head's block issues fully used 16-byte
// loads over a contiguous range, and the 16 rows of a block are exactly one m16 tile (or two
// n8 tiles) of the tensor-core instructions the attention kernels use. Keeping heads inside the
// block (not blocks inside heads) lets one block id address every head of a token.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace awqd::cuda {

inline constexpr int kKvCacheBlockSize = 16;  // tokens per block; == awqd::kKvBlockSize

// Element offset of (block, kv head, row in block, dim 0) in a cache pool.
__host__ __device__ __forceinline__ std::size_t kv_cache_offset(int block, int kv_head, int row,
                                                                int num_kv_heads, int head_dim) {
  return ((static_cast<std::size_t>(block) * num_kv_heads + kv_head) * kKvCacheBlockSize + row) *
         static_cast<std::size_t>(head_dim);
}

}  // namespace awqd::cuda
