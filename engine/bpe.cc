// BPE merge loop, merge table and word cache; the design is at the top of bpe.h.
#include "engine/bpe.h"

#include <algorithm>
#include <mutex>
#include <stdexcept>

#include "engine/unicode.h"

namespace awqd {
namespace {

constexpr std::string_view kSpaceMarker = "\xE2\x96\x81";  // "▁", SentencePiece's space

std::uint64_t pair_key(std::int32_t left, std::int32_t right) {
  return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(left)) << 32) |
         static_cast<std::uint32_t>(right);
}

// True when some token has "▁" right after a character other than "▁": then a merge could
// join text across such a point and words must not be cut there.
bool has_inner_space_marker(const std::unordered_map<std::string, std::int32_t>& vocab) {
  for (const auto& [token, id] : vocab) {
    for (std::size_t p = token.find(kSpaceMarker, 1); p != std::string::npos;
         p = token.find(kSpaceMarker, p + 1)) {
      if (p < kSpaceMarker.size() ||
          token.compare(p - kSpaceMarker.size(), kSpaceMarker.size(), kSpaceMarker) != 0) {
        return true;
      }
    }
  }
  return false;
}

}  // namespace

// Open-addressing hash table (linear probing, power-of-two capacity, at most half full) from a
// (left id, right id) pair to its merge: faster than std::unordered_map on the hot path.
class BpeModel::PairTable {
 public:
  struct Merge {
    std::int32_t rank;
    std::int32_t merged_id;
  };

  explicit PairTable(std::size_t n) {
    std::size_t capacity = 16;
    while (capacity < 2 * n) capacity *= 2;
    slots_.assign(capacity, Slot{kEmpty, {0, 0}});
    mask_ = capacity - 1;
  }

  // Keeps the first (lowest-rank) merge of a pair, as HF does for duplicate merge lines.
  void insert(std::uint64_t key, Merge value) {
    for (std::size_t i = slot(key);; i = (i + 1) & mask_) {
      if (slots_[i].key == key) return;
      if (slots_[i].key == kEmpty) {
        slots_[i] = {key, value};
        return;
      }
    }
  }

  const Merge* find(std::uint64_t key) const {
    for (std::size_t i = slot(key);; i = (i + 1) & mask_) {
      if (slots_[i].key == key) return &slots_[i].merge;
      if (slots_[i].key == kEmpty) return nullptr;
    }
  }

 private:
  // Key and value side by side: a lookup touches one cache line (the table is megabytes, and
  // a cold word's merges are mostly cache misses).
  struct Slot {
    std::uint64_t key;
    Merge merge;
  };
  static constexpr std::uint64_t kEmpty = ~std::uint64_t{0};  // ids are >= 0: never a real key
  std::size_t slot(std::uint64_t key) const {
    return static_cast<std::size_t>((key * 0x9E3779B97F4A7C15ull) >> 32) & mask_;
  }
  std::vector<Slot> slots_;
  std::size_t mask_ = 0;
};

BpeModel::BpeModel(std::unordered_map<std::string, std::int32_t> vocab,
                   const std::vector<std::pair<std::string, std::string>>& merges,
                   BpeOptions options)
    : options_(options) {
  std::int32_t max_id = -1;
  for (const auto& [token, id] : vocab) {
    if (id < 0) throw std::invalid_argument("vocabulary token '" + token + "' has a negative id");
    max_id = std::max(max_id, id);
  }
  id_to_token_.resize(static_cast<std::size_t>(max_id + 1));
  for (const auto& [token, id] : vocab) id_to_token_[id] = token;

  split_at_spaces_ = !options_.byte_level && vocab.count(std::string(kSpaceMarker)) != 0 &&
                     !has_inner_space_marker(vocab);

  vocab_.reserve(vocab.size());
  for (auto& [token, id] : vocab) vocab_.emplace(token, id);

  const auto lookup = [&](std::string_view s) -> std::int32_t {
    const auto it = vocab_.find(s);
    return it == vocab_.end() ? -1 : it->second;
  };
  const auto& b2cp = unicode::byte_to_code_point();
  for (int b = 0; b < 256; ++b) {
    std::string mapped;
    unicode::append_utf8(mapped, b2cp[b]);
    byte_ids_[b] = lookup(mapped);
    static const char* kHex = "0123456789ABCDEF";
    const std::string fallback = std::string("<0x") + kHex[b >> 4] + kHex[b & 15] + ">";
    fallback_ids_[b] = lookup(fallback);
  }
  for (int c = 0; c < 128; ++c) ascii_ids_[c] = lookup(std::string(1, static_cast<char>(c)));

  if (options_.byte_level && options_.ignore_merges) {
    // Byte-level vocabulary strings back to raw bytes, so a raw word can be looked up whole.
    for (const auto& [token, id] : vocab_) {
      std::string raw;
      bool mappable = true;
      for (std::size_t pos = 0; pos < token.size() && mappable;) {
        const int b = unicode::code_point_to_byte(unicode::decode_utf8(token, pos));
        mappable = b >= 0;
        raw.push_back(static_cast<char>(b));
      }
      if (mappable) raw_vocab_.emplace(std::move(raw), id);
    }
  }

  merges_ = std::make_unique<PairTable>(merges.size());
  for (std::size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [left, right] = merges[rank];
    const std::int32_t l = lookup(left), r = lookup(right), m = lookup(left + right);
    if (l < 0 || r < 0 || m < 0) {
      throw std::invalid_argument("merge " + std::to_string(rank) + " ('" + left + "' '" + right +
                                  "'): '" +
                                  (l < 0   ? left
                                   : r < 0 ? right
                                           : left + right) +
                                  "' is not in the vocabulary");
    }
    merges_->insert(pair_key(l, r), {static_cast<std::int32_t>(rank), m});
  }
}

BpeModel::~BpeModel() = default;

std::optional<std::int32_t> BpeModel::token_to_id(std::string_view token) const {
  const auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

std::string_view BpeModel::id_to_token(std::int32_t id) const {
  if (id < 0 || static_cast<std::size_t>(id) >= id_to_token_.size()) return {};
  return id_to_token_[id];
}

void BpeModel::encode_word(std::string_view word, std::vector<std::int32_t>& out) const {
  if (!split_at_spaces_) {
    encode_piece(word, out);
    return;
  }
  // Cut before every "▁" that follows another character (see bpe.h).
  std::size_t start = 0;
  for (std::size_t p = word.find(kSpaceMarker, 1); p != std::string_view::npos;
       p = word.find(kSpaceMarker, p + 1)) {
    if (p >= kSpaceMarker.size() &&
        word.compare(p - kSpaceMarker.size(), kSpaceMarker.size(), kSpaceMarker) == 0) {
      continue;
    }
    encode_piece(word.substr(start, p - start), out);
    start = p;
  }
  encode_piece(word.substr(start), out);
}

std::optional<std::int32_t> BpeModel::whole_word_id(std::string_view piece) const {
  const StringMap& map = options_.byte_level ? raw_vocab_ : vocab_;
  const auto it = map.find(piece);
  if (it == map.end()) return std::nullopt;
  return it->second;
}

void BpeModel::encode_piece(std::string_view piece, std::vector<std::int32_t>& out) const {
  if (piece.empty()) return;
  if (options_.ignore_merges) {
    if (const auto id = whole_word_id(piece)) {
      out.push_back(*id);
      return;
    }
  }
  const bool cacheable = piece.size() <= kMaxCachedWordBytes;
  if (cacheable) {
    std::shared_lock lock(cache_mutex_);
    const auto it = cache_.find(piece);
    if (it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const std::size_t first = out.size();
  merge(piece, out);
  if (cacheable) {
    std::unique_lock lock(cache_mutex_);
    if (cache_.size() < kCacheWords) {
      cache_.emplace(std::string(piece), std::vector<std::int32_t>(out.begin() + first, out.end()));
    }
  }
}

void BpeModel::initial_symbols(std::string_view piece, std::vector<std::int32_t>& ids) const {
  std::int32_t pending_unk = -1;  // the unknown token not yet written (fuse_unk joins a run)
  for (std::size_t pos = 0; pos < piece.size();) {
    const auto lead = static_cast<unsigned char>(piece[pos]);
    const std::size_t len = options_.byte_level ? 1 : unicode::utf8_length(lead);
    const std::string_view ch = piece.substr(pos, len);
    pos += len;
    std::int32_t id = -1;
    if (options_.byte_level) {
      id = byte_ids_[lead];
    } else if (lead < 0x80) {
      id = ascii_ids_[lead];
    } else if (const auto it = vocab_.find(ch); it != vocab_.end()) {
      id = it->second;
    }
    if (id >= 0) {
      if (pending_unk >= 0) ids.push_back(pending_unk);
      pending_unk = -1;
      ids.push_back(id);
      continue;
    }
    if (options_.byte_fallback && std::all_of(ch.begin(), ch.end(), [&](char c) {
          return fallback_ids_[static_cast<unsigned char>(c)] >= 0;
        })) {
      // As HF does, a pending unknown token stays pending across byte-fallback tokens.
      for (const char c : ch) ids.push_back(fallback_ids_[static_cast<unsigned char>(c)]);
      continue;
    }
    if (options_.unk_id) {
      if (pending_unk >= 0 && !options_.fuse_unk) ids.push_back(pending_unk);
      pending_unk = *options_.unk_id;
    }
    // No unknown token: the character is dropped, as HF does.
  }
  if (pending_unk >= 0) ids.push_back(pending_unk);
}

void BpeModel::merge(std::string_view piece, std::vector<std::int32_t>& out) const {
  struct Symbol {
    std::int32_t id;    // -1 once merged into its left neighbour
    std::int32_t prev;  // index of the previous live symbol, -1 at the start
    std::int32_t next;  // index of the next live symbol, -1 at the end
  };
  struct Candidate {
    std::uint64_t order;  // rank << 32 | left index: the heap pops the smallest
    std::int32_t left_id, right_id;
    bool operator>(const Candidate& o) const { return order > o.order; }
  };
  thread_local std::vector<std::int32_t> ids;
  thread_local std::vector<Symbol> symbols;
  thread_local std::vector<Candidate> heap;  // min-heap through std::push_heap/pop_heap

  ids.clear();
  initial_symbols(piece, ids);
  const auto n = static_cast<std::int32_t>(ids.size());
  if (n <= 1) {
    out.insert(out.end(), ids.begin(), ids.end());
    return;
  }
  symbols.resize(n);
  for (std::int32_t i = 0; i < n; ++i) symbols[i] = {ids[i], i - 1, i + 1 < n ? i + 1 : -1};

  heap.clear();
  const auto push_pair = [&](std::int32_t left) {
    const std::int32_t right = symbols[left].next;
    if (right < 0) return;
    const PairTable::Merge* m = merges_->find(pair_key(symbols[left].id, symbols[right].id));
    if (m == nullptr) return;
    heap.push_back({(static_cast<std::uint64_t>(m->rank) << 32) | static_cast<std::uint32_t>(left),
                    symbols[left].id, symbols[right].id});
    std::push_heap(heap.begin(), heap.end(), std::greater<>{});
  };
  for (std::int32_t i = 0; i + 1 < n; ++i) push_pair(i);

  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<>{});
    const Candidate top = heap.back();
    heap.pop_back();
    const auto left = static_cast<std::int32_t>(top.order & 0xFFFFFFFFu);
    Symbol& l = symbols[left];
    // Stale: the left symbol was merged away or grew, or its right neighbour changed.
    if (l.id != top.left_id || l.next < 0 || symbols[l.next].id != top.right_id) continue;
    const std::int32_t right = l.next;
    l.id = merges_->find(pair_key(top.left_id, top.right_id))->merged_id;
    l.next = symbols[right].next;
    if (l.next >= 0) symbols[l.next].prev = left;
    symbols[right].id = -1;
    if (l.prev >= 0) push_pair(l.prev);
    push_pair(left);
  }
  for (std::int32_t i = 0; i >= 0; i = symbols[i].next) out.push_back(symbols[i].id);
}

}  // namespace awqd
