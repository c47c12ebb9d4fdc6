// Configuration: YAML < environment < flags, every error at once with its key, secrets redacted.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <unistd.h>

#include "relay/config/config_loader.hpp"
#include "relay/core/errors.hpp"

using namespace outbox::relay;
using namespace outbox::relay::config;

namespace {
struct TempYaml {
  std::filesystem::path path;
  explicit TempYaml(const std::string& text) {
    path = std::filesystem::temp_directory_path() /
           ("outbox-relay-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter()++) + ".yaml");
    std::ofstream(path) << text;
  }
  ~TempYaml() { std::filesystem::remove(path); }
  static int& counter() {
    static int n = 0;
    return n;
  }
};

std::string load_error(const ConfigSources& s) {
  try {
    (void)load_config(s);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST_CASE("defaults hold when no source sets anything", "[config]") {
  auto c = load_config({});
  CHECK(c.relay.batch_size == 1000);
  CHECK(c.kafka.topic_template == "outbox.event.${aggregate_type}");
  CHECK(c.relay.wakeup == Wakeup::notify);
  CHECK(c.database.schema == "public");
}

TEST_CASE("YAML is overridden by the environment, which is overridden by flags", "[config]") {
  TempYaml y(R"(
database:
  url: postgresql://relay@db/app
kafka:
  brokers: k1:9092
  properties:
    compression.type: zstd
relay:
  batch_size: 500
  poll_interval_ms: 250
)");
  ConfigSources s;
  s.file = y.path;
  s.environment = {{"OUTBOX_RELAY_KAFKA_BROKERS", "k2:9092"},
                   {"OUTBOX_RELAY_RELAY_BATCH_SIZE", "700"},
                   {"OUTBOX_RELAY_KAFKA_PROPERTY_SASL_USERNAME", "svc"}};
  s.overrides = {{"relay.batch_size", "900"}};
  auto c = load_config(s);
  CHECK(c.database.url == "postgresql://relay@db/app");
  CHECK(c.kafka.brokers == "k2:9092");
  CHECK(c.relay.batch_size == 900);
  CHECK(c.relay.poll_interval_ms == 250);
  CHECK(c.kafka.properties.at("compression.type") == "zstd");
  CHECK(c.kafka.properties.at("sasl.username") == "svc");
}

TEST_CASE("reports every error at once, each with its key", "[config]") {
  TempYaml y(R"(
kafka:
  brokerz: k1:9092
relay:
  batch_size: lots
  wakeup: sometimes
  max_attempts: 0
  retry_initial_ms: 5000
  retry_max_ms: 10
)");
  ConfigSources s;
  s.file = y.path;
  s.environment = {{"OUTBOX_RELAY_NOPE", "1"}};
  auto err = load_error(s);
  CHECK_THAT(err, Catch::Contains("kafka.brokerz: unknown key (did you mean kafka.brokers?)"));
  CHECK_THAT(err, Catch::Contains("relay.batch_size: expected an integer, got \"lots\""));
  CHECK_THAT(err, Catch::Contains("relay.wakeup: must be one of notify, poll, got \"sometimes\""));
  CHECK_THAT(err, Catch::Contains("relay.max_attempts: must be between 1 and"));
  CHECK_THAT(err, Catch::Contains("relay.retry_max_ms: must be at least relay.retry_initial_ms"));
  CHECK_THAT(err, Catch::Contains("OUTBOX_RELAY_NOPE: unknown environment variable"));
}

TEST_CASE("malformed YAML names the file, line and column", "[config]") {
  TempYaml y("relay:\n  batch_size: [1, 2\n");
  ConfigSources s;
  s.file = y.path;
  auto err = load_error(s);
  CHECK_THAT(err, Catch::Contains(y.path.string() + ":"));
  CHECK_THAT(err, Catch::Contains("malformed YAML"));
}

TEST_CASE("a missing config file is reported", "[config]") {
  ConfigSources s;
  s.file = "/nonexistent/outbox-relay.yaml";
  CHECK_THAT(load_error(s), Catch::Contains("/nonexistent/outbox-relay.yaml: cannot be read"));
}

TEST_CASE("a section given a value and a value given a list are type errors", "[config]") {
  TempYaml y("relay: 5\nkafka:\n  brokers: [a, b]\n");
  ConfigSources s;
  s.file = y.path;
  auto err = load_error(s);
  CHECK_THAT(err, Catch::Contains("relay: is a section, expected a mapping"));
  CHECK_THAT(err, Catch::Contains("kafka.brokers: expected a single value, got a list"));
}

TEST_CASE("an invalid connection string is an error that does not echo the password", "[config]") {
  ConfigSources s;
  s.overrides = {{"database.url", "host=db password=hunter2 bogus_option=1"}};
  auto err = load_error(s);
  CHECK_THAT(err, Catch::Contains("database.url: not a valid PostgreSQL connection string"));
  CHECK_THAT(err, !Catch::Contains("hunter2"));
}

TEST_CASE("the effective config redacts the database password and secret Kafka properties", "[config]") {
  ConfigSources s;
  s.overrides = {{"database.url", "postgresql://relay:hunter2@db:5432/app"},
                 {"kafka.brokers", "k:9092"},
                 {"kafka.properties.sasl.password", "s3cret"},
                 {"kafka.properties.sasl.username", "svc"}};
  auto c = load_config(s);
  std::string all;
  for (const auto& [k, v] : effective_config(c)) all += k + "=" + v + "\n";
  CHECK_THAT(all, !Catch::Contains("hunter2"));
  CHECK_THAT(all, !Catch::Contains("s3cret"));
  CHECK_THAT(all, Catch::Contains("kafka.properties.sasl.username=svc"));
  CHECK_THAT(all, Catch::Contains("********"));
}

TEST_CASE("the reference lists every key with its environment variable", "[config]") {
  auto ref = settings_reference();
  bool found = false;
  for (const auto& d : ref)
    if (d.key == "kafka.brokers") found = d.env == "OUTBOX_RELAY_KAFKA_BROKERS";
  CHECK(found);
  CHECK(ref.size() > 20);
}

TEST_CASE("Kubernetes service-link variables named OUTBOX_RELAY_* are not mistaken for settings", "[config]") {
  ConfigSources s;
  s.environment = {{"OUTBOX_RELAY_KAFKA_BROKERS", "k:9092"},
                   {"OUTBOX_RELAY_SERVICE_HOST", "10.0.0.7"},
                   {"OUTBOX_RELAY_SERVICE_PORT", "9464"},
                   {"OUTBOX_RELAY_METRICS_SERVICE_PORT_METRICS", "9464"},
                   {"OUTBOX_RELAY_PORT", "tcp://10.0.0.7:9464"},
                   {"OUTBOX_RELAY_PORT_9464_TCP", "tcp://10.0.0.7:9464"},
                   {"OUTBOX_RELAY_PORT_9464_TCP_PROTO", "tcp"},
                   {"OUTBOX_RELAY_PORT_9464_TCP_PORT", "9464"},
                   {"OUTBOX_RELAY_PORT_9464_TCP_ADDR", "10.0.0.7"}};
  CHECK(load_config(s).kafka.brokers == "k:9092");
  s.environment["OUTBOX_RELAY_HTTP_LISTN"] = "0.0.0.0:1";  // a misspelt setting still fails
  CHECK_THAT(load_error(s), Catch::Contains("OUTBOX_RELAY_HTTP_LISTN: unknown environment variable"));
}

TEST_CASE("a key given twice in the YAML file is refused, at any depth", "[config]") {
  TempYaml top("relay:\n  batch_size: 10\nrelay:\n  batch_size: 20\n");
  TempYaml nested("relay:\n  batch_size: 10\n  batch_size: 20\n");
  TempYaml property("kafka:\n  properties:\n    linger.ms: 5\n    linger.ms: 50\n");
  for (const auto* y : {&top, &nested, &property}) {
    ConfigSources s;
    s.file = y->path;
    CHECK_THAT(load_error(s), Catch::Contains("given twice"));
  }
}

TEST_CASE("a directory or an unreadable file as the config file is a config error", "[config]") {
  ConfigSources s;
  s.file = std::filesystem::temp_directory_path();
  CHECK_THAT(load_error(s), Catch::Contains("is a directory"));
  s.file = "/proc/self/mem";  // exists, cannot be read as a stream
  CHECK_THAT(load_error(s), Catch::Contains("config file /proc/self/mem"));
}

TEST_CASE("every Kafka property that can carry a credential is redacted", "[config][secrets]") {
  ConfigSources s;
  s.overrides = {{"kafka.brokers", "k:9092"},
                 {"kafka.properties.sasl.oauthbearer.config", "principal=svc clientSecret=oauth-S3cret"},
                 {"kafka.properties.sasl.oauthbearer.client.secret", "client-S3cret"},
                 {"kafka.properties.ssl.key.password", "key-S3cret"},
                 {"kafka.properties.ssl.keystore.password", "store-S3cret"},
                 {"kafka.properties.ssl.key.pem", "-----BEGIN PRIVATE KEY-----pem-S3cret"},
                 {"kafka.properties.sasl.password", "sasl-S3cret"}};
  auto c = load_config(s);
  std::string all;
  for (const auto& [k, v] : effective_config(c)) all += k + "=" + v + "\n";
  CHECK_THAT(all, !Catch::Contains("S3cret"));
  CHECK_THAT(all, Catch::Contains("kafka.properties.sasl.oauthbearer.config=********"));
}

TEST_CASE("choices load as typed values and show as their names", "[config]") {
  ConfigSources s;
  s.overrides = {{"relay.mark_mode", "delete"}, {"relay.wakeup", "poll"}, {"log.format", "text"}, {"log.level", "warn"}};
  auto c = load_config(s);
  CHECK(c.relay.mark_mode == MarkMode::remove);
  CHECK(c.relay.wakeup == Wakeup::poll);
  CHECK(c.log.format == LogFormat::text);
  std::map<std::string, std::string> shown;
  for (const auto& [k, v] : effective_config(c)) shown[k] = v;
  CHECK(shown.at("relay.mark_mode") == "delete");
  CHECK(shown.at("relay.wakeup") == "poll");
  CHECK(shown.at("log.format") == "text");
  CHECK(shown.at("log.level") == "warn");
}

TEST_CASE("the inbox sidecar's section: topics, consumer properties from YAML and the environment", "[config][inbox]") {
  TempYaml y(R"(
kafka:
  brokers: k1:9092
inbox:
  name: payments
  topics: outbox.event.account, outbox.event.card
  missing_id: position
  consumer_properties:
    session.timeout.ms: 12000
    sasl.password: hunter2
)");
  ConfigSources s;
  s.file = y.path;
  s.environment = {{"OUTBOX_RELAY_INBOX_CONSUMER_PROPERTY_FETCH_MAX_BYTES", "1048576"},
                   {"OUTBOX_RELAY_INBOX_BATCH_SIZE", "500"}};
  auto c = load_config(s);
  CHECK(c.inbox.name == "payments");
  CHECK(c.inbox.topics == "outbox.event.account, outbox.event.card");
  CHECK(c.inbox.missing_id == MissingId::position);
  CHECK(c.inbox.batch_size == 500);
  CHECK(c.inbox.consumer_properties.at("session.timeout.ms") == "12000");
  CHECK(c.inbox.consumer_properties.at("fetch.max.bytes") == "1048576");
  CHECK(c.kafka.properties.empty());
  std::string all;
  for (const auto& [k, v] : effective_config(c)) all += k + "=" + v + "\n";
  CHECK_THAT(all, Catch::Contains("inbox.consumer_properties.sasl.password=********"));
  CHECK_THAT(all, !Catch::Contains("hunter2"));
}

TEST_CASE("an inbox retention no longer than the topics' is refused, naming both keys", "[config][inbox]") {
  ConfigSources s;
  s.overrides = {{"inbox.retention_hours", "168"}, {"inbox.topic_retention_hours", "168"}};
  CHECK_THROWS_WITH(load_config(s), Catch::Contains("inbox.retention_hours: 168 is not longer than "
                                                    "inbox.topic_retention_hours (168)"));
  s.overrides = {{"inbox.retention_hours", "0"}, {"inbox.topic_retention_hours", "168"}};
  CHECK_NOTHROW(load_config(s));  // 0: processed rows are kept
}
