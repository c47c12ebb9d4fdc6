// Plain-text output for the operator commands: aligned tables, single-line cells, durations,
// and what to print for bytes that may not be text.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace outbox::relay::cli {

[[nodiscard]] std::string base64(const std::string& bytes);

// Valid UTF-8 with no control characters but tab and newlines: safe to print as text.
[[nodiscard]] bool printable_utf8(const std::string& s);

// Offsets and 16 bytes per line.
[[nodiscard]] std::string hex_dump(const std::string& bytes);

// One line, at most `width` characters (0: any), never cut inside a UTF-8 sequence.
[[nodiscard]] std::string cell(const std::string& s, std::size_t width = 0);

// Columns padded to their widest value, two spaces apart, to stdout.
void print_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows);

// "4.0s" under a minute, else "1h2m3s" / "2d0h5m0s".
[[nodiscard]] std::string duration(double seconds);

// "1 event", "2 events".
[[nodiscard]] std::string count_of(long long n, const std::string& noun);

}  // namespace outbox::relay::cli
