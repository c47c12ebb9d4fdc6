// The configuration's own commands: `migrate`, `check-config` (the same validation as `run`)
// and `config-reference`. Each returns the process exit code.
#pragma once

#include "relay/config/config.hpp"
#include "relay/core/logger.hpp"

namespace outbox::relay::cli {

int run_migrate(const config::Config& config, Logger& logger);
// `inbox`: the inbox sidecar's settings (`inbox check-config`) instead of the relay's.
int run_check_config(const config::Config& config, bool json, bool inbox = false);
int run_config_reference();

}  // namespace outbox::relay::cli
