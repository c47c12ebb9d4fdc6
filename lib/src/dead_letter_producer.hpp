// The consumer runner's dead-letter topic (private to the library): librdkafka configuration
// helpers the runner shares, and an idempotent producer (acks=all) that publishes one message
// and waits for the broker's answer. The retrying around it is the runner's.
#pragma once

#include <librdkafka/rdkafka.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "outbox/consumer_runner.hpp"

namespace outbox::detail {

// bootstrap.servers and socket.nagle.disable (see DESIGN.md: Nagle costs ~40 ms per batch).
[[nodiscard]] rd_kafka_conf_t* new_kafka_conf(const std::string& brokers);
// Sets one property; on refusal destroys `conf` and throws std::invalid_argument naming it.
void set_kafka_property(rd_kafka_conf_t* conf, const std::string& name, const std::string& value);

class DeadLetterProducer {
 public:
  // The consumer's security.*, sasl.* and ssl.* properties are taken over.
  DeadLetterProducer(const std::string& brokers, const std::map<std::string, std::string>& consumer_properties);
  ~DeadLetterProducer();
  DeadLetterProducer(const DeadLetterProducer&) = delete;
  DeadLetterProducer& operator=(const DeadLetterProducer&) = delete;

  // Publishes `ev` unchanged (key, value or tombstone, headers) plus `extra` headers to `topic`
  // and waits for its delivery report. Returns its error (NO_ERROR: acknowledged).
  rd_kafka_resp_err_t publish(const std::string& topic, const ConsumedEvent& ev,
                              const std::vector<std::pair<std::string, std::string>>& extra);

 private:
  static void delivered(rd_kafka_t*, const rd_kafka_message_t* m, void* opaque);
  rd_kafka_t* rk_ = nullptr;
  int outstanding_ = 0;
  rd_kafka_resp_err_t error_ = RD_KAFKA_RESP_ERR_NO_ERROR;
};

}  // namespace outbox::detail
