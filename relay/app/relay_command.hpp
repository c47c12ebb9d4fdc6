// `outbox-relay run`: the composition root of the daemon, wiring the PostgreSQL store and
// lease keeper, the Kafka publisher and the runtime's event loop to the core.
#pragma once

#include "relay/config/config.hpp"
#include "relay/core/logger.hpp"

namespace outbox::relay::app {

// Runs until SIGTERM/SIGINT; returns the process exit code (exit_codes.hpp).
int run_relay(const config::Config& config, Logger& logger);

}  // namespace outbox::relay::app
