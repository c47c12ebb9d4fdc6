#include "relay/app/settings.hpp"

#include <random>

#include "relay/app/instance_identity.hpp"
#include "relay/core/errors.hpp"
#include "relay/http/listen_address.hpp"
#include "relay/kafka/kafka_settings.hpp"
#include "relay/pg/sql_text.hpp"

namespace outbox::relay::app {
using std::chrono::milliseconds;

pg::ConnectionSettings connection_settings(const config::Config& c) {
  return pg::ConnectionSettings::from(c.database.url, c.database.password_file, c.database.application_name,
                                      c.database.statement_timeout_ms);
}

DaemonSettings daemon_settings(const config::Config& c) {
  // Every adapter's check runs once, here; a ConfigError of each is collected, not thrown, so
  // the operator sees every problem at once.
  std::vector<std::string> errors;
  DaemonSettings s;

  // PostgreSQL: one connection-settings value renders every session.
  s.schema = c.database.schema;
  try {
    (void)pg::quoted_identifier(c.database.schema, "database.schema");
  } catch (const ConfigError& e) {
    errors.emplace_back(e.what());
  }
  try {
    const auto db = pg::ConnectionSettings::from(c.database.url, c.database.password_file, c.database.application_name,
                                                 c.database.statement_timeout_ms);
    s.database_shown = db.redacted();
    s.role = db.role();
    s.store.conninfo = db.conninfo();
    s.lease_conninfo = db.conninfo("lease", c.ownership.lease_ttl_ms / 3);
    s.status_conninfo = db.conninfo("status", 5'000);
    if (c.relay.wakeup == config::Wakeup::notify) s.wakeup_conninfo = db.conninfo();
    pg::RetentionOptions r;
    r.conninfo = db.conninfo("retention", 60'000);
    r.schema = c.database.schema;
    if (c.relay.mark_mode == config::MarkMode::update) r.published_window = std::chrono::hours(c.retention.published_hours);
    r.inbox_window = std::chrono::hours(c.retention.inbox_hours);
    r.batch_size = static_cast<std::size_t>(c.retention.batch_size);
    if (r.published_window.count() > 0 || r.inbox_window.count() > 0) s.retention = r;
  } catch (const ConfigError& e) {
    errors.emplace_back(e.what());
  }
  s.store.schema = c.database.schema;
  s.store.mark_mode = c.relay.mark_mode == config::MarkMode::remove ? pg::MarkMode::remove : pg::MarkMode::update;
  s.retention_every = std::chrono::seconds(c.retention.interval_s);

  // The broker: Kafka's list and every pass-through property, or NATS's URLs, checked here
  // and only here.
  s.sink = c.sink.type;
  const bool to_kafka = c.sink.type == config::SinkType::kafka;
  try {
    if (to_kafka)
      kafka::check_brokers(c.kafka.brokers);
    else
      nats::check_urls(c.nats.url);
  } catch (const ConfigError& e) {
    errors.emplace_back(e.what());
  }
  // CloudEvents names the id and type attributes after the binding: the Debezium header
  // settings would be silently ignored, so a value other than their defaults is refused.
  const bool cloudevents = c.message.format == config::MessageFormat::cloudevents;
  const std::string ce_prefix = to_kafka ? "ce_" : "ce-";
  const config::MessageConfig defaults;
  if (cloudevents) {
    if (c.message.id_header != defaults.id_header)
      errors.emplace_back("message.id_header: does not apply with message.format cloudevents (the event id is the " +
                          ce_prefix + "id attribute); remove it");
    if (c.message.event_type_header != defaults.event_type_header)
      errors.emplace_back("message.event_type_header: does not apply with message.format cloudevents (the event type is the " +
                          ce_prefix + "type attribute); remove it");
  }
  const std::string id_header = cloudevents ? ce_prefix + "id" : c.message.id_header;
  const std::string event_type_header = cloudevents ? ce_prefix + "type" : c.message.event_type_header;
  if (!to_kafka)
    for (const auto& [name, setting] :
         std::vector<std::pair<std::string, std::string>>{{id_header, "message.id_header"},
                                                          {event_type_header, "message.event_type_header"},
                                                          {c.message.publisher_header, "message.publisher_header"},
                                                          {c.nats.key_header, "nats.key_header"}}) {
      if (name.empty() && setting != "message.id_header" && setting != "nats.key_header") continue;
      try {
        nats::check_header_name(name, setting);
      } catch (const ConfigError& e) {
        errors.emplace_back(e.what());
      }
    }
  try {
    kafka::check_properties(c.kafka.properties);
    // A payload the producer would refuse (message.max.bytes) is a bad row before it is read.
    if (auto it = c.kafka.properties.find("message.max.bytes"); it != c.kafka.properties.end())
      s.store.max_payload_bytes = std::stoul(it->second);
  } catch (const ConfigError& e) {
    errors.emplace_back(e.what());
  }
  s.kafka = {c.kafka.brokers, milliseconds(c.kafka.delivery_timeout_ms), c.kafka.client_id, c.kafka.properties};
  s.nats.url = c.nats.url;
  s.nats.name = c.nats.name;
  s.nats.ack_timeout = milliseconds(c.nats.ack_timeout_ms);
  s.nats.connect_timeout = milliseconds(c.nats.connect_timeout_ms);
  s.nats.id_header = id_header;
  s.nats.key_header = c.nats.key_header;
  s.nats.credentials_file = c.nats.credentials_file;
  s.nats.user = c.nats.user;
  s.nats.password = c.nats.password;
  s.nats.token = c.nats.token;

  // The core.
  MessageOptions m;
  m.topic_template = to_kafka ? c.kafka.topic_template : c.nats.subject_template;
  if (!to_kafka) {
    m.template_setting = "nats.subject_template";
    m.destination = "NATS subject";
    m.kafka_names = false;
  }
  m.row_topic_pattern = c.kafka.row_topic_pattern;
  m.id_header = c.message.id_header;
  m.event_type_header = c.message.event_type_header;
  if (cloudevents) {
    m.format = MessageFormat::cloudevents;
    m.ce_prefix = ce_prefix;
    m.ce_percent_encode = !to_kafka;  // NATS's binding encodes values as HTTP's does; Kafka's carries them raw
    m.ce_source_template = c.message.cloudevents_source;
    m.content_type = c.message.content_type;
  }
  try {
    s.messages.emplace(m);
    // On NATS the relay writes two more headers of its own: a row may not carry them.
    if (!to_kafka) {
      s.messages->reserve(c.nats.key_header, "nats.key_header");
      s.messages->reserve(s.nats.null_payload_header, "the NATS null payload header");
    }
  } catch (const ConfigError& e) {
    errors.emplace_back(e.what());
  }
  s.relay.batch_size = static_cast<std::size_t>(c.relay.batch_size);
  s.relay.max_attempts = c.relay.max_attempts;
  s.relay.row_retry = {milliseconds(c.relay.retry_initial_ms), milliseconds(c.relay.retry_max_ms)};
  s.relay.rescan_interval = milliseconds(c.relay.rescan_interval_ms);
  s.relay.publisher_header = c.message.publisher_header;
  s.relay.transient_retry.jitter = 0.5;
  s.relay.jitter_seed = std::random_device{}();
  s.runner.poll_interval = milliseconds(c.relay.poll_interval_ms);
  s.runner.linger = milliseconds(c.relay.linger_ms);
  s.runner.shutdown_timeout = milliseconds(c.relay.shutdown_timeout_ms);
  s.lease.ttl = milliseconds(c.ownership.lease_ttl_ms);
  s.lease.renew_interval = milliseconds(c.ownership.renew_interval_ms);
  s.lease.safety_margin = s.lease.ttl / 10;
  try {
    check_lease_options(s.lease);
  } catch (const ConfigError& e) {
    errors.emplace_back(e.what());
  }

  // Where it runs: the instance ids it may claim, the HTTP endpoint.
  const auto where = surroundings();
  s.hostname = where.hostname;
  s.instance_candidates = instance_id_candidates(c.ownership.instance_id, where);
  try {
    if (!c.http.listen.empty()) s.http = http::parse_listen(c.http.listen);
  } catch (const ConfigError& e) {
    errors.emplace_back(e.what());
  }
  s.ready_window = std::max(milliseconds(10'000), 3 * milliseconds(c.relay.poll_interval_ms));
  // One step's longest legitimate wait: the broker's outcome bound (NATS: an acknowledgement
  // timeout, then libnats's guard) plus a statement.
  const auto broker_bound = to_kafka ? milliseconds(c.kafka.delivery_timeout_ms)
                                     : 2 * milliseconds(c.nats.ack_timeout_ms) + std::chrono::seconds(5);
  s.stall_limit = broker_bound + milliseconds(c.database.statement_timeout_ms) + std::chrono::seconds(10);
  s.summary = {to_kafka ? c.kafka.brokers : c.nats.url, std::to_string(c.relay.batch_size),
               config::name_of(c.relay.wakeup), config::name_of(c.relay.mark_mode)};
  if (!errors.empty()) {
    std::string msg = "invalid configuration:";
    for (const auto& e : errors) msg += "\n  " + e;
    throw ConfigError(msg);
  }
  return s;
}

}  // namespace outbox::relay::app
