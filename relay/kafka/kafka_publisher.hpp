// Publisher on librdkafka: idempotent producer, acks=all, key = aggregate id. Delivery
// callbacks only record outcomes; await() polls until every sent message has one.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "relay/core/logger.hpp"
#include "relay/core/publisher.hpp"

struct rd_kafka_s;
struct rd_kafka_message_s;

namespace outbox::relay::kafka {

struct KafkaOptions {
  std::string brokers;  // bootstrap.servers
  std::chrono::milliseconds delivery_timeout{30'000};  // message.timeout.ms
  std::string client_id = "outbox-relay";
  // Raw librdkafka properties, applied after the relay's own defaults (they win), except the
  // ones at-least-once delivery depends on, which are checked (see check_properties()).
  std::map<std::string, std::string> properties;
};

// Throws ConfigError naming `kafka.properties.<name>` for settings that would break the
// delivery contract (idempotence off, acks other than all).
void check_properties(const std::map<std::string, std::string>& properties);

class KafkaPublisher final : public Publisher {
 public:
  KafkaPublisher(KafkaOptions options, Logger& logger);
  ~KafkaPublisher() override;
  KafkaPublisher(const KafkaPublisher&) = delete;
  KafkaPublisher& operator=(const KafkaPublisher&) = delete;

  [[nodiscard]] std::optional<DeliveryResult> send(const Message& message) override;
  [[nodiscard]] std::vector<DeliveryResult> await() override;

  // Waits for outstanding deliveries, then destroys the producer.
  void close();

  // Producers recreated after a fatal error (read from any thread).
  [[nodiscard]] std::uint64_t restarts() const { return restarts_; }

 private:
  struct Handle;
  void create();
  static void on_delivery(rd_kafka_s* rk, const rd_kafka_message_s* msg, void* opaque);

  KafkaOptions options_;
  Logger& logger_;
  std::unique_ptr<Handle> handle_;
  std::vector<DeliveryResult> results_;  // indexed by send order since the last await()
  std::size_t outstanding_ = 0;
  bool rebuild_ = false;  // a fatal producer error was seen: recreate after the batch
  std::atomic<std::uint64_t> restarts_{0};
};

}  // namespace outbox::relay::kafka
