// Shapes of text both the relay and the library check: SQL identifiers they quote into
// statements, and event ids.
#pragma once

#include <algorithm>
#include <cctype>
#include <string_view>

namespace outbox::common {

// Letters, digits, _ and $, at most 63, not starting with a digit or $.
[[nodiscard]] inline bool is_plain_identifier(std::string_view n) {
  return !n.empty() && n.size() <= 63 && (std::isalpha(static_cast<unsigned char>(n[0])) || n[0] == '_') &&
         std::all_of(n.begin(), n.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '$'; });
}

// 8-4-4-4-12 hexadecimal digits, either case.
[[nodiscard]] inline bool looks_like_uuid(std::string_view s) {
  if (s.size() != 36) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (s[i] != '-') return false;
    } else if (!std::isxdigit(static_cast<unsigned char>(s[i]))) {
      return false;
    }
  }
  return true;
}

}  // namespace outbox::common
