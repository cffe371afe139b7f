#include "engine/text_corpus.h"

#include <stdexcept>

namespace awqd {

namespace {

bool blank(std::string_view line) {
  return line.find_first_not_of(" \t\r\f\v") == std::string_view::npos;
}

}  // namespace

std::vector<std::string> split_paragraphs(std::string_view text) {
  std::vector<std::string> out;
  std::string current;
  std::size_t pos = 0;
  while (pos <= text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(pos, end - pos);
    if (blank(line)) {
      if (!current.empty()) out.push_back(std::move(current));
      current.clear();
    } else {
      if (!current.empty()) current += '\n';
      current += line;
    }
    pos = end + 1;
  }
  if (!current.empty()) out.push_back(std::move(current));
  return out;
}

std::int32_t newline_token(const Tokenizer& tok) {
  for (const char* piece : {"<0x0A>", "\xC4\x8A" /* Ċ */}) {
    if (auto id = tok.token_to_id(piece)) return *id;
  }
  throw std::runtime_error(
      "the tokenizer has no single token for \"\\n\" (neither <0x0A> nor \xC4\x8A)");
}

std::vector<std::int32_t> tokenize_paragraphs(const Tokenizer& tok, std::string_view text) {
  const std::int32_t nl = newline_token(tok);
  std::vector<std::int32_t> ids;
  for (const std::string& p : split_paragraphs(text)) {
    if (!ids.empty()) ids.push_back(nl);
    const auto part = tok.encode(p, /*add_special_tokens=*/false, /*parse_special=*/false);
    ids.insert(ids.end(), part.begin(), part.end());
  }
  return ids;
}

std::vector<std::vector<std::int32_t>> cut_samples(std::span<const std::int32_t> ids,
                                                   int num_samples, int seq_len) {
  if (seq_len <= 0 || num_samples <= 0)
    throw std::invalid_argument("samples and seq-len must be positive");
  std::vector<std::vector<std::int32_t>> out;
  for (std::size_t at = 0;
       out.size() < static_cast<std::size_t>(num_samples) && at + seq_len <= ids.size();
       at += seq_len)
    out.emplace_back(ids.begin() + static_cast<std::ptrdiff_t>(at),
                     ids.begin() + static_cast<std::ptrdiff_t>(at + seq_len));
  return out;
}

}  // namespace awqd
