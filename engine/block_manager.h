// The paged KV cache's bookkeeping (no GPU in it): a pool of fixed-size blocks with reference
// counts, a free list kept in least-recently-freed order, and automatic prefix caching.
//
// Prefix caching: every full block of a sequence is identified by a hash chain,
//   hash_i = mix(hash_{i-1}, tokens of block i),
// so equal hashes mean equal prefixes (the block's tokens are stored too and compared, so a hash
// collision costs a miss, never a wrong answer). A block is registered under its hash only once
// its K/V have been computed. Freed blocks keep their hash while they sit in the free list, so a
// later sequence with the same prefix can take them back; allocation takes the least recently
// freed block first and evicts its hash (LRU eviction of cached free blocks).
#pragma once

#include <cstdint>
#include <list>
#include <span>
#include <unordered_map>
#include <vector>

namespace awqd {

class BlockManager {
 public:
  BlockManager(int num_blocks, int block_size, bool enable_prefix_caching);

  int num_blocks() const { return static_cast<int>(blocks_.size()); }
  int block_size() const { return block_size_; }
  int num_free() const { return static_cast<int>(free_.size()); }
  int num_used() const { return num_blocks() - num_free(); }

  // Blocks needed to hold `tokens` tokens.
  int blocks_for(int tokens) const { return (tokens + block_size_ - 1) / block_size_; }

  // Prefix-cache lookup for a new sequence: takes (ref-counts) the cached blocks holding the
  // longest run of full blocks of `tokens[0, limit)` and appends them to `table` (and their chain
  // hashes to `hashes`). Returns the number of tokens covered.
  int acquire_prefix(std::span<const std::int32_t> tokens, int limit, std::vector<std::int32_t>& table,
                     std::vector<std::uint64_t>& hashes);

  // Appends fresh blocks to `table` until it holds `tokens` tokens; false (nothing taken) when
  // there are not enough free blocks.
  bool grow(std::vector<std::int32_t>& table, int tokens);

  // Registers the full blocks of a sequence whose K/V are now computed (tokens [0, computed))
  // under their chain hashes. `hashes` holds the chain hashes of the blocks registered so far
  // and is extended, so each block is hashed once in the sequence's life.
  void register_full_blocks(std::span<const std::int32_t> tokens, int computed,
                            std::span<const std::int32_t> table, std::vector<std::uint64_t>& hashes);

  // Drops a sequence's references; blocks reaching zero go to the free list (keeping their hash).
  void release(std::vector<std::int32_t>& table);

  static std::uint64_t chain_hash(std::uint64_t prev, std::span<const std::int32_t> block_tokens);

 private:
  struct Block {
    int ref_count = 0;
    std::uint64_t hash = 0;
    bool hashed = false;
    std::vector<std::int32_t> tokens;  // contents when hashed (collision check)
    std::list<int>::iterator free_pos;  // valid while ref_count == 0
  };
  int take_free_block();
  void take_block(int id);  // a cached block with ref_count 0 leaves the free list

  int block_size_;
  bool prefix_caching_;
  std::vector<Block> blocks_;
  std::list<int> free_;  // front: least recently freed (evicted first)
  std::unordered_map<std::uint64_t, int> cached_;  // hash -> block
};

}  // namespace awqd
