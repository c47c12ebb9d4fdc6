#include "relay/pg/pg_migrator.hpp"

#include <pqxx/pqxx>

#include <cstdint>
#include <cstdio>
#include <map>

#include "relay/core/errors.hpp"
#include "relay/pg/pg_session.hpp"
#include "relay/pg/sql_text.hpp"

namespace outbox::relay::pg {

std::string migration_checksum(const std::string& sql) {
  std::uint64_t h = 1469598103934665603ULL;  // FNV-1a 64
  for (unsigned char c : sql) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

PgMigrator::PgMigrator(std::string conninfo, std::string schema)
    : conninfo_(std::move(conninfo)), schema_(std::move(schema)) {}

std::vector<MigrationStatus> PgMigrator::migrate() {
  const std::string schema = quoted_identifier(schema_, "database.schema");
  std::vector<MigrationStatus> out;
  PgSession(conninfo_, "the migrator").run("applying migrations", [&](pqxx::connection& c) {
    pqxx::work tx(c);
    // One migrator at a time, even with several relays starting together.
    tx.exec("SELECT pg_advisory_xact_lock(hashtext('outbox-relay migrate'))");
    tx.exec("CREATE SCHEMA IF NOT EXISTS " + schema);
    tx.exec("SET LOCAL search_path TO " + schema);
    tx.exec(
        "CREATE TABLE IF NOT EXISTS outbox_schema_migrations ("
        " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())");
    std::map<int, std::string> recorded;
    for (const auto& row : tx.exec("SELECT version, checksum FROM outbox_schema_migrations"))
      recorded[row[0].as<int>()] = row[1].as<std::string>();
    for (const auto& m : embedded_migrations()) {
      const std::string sum = migration_checksum(m.sql);
      if (auto it = recorded.find(m.version); it != recorded.end()) {
        if (it->second != sum)
          throw FatalError("migration " + m.name + " was recorded with checksum " + it->second +
                           " but the embedded file has " + sum +
                           ": migrations are forward-only; add a new one instead of editing one that ran");
        out.push_back({m.version, m.name, false});
        continue;
      }
      tx.exec(m.sql);
      tx.exec_params("INSERT INTO outbox_schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                     m.version, m.name, sum);
      out.push_back({m.version, m.name, true});
    }
    tx.commit();
  });
  return out;
}

}  // namespace outbox::relay::pg
