// The configuration turned, once, into what the adapters and the core take: every connection
// string rendered, every address parsed, every option checked. `run` and `check-config` go
// through the same function, so one refuses exactly what the other would, every problem at
// once.
#pragma once

#include <boost/asio/ip/tcp.hpp>

#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "relay/config/config.hpp"
#include "relay/core/message_builder.hpp"
#include "relay/core/ownership.hpp"
#include "relay/core/relay.hpp"
#include "relay/core/runner.hpp"
#include "relay/kafka/kafka_publisher.hpp"
#include "relay/nats/nats_publisher.hpp"
#include "relay/pg/connection_settings.hpp"
#include "relay/pg/pg_outbox_store.hpp"
#include "relay/pg/pg_retention.hpp"

namespace outbox::relay::app {

struct DaemonSettings {
  std::string schema;
  std::string database_shown;  // the connection settings, password redacted
  std::string role;            // the role the sessions log in as
  pg::PgStoreOptions store;    // the publishing session (its owner set once the id is claimed)
  std::string lease_conninfo;
  std::string status_conninfo;
  std::string wakeup_conninfo;  // empty: poll instead of LISTEN
  std::optional<pg::RetentionOptions> retention;  // nullopt: no retention pass
  std::chrono::seconds retention_every{60};
  config::SinkType sink = config::SinkType::kafka;
  kafka::KafkaOptions kafka;  // sink.type kafka
  nats::NatsOptions nats;     // sink.type nats
  std::optional<MessageBuilder> messages;  // always set once checked
  RelayOptions relay;
  RunnerOptions runner;
  LeaseOptions lease;
  std::vector<std::string> instance_candidates;
  std::string hostname;
  std::optional<boost::asio::ip::tcp::endpoint> http;  // nullopt: no HTTP endpoint
  std::chrono::milliseconds ready_window{10'000};
  std::chrono::milliseconds stall_limit{0};  // one step's longest legitimate wait (watchdog)
  struct Summary {  // for the start-up log line
    std::string brokers, batch_size, wakeup, mark_mode;
  } summary;
};

// Throws ConfigError listing every problem, each naming its key.
[[nodiscard]] DaemonSettings daemon_settings(const config::Config& config);

// The database settings alone, for the operator commands. Throws ConfigError.
[[nodiscard]] pg::ConnectionSettings connection_settings(const config::Config& config);

}  // namespace outbox::relay::app
