#include "relay/app/settings.hpp"

#include <random>
#include <string>
#include <vector>

#include "relay/core/errors.hpp"
#include "relay/http/http_server.hpp"
#include "relay/kafka/kafka_publisher.hpp"
#include "relay/pg/pg_outbox_store.hpp"

namespace outbox::relay::app {

using std::chrono::milliseconds;

MessageOptions message_options(const config::Config& c) {
  MessageOptions m;
  m.topic_template = c.kafka.topic_template;
  m.row_topic_pattern = c.kafka.row_topic_pattern;
  m.id_header = c.message.id_header;
  m.event_type_header = c.message.event_type_header;
  return m;
}

RelayOptions relay_options(const config::Config& c) {
  RelayOptions o;
  o.batch_size = static_cast<std::size_t>(c.relay.batch_size);
  o.max_attempts = c.relay.max_attempts;
  o.row_retry = {milliseconds(c.relay.retry_initial_ms), milliseconds(c.relay.retry_max_ms)};
  o.rescan_interval = milliseconds(c.relay.rescan_interval_ms);
  o.publisher_header = c.message.publisher_header;
  o.transient_retry.jitter = 0.5;
  o.jitter_seed = std::random_device{}();
  return o;
}

LeaseOptions lease_options(const config::Config& c) {
  LeaseOptions o;
  o.ttl = milliseconds(c.ownership.lease_ttl_ms);
  o.renew_interval = milliseconds(c.ownership.renew_interval_ms);
  o.safety_margin = o.ttl / 10;
  return o;
}

pg::ConnectionSettings connection_settings(const config::Config& c) {
  return pg::ConnectionSettings::from(c.database.url, c.database.password_file, c.database.application_name,
                                      c.database.statement_timeout_ms);
}

void validate(const config::Config& c) {
  std::vector<std::string> errors;
  auto check = [&](auto&& fn) {
    try {
      fn();
    } catch (const ConfigError& e) {
      errors.emplace_back(e.what());
    }
  };
  check([&] { kafka::check_brokers(c.kafka.brokers); });
  check([&] { MessageBuilder{message_options(c)}; });
  check([&] { kafka::check_properties(c.kafka.properties); });
  check([&] { (void)pg::quoted_identifier(c.database.schema, "database.schema"); });
  check([&] { (void)connection_settings(c); });
  check([&] { check_lease_options(lease_options(c)); });
  check([&] { (void)http::parse_listen(c.http.listen.empty() ? ":0" : c.http.listen); });
  if (!errors.empty()) {
    std::string msg = "invalid configuration:";
    for (const auto& e : errors) msg += "\n  " + e;
    throw ConfigError(msg);
  }
}

}  // namespace outbox::relay::app
