#include "relay/cli/config_commands.hpp"

#include <nlohmann/json.hpp>

#include <iostream>

#include "relay/app/inbox_command.hpp"
#include "relay/app/settings.hpp"
#include "relay/core/errors.hpp"
#include "relay/config/config_loader.hpp"
#include "relay/pg/pg_migrator.hpp"
#include "relay/pg/pg_outbox_store.hpp"

namespace outbox::relay::cli {

using app::connection_settings;

int run_migrate(const config::Config& c, Logger& logger) {
  (void)pg::quoted_identifier(c.database.schema, "database.schema");
  pg::PgMigrator migrator(connection_settings(c).conninfo("migrate"), c.database.schema);
  auto result = migrator.migrate();
  int applied = 0;
  for (const auto& m : result) {
    logger.log(LogLevel::info, m.applied_now ? "migration_applied" : "migration_present",
               {{"version", std::to_string(m.version)}, {"name", m.name}});
    applied += m.applied_now ? 1 : 0;
  }
  logger.log(LogLevel::info, "migrate_done",
             {{"applied", std::to_string(applied)}, {"total", std::to_string(result.size())}});
  return 0;
}

int run_check_config(const config::Config& c, bool json, bool inbox) {
  // What `run` (or `inbox run`) would refuse, refused here.
  if (inbox)
    (void)app::inbox_settings(c);
  else
    (void)app::daemon_settings(c);
  auto entries = config::effective_config(c);
  if (json) {
    nlohmann::ordered_json j = nlohmann::ordered_json::object();
    for (const auto& [k, v] : entries) j[k] = v;
    std::cout << j.dump(2) << "\n";
  } else {
    std::size_t width = 0;
    for (const auto& [k, v] : entries) width = std::max(width, k.size());
    for (const auto& [k, v] : entries) std::cout << k << std::string(width - k.size() + 2, ' ') << v << "\n";
    if (inbox && c.inbox.retention_hours > 0 && c.inbox.topic_retention_hours == 0)
      std::cout << "note: inbox.topic_retention_hours is not set, so inbox.retention_hours (" << c.inbox.retention_hours
                << ") cannot be checked against the topics' retention: it must be longer, or a message "
                   "redelivered after its row was purged is processed again\n";
    std::cout << "configuration is valid\n";
  }
  return 0;
}

int run_config_reference() {
  std::cout << "| key | environment variable | default | description |\n|---|---|---|---|\n";
  for (const auto& d : config::settings_reference())
    std::cout << "| `" << d.key << "` | `" << d.env << "` | " << (d.default_value.empty() ? "" : "`" + d.default_value + "`")
              << " | " << d.description << " |\n";
  return 0;
}

}  // namespace outbox::relay::cli
