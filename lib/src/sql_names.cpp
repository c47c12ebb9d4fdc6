#include "outbox/sql_names.hpp"

#include "outbox/common/text_checks.hpp"

#include <algorithm>
#include <cctype>
#include <stdexcept>

namespace outbox {

std::string qualified_table(const std::string& schema, const std::string& table) {
  auto plain = [](const std::string& n) { return common::is_plain_identifier(n); };
  if (!plain(schema)) throw std::invalid_argument("schema \"" + schema + "\" is not a plain SQL identifier");
  if (!plain(table)) throw std::invalid_argument("table \"" + table + "\" is not a plain SQL identifier");
  return "\"" + schema + "\".\"" + table + "\"";
}

}  // namespace outbox
