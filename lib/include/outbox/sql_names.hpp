// Schema names used by the library's SQL: checked as plain identifiers, then quoted.
#pragma once

#include <string>

namespace outbox {

// `"schema"."table"`; throws std::invalid_argument naming the schema when it is not a plain
// identifier (letters, digits, _ and $, at most 63, not starting with a digit).
[[nodiscard]] std::string qualified_table(const std::string& schema, const std::string& table);

}  // namespace outbox
