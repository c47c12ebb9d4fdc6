// What the Kafka adapter accepts from the configuration, checked before anything runs: the
// broker list and the pass-through librdkafka properties (contract 10), and which of them
// carry credentials.
#pragma once

#include <map>
#include <string>

namespace outbox::relay::kafka {

// Throws ConfigError naming `kafka.properties.<name>` for settings that would break per-key
// order or at-least-once (contract 10: idempotence, acks, gapless, in-flight limit, partitioner,
// queuing strategy, error-only delivery reports, transactions, retries, delivery timeout) and
// for names or values librdkafka refuses.
void check_properties(const std::map<std::string, std::string>& properties);

// The inbox sidecar's consumer properties (inbox.consumer_properties.<name>): refused when
// they would let an offset be committed before its batch is in the inbox, or when another
// setting owns them; then whatever librdkafka refuses.
void check_consumer_properties(const std::map<std::string, std::string>& properties);

// Properties whose value can carry a credential (passwords, secrets, keys, tokens, OAuth and
// JAAS configurations): shown as ******** and never echoed in an error.
[[nodiscard]] bool secret_property(const std::string& name);

// Throws ConfigError naming kafka.brokers unless it is a comma-separated list of host[:port]
// (optionally protocol://host:port); a list that cannot be parsed would otherwise be a
// resolver retry loop.
void check_brokers(const std::string& brokers);

}  // namespace outbox::relay::kafka
