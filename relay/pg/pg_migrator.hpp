// Applies the embedded schema migrations (schema/migrations/*.sql) forward-only and records
// which ran in outbox_schema_migrations. Safe to run concurrently and repeatedly.
#pragma once

#include <string>
#include <vector>

namespace outbox::relay::pg {

struct Migration {
  int version;
  std::string name;
  std::string sql;
};

// Generated at build time from schema/migrations.
const std::vector<Migration>& embedded_migrations();

struct MigrationStatus {
  int version;
  std::string name;
  bool applied_now;  // false: it had run before
};

class PgMigrator {
 public:
  PgMigrator(std::string conninfo, std::string schema);

  // Applies every migration not yet recorded, all in one transaction under an advisory lock.
  // Throws FatalError when a recorded migration's checksum differs from the embedded one
  // (files are forward-only: add a new migration instead of editing one that ran).
  std::vector<MigrationStatus> migrate();

 private:
  std::string conninfo_;
  std::string schema_;
};

[[nodiscard]] std::string migration_checksum(const std::string& sql);

}  // namespace outbox::relay::pg
