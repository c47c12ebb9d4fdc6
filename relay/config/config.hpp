// The relay's configuration: plain structs with defaults in place. Filled by the loader
// from built-in defaults < YAML file < environment < command-line flags.
#pragma once

#include <map>
#include <string>

namespace outbox::relay::config {

struct DatabaseConfig {
  std::string url;            // libpq URI or key=value string; may be empty to use PG* env vars
  std::string password_file;  // optional file holding the password (systemd credential, k8s secret)
  std::string schema = "public";
  std::string application_name = "outbox-relay";
  int statement_timeout_ms = 30'000;
};

struct KafkaConfig {
  std::string brokers;
  std::string client_id = "outbox-relay";
  int delivery_timeout_ms = 30'000;
  std::string topic_template = "outbox.event.${aggregate_type}";
  std::string row_topic_pattern;  // regex a row's own topic must match; empty: any valid name
  std::map<std::string, std::string> properties;  // raw librdkafka properties
};

// Where the relay publishes: the choices in the order of their names (sink.type).
enum class SinkType { kafka, nats };
[[nodiscard]] inline const char* name_of(SinkType t) { return t == SinkType::kafka ? "kafka" : "nats"; }

struct SinkConfig {
  SinkType type = SinkType::kafka;
};

// NATS JetStream (sink.type: nats): publishes acknowledged by a stream, never core NATS.
struct NatsConfig {
  std::string url = "nats://127.0.0.1:4222";  // comma-separated server URLs
  std::string name = "outbox-relay";
  std::string subject_template = "outbox.event.${aggregate_type}";
  int ack_timeout_ms = 5'000;
  int connect_timeout_ms = 2'000;
  std::string key_header = "key";
  std::string credentials_file;
  std::string user;
  std::string password;
  std::string token;
};

// The message shape (message.format): Debezium's outbox router, or CloudEvents binary mode.
enum class MessageFormat { debezium, cloudevents };
[[nodiscard]] inline const char* name_of(MessageFormat f) { return f == MessageFormat::debezium ? "debezium" : "cloudevents"; }

struct MessageConfig {
  MessageFormat format = MessageFormat::debezium;
  std::string cloudevents_source = "/outbox/${aggregate_type}";
  std::string content_type = "application/json";
  std::string id_header = "id";
  std::string event_type_header = "eventType";
  std::string publisher_header;  // empty: no header naming the sending instance, lane and epoch
};

// Choices, in the order of their names in the settings table.
enum class Wakeup { notify, poll };
enum class MarkMode { update, remove };  // "update" | "delete"
enum class LogFormat { json, text };

[[nodiscard]] inline const char* name_of(Wakeup w) { return w == Wakeup::notify ? "notify" : "poll"; }
[[nodiscard]] inline const char* name_of(MarkMode m) { return m == MarkMode::update ? "update" : "delete"; }
[[nodiscard]] inline const char* name_of(LogFormat f) { return f == LogFormat::json ? "json" : "text"; }

struct RelaySettings {
  int batch_size = 1000;
  Wakeup wakeup = Wakeup::notify;
  MarkMode mark_mode = MarkMode::update;
  int poll_interval_ms = 500;
  int linger_ms = 2;
  int rescan_interval_ms = 1000;
  int max_attempts = 10;
  int retry_initial_ms = 1000;
  int retry_max_ms = 300'000;
  int shutdown_timeout_ms = 30'000;
};

struct RetentionConfig {
  int published_hours = 168;  // delete published rows older than this; 0: keep them
  int inbox_hours = 0;        // also purge consumer_inbox in database.schema; 0: off
  int interval_s = 60;        // time between passes
  int batch_size = 1000;      // rows per short transaction
};

struct OwnershipConfig {
  std::string instance_id;      // empty: derived from the pod, unit or host (app/instance_identity)
  int lease_ttl_ms = 10'000;    // a lane whose lease is not renewed for this long passes on
  int renew_interval_ms = 2'000;
};

// The inbox sidecar (`outbox-relay inbox run`): consumes inbox.topics with a consumer group
// and lands each message in database.schema's inbox_events.
enum class MissingId { dead_letter, position };
[[nodiscard]] inline const char* name_of(MissingId m) { return m == MissingId::dead_letter ? "dead_letter" : "position"; }

struct InboxConfig {
  std::string name = "default";
  std::string topics;    // comma-separated
  std::string group_id;  // empty: "outbox-inbox-<name>"
  std::string event_id_header = "id";
  std::string event_type_header = "eventType";
  MissingId missing_id = MissingId::dead_letter;
  std::string dead_letter_topic;  // empty: "<source topic>.dlq"
  int batch_size = 1000;
  int linger_ms = 5;
  int max_message_bytes = 8 << 20;
  int commit_interval_ms = 1'000;
  int shutdown_timeout_ms = 10'000;
  int retention_hours = 336;       // processed rows purged after this; 0: kept
  int topic_retention_hours = 0;   // the topics' retention, when known; 0: unknown
  std::map<std::string, std::string> consumer_properties;  // raw librdkafka consumer properties
};

struct HttpConfig {
  std::string listen = "127.0.0.1:9464";  // host:port for /healthz, /readyz, /metrics; empty: off
};

struct LogConfig {
  std::string level = "info";  // debug | info | warn | error
  LogFormat format = LogFormat::json;
};

struct Config {
  DatabaseConfig database;
  SinkConfig sink;
  KafkaConfig kafka;
  NatsConfig nats;
  MessageConfig message;
  RelaySettings relay;
  RetentionConfig retention;
  OwnershipConfig ownership;
  InboxConfig inbox;
  HttpConfig http;
  LogConfig log;
};

}  // namespace outbox::relay::config
