// The tail of a process's output, for failure messages.
#pragma once

#include <cstddef>
#include <string>

namespace outbox::test {

// The last `lines` lines of `text` (all of it when it has fewer).
inline std::string last_lines(const std::string& text, std::size_t lines) {
  std::size_t start = text.size();
  for (std::size_t n = 0; n <= lines; ++n) {
    if (start == 0) return text;
    start = text.rfind('\n', start - 1);
    if (start == std::string::npos) return text;
  }
  return text.substr(start + 1);
}

}  // namespace outbox::test
