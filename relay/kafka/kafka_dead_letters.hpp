// The inbox sidecar's dead-letter topic: an idempotent producer (acks=all) that publishes a
// message the inbox cannot store, its key, value and headers unchanged, with its origin and the
// reason in dlq.* headers.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>

#include "relay/core/inbox_ports.hpp"
#include "relay/core/logger.hpp"

struct rd_kafka_s;

namespace outbox::relay::kafka {

struct KafkaDeadLetterOptions {
  std::string brokers;
  std::string topic;  // empty: "<source topic>.dlq"
  std::string inbox;  // named in the dlq.inbox header
  std::string client_id = "outbox-relay-inbox-dlq";
  std::map<std::string, std::string> properties;  // security.*, sasl.*, ssl.* from the consumer's
};

class KafkaDeadLetters final : public DeadLetterSink {
 public:
  explicit KafkaDeadLetters(KafkaDeadLetterOptions options, Logger& logger);
  ~KafkaDeadLetters() override;

  std::vector<bool> send(const std::vector<DeadLetter>& letters, std::chrono::steady_clock::time_point deadline) override;

 private:
  friend struct KafkaDeadLetterCallbacks;
  void create();
  KafkaDeadLetterOptions options_;
  Logger& logger_;
  rd_kafka_s* rk_ = nullptr;  // created at the first letter
  std::uint64_t next_id_ = 1;
  // Outcome per letter of the send in progress: 0 waiting, 1 acknowledged, 2 failed. A report
  // that comes after its send gave up finds nothing and is dropped (the letter is sent again).
  std::unordered_map<std::uint64_t, int> outcomes_;
};

}  // namespace outbox::relay::kafka
