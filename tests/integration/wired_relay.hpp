// The relay core wired to the real adapters for integration tests: a fresh migrated database,
// PgOutboxStore, KafkaPublisher and librdkafka's mock Kafka cluster.
#pragma once

#include <chrono>
#include <map>
#include <string>
#include <thread>

#include "relay/core/relay.hpp"
#include "relay/kafka/kafka_publisher.hpp"
#include "relay/pg/pg_outbox_store.hpp"
#include "tests/integration/pg_fixture.hpp"
#include "tests/support/mock_kafka.hpp"

namespace outbox::test {

struct WiredRelay {
  std::string url;
  MockKafka kafka{1};
  relay::NullLogger logger;
  relay::SteadyClock clock;
  relay::RelayStats stats;
  relay::pg::PgOutboxStore store;
  relay::kafka::KafkaPublisher publisher;
  relay::Relay relay;

  explicit WiredRelay(const std::map<std::string, std::string>& props = {}, relay::RelayOptions options = {},
                      relay::MessageOptions message = {},
                      std::chrono::milliseconds delivery_timeout = std::chrono::seconds(10))
      : url(fresh_database()),
        store({relay::pg::harden_conninfo(url, "outbox-relay-test", 10'000), "public", relay::pg::MarkMode::update}),
        publisher({kafka.bootstrap(), delivery_timeout, "outbox-relay-test", props}, logger),
        relay(store, publisher, clock, relay::MessageBuilder(std::move(message)), options, stats) {}

  // Steps until the outbox has no publishable row left, or the deadline passes.
  bool drain(std::chrono::seconds deadline = std::chrono::seconds(60)) {
    auto until = std::chrono::steady_clock::now() + deadline;
    while (std::chrono::steady_clock::now() < until) {
      auto r = relay.step();
      if (r.kind == relay::StepKind::idle && r.fetched == 0) return true;
      if (r.kind == relay::StepKind::backoff) std::this_thread::sleep_for(r.wait);
    }
    return false;
  }
};

}  // namespace outbox::test
