// `outbox-relay inbox run`: the inbox sidecar's composition root. Consumes inbox.topics with a
// consumer group and lands each message in the service's inbox_events (relay/core/inbox_lander),
// with the relay's conventions: one config, check-config, HTTP probes and metrics, JSON logs,
// systemd notify and watchdog, exit codes.
#pragma once

#include <boost/asio/ip/tcp.hpp>

#include <chrono>
#include <optional>
#include <string>

#include "relay/config/config.hpp"
#include "relay/core/inbox_lander.hpp"
#include "relay/core/logger.hpp"
#include "relay/kafka/kafka_dead_letters.hpp"
#include "relay/kafka/kafka_inbox_source.hpp"
#include "relay/pg/pg_inbox_store.hpp"

namespace outbox::relay::app {

struct InboxDaemonSettings {
  std::string database_shown;
  std::string role;
  pg::PgInboxOptions store;   // the landing session
  pg::PgInboxOptions status;  // backlog snapshots and retention
  kafka::KafkaInboxOptions source;
  kafka::KafkaDeadLetterOptions dead_letters;
  InboxOptions core;
  std::optional<boost::asio::ip::tcp::endpoint> http;
  std::chrono::hours retention{0};  // 0: processed rows kept
  std::chrono::seconds retention_every{60};
  int retention_batch = 1000;
  std::chrono::milliseconds ready_window{10'000};
  std::chrono::milliseconds stall_limit{0};
};

// Throws ConfigError listing every problem, each naming its key.
[[nodiscard]] InboxDaemonSettings inbox_settings(const config::Config& config);

int run_inbox(const config::Config& config, Logger& logger);

}  // namespace outbox::relay::app
