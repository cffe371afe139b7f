// A compiled PCRE2 pattern for the tokenizer: UTF-8 subjects, Unicode properties (PCRE2_UTF |
// PCRE2_UCP, so \s \w \d \p{L} are Unicode-aware as in the reference's Oniguruma/Rust regexes),
// JIT-compiled when the library supports it. Immutable after construction and safe to share
// between threads: each match call allocates its own match data.
//
// Subjects must be valid UTF-8 (the tokenizer validates its input once): matching runs with
// PCRE2_NO_UTF_CHECK, because otherwise every call re-validates the rest of the subject and a
// scan over all matches becomes quadratic.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace awqd {

class Regex {
 public:
  // Throws std::invalid_argument with PCRE2's message and the offset of the error.
  explicit Regex(std::string_view pattern);
  ~Regex();
  Regex(Regex&&) noexcept;
  Regex& operator=(Regex&&) noexcept;

  // Calls on_match(begin, end) for every non-overlapping match, left to right. An empty match
  // advances by one character so the scan always terminates.
  void for_each_match(std::string_view subject,
                      const std::function<void(std::size_t, std::size_t)>& on_match) const;

  const std::string& pattern() const { return pattern_; }

 private:
  struct Code;
  std::string pattern_;
  std::unique_ptr<Code> code_;
};

}  // namespace awqd
