// Chat prompts (SPEC section 3: `messages` jobs). awqd does not run Jinja: the model families it
// serves use one of three fixed layouts, written out here and picked from the tokenizer's chat
// template and special tokens (detect_chat_format). Each renders like the model's own template
// with add_generation_prompt=True:
//
//   ChatML (Qwen2, Qwen2.5, Qwen3):
//     <|im_start|>{role}\n{content}<|im_end|>\n   for each message, then <|im_start|>assistant\n
//     A literal default system prompt in the template (Qwen2.5: "You are Qwen, created by
//     Alibaba Cloud. You are a helpful assistant.") is used when the messages have none.
//     Not reproduced: Qwen3's removal of <think> blocks from earlier assistant turns.
//   Llama-3 (3.0 header format):
//     <|begin_of_text|><|start_header_id|>{role}<|end_header_id|>\n\n{content, trimmed}<|eot_id|>
//     for each message, then <|start_header_id|>assistant<|end_header_id|>\n\n
//     Llama-3.1+ templates (they mention "Cutting Knowledge Date") always open with a system
//     turn: "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n" + the system
//     message. The date is the templates' own default, not today's: a prompt renders the same
//     whenever it runs, so results are reproducible.
//   Plain (base models without a chat template, e.g. llama-13m), chosen by awqd:
//     "{Role}: {content}\n\n" for each message (role capitalised: System, User, Assistant),
//     then "Assistant:". The model writes the reply after the colon (its first token usually
//     carries the space). Tokenized with add_special_tokens=true, so BOS is added as usual.
#include <stdexcept>
#include <string>

#include "engine/tokenizer.h"
#include "engine/unicode.h"

namespace awqd {
namespace {

// Jinja's `trim` (Python str.strip()): white space off both ends.
std::string trim(const std::string& s) {
  std::size_t b = 0, e = s.size();
  while (b < e) {
    std::size_t next = b;
    if (!unicode::is_white_space(unicode::decode_utf8(s, next))) break;
    b = next;
  }
  while (e > b) {
    std::size_t start = 0;
    if (!unicode::is_white_space(unicode::decode_utf8_backwards(s, e, start))) break;
    e = start;
  }
  return s.substr(b, e - b);
}

// The literal system prompt a ChatML template writes when the messages have none: the text of
// a Jinja string literal '<|im_start|>system\n...<|im_end|>' that contains no expression.
std::string chatml_default_system(const std::string& tpl) {
  static const std::string kOpen = "'<|im_start|>system\\n";
  static const std::string kClose = "<|im_end|>";
  for (std::size_t open = tpl.find(kOpen); open != std::string::npos;
       open = tpl.find(kOpen, open + 1)) {
    const std::size_t begin = open + kOpen.size();
    const std::size_t close = tpl.find(kClose, begin);
    if (close == std::string::npos) break;
    const std::string text = tpl.substr(begin, close - begin);
    if (!text.empty() && text.find_first_of("'\"{}+\\") == std::string::npos) return text;
  }
  return {};
}

void check_roles(std::span<const ChatMessage> messages) {
  if (messages.empty()) throw std::invalid_argument("chat: no messages");
  for (const ChatMessage& m : messages) {
    if (m.role.empty()) throw std::invalid_argument("chat: a message has an empty role");
  }
}

std::string render_chatml(std::span<const ChatMessage> messages, const Tokenizer& tokenizer) {
  std::string out;
  if (messages.front().role != "system") {
    const std::string fallback = chatml_default_system(tokenizer.chat_template());
    if (!fallback.empty()) out += "<|im_start|>system\n" + fallback + "<|im_end|>\n";
  }
  for (const ChatMessage& m : messages) {
    out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
  }
  out += "<|im_start|>assistant\n";
  return out;
}

std::string render_llama3(std::span<const ChatMessage> messages, const Tokenizer& tokenizer) {
  const auto bos = tokenizer.bos_id();
  std::string out(bos ? tokenizer.id_to_token(*bos) : std::string_view("<|begin_of_text|>"));
  const auto turn = [&](const std::string& role, const std::string& content) {
    out += "<|start_header_id|>" + role + "<|end_header_id|>\n\n" + content + "<|eot_id|>";
  };
  if (tokenizer.chat_template().find("Cutting Knowledge Date") != std::string::npos) {
    std::string system;
    if (messages.front().role == "system") {
      system = trim(messages.front().content);
      messages = messages.subspan(1);
    }
    turn("system", "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n" + system);
  }
  for (const ChatMessage& m : messages) turn(m.role, trim(m.content));
  out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  return out;
}

std::string render_plain(std::span<const ChatMessage> messages) {
  std::string out;
  for (const ChatMessage& m : messages) {
    std::string role = m.role;
    if (role[0] >= 'a' && role[0] <= 'z') role[0] = static_cast<char>(role[0] - 'a' + 'A');
    out += role + ": " + m.content + "\n\n";
  }
  out += "Assistant:";
  return out;
}

}  // namespace

ChatFormat detect_chat_format(const Tokenizer& tokenizer) {
  const std::string& tpl = tokenizer.chat_template();
  if (!tpl.empty()) {
    if (tpl.find("<|im_start|>") != std::string::npos) return ChatFormat::kChatML;
    if (tpl.find("<|start_header_id|>") != std::string::npos) return ChatFormat::kLlama3;
    return ChatFormat::kPlain;
  }
  if (tokenizer.token_to_id("<|im_start|>")) return ChatFormat::kChatML;
  if (tokenizer.token_to_id("<|start_header_id|>")) return ChatFormat::kLlama3;
  return ChatFormat::kPlain;
}

std::string render_chat(ChatFormat format, std::span<const ChatMessage> messages,
                        const Tokenizer& tokenizer) {
  check_roles(messages);
  switch (format) {
    case ChatFormat::kChatML:
      return render_chatml(messages, tokenizer);
    case ChatFormat::kLlama3:
      return render_llama3(messages, tokenizer);
    case ChatFormat::kPlain:
      return render_plain(messages);
  }
  throw std::invalid_argument("chat: unknown format");
}

}  // namespace awqd
