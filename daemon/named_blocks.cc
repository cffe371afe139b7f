#include "daemon/named_blocks.h"

#include <stdexcept>

namespace awqd {

std::string named_block(std::string_view text, std::string_view name) {
  constexpr std::string_view kMarker = "-- name: ";
  std::size_t pos = 0;
  while ((pos = text.find(kMarker, pos)) != std::string_view::npos) {
    const bool line_start = pos == 0 || text[pos - 1] == '\n';
    const std::size_t name_begin = pos + kMarker.size();
    const std::size_t eol = std::min(text.find('\n', name_begin), text.size());
    pos = eol;
    if (!line_start || text.substr(name_begin, eol - name_begin) != name) continue;
    std::size_t end = text.find(std::string("\n") + std::string(kMarker), eol);
    end = end == std::string_view::npos ? text.size() : end + 1;
    return std::string(text.substr(std::min(eol + 1, text.size()), end - std::min(eol + 1, end)));
  }
  throw std::logic_error("no block named \"" + std::string(name) + "\" in an embedded file");
}

}  // namespace awqd
