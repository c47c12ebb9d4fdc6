// The Kafka adapter's checks of what the configuration hands it: broker lists and
// pass-through properties, refused before anything runs and without echoing a secret.
#include <catch2/catch.hpp>

#include "relay/core/errors.hpp"
#include "relay/kafka/kafka_settings.hpp"

using namespace outbox::relay;

TEST_CASE("a broker list that cannot be parsed is a config error naming kafka.brokers", "[kafka][config]") {
  for (const std::string ok : {"127.0.0.1:9092", "kafka-1:9092,kafka-2:9092", "kafka-1:9092, kafka-2:9093", "kafka",
                               "SASL_SSL://kafka.example.com:9093", "[::1]:9092"})
    CHECK_NOTHROW(kafka::check_brokers(ok));
  for (const std::string bad : {"", ",", "kafka-1:9092,", "not a host list!!", "kafka:99999", "kafka:0", "kafka:port",
                                "http://kafka:9092", "-kafka:9092"}) {
    CAPTURE(bad);
    CHECK_THROWS_WITH(kafka::check_brokers(bad), Catch::Contains("kafka.brokers"));
  }
}

TEST_CASE("a refused value of a secret-bearing property is not echoed", "[kafka][config][secrets]") {
  // librdkafka refuses the value and quotes it in its message.
  CHECK_THROWS_WITH(kafka::check_properties({{"ssl.key.password", ""}, {"sasl.oauthbearer.method", "oauth-S3cret"}}),
                    Catch::Contains("kafka.properties.sasl.oauthbearer.method") && !Catch::Contains("oauth-S3cret"));
  CHECK_THROWS_WITH(kafka::check_properties({{"no.such.property", "x"}}),
                    Catch::Contains("kafka.properties.no.such.property"));
  CHECK(kafka::secret_property("sasl.oauthbearer.config"));
  CHECK(kafka::secret_property("SSL.KEY.PASSWORD"));
  CHECK_FALSE(kafka::secret_property("sasl.username"));
  CHECK_FALSE(kafka::secret_property("linger.ms"));
}

TEST_CASE("the inbox consumer refuses properties that would commit an offset before its batch landed",
          "[kafka][inbox]") {
  for (const auto& [name, value] : std::vector<std::pair<std::string, std::string>>{
           {"enable.auto.offset.store", "true"},
           {"enable.auto.commit", "false"},
           {"auto.commit.interval.ms", "5"},
           {"group.id", "g"},
           {"bootstrap.servers", "k:9092"},
           {"enable.partition.eof", "true"}}) {
    INFO(name);
    CHECK_THROWS_WITH(kafka::check_consumer_properties({{name, value}}),
                      Catch::StartsWith("inbox.consumer_properties." + name + ":"));
  }
  CHECK_THROWS_WITH(kafka::check_consumer_properties({{"no.such.property", "x"}}),
                    Catch::StartsWith("inbox.consumer_properties.no.such.property:"));
  CHECK_NOTHROW(kafka::check_consumer_properties({{"session.timeout.ms", "12000"}, {"isolation.level", "read_committed"}}));
}
