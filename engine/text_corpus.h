// Text files as token ids for calibration (`awqd quantize --calib`) and evaluation
// (`awqd perplexity --text`), the protocol of the fixture README's reference figures:
// paragraphs (separated by blank lines) are tokenized one by one without special tokens and
// joined by the tokenizer's newline token.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/tokenizer.h"

namespace awqd {

// Paragraphs of `text`: runs of lines separated by one or more blank (whitespace-only) lines.
// A paragraph keeps its own line breaks and indentation; no paragraph is empty.
std::vector<std::string> split_paragraphs(std::string_view text);

// The id of the single token for "\n": "<0x0A>" in SentencePiece-style vocabularies with byte
// fallback, "Ċ" (byte 0x0A under GPT-2's byte-to-unicode map) in byte-level ones. Throws
// std::runtime_error when the vocabulary has neither.
std::int32_t newline_token(const Tokenizer& tokenizer);

// Each paragraph encoded without special tokens, joined by newline_token().
std::vector<std::int32_t> tokenize_paragraphs(const Tokenizer& tokenizer, std::string_view text);

// The first `num_samples` consecutive, non-overlapping pieces of `seq_len` ids (fewer when the
// ids run out; a shorter tail is dropped).
std::vector<std::vector<std::int32_t>> cut_samples(std::span<const std::int32_t> ids,
                                                   int num_samples, int seq_len);

}  // namespace awqd
