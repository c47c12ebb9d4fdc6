// The configuration turned into what the adapters and the core take, checked once for both
// `run` and `check-config`: one validation path, every problem reported at once.
#pragma once

#include "relay/config/config.hpp"
#include "relay/core/message_builder.hpp"
#include "relay/core/ownership.hpp"
#include "relay/core/relay.hpp"
#include "relay/pg/connection_settings.hpp"

namespace outbox::relay::app {

// Checks what the loader cannot (broker list, topic template, Kafka properties, schema name,
// connection string, lease timings, HTTP address); throws ConfigError listing every problem.
void validate(const config::Config& config);

// The database settings every session is rendered from: database.url, the password file's
// contents, the application name and statement timeout. Throws ConfigError.
[[nodiscard]] pg::ConnectionSettings connection_settings(const config::Config& config);

[[nodiscard]] MessageOptions message_options(const config::Config& config);
[[nodiscard]] RelayOptions relay_options(const config::Config& config);
[[nodiscard]] LeaseOptions lease_options(const config::Config& config);

}  // namespace outbox::relay::app
