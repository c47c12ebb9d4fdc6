// outbox-relay: publishes committed outbox rows from PostgreSQL to Kafka, at least once.
#include <CLI/CLI.hpp>

#include <cstdlib>
#include <iostream>

#include "relay/app/exit_codes.hpp"
#include "relay/app/inbox_command.hpp"
#include "relay/app/relay_command.hpp"
#include "relay/cli/admin_commands.hpp"
#include "relay/cli/config_commands.hpp"
#include "relay/cli/inbox_commands.hpp"
#include "relay/app/stream_logger.hpp"
#include "relay/config/config_loader.hpp"
#include "relay/core/errors.hpp"
#include "relay/pg/pg_conninfo.hpp"
#include "relay/runtime/crash_report.hpp"
#include "relay/runtime/event_loop.hpp"

using namespace outbox::relay;

int main(int argc, char** argv) {
  runtime::install_crash_report();
  CLI::App parser{"outbox-relay: publishes committed rows of a PostgreSQL outbox table to Kafka, at least once"};
  parser.set_version_flag("--version", std::string("outbox-relay ") + OUTBOX_RELAY_VERSION);
  parser.require_subcommand(1);

  std::string config_file;
  std::string database_url;
  std::string brokers;
  std::vector<std::string> sets;
  bool json = false;
  auto common = [&](CLI::App* sub) {
    sub->add_option("-c,--config", config_file, "YAML config file (or OUTBOX_RELAY_CONFIG)");
    sub->add_option("--database-url", database_url,
                    "PostgreSQL connection string, overrides database.url (keep passwords out of argv: "
                    "use database.password_file, PGPASSWORD or a passfile)");
    sub->add_option("--brokers", brokers, "Kafka bootstrap servers, overrides kafka.brokers");
    sub->add_option("--set", sets, "Override any setting: --set relay.batch_size=500 (repeatable)");
  };
  auto* run = parser.add_subcommand("run", "Run the relay until SIGTERM/SIGINT");
  auto* migrate = parser.add_subcommand("migrate", "Apply the schema migrations (idempotent)");
  auto* check = parser.add_subcommand("check-config", "Validate and print the effective config, secrets redacted");
  auto* reference = parser.add_subcommand("config-reference", "Print every setting as a Markdown table");
  auto* inbox = parser.add_subcommand("inbox", "The inbox sidecar: lands consumed events in the service's inbox_events");
  inbox->require_subcommand(1);
  auto* inbox_run = inbox->add_subcommand("run", "Consume inbox.topics into inbox_events until SIGTERM/SIGINT");
  auto* inbox_check = inbox->add_subcommand("check-config", "Validate and print the sidecar's effective config");
  for (auto* sub : {run, migrate, check, inbox_run, inbox_check}) common(sub);
  check->add_flag("--json", json, "Print JSON");
  inbox_check->add_flag("--json", json, "Print JSON");
  const cli::InboxCommands inbox_admin(*inbox, common);  // inbox status, inbox dead-letters
  const cli::AdminCommands admin(parser, common);  // status, dead-letters, replay

  try {
    parser.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = parser.exit(e);
    return code == 0 ? 0 : admin.selected() || inbox_admin.selected() ? app::kExitUsage : app::kExitConfig;
  }
  // `run` only: an operator's Ctrl-C must still end `status` or `migrate` at once.
  if (run->parsed() || inbox_run->parsed()) runtime::remember_early_stop_signals();
  if (reference->parsed()) return cli::run_config_reference();

  config::ConfigSources sources;
  sources.environment = config::relay_environment();
  if (config_file.empty())
    if (auto it = sources.environment.find("OUTBOX_RELAY_CONFIG"); it != sources.environment.end())
      config_file = it->second;
  if (!config_file.empty()) sources.file = config_file;
  for (const auto& s : sets) {
    auto eq = s.find('=');
    if (eq == std::string::npos || eq == 0) {
      std::cerr << "outbox-relay: --set " << s << ": expected KEY=VALUE\n";
      return app::kExitConfig;
    }
    sources.overrides.emplace_back(s.substr(0, eq), s.substr(eq + 1));
  }
  if (!database_url.empty()) sources.overrides.emplace_back("database.url", database_url);
  if (!brokers.empty()) sources.overrides.emplace_back("kafka.brokers", brokers);

  config::Config config;
  try {
    config = config::load_config(sources);
  } catch (const ConfigError& e) {
    std::cerr << "outbox-relay: " << pg::redact_conninfo(e.what()) << "\n";
    return app::kExitConfig;
  }

  if (admin.selected()) return admin.run(config);
  if (inbox_admin.selected()) return inbox_admin.run(config);

  app::StreamLogger logger(std::cerr, app::parse_log_level(config.log.level),
                           config.log.format == config::LogFormat::text ? app::LogFormat::text : app::LogFormat::json);
  try {
    if (run->parsed()) return app::run_relay(config, logger);
    if (migrate->parsed()) return cli::run_migrate(config, logger);
    if (check->parsed()) return cli::run_check_config(config, json);
    if (inbox_run->parsed()) return app::run_inbox(config, logger);
    if (inbox_check->parsed()) return cli::run_check_config(config, json, true);
  } catch (const ConfigError& e) {
    std::cerr << "outbox-relay: " << pg::redact_conninfo(e.what()) << "\n";
    return app::kExitConfig;
  } catch (const std::exception& e) {
    logger.log(LogLevel::error, "fatal", {{"error", pg::redact_conninfo(e.what())}});
    return app::kExitFailure;
  } catch (...) {
    logger.log(LogLevel::error, "fatal", {{"error", "unknown exception"}});
    return app::kExitFailure;
  }
  return 0;
}
