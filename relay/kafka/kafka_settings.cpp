#include "relay/kafka/kafka_settings.hpp"

#include <librdkafka/rdkafka.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <regex>
#include <set>

#include "relay/core/errors.hpp"

namespace outbox::relay::kafka {
namespace {

// librdkafka's reading of a boolean property (true, t, 1 in any case; anything else is false
// for our purpose of refusing a value that does not keep a guarantee on).
bool truthy(std::string v) {
  std::transform(v.begin(), v.end(), v.begin(), [](unsigned char c) { return std::tolower(c); });
  return v == "true" || v == "t" || v == "1";
}

[[noreturn]] void refuse(const std::string& name, const std::string& why, const std::string& prefix = "kafka.properties.") {
  throw ConfigError(prefix + name + ": " + why);
}

// Partitioners that put every key, the empty one included, on one partition. The *_random
// variants other than murmur2_random scatter empty keys (consistent_random hashes neither
// empty nor NULL keys); murmur2_random scatters only NULL keys, which the relay never sends.
const std::set<std::string> kKeyedPartitioners{"murmur2_random", "murmur2", "consistent", "fnv1a"};

}  // namespace

bool secret_property(const std::string& name) {
  std::string n = name;
  std::transform(n.begin(), n.end(), n.begin(), [](unsigned char c) { return std::tolower(c); });
  for (const char* part : {"password", "secret", "key.pem", "token", "oauthbearer", "jaas", "credential", "ssl_key",
                           "ssl.key", "keystore"})
    if (n.find(part) != std::string::npos) return true;
  return false;
}

void check_brokers(const std::string& brokers) {
  static const std::regex entry(
      R"(^((plaintext|ssl|sasl_plaintext|sasl_ssl)://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?)(:([0-9]{1,5}))?$)",
      std::regex::icase);
  if (brokers.empty())
    throw ConfigError("kafka.brokers: required (set it in the config file, OUTBOX_RELAY_KAFKA_BROKERS or --brokers)");
  std::size_t start = 0;
  for (;;) {
    const auto comma = brokers.find(',', start);
    std::string one = brokers.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    one.erase(0, one.find_first_not_of(' '));
    one.erase(one.find_last_not_of(' ') + 1);
    std::smatch m;
    if (!std::regex_match(one, m, entry) || (m[6].matched && (std::stol(m[6].str()) < 1 || std::stol(m[6].str()) > 65535)))
      throw ConfigError("kafka.brokers: \"" + one + "\" is not host:port (a comma-separated list such as "
                        "kafka-1:9092,kafka-2:9092)");
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
}

// Names and values librdkafka itself refuses, found before anything runs.
static void refused_by_librdkafka(const std::map<std::string, std::string>& properties, const std::string& prefix) {
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  char err[512];
  for (const auto& [name, value] : properties) {
    if (rd_kafka_conf_set(conf, name.c_str(), value.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK) {
      rd_kafka_conf_destroy(conf);
      std::string why = err;
      // librdkafka quotes the value it refuses: never for a property that can hold a secret.
      if (secret_property(name))
        for (auto at = why.find(value); !value.empty() && at != std::string::npos; at = why.find(value))
          why.replace(at, value.size(), "********");
      refuse(name, why, prefix);
    }
  }
  rd_kafka_conf_destroy(conf);
}

void check_properties(const std::map<std::string, std::string>& properties) {
  // Contract 10: nothing passed through may switch off per-key order or at-least-once.
  for (const auto& [name, value] : properties) {
    if (name == "enable.idempotence" && !truthy(value))
      refuse(name, "must stay true (per-aggregate order across retries depends on the idempotent producer)");
    if ((name == "acks" || name == "request.required.acks") && value != "all" && value != "-1")
      refuse(name, "must be all (a row is marked published only after every in-sync replica has it)");
    if (name == "enable.gapless.guarantee" && !truthy(value))
      refuse(name, "must stay true (a failed batch must stop the producer rather than leave a gap in an "
                   "aggregate's partition)");
    if (name == "max.in.flight.requests.per.connection" || name == "max.in.flight") {
      long n = 0;
      auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
      if (ec != std::errc{} || p != value.data() + value.size() || n < 1 || n > 5)
        refuse(name, "must be 1 to 5 (the idempotent producer keeps order only with at most 5 requests in flight)");
    }
    if (name == "partitioner" && !kKeyedPartitioners.contains(value))
      refuse(name, "\"" + value + "\" does not keep every aggregate on one partition; use murmur2_random (the "
                   "default: Java's, as Debezium and Kafka Connect partition), murmur2, consistent or fnv1a");
    if (name == "queuing.strategy" && value != "fifo")
      refuse(name, "must stay fifo (lifo sends an aggregate's later events first)");
    if (name == "delivery.report.only.error" && truthy(value))
      refuse(name, "must stay false (a row is marked only from its successful delivery report)");
    if (name == "transactional.id")
      refuse(name, "the relay does not publish in Kafka transactions (every message would fail outside one)");
    if ((name == "retries" || name == "message.send.max.retries") && value == "0")
      refuse(name, "must be above 0 (the idempotent producer needs retries to keep order)");
    if (name == "message.timeout.ms" || name == "delivery.timeout.ms")
      refuse(name, "set kafka.delivery_timeout_ms instead (0 here would wait for ever on a broker that is away)");
    if (name == "bootstrap.servers" || name == "metadata.broker.list")
      refuse(name, "set kafka.brokers instead");
    if (name == "dr_msg_cb" || name == "dr_cb") refuse(name, "is set by the relay and cannot be overridden");
  }
  refused_by_librdkafka(properties, "kafka.properties.");
}

void check_consumer_properties(const std::map<std::string, std::string>& properties) {
  const std::string prefix = "inbox.consumer_properties.";
  for (const auto& [name, value] : properties) {
    if (name == "enable.auto.offset.store")
      refuse(name, "is the sidecar's: an offset is stored only after its batch committed in the inbox", prefix);
    if (name == "enable.auto.commit")
      refuse(name, "is the sidecar's (it commits stored offsets); set inbox.commit_interval_ms instead", prefix);
    if (name == "auto.commit.interval.ms") refuse(name, "set inbox.commit_interval_ms instead", prefix);
    if (name == "group.id") refuse(name, "set inbox.group_id instead", prefix);
    if (name == "bootstrap.servers" || name == "metadata.broker.list") refuse(name, "set kafka.brokers instead", prefix);
    if (name == "enable.partition.eof") refuse(name, "is the sidecar's", prefix);
    if (name == "rebalance_cb" || name == "offset_commit_cb") refuse(name, "is set by the sidecar", prefix);
  }
  refused_by_librdkafka(properties, prefix);
}

}  // namespace outbox::relay::kafka
