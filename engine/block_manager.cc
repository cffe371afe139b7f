#include "engine/block_manager.h"

#include <algorithm>
#include <stdexcept>

namespace awqd {

BlockManager::BlockManager(int num_blocks, int block_size, bool enable_prefix_caching)
    : block_size_(block_size), prefix_caching_(enable_prefix_caching), blocks_(num_blocks) {
  if (num_blocks < 1 || block_size < 1) throw std::invalid_argument("BlockManager: empty pool");
  for (int i = 0; i < num_blocks; ++i) blocks_[i].free_pos = free_.insert(free_.end(), i);
}

std::uint64_t BlockManager::chain_hash(std::uint64_t prev, std::span<const std::int32_t> block_tokens) {
  // splitmix64-style mixing of the previous hash and each token.
  std::uint64_t h = prev ^ 0x9E3779B97F4A7C15ull;
  for (std::int32_t t : block_tokens) {
    h ^= static_cast<std::uint32_t>(t) + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
    h ^= h >> 30;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 27;
    h *= 0x94D049BB133111EBull;
    h ^= h >> 31;
  }
  return h;
}

void BlockManager::take_block(int id) {
  Block& b = blocks_[id];
  if (b.ref_count == 0) free_.erase(b.free_pos);
  ++b.ref_count;
}

int BlockManager::take_free_block() {
  const int id = free_.front();
  free_.pop_front();
  Block& b = blocks_[id];
  if (b.hashed) {  // evict the cached contents
    const auto it = cached_.find(b.hash);
    if (it != cached_.end() && it->second == id) cached_.erase(it);
    b.hashed = false;
    b.tokens.clear();
  }
  b.ref_count = 1;
  return id;
}

int BlockManager::acquire_prefix(std::span<const std::int32_t> tokens, int limit,
                                 std::vector<std::int32_t>& table, std::vector<std::uint64_t>& hashes) {
  if (!prefix_caching_ || !table.empty()) return 0;
  std::uint64_t h = 0;
  int covered = 0;
  for (int start = 0; start + block_size_ <= limit; start += block_size_) {
    const auto chunk = tokens.subspan(start, block_size_);
    h = chain_hash(h, chunk);
    const auto it = cached_.find(h);
    if (it == cached_.end()) break;
    const Block& b = blocks_[it->second];
    if (!std::equal(chunk.begin(), chunk.end(), b.tokens.begin(), b.tokens.end())) break;
    take_block(it->second);
    table.push_back(it->second);
    hashes.push_back(h);
    covered += block_size_;
  }
  return covered;
}

bool BlockManager::grow(std::vector<std::int32_t>& table, int tokens) {
  const int need = blocks_for(tokens) - static_cast<int>(table.size());
  if (need <= 0) return true;
  if (need > num_free()) return false;
  for (int i = 0; i < need; ++i) table.push_back(take_free_block());
  return true;
}

void BlockManager::register_full_blocks(std::span<const std::int32_t> tokens, int computed,
                                        std::span<const std::int32_t> table,
                                        std::vector<std::uint64_t>& hashes) {
  if (!prefix_caching_) return;
  const int full = std::min(computed / block_size_, static_cast<int>(table.size()));
  for (int i = static_cast<int>(hashes.size()); i < full; ++i) {
    const auto chunk = tokens.subspan(static_cast<std::size_t>(i) * block_size_, block_size_);
    const std::uint64_t h = chain_hash(hashes.empty() ? 0 : hashes.back(), chunk);
    hashes.push_back(h);
    Block& b = blocks_[table[i]];
    if (b.hashed) continue;  // already registered (or taken from the cache)
    if (cached_.count(h)) continue;  // another block holds the same prefix: keep that one
    b.hashed = true;
    b.hash = h;
    b.tokens.assign(chunk.begin(), chunk.end());
    cached_[h] = table[i];
  }
}

void BlockManager::release(std::vector<std::int32_t>& table) {
  // Release in reverse so that a sequence's tail blocks are evicted before its prefix.
  for (auto it = table.rbegin(); it != table.rend(); ++it) {
    Block& b = blocks_[*it];
    if (--b.ref_count == 0) b.free_pos = free_.insert(free_.end(), *it);
  }
  table.clear();
}

}  // namespace awqd
