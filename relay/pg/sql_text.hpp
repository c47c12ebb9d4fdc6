// SQL text the PostgreSQL adapter builds: quoted identifiers and array literals for bind
// parameters. Values are always parameters; these only shape them.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace outbox::relay::pg {

// `"name"`; throws ConfigError naming `key` unless name is a plain identifier.
[[nodiscard]] std::string quoted_identifier(const std::string& name, const std::string& key);

// PostgreSQL array literals for a bigint[], int[] or text[] parameter.
[[nodiscard]] std::string bigint_array_literal(std::span<const std::int64_t> values);
[[nodiscard]] std::string int_array_literal(std::span<const int> values);
[[nodiscard]] std::string text_array_literal(const std::vector<std::string>& values);

}  // namespace outbox::relay::pg
