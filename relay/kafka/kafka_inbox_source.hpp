// The inbox sidecar's Kafka consumer: a consumer group member that polls one message at a time
// (the per-message API: 2.0.x batch consume can lose messages on a rebalance), stores an offset
// only when the core says its batch is settled, commits stored offsets every
// commit_interval and synchronously on a revoke and at shutdown, and lets the core settle what
// it holds of revoked partitions before they go.
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "relay/core/inbox_ports.hpp"
#include "relay/core/logger.hpp"

struct rd_kafka_s;

namespace outbox::relay::kafka {

struct KafkaInboxOptions {
  std::string brokers;
  std::string group_id;
  std::vector<std::string> topics;
  std::string client_id = "outbox-relay-inbox";
  std::chrono::milliseconds commit_interval{1'000};
  std::map<std::string, std::string> properties;  // raw librdkafka consumer properties (checked)
};

class KafkaInboxSource final : public InboxSource {
 public:
  // Subscribes at once. Throws ConfigError when librdkafka refuses the configuration.
  KafkaInboxSource(KafkaInboxOptions options, Logger& logger);
  ~KafkaInboxSource() override;

  void on_revoke(RevokeListener listener) override;
  std::optional<InboxMessage> poll(std::chrono::milliseconds timeout) override;
  void store_offsets(const std::vector<std::pair<TopicPartition, std::int64_t>>& next_offsets) override;
  bool commit() override;
  bool ping() override;
  // Leaves the group (a last revoke runs, then the commit); idempotent.
  void close();

  [[nodiscard]] std::size_t assigned() const { return assigned_.load(); }
  [[nodiscard]] std::uint64_t commit_failures() const { return commit_failures_.load(); }
  // The group's rebalance protocol, from partition.assignment.strategy (librdkafka refuses a
  // mix): cooperative-sticky is incremental, the others revoke everything on each rebalance.
  [[nodiscard]] bool cooperative() const { return cooperative_; }

 private:
  friend struct KafkaInboxCallbacks;  // librdkafka's C callbacks, in the .cpp

  KafkaInboxOptions options_;
  Logger& logger_;
  rd_kafka_s* rk_ = nullptr;
  RevokeListener listener_;
  std::atomic<std::size_t> assigned_{0};
  std::atomic<std::uint64_t> commit_failures_{0};
  bool closed_ = false;
  bool cooperative_ = false;
};

}  // namespace outbox::relay::kafka
