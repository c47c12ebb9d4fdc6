// The subcommands of outbox-relay. Each returns the process exit code.
#pragma once

#include "relay/config/config.hpp"
#include "relay/core/logger.hpp"

namespace outbox::relay::app {

// sysexits.h: EX_CONFIG, so systemd's RestartPreventExitStatus can tell a bad config apart.
constexpr int kExitConfig = 78;
constexpr int kExitFailure = 1;
// sysexits.h: EX_UNAVAILABLE. The outbox table is missing or lacks columns (run `migrate`).
// Unlike 78 it should be restarted: a migration may still be running.
constexpr int kExitSchemaUnavailable = 69;

int run_relay(const config::Config& config, Logger& logger);
int run_migrate(const config::Config& config, Logger& logger);
int run_check_config(const config::Config& config, bool json);
int run_config_reference();

// The connection string the relay uses: database.url plus the password file's contents and
// the relay's client-side deadlines. Throws ConfigError.
[[nodiscard]] std::string effective_conninfo(const config::Config& config);

// Checks what the loader cannot (topic template, Kafka properties, schema name); throws
// ConfigError listing every problem.
void validate(const config::Config& config);

}  // namespace outbox::relay::app
