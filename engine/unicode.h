// UTF-8 and Unicode helpers for the tokenizer.
//
// Byte-level code (UTF-8 validation, the lossy conversion, GPT-2's byte <-> code point map) is
// written here because it is small and on the hot path; Unicode data (normalization forms, case
// mapping, character properties) comes from ICU, which carries the tables and keeps them current.
//
// Semantics follow the reference implementation (HF `tokenizers`, written in Rust):
//   - append_lossy() is Rust's String::from_utf8_lossy: every maximal invalid subsequence
//     ("maximal subpart" in the Unicode standard, chapter 3.9) becomes one U+FFFD;
//   - is_white_space() is the Unicode White_Space property (Rust's char::is_whitespace, `\s`);
//   - is_word_char() is Rust regex's `\w` (Alphabetic, marks, decimal digits, connector
//     punctuation, Join_Control).
#pragma once

#include <array>
#include <cstddef>
#include <string>
#include <string_view>

namespace awqd::unicode {

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD in UTF-8

// Byte offset of the first byte that is not part of a valid UTF-8 sequence, or s.size().
std::size_t find_invalid_utf8(std::string_view s);
inline bool is_valid_utf8(std::string_view s) { return find_invalid_utf8(s) == s.size(); }

// Number of bytes of the UTF-8 sequence that starts with lead byte `c` (1 for invalid leads).
inline std::size_t utf8_length(unsigned char c) {
  return c < 0x80 ? 1 : c < 0xE0 ? (c < 0xC0 ? 1 : 2) : c < 0xF0 ? 3 : 4;
}

// Decodes the code point at s[pos] of valid UTF-8 and advances pos past it.
char32_t decode_utf8(std::string_view s, std::size_t& pos);
// Decodes the code point that ends at s[end - 1] of valid UTF-8; sets start to its first byte.
char32_t decode_utf8_backwards(std::string_view s, std::size_t end, std::size_t& start);
void append_utf8(std::string& out, char32_t cp);

// Appends `bytes` to `out` with invalid sequences replaced as Rust's from_utf8_lossy does.
// Returns the length of a trailing incomplete sequence (a valid prefix of a multi-byte
// character cut off by the end of `bytes`; it was written as one U+FFFD), or 0.
std::size_t append_lossy(std::string& out, std::string_view bytes);

// GPT-2's bytes_to_unicode(): printable Latin-1 bytes map to themselves, the other 68 bytes to
// U+0100.. in byte order, so that every byte has a visible, non-space code point.
const std::array<char32_t, 256>& byte_to_code_point();
// The inverse: the byte of a byte-level code point, or -1.
int code_point_to_byte(char32_t cp);

enum class NormalForm { kNFC, kNFD, kNFKC, kNFKD };
// Unicode normalization (ICU). Input must be valid UTF-8.
std::string normalize(NormalForm form, std::string_view s);
// Full Unicode lower-casing, locale independent (ICU root locale).
std::string to_lower(std::string_view s);

bool is_white_space(char32_t cp);
bool is_word_char(char32_t cp);

}  // namespace awqd::unicode
