// Tokenizer: the `tokenizer.json` pipeline around the BPE model (bpe.h), decoding, and the
// streaming detokenizer. Chat templates are in chat.cc.
//
// Encoding follows HF tokenizers' TokenizerImpl::encode step for step, because ids must match
// the reference exactly:
//   1. Added tokens whose `normalized` is false are cut out of the raw text (leftmost-longest
//      match over a byte trie; `single_word`, `lstrip`, `rstrip` as in AddedVocabulary).
//   2. Each remaining segment is normalized (NFC/NFD/NFKC/NFKD through ICU, Prepend, Replace,
//      Lowercase, Strip, in the file's order), then added tokens with `normalized` true are cut
//      out of the normalized text.
//   3. Each remaining piece runs through the pre-tokenizer steps (Split with a PCRE2 regex or a
//      literal, ByteLevel, Metaspace, Digits), depth first: a step hands each sub-piece to the
//      next step at once, so no list of pieces is ever built. The last step feeds the BPE model.
//   4. add_special_tokens wraps the ids with the post-processor's prefix and suffix
//      (TemplateProcessing, Roberta/Bert style), overridden by tokenizer_config.json's
//      add_bos_token / add_eos_token where present (as transformers does for Llama tokenizers).
// Input text must be valid UTF-8 (checked once, up front; std::invalid_argument otherwise).
//
// Decoding is HF's TokenizerImpl::decode: ids -> token strings (added tokens by content,
// special ones dropped when asked), then the decoder chain over the list of strings (ByteLevel,
// Replace, ByteFallback, Fuse, Strip, Metaspace), then concatenation. The chain also reports
// whether the end of the text may still change when more ids follow (an unfinished UTF-8
// character, an open run of <0xXX> byte tokens); the IncrementalDecoder holds such text back.
//
// Thread safety: a loaded Tokenizer is immutable apart from the BPE word cache, which has its
// own lock; encode/decode may run concurrently.
#include "engine/tokenizer.h"

#include <algorithm>
#include <array>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <unordered_map>
#include <utility>

#include "engine/bpe.h"
#include "engine/regex.h"
#include "engine/text_file.h"
#include "engine/unicode.h"

namespace awqd {

using json = nlohmann::json;

namespace {

// The pre-tokenizer regex of HF's ByteLevel with use_regex (GPT-2's pattern).
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// ---- JSON access with errors that say where ---------------------------------------------------

struct JsonError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

const json* member(const json& obj, const char* key) {
  if (!obj.is_object()) return nullptr;
  const auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

const json& require(const json& obj, const char* key, const std::string& where) {
  const json* v = member(obj, key);
  if (v == nullptr) throw JsonError(where + ": missing \"" + key + "\"");
  return *v;
}

std::string string_or(const json& obj, const char* key, std::string fallback) {
  const json* v = member(obj, key);
  return v != nullptr && v->is_string() ? v->get<std::string>() : fallback;
}

bool bool_or(const json& obj, const char* key, bool fallback) {
  const json* v = member(obj, key);
  return v != nullptr && v->is_boolean() ? v->get<bool>() : fallback;
}

std::string type_of(const json& obj, const std::string& where) {
  const json* t = member(obj, "type");
  if (t == nullptr || !t->is_string()) throw JsonError(where + ": missing \"type\"");
  return t->get<std::string>();
}

[[noreturn]] void unsupported(const std::string& where, const std::string& type) {
  throw JsonError(where + ": type \"" + type + "\" is not supported by awqd's tokenizer");
}

// A special-token field of tokenizer_config.json: a string or {"content": "..."}.
std::optional<std::string> token_field(const json& config, const char* key) {
  const json* v = member(config, key);
  if (v == nullptr) return std::nullopt;
  if (v->is_string()) return v->get<std::string>();
  if (v->is_object()) {
    if (const json* c = member(*v, "content"); c != nullptr && c->is_string()) {
      return c->get<std::string>();
    }
  }
  return std::nullopt;
}

// ---- Patterns: {"String": "..."} or {"Regex": "..."} -------------------------------------------

struct Pattern {
  std::string literal;
  std::unique_ptr<Regex> regex;

  static Pattern parse(const json& p, const std::string& where) {
    Pattern out;
    if (const json* s = member(p, "String"); s != nullptr && s->is_string()) {
      out.literal = s->get<std::string>();
      if (out.literal.empty()) throw JsonError(where + ": empty pattern");
    } else if (const json* r = member(p, "Regex"); r != nullptr && r->is_string()) {
      try {
        out.regex = std::make_unique<Regex>(r->get<std::string>());
      } catch (const std::invalid_argument& e) {
        throw JsonError(where + ": " + e.what());
      }
    } else {
      throw JsonError(where + ": pattern must be {\"String\": ...} or {\"Regex\": ...}");
    }
    return out;
  }

  template <typename F>
  void for_each_match(std::string_view s, F&& on_match) const {
    if (regex) {
      regex->for_each_match(s, on_match);
      return;
    }
    for (std::size_t p = s.find(literal); p != std::string_view::npos;
         p = s.find(literal, p + literal.size())) {
      on_match(p, p + literal.size());
    }
  }

  std::string replace_all(std::string_view s, std::string_view content) const {
    std::string out;
    std::size_t prev = 0;
    for_each_match(s, [&](std::size_t b, std::size_t e) {
      out.append(s.substr(prev, b - prev));
      out.append(content);
      prev = e;
    });
    out.append(s.substr(prev));
    return out;
  }
};

// ---- Split behaviours (HF SplitDelimiterBehavior) ----------------------------------------------

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

SplitBehavior parse_behavior(const json& j, const std::string& where) {
  const std::string b = j.is_string() ? j.get<std::string>() : "";
  if (b == "Removed") return SplitBehavior::kRemoved;
  if (b == "Isolated") return SplitBehavior::kIsolated;
  if (b == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (b == "Contiguous") return SplitBehavior::kContiguous;
  throw JsonError(where + ": unknown split behavior \"" + b + "\"");
}

struct Span {
  std::size_t begin, end;
  bool is_match;
};

// The pieces that `behavior` makes of a string whose matches and gaps are `spans` (in order,
// covering it), exactly as HF's NormalizedString::split does.
std::vector<Span> apply_behavior(const std::vector<Span>& spans, SplitBehavior behavior) {
  std::vector<Span> out;
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::kIsolated:
      out = spans;
      break;
    case SplitBehavior::kRemoved:
      for (const Span& s : spans) {
        if (!s.is_match) out.push_back(s);
      }
      break;
    case SplitBehavior::kContiguous:
      for (const Span& s : spans) {
        if (s.is_match == previous_match && !out.empty()) {
          out.back().end = s.end;
        } else {
          out.push_back(s);
        }
        previous_match = s.is_match;
      }
      break;
    case SplitBehavior::kMergedWithPrevious:
      for (const Span& s : spans) {
        if (s.is_match && !previous_match && !out.empty()) {
          out.back().end = s.end;
        } else {
          out.push_back(s);
        }
        previous_match = s.is_match;
      }
      break;
    case SplitBehavior::kMergedWithNext:
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->is_match && !previous_match && !out.empty()) {
          out.back().begin = it->begin;
        } else {
          out.push_back(*it);
        }
        previous_match = it->is_match;
      }
      std::reverse(out.begin(), out.end());
      break;
  }
  return out;
}

// ---- Normalizers ----------------------------------------------------------------------------

struct Normalizer {
  enum class Kind { kForm, kPrepend, kReplace, kLowercase, kStrip } kind;
  unicode::NormalForm form = unicode::NormalForm::kNFC;
  std::string text{};  // Prepend: the prefix; Replace: the replacement
  std::shared_ptr<Pattern> pattern{};
  bool strip_left = false, strip_right = false;

  void apply(std::string& s) const {
    switch (kind) {
      case Kind::kForm:
        if (std::any_of(s.begin(), s.end(), [](char c) { return c & 0x80; })) {
          s = unicode::normalize(form, s);
        }
        break;
      case Kind::kPrepend:
        if (!s.empty()) s.insert(0, text);
        break;
      case Kind::kReplace:
        s = pattern->replace_all(s, text);
        break;
      case Kind::kLowercase:
        s = unicode::to_lower(s);
        break;
      case Kind::kStrip: {
        std::size_t b = 0, e = s.size();
        while (strip_left && b < e) {
          std::size_t next = b;
          if (!unicode::is_white_space(unicode::decode_utf8(s, next))) break;
          b = next;
        }
        while (strip_right && e > b) {
          std::size_t start = 0;
          if (!unicode::is_white_space(unicode::decode_utf8_backwards(s, e, start))) break;
          e = start;
        }
        s = s.substr(b, e - b);
        break;
      }
    }
  }
};

void parse_normalizer(const json& j, const std::string& where, std::vector<Normalizer>& out) {
  const std::string type = type_of(j, where);
  using K = Normalizer::Kind;
  if (type == "Sequence") {
    const json& list = require(j, "normalizers", where);
    for (std::size_t i = 0; i < list.size(); ++i) {
      parse_normalizer(list[i], where + ".normalizers[" + std::to_string(i) + "]", out);
    }
  } else if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
    const auto form = type == "NFC"    ? unicode::NormalForm::kNFC
                      : type == "NFD"  ? unicode::NormalForm::kNFD
                      : type == "NFKC" ? unicode::NormalForm::kNFKC
                                       : unicode::NormalForm::kNFKD;
    out.push_back({.kind = K::kForm, .form = form});
  } else if (type == "Prepend") {
    out.push_back({.kind = K::kPrepend, .text = require(j, "prepend", where).get<std::string>()});
  } else if (type == "Replace") {
    auto p = std::make_shared<Pattern>(Pattern::parse(require(j, "pattern", where), where));
    out.push_back({.kind = K::kReplace,
                   .text = require(j, "content", where).get<std::string>(),
                   .pattern = p});
  } else if (type == "Lowercase") {
    out.push_back({.kind = K::kLowercase});
  } else if (type == "Strip") {
    Normalizer n{.kind = K::kStrip};
    n.strip_left = bool_or(j, "strip_left", true);
    n.strip_right = bool_or(j, "strip_right", true);
    out.push_back(std::move(n));
  } else {
    unsupported(where, type);
  }
}

// ---- Pre-tokenizers -------------------------------------------------------------------------

enum class PrependScheme { kAlways, kFirst, kNever };

struct PreTokenizer {
  enum class Kind { kSplit, kByteLevel, kMetaspace, kDigits } kind;
  std::shared_ptr<Pattern> pattern{};  // Split; ByteLevel with use_regex (GPT-2 pattern)
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;
  bool add_prefix_space = false;  // ByteLevel
  std::string replacement{};      // Metaspace
  PrependScheme prepend = PrependScheme::kAlways;
  bool split = true;               // Metaspace: cut before each replacement character
  bool individual_digits = false;  // Digits
};

void parse_pre_tokenizer(const json& j, const std::string& where, std::vector<PreTokenizer>& out) {
  const std::string type = type_of(j, where);
  using K = PreTokenizer::Kind;
  if (type == "Sequence") {
    const json& list = require(j, "pretokenizers", where);
    for (std::size_t i = 0; i < list.size(); ++i) {
      parse_pre_tokenizer(list[i], where + ".pretokenizers[" + std::to_string(i) + "]", out);
    }
  } else if (type == "Split") {
    PreTokenizer p{.kind = K::kSplit};
    p.pattern = std::make_shared<Pattern>(Pattern::parse(require(j, "pattern", where), where));
    p.behavior = parse_behavior(require(j, "behavior", where), where);
    p.invert = bool_or(j, "invert", false);
    out.push_back(std::move(p));
  } else if (type == "ByteLevel") {
    PreTokenizer p{.kind = K::kByteLevel};
    p.add_prefix_space = bool_or(j, "add_prefix_space", true);
    if (bool_or(j, "use_regex", true)) {
      p.pattern = std::make_shared<Pattern>();
      p.pattern->regex = std::make_unique<Regex>(kGpt2Pattern);
    }
    out.push_back(std::move(p));
  } else if (type == "Metaspace") {
    PreTokenizer p{.kind = K::kMetaspace};
    p.replacement = string_or(j, "replacement", "\xE2\x96\x81");
    const std::string scheme = string_or(j, "prepend_scheme", "");
    if (scheme.empty()) {  // files older than prepend_scheme: add_prefix_space
      p.prepend =
          bool_or(j, "add_prefix_space", true) ? PrependScheme::kAlways : PrependScheme::kNever;
    } else if (scheme == "always" || scheme == "first" || scheme == "never") {
      p.prepend = scheme == "always"  ? PrependScheme::kAlways
                  : scheme == "first" ? PrependScheme::kFirst
                                      : PrependScheme::kNever;
    } else {
      throw JsonError(where + ": unknown prepend_scheme \"" + scheme + "\"");
    }
    p.split = bool_or(j, "split", true);
    out.push_back(std::move(p));
  } else if (type == "Digits") {
    PreTokenizer p{.kind = K::kDigits};
    p.individual_digits = bool_or(j, "individual_digits", false);
    out.push_back(std::move(p));
  } else {
    unsupported(where, type);
  }
}

// ---- Decoders -------------------------------------------------------------------------------

struct DecoderStep {
  enum class Kind { kByteLevel, kReplace, kByteFallback, kFuse, kStrip, kMetaspace } kind;
  std::shared_ptr<Pattern> pattern{};  // Replace
  std::string text{};                  // Replace: content; Strip/Metaspace: the character
  std::size_t start = 0, stop = 0;     // Strip
  bool prepend = true;                 // Metaspace: the first token's replacement chars vanish
};

void parse_decoder(const json& j, const std::string& where, std::vector<DecoderStep>& out) {
  const std::string type = type_of(j, where);
  using K = DecoderStep::Kind;
  if (type == "Sequence") {
    const json& list = require(j, "decoders", where);
    for (std::size_t i = 0; i < list.size(); ++i) {
      parse_decoder(list[i], where + ".decoders[" + std::to_string(i) + "]", out);
    }
  } else if (type == "ByteLevel") {
    out.push_back({.kind = K::kByteLevel});
  } else if (type == "Replace") {
    auto p = std::make_shared<Pattern>(Pattern::parse(require(j, "pattern", where), where));
    out.push_back({.kind = K::kReplace,
                   .pattern = p,
                   .text = require(j, "content", where).get<std::string>()});
  } else if (type == "ByteFallback") {
    out.push_back({.kind = K::kByteFallback});
  } else if (type == "Fuse") {
    out.push_back({.kind = K::kFuse});
  } else if (type == "Strip") {
    DecoderStep d{.kind = K::kStrip};
    d.text = string_or(j, "content", " ");
    d.start = require(j, "start", where).get<std::size_t>();
    d.stop = require(j, "stop", where).get<std::size_t>();
    out.push_back(std::move(d));
  } else if (type == "Metaspace") {
    DecoderStep d{.kind = K::kMetaspace};
    d.text = string_or(j, "replacement", "\xE2\x96\x81");
    const std::string scheme = string_or(j, "prepend_scheme", "");
    d.prepend = scheme.empty() ? bool_or(j, "add_prefix_space", true) : scheme != "never";
    out.push_back(std::move(d));
  } else {
    unsupported(where, type);
  }
}

// The byte of a <0xXX> token (HF's ByteFallback test: six characters, "<0x", two hex digits, ">").
int byte_token_value(std::string_view t) {
  if (t.size() != 6 || t.substr(0, 3) != "<0x" || t[5] != '>') return -1;
  const auto hex = [](char c) {
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
  };
  const int hi = hex(t[3]), lo = hex(t[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

// ---- Added tokens ---------------------------------------------------------------------------

struct AddedToken {
  std::int32_t id = 0;
  std::string content;
  bool special = false, lstrip = false, rstrip = false, single_word = false, normalized = false;
};

// Byte trie over added-token texts: longest_at() is the leftmost-longest match at a position.
class TokenTrie {
 public:
  TokenTrie() : nodes_(1) { first_byte_.fill(false); }

  void insert(std::string_view text, std::int32_t token) {
    if (text.empty()) return;
    first_byte_[static_cast<unsigned char>(text[0])] = true;
    std::int32_t node = 0;
    for (const char c : text) {
      const auto b = static_cast<unsigned char>(c);
      std::int32_t child = find_child(node, b);
      if (child < 0) {
        child = static_cast<std::int32_t>(nodes_.size());
        nodes_[node].children.emplace_back(b, child);
        nodes_.emplace_back();
      }
      node = child;
    }
    if (nodes_[node].token < 0) nodes_[node].token = token;  // first definition wins
  }

  bool empty() const { return nodes_.size() == 1; }
  bool may_start(unsigned char b) const { return first_byte_[b]; }

  // (token, length) of the longest token that starts at text[pos], or (-1, 0).
  std::pair<std::int32_t, std::size_t> longest_at(std::string_view text, std::size_t pos) const {
    std::pair<std::int32_t, std::size_t> best{-1, 0};
    std::int32_t node = 0;
    for (std::size_t i = pos; i < text.size(); ++i) {
      node = find_child(node, static_cast<unsigned char>(text[i]));
      if (node < 0) break;
      if (nodes_[node].token >= 0) best = {nodes_[node].token, i + 1 - pos};
    }
    return best;
  }

 private:
  struct Node {
    std::int32_t token = -1;
    std::vector<std::pair<unsigned char, std::int32_t>> children;
  };
  std::int32_t find_child(std::int32_t node, unsigned char b) const {
    for (const auto& [c, child] : nodes_[node].children) {
      if (c == b) return child;
    }
    return -1;
  }
  std::vector<Node> nodes_;
  std::array<bool, 256> first_byte_;
};

bool ends_with_word(std::string_view s) {
  if (s.empty()) return false;
  std::size_t start = 0;
  return unicode::is_word_char(unicode::decode_utf8_backwards(s, s.size(), start));
}

bool starts_with_word(std::string_view s) {
  if (s.empty()) return false;
  std::size_t pos = 0;
  return unicode::is_word_char(unicode::decode_utf8(s, pos));
}

// Start of the white space that ends s[0, end).
std::size_t trailing_space_start(std::string_view s, std::size_t end) {
  while (end > 0) {
    std::size_t start = 0;
    if (!unicode::is_white_space(unicode::decode_utf8_backwards(s, end, start))) break;
    end = start;
  }
  return end;
}

// End of the white space that starts at s[begin].
std::size_t leading_space_end(std::string_view s, std::size_t begin) {
  while (begin < s.size()) {
    std::size_t next = begin;
    if (!unicode::is_white_space(unicode::decode_utf8(s, next))) break;
    begin = next;
  }
  return begin;
}

}  // namespace

// ---- The tokenizer ----------------------------------------------------------------------------

struct Tokenizer::Impl {
  std::unique_ptr<BpeModel> model;
  std::vector<AddedToken> added;
  std::unordered_map<std::int32_t, std::size_t> added_by_id;  // id -> index in `added`
  std::unordered_map<std::string, std::size_t> added_by_content;
  TokenTrie raw_trie;         // added tokens matched before normalization
  TokenTrie normalized_trie;  // added tokens matched in normalized text
  std::vector<Normalizer> normalizers;
  std::vector<PreTokenizer> pre_tokenizers;
  std::vector<DecoderStep> decoders;
  std::vector<std::int32_t> special_prefix, special_suffix;  // add_special_tokens
  std::optional<std::int32_t> bos, eos;
  std::string chat_template;
  int vocab_size = 0;

  struct Decoded {
    std::string text;
    bool unstable = false;  // the end of `text` may change when more ids follow
  };

  std::optional<std::int32_t> lookup(std::string_view token) const {
    if (const auto it = added_by_content.find(std::string(token)); it != added_by_content.end()) {
      return added[it->second].id;
    }
    return model->token_to_id(token);
  }

  const AddedToken* added_token(std::int32_t id) const {
    const auto it = added_by_id.find(id);
    return it == added_by_id.end() ? nullptr : &added[it->second];
  }

  std::string normalize(std::string_view s) const {
    std::string out(s);
    for (const Normalizer& n : normalizers) n.apply(out);
    return out;
  }

  // Cuts added tokens out of `text` (HF AddedVocabulary::find_matches): on_token(id) for each,
  // on_text(begin, end) for the text between them.
  template <typename OnText, typename OnToken>
  void split_added(std::string_view text, const TokenTrie& trie, bool parse_special,
                   OnText&& on_text, OnToken&& on_token) const {
    std::size_t emitted = 0;  // text before this offset has been handed out
    std::size_t pos = 0;
    while (!trie.empty() && pos < text.size()) {
      if (!trie.may_start(static_cast<unsigned char>(text[pos]))) {
        ++pos;
        continue;
      }
      const auto [index, len] = trie.longest_at(text, pos);
      if (index < 0) {
        ++pos;
        continue;
      }
      const AddedToken& tok = added[index];
      std::size_t start = pos, stop = pos + len;
      pos = stop;  // the scan resumes after the match whether or not it is used
      if (tok.special && !parse_special) continue;
      if (tok.single_word && ((start > 0 && ends_with_word(text.substr(0, start))) ||
                              (stop < text.size() && starts_with_word(text.substr(stop))))) {
        continue;
      }
      if (tok.lstrip) start = std::max(trailing_space_start(text, start), emitted);
      if (tok.rstrip) stop = leading_space_end(text, stop);
      if (start > emitted) on_text(emitted, start);
      on_token(tok.id);
      emitted = stop;
      pos = std::max(pos, stop);
    }
    if (emitted < text.size()) on_text(emitted, text.size());
  }

  // Pre-tokenizer step `step` on `piece`; `at_start`: the piece begins the input text.
  void pre_tokenize(std::size_t step, std::string_view piece, bool at_start,
                    std::vector<std::int32_t>& out) const {
    if (piece.empty()) return;
    if (step == pre_tokenizers.size()) {
      model->encode_word(piece, out);
      return;
    }
    const PreTokenizer& p = pre_tokenizers[step];
    const auto next = [&](std::string_view sub, bool sub_at_start) {
      pre_tokenize(step + 1, sub, sub_at_start, out);
    };
    using K = PreTokenizer::Kind;
    switch (p.kind) {
      case K::kSplit:
        split(piece, at_start, *p.pattern, p.behavior, p.invert, next);
        break;
      case K::kByteLevel: {
        std::string prefixed;
        if (p.add_prefix_space && piece[0] != ' ') {
          prefixed.reserve(piece.size() + 1);
          prefixed.push_back(' ');
          prefixed.append(piece);
          piece = prefixed;
        }
        if (p.pattern) {
          split(piece, at_start, *p.pattern, SplitBehavior::kIsolated, false, next);
        } else {
          next(piece, at_start);
        }
        break;
      }
      case K::kMetaspace: {
        std::string s;
        s.reserve(piece.size() + p.replacement.size());
        for (const char c : piece) {
          if (c == ' ') {
            s += p.replacement;
          } else {
            s.push_back(c);
          }
        }
        const bool prepend =
            p.prepend == PrependScheme::kAlways || (p.prepend == PrependScheme::kFirst && at_start);
        if (prepend && s.compare(0, p.replacement.size(), p.replacement) != 0) {
          s.insert(0, p.replacement);
        }
        if (p.split) {
          Pattern literal{p.replacement, nullptr};
          split(s, at_start, literal, SplitBehavior::kMergedWithNext, false, next);
        } else {
          next(s, at_start);
        }
        break;
      }
      case K::kDigits: {
        std::vector<Span> spans;
        for (std::size_t i = 0; i < piece.size();) {
          const bool digit = piece[i] >= '0' && piece[i] <= '9';
          const std::size_t len = unicode::utf8_length(static_cast<unsigned char>(piece[i]));
          if (!spans.empty() && !digit && !spans.back().is_match) {
            spans.back().end = i + len;
          } else {
            spans.push_back({i, i + len, digit});
          }
          i += len;
        }
        const auto behavior =
            p.individual_digits ? SplitBehavior::kIsolated : SplitBehavior::kContiguous;
        for (const Span& s : apply_behavior(spans, behavior)) {
          next(piece.substr(s.begin, s.end - s.begin), at_start && s.begin == 0);
        }
        break;
      }
    }
  }

  template <typename Next>
  static void split(std::string_view piece, bool at_start, const Pattern& pattern,
                    SplitBehavior behavior, bool invert, Next&& next) {
    if (behavior == SplitBehavior::kIsolated) {  // the common case: no list needed
      std::size_t prev = 0;
      pattern.for_each_match(piece, [&](std::size_t b, std::size_t e) {
        if (b > prev) next(piece.substr(prev, b - prev), at_start && prev == 0);
        next(piece.substr(b, e - b), at_start && b == 0);
        prev = e;
      });
      if (prev < piece.size()) next(piece.substr(prev), at_start && prev == 0);
      return;
    }
    std::vector<Span> spans;
    std::size_t prev = 0;
    pattern.for_each_match(piece, [&](std::size_t b, std::size_t e) {
      if (b > prev) spans.push_back({prev, b, invert});
      spans.push_back({b, e, !invert});
      prev = e;
    });
    if (prev < piece.size()) spans.push_back({prev, piece.size(), invert});
    for (const Span& s : apply_behavior(spans, behavior)) {
      next(piece.substr(s.begin, s.end - s.begin), at_start && s.begin == 0);
    }
  }

  std::vector<std::int32_t> encode(std::string_view text, bool add_special,
                                   bool parse_special) const {
    if (const std::size_t bad = unicode::find_invalid_utf8(text); bad != text.size()) {
      throw std::invalid_argument("text is not valid UTF-8 (byte offset " + std::to_string(bad) +
                                  ")");
    }
    std::vector<std::int32_t> out;
    out.reserve(text.size() / 3 + 8);
    if (add_special) out = special_prefix;
    const auto on_token = [&](std::int32_t id) { out.push_back(id); };
    split_added(
        text, raw_trie, parse_special,
        [&](std::size_t b, std::size_t e) {
          const std::string normalized = normalize(text.substr(b, e - b));
          split_added(
              normalized, normalized_trie, parse_special,
              [&](std::size_t nb, std::size_t ne) {
                pre_tokenize(0, std::string_view(normalized).substr(nb, ne - nb), b == 0 && nb == 0,
                             out);
              },
              on_token);
        },
        on_token);
    if (add_special) out.insert(out.end(), special_suffix.begin(), special_suffix.end());
    return out;
  }

  Decoded decode(std::span<const std::int32_t> ids, bool skip_special) const {
    std::vector<std::string> tokens;
    tokens.reserve(ids.size());
    for (const std::int32_t id : ids) {
      if (const AddedToken* a = added_token(id)) {
        if (!(skip_special && a->special)) tokens.push_back(a->content);
      } else if (const std::string_view t = model->id_to_token(id); !t.empty()) {
        tokens.emplace_back(t);
      }  // an id outside the vocabulary is skipped, as HF does
    }
    Decoded d;
    if (decoders.empty()) {
      for (std::size_t i = 0; i < tokens.size(); ++i) {
        if (i > 0) d.text += ' ';
        d.text += tokens[i];
      }
      return d;
    }
    for (const DecoderStep& step : decoders) apply(step, tokens, d.unstable);
    for (const std::string& t : tokens) d.text += t;
    return d;
  }

  static void apply(const DecoderStep& step, std::vector<std::string>& tokens, bool& unstable) {
    using K = DecoderStep::Kind;
    switch (step.kind) {
      case K::kByteLevel: {
        std::string bytes;
        for (const std::string& t : tokens) {
          const std::size_t mark = bytes.size();
          for (std::size_t pos = 0; pos < t.size();) {
            const int b = unicode::code_point_to_byte(unicode::decode_utf8(t, pos));
            if (b < 0) {  // not byte-level text (an added token): its own UTF-8 bytes
              bytes.resize(mark);
              bytes += t;
              break;
            }
            bytes.push_back(static_cast<char>(b));
          }
        }
        std::string text;
        unstable = unicode::append_lossy(text, bytes) > 0 || unstable;
        tokens.assign(1, std::move(text));
        break;
      }
      case K::kReplace:
        for (std::string& t : tokens) t = step.pattern->replace_all(t, step.text);
        break;
      case K::kByteFallback: {
        std::vector<std::string> out;
        out.reserve(tokens.size());
        std::string run;  // bytes of consecutive <0xXX> tokens
        const auto flush_run = [&] {
          if (run.empty()) return;
          if (unicode::is_valid_utf8(run)) {
            out.push_back(run);
          } else {  // HF: one U+FFFD per byte when the run is not valid UTF-8
            for (std::size_t i = 0; i < run.size(); ++i)
              out.emplace_back(unicode::kReplacementChar);
          }
          run.clear();
        };
        for (std::string& t : tokens) {
          if (const int b = byte_token_value(t); b >= 0) {
            run.push_back(static_cast<char>(b));
          } else {
            flush_run();
            out.push_back(std::move(t));
          }
        }
        unstable = !run.empty() || unstable;  // a later byte token would join this run
        flush_run();
        tokens = std::move(out);
        break;
      }
      case K::kFuse: {
        std::string all;
        for (const std::string& t : tokens) all += t;
        tokens.assign(1, std::move(all));
        break;
      }
      case K::kStrip:
        // Text cut off the end may come back when more tokens follow: hold it (conservative).
        if (step.stop > 0 && !tokens.empty() && tokens.back().size() >= step.text.size() &&
            tokens.back().compare(tokens.back().size() - step.text.size(), step.text.size(),
                                  step.text) == 0) {
          unstable = true;
        }
        for (std::string& t : tokens) {
          std::size_t b = 0, e = t.size();
          for (std::size_t i = 0; i < step.start && t.compare(b, step.text.size(), step.text) == 0;
               ++i) {
            b += step.text.size();
          }
          for (std::size_t i = 0; i < step.stop && e >= b + step.text.size() &&
                                  t.compare(e - step.text.size(), step.text.size(), step.text) == 0;
               ++i) {
            e -= step.text.size();
          }
          t = t.substr(b, e - b);
        }
        break;
      case K::kMetaspace:
        for (std::size_t i = 0; i < tokens.size(); ++i) {
          std::string out;
          const std::string& t = tokens[i];
          for (std::size_t pos = 0; pos < t.size();) {
            if (t.compare(pos, step.text.size(), step.text) == 0) {
              if (!(i == 0 && step.prepend)) out += ' ';
              pos += step.text.size();
            } else {
              out += t[pos++];
            }
          }
          tokens[i] = std::move(out);
        }
        break;
    }
  }
};

namespace {

struct ModelSpec {
  std::unordered_map<std::string, std::int32_t> vocab;
  std::vector<std::pair<std::string, std::string>> merges;
  BpeOptions options;
};

ModelSpec parse_model(const json& m, const std::string& where) {
  const std::string type = string_or(m, "type", "BPE");
  if (type != "BPE") unsupported(where, type);
  if (const json* d = member(m, "dropout");
      d != nullptr && d->is_number() && d->get<double>() > 0) {
    throw JsonError(where + ": BPE dropout is not supported (inference is deterministic)");
  }
  if (!string_or(m, "continuing_subword_prefix", "").empty() ||
      !string_or(m, "end_of_word_suffix", "").empty()) {
    throw JsonError(where + ": continuing_subword_prefix/end_of_word_suffix are not supported");
  }
  ModelSpec spec;
  const json& vocab = require(m, "vocab", where);
  if (!vocab.is_object()) throw JsonError(where + ".vocab: expected an object");
  spec.vocab.reserve(vocab.size());
  for (const auto& [token, id] : vocab.items()) {
    if (!id.is_number_integer() || id.get<std::int64_t>() < 0 ||
        id.get<std::int64_t>() > INT32_MAX) {
      throw JsonError(where + ".vocab[\"" + token + "\"]: expected a non-negative id");
    }
    spec.vocab.emplace(token, id.get<std::int32_t>());
  }
  if (const json* merges = member(m, "merges")) {
    if (!merges->is_array()) throw JsonError(where + ".merges: expected an array");
    spec.merges.reserve(merges->size());
    for (std::size_t i = 0; i < merges->size(); ++i) {
      const json& e = (*merges)[i];
      const std::string at = where + ".merges[" + std::to_string(i) + "]";
      if (e.is_string()) {  // "left right"
        const std::string s = e.get<std::string>();
        const std::size_t sp = s.find(' ');
        if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos) {
          throw JsonError(at + ": expected \"left right\", got \"" + s + "\"");
        }
        spec.merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
      } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
        spec.merges.emplace_back(e[0].get<std::string>(), e[1].get<std::string>());
      } else {
        throw JsonError(at + ": expected a pair of tokens");
      }
    }
  }
  spec.options.byte_fallback = bool_or(m, "byte_fallback", false);
  spec.options.ignore_merges = bool_or(m, "ignore_merges", false);
  spec.options.fuse_unk = bool_or(m, "fuse_unk", false);
  if (const json* unk = member(m, "unk_token"); unk != nullptr && unk->is_string()) {
    const auto it = spec.vocab.find(unk->get<std::string>());
    if (it == spec.vocab.end()) {
      throw JsonError(where + ".unk_token: \"" + unk->get<std::string>() +
                      "\" is not in the vocabulary");
    }
    spec.options.unk_id = it->second;
  }
  return spec;
}

// The special-token ids the post-processor puts before and after a single sequence.
void parse_post_processor(const json& j, const std::string& where, const Tokenizer::Impl& impl,
                          std::vector<std::int32_t>& prefix, std::vector<std::int32_t>& suffix) {
  const std::string type = type_of(j, where);
  const auto id_of = [&](const std::string& token) {
    const auto id = impl.lookup(token);
    if (!id) throw JsonError(where + ": special token \"" + token + "\" is not in the vocabulary");
    return *id;
  };
  if (type == "Sequence") {
    const json& list = require(j, "processors", where);
    for (std::size_t i = 0; i < list.size(); ++i) {
      parse_post_processor(list[i], where + ".processors[" + std::to_string(i) + "]", impl, prefix,
                           suffix);
    }
  } else if (type == "ByteLevel") {
    // Only trims offsets; no ids.
  } else if (type == "TemplateProcessing") {
    const json& single = require(j, "single", where);
    const json* specials = member(j, "special_tokens");
    bool after_sequence = false;
    for (const json& item : single) {
      if (member(item, "Sequence") != nullptr) {
        after_sequence = true;
        continue;
      }
      const json* st = member(item, "SpecialToken");
      if (st == nullptr) throw JsonError(where + ".single: expected SpecialToken or Sequence");
      const std::string name = require(*st, "id", where + ".single").get<std::string>();
      std::vector<std::int32_t> ids;
      if (const json* entry = specials != nullptr ? member(*specials, name.c_str()) : nullptr) {
        for (const json& id : require(*entry, "ids", where + ".special_tokens")) {
          ids.push_back(id.get<std::int32_t>());
        }
      } else {
        ids.push_back(id_of(name));
      }
      auto& target = after_sequence ? suffix : prefix;
      target.insert(target.end(), ids.begin(), ids.end());
    }
  } else if (type == "RobertaProcessing" || type == "BertProcessing") {
    prefix.push_back(require(j, "cls", where).at(1).get<std::int32_t>());
    suffix.push_back(require(j, "sep", where).at(1).get<std::int32_t>());
  } else {
    unsupported(where, type);
  }
}

void load_tokenizer_json(Tokenizer::Impl& impl, const json& root) {
  if (!root.is_object()) throw JsonError("expected a JSON object at the top level");
  ModelSpec spec = parse_model(require(root, "model", "tokenizer"), "model");
  if (const json* n = member(root, "normalizer"))
    parse_normalizer(*n, "normalizer", impl.normalizers);
  if (const json* p = member(root, "pre_tokenizer")) {
    parse_pre_tokenizer(*p, "pre_tokenizer", impl.pre_tokenizers);
  }
  for (std::size_t i = 0; i < impl.pre_tokenizers.size(); ++i) {
    if (impl.pre_tokenizers[i].kind != PreTokenizer::Kind::kByteLevel) continue;
    if (i + 1 != impl.pre_tokenizers.size()) {
      throw JsonError("pre_tokenizer: ByteLevel must be the last pre-tokenizer step");
    }
    spec.options.byte_level = true;
  }
  if (const json* d = member(root, "decoder")) parse_decoder(*d, "decoder", impl.decoders);
  try {
    impl.model = std::make_unique<BpeModel>(std::move(spec.vocab), spec.merges, spec.options);
  } catch (const std::invalid_argument& e) {
    throw JsonError(std::string("model: ") + e.what());
  }
  std::int32_t max_id = impl.model->max_id();

  if (const json* list = member(root, "added_tokens")) {
    for (std::size_t i = 0; i < list->size(); ++i) {
      const json& t = (*list)[i];
      const std::string where = "added_tokens[" + std::to_string(i) + "]";
      AddedToken a;
      a.id = require(t, "id", where).get<std::int32_t>();
      a.content = require(t, "content", where).get<std::string>();
      a.special = bool_or(t, "special", false);
      a.lstrip = bool_or(t, "lstrip", false);
      a.rstrip = bool_or(t, "rstrip", false);
      a.single_word = bool_or(t, "single_word", false);
      a.normalized = bool_or(t, "normalized", !a.special);
      if (a.content.empty()) continue;
      if (!unicode::is_valid_utf8(a.content)) throw JsonError(where + ": content is not UTF-8");
      max_id = std::max(max_id, a.id);
      impl.added_by_id[a.id] = impl.added.size();
      impl.added_by_content[a.content] = impl.added.size();
      impl.added.push_back(std::move(a));
    }
  }
  for (std::size_t i = 0; i < impl.added.size(); ++i) {
    const AddedToken& a = impl.added[i];
    if (a.normalized) {
      impl.normalized_trie.insert(impl.normalize(a.content), static_cast<std::int32_t>(i));
    } else {
      impl.raw_trie.insert(a.content, static_cast<std::int32_t>(i));
    }
  }
  impl.vocab_size = max_id + 1;
  if (const json* pp = member(root, "post_processor")) {
    parse_post_processor(*pp, "post_processor", impl, impl.special_prefix, impl.special_suffix);
  }
}

void load_tokenizer_config(Tokenizer::Impl& impl, const json& config) {
  if (!config.is_object()) throw JsonError("expected a JSON object at the top level");
  const auto id_of = [&](const char* key) -> std::optional<std::int32_t> {
    const auto token = token_field(config, key);
    if (!token) return std::nullopt;
    const auto id = impl.lookup(*token);
    if (!id) throw JsonError(std::string(key) + ": \"" + *token + "\" is not in the vocabulary");
    return id;
  };
  impl.bos = id_of("bos_token");
  impl.eos = id_of("eos_token");
  // add_bos_token / add_eos_token, where given, decide over the post-processor.
  const auto override_edge = [&](const char* key, std::optional<std::int32_t> id,
                                 std::vector<std::int32_t>& ids, bool front) {
    const json* flag = member(config, key);
    if (flag == nullptr || !flag->is_boolean() || !id) return;
    const bool has = !ids.empty() && (front ? ids.front() : ids.back()) == *id;
    if (flag->get<bool>() && !has) ids.insert(front ? ids.begin() : ids.end(), *id);
    if (!flag->get<bool>() && has) ids.erase(front ? ids.begin() : ids.end() - 1);
  };
  override_edge("add_bos_token", impl.bos, impl.special_prefix, true);
  override_edge("add_eos_token", impl.eos, impl.special_suffix, false);
  if (const json* t = member(config, "chat_template")) {
    if (t->is_string()) {
      impl.chat_template = t->get<std::string>();
    } else if (t->is_array()) {  // [{"name": "default", "template": "..."}, ...]
      for (const json& entry : *t) {
        if (string_or(entry, "name", "") == "default") {
          impl.chat_template = string_or(entry, "template", "");
        }
      }
    }
  }
}

json parse_json_file(const std::filesystem::path& path) {
  const std::string text = read_file(path);
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    throw std::runtime_error(path.string() + ": invalid JSON: " + e.what());
  }
}

}  // namespace

Tokenizer Tokenizer::load(const std::filesystem::path& dir) {
  std::filesystem::path path = dir / "tokenizer.json";
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) path = dir / "tokenizer.json.xz";
  if (!std::filesystem::exists(path, ec)) {
    throw std::runtime_error("no tokenizer in " + dir.string() +
                             ": expected tokenizer.json (or tokenizer.json.xz)");
  }
  auto impl = std::make_unique<Impl>();
  try {
    load_tokenizer_json(*impl, parse_json_file(path));
  } catch (const JsonError& e) {
    throw std::runtime_error(path.string() + ": " + e.what());
  } catch (const json::exception& e) {
    throw std::runtime_error(path.string() + ": unexpected structure: " + e.what());
  }
  const std::filesystem::path config_path = dir / "tokenizer_config.json";
  if (std::filesystem::exists(config_path, ec)) {
    try {
      load_tokenizer_config(*impl, parse_json_file(config_path));
    } catch (const JsonError& e) {
      throw std::runtime_error(config_path.string() + ": " + e.what());
    } catch (const json::exception& e) {
      throw std::runtime_error(config_path.string() + ": unexpected structure: " + e.what());
    }
  }
  // Without a config, BOS is whatever the post-processor puts first.
  if (!impl->bos && !impl->special_prefix.empty()) impl->bos = impl->special_prefix.front();
  const std::filesystem::path template_path = dir / "chat_template.jinja";
  if (impl->chat_template.empty() && std::filesystem::exists(template_path, ec)) {
    impl->chat_template = read_file(template_path);
  }
  return Tokenizer(std::move(impl));
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

std::vector<std::int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens,
                                            bool parse_special) const {
  return impl_->encode(text, add_special_tokens, parse_special);
}

std::string Tokenizer::decode(std::span<const std::int32_t> ids, bool skip_special_tokens) const {
  return impl_->decode(ids, skip_special_tokens).text;
}

int Tokenizer::vocab_size() const { return impl_->vocab_size; }

std::optional<std::int32_t> Tokenizer::token_to_id(std::string_view token) const {
  return impl_->lookup(token);
}

std::string_view Tokenizer::id_to_token(std::int32_t id) const {
  if (const AddedToken* a = impl_->added_token(id)) return a->content;
  return impl_->model->id_to_token(id);
}

bool Tokenizer::is_special(std::int32_t id) const {
  const AddedToken* a = impl_->added_token(id);
  return a != nullptr && a->special;
}

std::optional<std::int32_t> Tokenizer::bos_id() const { return impl_->bos; }
std::optional<std::int32_t> Tokenizer::eos_id() const { return impl_->eos; }

bool Tokenizer::add_bos() const {
  return impl_->bos && !impl_->special_prefix.empty() &&
         impl_->special_prefix.front() == *impl_->bos;
}

const std::string& Tokenizer::chat_template() const { return impl_->chat_template; }

// ---- IncrementalDecoder -------------------------------------------------------------------------
//
// The window method (as in vLLM/TGI): ids_[prefix_offset_, read_offset_) decoded to text that
// has been returned already (prefix_text_); a push decodes ids_[prefix_offset_, end) and returns
// what comes after prefix_text_, then moves the window up. Decoding a short window instead of
// everything keeps a push O(window); starting it one emission back keeps SentencePiece's
// "strip the first space" and Metaspace's first-token rule away from the text being returned.
// Text is returned only when the decoder chain says its end is final (no unfinished UTF-8
// character, no open <0xXX> run: HF turns a whole invalid run into U+FFFDs, so even a valid
// prefix of a run may change). Hence concatenated pieces + flush() == decode(all ids).

IncrementalDecoder::IncrementalDecoder(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tok_(&tokenizer), skip_special_(skip_special_tokens) {}

void IncrementalDecoder::prime(std::span<const std::int32_t> ids) {
  constexpr std::size_t kContext = 6;  // prompt tokens decoded with each step, for spacing
  ids_.assign(ids.begin(), ids.end());
  read_offset_ = ids_.size();
  prefix_offset_ = read_offset_ > kContext ? read_offset_ - kContext : 0;
  const Tokenizer::Impl& impl = *tok_->impl_;
  // Do not start the window inside a run of byte tokens (it would decode differently).
  while (prefix_offset_ > 0 && byte_token_value(tok_->id_to_token(ids_[prefix_offset_])) >= 0) {
    --prefix_offset_;
  }
  // A prompt that ends inside a character: its bytes are returned with the completing ones.
  auto window = [&] {
    return std::span<const std::int32_t>(ids_).subspan(prefix_offset_,
                                                       read_offset_ - prefix_offset_);
  };
  auto decoded = impl.decode(window(), skip_special_);
  while (decoded.unstable && read_offset_ > prefix_offset_) {
    --read_offset_;
    decoded = impl.decode(window(), skip_special_);
  }
  prefix_text_ = std::move(decoded.text);
}

std::string IncrementalDecoder::push(std::int32_t id) {
  ids_.push_back(id);
  const Tokenizer::Impl& impl = *tok_->impl_;
  const std::span<const std::int32_t> all(ids_);
  auto decoded = impl.decode(all.subspan(prefix_offset_), skip_special_);
  if (decoded.unstable || decoded.text.size() <= prefix_text_.size() ||
      decoded.text.compare(0, prefix_text_.size(), prefix_text_) != 0) {
    return {};
  }
  std::string delta = decoded.text.substr(prefix_text_.size());
  prefix_offset_ = read_offset_;
  read_offset_ = ids_.size();
  prefix_text_ =
      impl.decode(all.subspan(prefix_offset_, read_offset_ - prefix_offset_), skip_special_).text;
  return delta;
}

std::string IncrementalDecoder::flush() {
  const Tokenizer::Impl& impl = *tok_->impl_;
  const std::span<const std::int32_t> all(ids_);
  std::string text = impl.decode(all.subspan(prefix_offset_), skip_special_).text;
  // prefix_text_ is always a prefix here: it was decoded when its end was final.
  std::string delta = text.size() >= prefix_text_.size() ? text.substr(prefix_text_.size()) : "";
  prefix_offset_ = read_offset_ = ids_.size();
  prefix_text_.clear();
  return delta;
}

}  // namespace awqd
