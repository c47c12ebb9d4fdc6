#include "relay/pg/sql_text.hpp"

#include "outbox/common/text_checks.hpp"
#include "relay/core/errors.hpp"

namespace outbox::relay::pg {
namespace {

template <class T>
std::string number_array_literal(std::span<const T> values) {
  std::string s = "{";
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(values[i]);
  }
  return s + "}";
}

}  // namespace

std::string quoted_identifier(const std::string& name, const std::string& key) {
  if (!common::is_plain_identifier(name))
    throw ConfigError(key + ": \"" + name +
                      "\" is not a plain SQL identifier (letters, digits, _ and $, at most 63)");
  return "\"" + name + "\"";
}

std::string bigint_array_literal(std::span<const std::int64_t> values) { return number_array_literal(values); }

std::string int_array_literal(std::span<const int> values) { return number_array_literal(values); }

std::string text_array_literal(const std::vector<std::string>& values) {
  std::string s = "{";
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i) s += ',';
    s += '"';
    for (char c : values[i]) {
      if (c == '"' || c == '\\') s += '\\';
      s += c;
    }
    s += '"';
  }
  return s + "}";
}

std::string behind_dead_letter(const std::string& table, const std::string& alias) {
  return "EXISTS (SELECT 1 FROM " + table + " d WHERE d.dead_lettered_at IS NOT NULL AND d.aggregate_type = " + alias +
         ".aggregate_type AND d.aggregate_id = " + alias + ".aggregate_id AND d.seq < " + alias + ".seq)";
}

}  // namespace outbox::relay::pg
