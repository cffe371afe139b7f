// UTF-8 helpers (hand-written: small, hot) and ICU wrappers (Unicode data). See unicode.h.
#include "engine/unicode.h"

#include <unicode/bytestream.h>
#include <unicode/casemap.h>
#include <unicode/normalizer2.h>
#include <unicode/stringpiece.h>
#include <unicode/uchar.h>

#include <stdexcept>

namespace awqd::unicode {
namespace {

// The valid range of the second byte of a sequence with lead byte `lead` (Unicode table 3-7),
// and how many continuation bytes follow the lead. need == 0: not a valid lead byte.
struct LeadInfo {
  unsigned char lo, hi;
  int need;
};

LeadInfo lead_info(unsigned char lead) {
  if (lead >= 0xC2 && lead <= 0xDF) return {0x80, 0xBF, 1};
  if (lead == 0xE0) return {0xA0, 0xBF, 2};
  if (lead == 0xED) return {0x80, 0x9F, 2};
  if (lead >= 0xE1 && lead <= 0xEF) return {0x80, 0xBF, 2};
  if (lead == 0xF0) return {0x90, 0xBF, 3};
  if (lead >= 0xF1 && lead <= 0xF3) return {0x80, 0xBF, 3};
  if (lead == 0xF4) return {0x80, 0x8F, 3};
  return {0, 0, 0};
}

// Length of the maximal subpart at s[i] (i is a non-ASCII byte): the number of bytes that form
// a valid UTF-8 character, or a valid-but-unfinished prefix of one. `complete` tells which.
std::size_t scan_sequence(std::string_view s, std::size_t i, bool& complete) {
  const auto lead = static_cast<unsigned char>(s[i]);
  const LeadInfo info = lead_info(lead);
  complete = false;
  if (info.need == 0) return 1;
  std::size_t j = i + 1;
  for (int k = 0; k < info.need; ++k, ++j) {
    if (j >= s.size()) return j - i;
    const auto c = static_cast<unsigned char>(s[j]);
    const unsigned char lo = k == 0 ? info.lo : 0x80;
    const unsigned char hi = k == 0 ? info.hi : 0xBF;
    if (c < lo || c > hi) return j - i;
  }
  complete = true;
  return j - i;
}

void check_icu(UErrorCode status, const char* what) {
  if (U_FAILURE(status)) {
    throw std::runtime_error(std::string("ICU ") + what + " failed: " + u_errorName(status));
  }
}

}  // namespace

std::size_t find_invalid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    bool complete = false;
    const std::size_t len = scan_sequence(s, i, complete);
    if (!complete) return i;
    i += len;
  }
  return s.size();
}

char32_t decode_utf8(std::string_view s, std::size_t& pos) {
  const auto c = static_cast<unsigned char>(s[pos]);
  const std::size_t len = utf8_length(c);
  char32_t cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
  for (std::size_t k = 1; k < len; ++k)
    cp = (cp << 6) | (static_cast<unsigned char>(s[pos + k]) & 0x3F);
  pos += len;
  return cp;
}

char32_t decode_utf8_backwards(std::string_view s, std::size_t end, std::size_t& start) {
  start = end - 1;
  while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
  std::size_t pos = start;
  return decode_utf8(s, pos);
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::size_t append_lossy(std::string& out, std::string_view bytes) {
  std::size_t i = 0;
  std::size_t run = 0;  // start of the pending run of valid bytes, copied in one go
  while (i < bytes.size()) {
    if (static_cast<unsigned char>(bytes[i]) < 0x80) {
      ++i;
      continue;
    }
    bool complete = false;
    const std::size_t len = scan_sequence(bytes, i, complete);
    if (complete) {
      i += len;
      continue;
    }
    out.append(bytes.substr(run, i - run));
    out.append(kReplacementChar);
    const bool truncated =
        i + len == bytes.size() && lead_info(static_cast<unsigned char>(bytes[i])).need > 0;
    i += len;
    run = i;
    if (truncated) return len;
  }
  out.append(bytes.substr(run));
  return 0;
}

const std::array<char32_t, 256>& byte_to_code_point() {
  static const std::array<char32_t, 256> table = [] {
    std::array<char32_t, 256> t{};
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      t[b] = printable ? static_cast<char32_t>(b) : next++;
    }
    return t;
  }();
  return table;
}

int code_point_to_byte(char32_t cp) {
  static const std::array<int, 324> inverse = [] {
    std::array<int, 324> t{};
    t.fill(-1);
    const auto& fwd = byte_to_code_point();
    for (int b = 0; b < 256; ++b) t[fwd[b]] = b;
    return t;
  }();
  return cp < inverse.size() ? inverse[cp] : -1;
}

std::string normalize(NormalForm form, std::string_view s) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* n = nullptr;
  switch (form) {
    case NormalForm::kNFC:
      n = icu::Normalizer2::getNFCInstance(status);
      break;
    case NormalForm::kNFD:
      n = icu::Normalizer2::getNFDInstance(status);
      break;
    case NormalForm::kNFKC:
      n = icu::Normalizer2::getNFKCInstance(status);
      break;
    case NormalForm::kNFKD:
      n = icu::Normalizer2::getNFKDInstance(status);
      break;
  }
  check_icu(status, "normalizer");
  const icu::StringPiece piece(s.data(), static_cast<int32_t>(s.size()));
  if (n->isNormalizedUTF8(piece, status) && U_SUCCESS(status)) return std::string(s);
  status = U_ZERO_ERROR;
  std::string out;
  out.reserve(s.size() + s.size() / 4);
  icu::StringByteSink<std::string> sink(&out);
  n->normalizeUTF8(0, piece, sink, nullptr, status);
  check_icu(status, "normalization");
  return out;
}

std::string to_lower(std::string_view s) {
  UErrorCode status = U_ZERO_ERROR;
  std::string out;
  out.reserve(s.size());
  icu::StringByteSink<std::string> sink(&out);
  icu::CaseMap::utf8ToLower("", 0, icu::StringPiece(s.data(), static_cast<int32_t>(s.size())), sink,
                            nullptr, status);
  check_icu(status, "lower-casing");
  return out;
}

bool is_white_space(char32_t cp) { return u_isUWhiteSpace(static_cast<UChar32>(cp)) != 0; }

bool is_word_char(char32_t cp) {
  const auto c = static_cast<UChar32>(cp);
  if (u_hasBinaryProperty(c, UCHAR_ALPHABETIC) || u_hasBinaryProperty(c, UCHAR_JOIN_CONTROL)) {
    return true;
  }
  const int mask = U_GET_GC_MASK(c);
  return (mask & (U_GC_M_MASK | U_GC_ND_MASK | U_GC_PC_MASK)) != 0;
}

}  // namespace awqd::unicode
