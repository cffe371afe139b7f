// The BPE model of a `tokenizer.json` ("model": {"type": "BPE", ...}): turns one pre-tokenized
// word into token ids. Everything before it (added tokens, normalizers, pre-tokenizers) and
// after it (post-processor, decoders) lives in tokenizer.cc.
//
// Algorithm (same result as HF tokenizers' BPE::merge_word):
//   1. The word becomes initial symbols: one per byte for byte-level vocabularies (the byte's
//      GPT-2 code point, so the word is given here as raw bytes, never as mapped text), else one
//      per UTF-8 character; a character missing from the vocabulary becomes its <0xXX> byte
//      tokens (byte_fallback) or the unknown token (consecutive ones fused when fuse_unk).
//   2. Symbols form a doubly linked list over an array; every adjacent pair that has a merge
//      goes into a min-heap keyed by (merge rank, position). The heap top is merged unless it is
//      stale (one of its symbols has changed since), and the new symbol's two neighbouring pairs
//      are pushed. Lowest rank first, leftmost first among equal ranks: standard BPE.
//      O(n log n) per word; merges are looked up by (left id, right id) in a flat hash table.
//   3. ignore_merges (Llama-3): a word that is itself a vocabulary token is that token.
//
// Speed:
//   - A cache of words seen before (word bytes -> ids; up to kCacheWords words of at most
//     kMaxCachedWordBytes), shared by all threads behind a reader/writer lock. Pre-tokenized
//     text repeats words constantly, so most words are a single hash lookup.
//   - SentencePiece-style vocabularies (llama-13m, Llama-2, Mistral) have no pre-tokenizer: the
//     whole text is one "word". When no vocabulary token holds a "▁" right after another
//     character (checked at load), no merge can join the text across such a point, and the word
//     is cut there into space-delimited pieces that are merged (and cached) independently:
//     identical ids, shorter heaps, cache hits.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace awqd {

struct BpeOptions {
  bool byte_level = false;     // words arrive as raw bytes; vocabulary strings are GPT-2-mapped
  bool byte_fallback = false;  // unknown characters become <0xXX> tokens
  bool ignore_merges = false;  // a word found in the vocabulary is returned whole
  bool fuse_unk = false;       // consecutive unknown characters give one unknown token
  std::optional<std::int32_t> unk_id;
};

class BpeModel {
 public:
  // vocab: token string -> id. merges: (left, right) token strings, in rank order. Throws
  // std::invalid_argument when a merge names a token missing from the vocabulary.
  BpeModel(std::unordered_map<std::string, std::int32_t> vocab,
           const std::vector<std::pair<std::string, std::string>>& merges, BpeOptions options);
  ~BpeModel();

  // Appends the ids of one word to `out`. Thread-safe.
  void encode_word(std::string_view word, std::vector<std::int32_t>& out) const;

  std::optional<std::int32_t> token_to_id(std::string_view token) const;
  // The vocabulary string of `id`, or "" when the model has no such id.
  std::string_view id_to_token(std::int32_t id) const;
  std::int32_t max_id() const { return static_cast<std::int32_t>(id_to_token_.size()) - 1; }
  const BpeOptions& options() const { return options_; }

  static constexpr std::size_t kMaxCachedWordBytes = 64;
  static constexpr std::size_t kCacheWords = 1 << 16;

 private:
  struct StringHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  using StringMap = std::unordered_map<std::string, std::int32_t, StringHash, std::equal_to<>>;
  class PairTable;

  void encode_piece(std::string_view piece, std::vector<std::int32_t>& out) const;
  void merge(std::string_view piece, std::vector<std::int32_t>& out) const;
  void initial_symbols(std::string_view piece, std::vector<std::int32_t>& ids) const;
  std::optional<std::int32_t> whole_word_id(std::string_view piece) const;

  BpeOptions options_;
  StringMap vocab_;      // vocabulary string -> id
  StringMap raw_vocab_;  // byte-level + ignore_merges: raw bytes -> id
  std::vector<std::string> id_to_token_;
  std::unique_ptr<PairTable> merges_;  // (left id, right id) -> (rank, merged id)
  std::int32_t byte_ids_[256];         // byte-level: id of each byte's code point, or -1
  std::int32_t fallback_ids_[256];     // byte_fallback: id of <0xXX>, or -1
  std::int32_t ascii_ids_[128];        // id of each ASCII character, or -1
  bool split_at_spaces_ = false;       // SentencePiece pieces merge independently (see top)

  mutable std::shared_mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<std::int32_t>, StringHash, std::equal_to<>>
      cache_;
};

}  // namespace awqd
