#include "outbox/sql_names.hpp"

#include <algorithm>
#include <cctype>
#include <stdexcept>

namespace outbox {

std::string qualified_table(const std::string& schema, const std::string& table) {
  auto plain = [](const std::string& n) {
    return !n.empty() && n.size() <= 63 && (std::isalpha(static_cast<unsigned char>(n[0])) || n[0] == '_') &&
           std::all_of(n.begin(), n.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '$'; });
  };
  if (!plain(schema)) throw std::invalid_argument("schema \"" + schema + "\" is not a plain SQL identifier");
  if (!plain(table)) throw std::invalid_argument("table \"" + table + "\" is not a plain SQL identifier");
  return "\"" + schema + "\".\"" + table + "\"";
}

}  // namespace outbox
