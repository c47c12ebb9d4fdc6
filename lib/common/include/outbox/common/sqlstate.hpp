// What a PostgreSQL SQLSTATE says about retrying, one list for the relay and the library.
#pragma once

#include <string_view>

namespace outbox::common {

enum class SqlStateKind {
  retry,             // connection lost (08), serialization or deadlock (40), resources (53),
                     // shutting down (57P), statement timeout (57014), lock not available (55P03)
  schema,            // undefined table, column or function (42P01, 42703, 42883)
  access,            // insufficient privilege (42501), authentication (28)
  missing_database,  // 3D000
  other,             // anything else: the caller decides
};

[[nodiscard]] inline SqlStateKind classify_sqlstate(std::string_view s) {
  if (s.starts_with("08") || s.starts_with("40") || s.starts_with("53") || s.starts_with("57P") || s == "57014" ||
      s == "55P03")
    return SqlStateKind::retry;
  if (s == "42P01" || s == "42703" || s == "42883") return SqlStateKind::schema;
  if (s == "42501" || s.starts_with("28")) return SqlStateKind::access;
  if (s == "3D000") return SqlStateKind::missing_database;
  return SqlStateKind::other;
}

}  // namespace outbox::common
