// Publisher on librdkafka: idempotent producer, acks=all, key = aggregate id. Delivery
// callbacks only record outcomes; await() polls until every sent message has one.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
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
  // Raw librdkafka properties, applied after the relay's own defaults (they win); checked by
  // check_properties() (kafka_settings.hpp) before they get here.
  std::map<std::string, std::string> properties;
};

class KafkaPublisher final : public Publisher {
 public:
  KafkaPublisher(KafkaOptions options, Logger& logger);
  ~KafkaPublisher() override;
  KafkaPublisher(const KafkaPublisher&) = delete;
  KafkaPublisher& operator=(const KafkaPublisher&) = delete;

  [[nodiscard]] std::optional<DeliveryResult> send(const Message& message) override;
  [[nodiscard]] std::vector<DeliveryResult> await() override;
  void abandon() override { abandoned_ = true; }

  // Waits for outstanding deliveries, then destroys the producer.
  void close();

  // Producers recreated after a fatal error (read from any thread).
  [[nodiscard]] std::uint64_t restarts() const { return restarts_; }

 private:
  struct Handle;
  void create();
  void wait_outstanding();  // polls until every sent message has an outcome
  static void on_delivery(rd_kafka_s* rk, const rd_kafka_message_s* msg, void* opaque);
  // A permanent failure when the broker's metadata refuses the topic (authorization, unknown
  // topic, invalid name). librdkafka 2.0.2 holds a message for such a topic until
  // message.timeout.ms and reports a timeout, so without this check the row would be retried
  // as transient for ever and each batch carrying it would hold up the relay that long.
  std::optional<DeliveryResult> refused_topic(const std::string& topic);

  KafkaOptions options_;
  Logger& logger_;
  std::unique_ptr<Handle> handle_;
  std::vector<DeliveryResult> results_;  // indexed by send order since the last await()
  std::size_t outstanding_ = 0;
  bool rebuild_ = false;  // a fatal producer error was seen: recreate after the batch
  // Topics whose metadata showed partitions and no error; looked up again after a message to
  // one of them timed out.
  std::unordered_set<std::string> usable_topics_;
  // Other topics' verdicts (refused, or metadata not available) and when they were reached;
  // reused for a second, so a batch with many rows for such a topic asks once.
  struct TopicVerdict {
    std::optional<DeliveryResult> refusal;
    std::chrono::steady_clock::time_point at;
  };
  std::unordered_map<std::string, TopicVerdict> checked_topics_;
  std::vector<std::string> timed_out_topics_;  // from delivery reports, handled in await()
  std::atomic<std::uint64_t> restarts_{0};
  std::atomic<bool> abandoned_{false};
};

}  // namespace outbox::relay::kafka
