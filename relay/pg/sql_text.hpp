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

// "EXISTS (...)": the row `alias` of `table` (quoted schema.outbox_events) waits behind an
// earlier dead-lettered event of its aggregate. The fetch leaves such rows out (NOT ...); the
// status and replay count them.
[[nodiscard]] std::string behind_dead_letter(const std::string& table, const std::string& alias);

}  // namespace outbox::relay::pg
