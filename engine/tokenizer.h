// Hugging Face `tokenizer.json` BPE tokenizers (SPEC section 3), in both families:
//   - byte-level BPE (Qwen2/2.5/3, Llama-3): a Split pre-tokenizer with the model's regex
//     (run with PCRE2, Unicode properties), bytes mapped to printable code points (GPT-2's
//     bytes_to_unicode), merges by rank;
//   - SentencePiece-style BPE with byte fallback (Llama-2, Mistral, llama-13m): the normalizer
//     prepends "▁" and replaces spaces with "▁", merges by rank, unknown pieces fall back to
//     <0xXX> byte tokens; the decoder reverses it.
// Added tokens (special or not) are matched before pre-tokenization, longest first, honouring
// lstrip/rstrip/single_word/normalized. `add_bos` comes from tokenizer_config.json
// (`add_bos_token`) or the TemplateProcessing post-processor.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace awqd {

class Tokenizer {
 public:
  // Loads <dir>/tokenizer.json (or tokenizer.json.xz) and <dir>/tokenizer_config.json when
  // present. Throws std::runtime_error naming the file and the problem.
  static Tokenizer load(const std::filesystem::path& dir);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // add_special_tokens: prepend BOS (and whatever else the post-processor adds), as HF's
  // encode(text, add_special_tokens=True) does. Special-token text in `text` (e.g.
  // "<|im_start|>") is matched as the special token when parse_special is true.
  std::vector<std::int32_t> encode(std::string_view text, bool add_special_tokens,
                                   bool parse_special = true) const;

  // Decodes ids to UTF-8 text. skip_special_tokens drops tokens marked special. Invalid UTF-8
  // byte sequences become U+FFFD, as HF does.
  std::string decode(std::span<const std::int32_t> ids, bool skip_special_tokens = false) const;

  int vocab_size() const;  // largest id + 1, added tokens included
  std::optional<std::int32_t> token_to_id(std::string_view token) const;
  std::string_view id_to_token(std::int32_t id) const;  // the vocabulary string, "" if none
  bool is_special(std::int32_t id) const;
  std::optional<std::int32_t> bos_id() const;
  std::optional<std::int32_t> eos_id() const;  // tokenizer_config's eos_token
  bool add_bos() const;
  // The chat template text from tokenizer_config.json ("" when absent).
  const std::string& chat_template() const;

  struct Impl;

 private:
  friend class IncrementalDecoder;  // decodes through Impl to learn whether a text end is final
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Streaming detokenizer: push ids one at a time, get back only text that is complete UTF-8 and
// will not change when later tokens arrive (SentencePiece's leading-space handling included).
// Concatenating every returned piece plus flush() equals tokenizer.decode(all ids).
class IncrementalDecoder {
 public:
  IncrementalDecoder(const Tokenizer& tokenizer, bool skip_special_tokens = false);
  // Ids already in the sequence before generation (the prompt), for correct spacing; their text
  // is not returned.
  void prime(std::span<const std::int32_t> ids);
  std::string push(std::int32_t id);
  std::string flush();  // whatever is held back (an incomplete UTF-8 tail becomes U+FFFD)

 private:
  const Tokenizer* tok_;
  bool skip_special_;
  std::vector<std::int32_t> ids_;
  std::size_t prefix_offset_ = 0;  // ids_[prefix_offset_, read_offset_) decode to emitted text
  std::size_t read_offset_ = 0;
  std::string prefix_text_;  // decode(ids_[prefix_offset_, read_offset_))
};

struct ChatMessage {
  std::string role;  // system | user | assistant
  std::string content;
};

enum class ChatFormat { kChatML, kLlama3, kPlain };

// Picks the format from the tokenizer's chat template and special tokens: ChatML when it has
// <|im_start|>, the Llama-3 header format when it has <|start_header_id|>, else plain.
ChatFormat detect_chat_format(const Tokenizer& tokenizer);

// Renders messages as the model expects, ending with the assistant turn's opening
// (add_generation_prompt). The result is tokenized with add_special_tokens = false for ChatML and
// Llama-3 (the template writes its own BOS), true for plain.
std::string render_chat(ChatFormat format, std::span<const ChatMessage> messages,
                        const Tokenizer& tokenizer);

}  // namespace awqd
