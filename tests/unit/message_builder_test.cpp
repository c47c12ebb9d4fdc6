// Message shape: Debezium outbox event router compatible by default.
#include <catch2/catch.hpp>

#include "relay/core/errors.hpp"
#include "relay/core/message_builder.hpp"

using namespace outbox::relay;

namespace {
OutboxEvent event() {
  OutboxEvent e;
  e.seq = 1;
  e.id = "5d3c2a8e-1111-4c4c-9999-000000000001";
  e.aggregate_type = "Order";
  e.aggregate_id = "order-42";
  e.event_type = "OrderCreated";
  e.payload = std::string("\x00\x01binary", 8);
  e.headers = {{"traceparent", "00-abc-def-01"}};
  return e;
}
}  // namespace

TEST_CASE("builds the Debezium-compatible message by default", "[message]") {
  MessageBuilder b({});
  auto m = std::get<Message>(b.build(event()));
  CHECK(m.topic == "outbox.event.Order");
  CHECK(m.key == "order-42");
  CHECK(m.value == std::string("\x00\x01binary", 8));
  REQUIRE(m.headers.size() == 3);
  CHECK(m.headers[0] == Header{"id", "5d3c2a8e-1111-4c4c-9999-000000000001"});
  CHECK(m.headers[1] == Header{"eventType", "OrderCreated"});
  CHECK(m.headers[2] == Header{"traceparent", "00-abc-def-01"});
}

TEST_CASE("a per-row topic overrides the template", "[message]") {
  MessageBuilder b({});
  auto e = event();
  e.topic = "billing.events";
  CHECK(std::get<Message>(b.build(e)).topic == "billing.events");
}

TEST_CASE("the topic template accepts ${aggregate_type} and ${event_type}", "[message]") {
  MessageOptions o;
  o.topic_template = "svc.${aggregate_type}.${event_type}";
  o.event_type_header = "";
  auto m = std::get<Message>(MessageBuilder(o).build(event()));
  CHECK(m.topic == "svc.Order.OrderCreated");
  CHECK(m.headers.size() == 2);  // no event type header
}

TEST_CASE("a template with an unknown placeholder is a config error naming the key", "[message]") {
  MessageOptions o;
  o.topic_template = "x.${foo}";
  CHECK_THROWS_WITH(MessageBuilder(o), Catch::Contains("kafka.topic_template: unknown placeholder ${foo}"));
  o.topic_template = "x.${aggregate_type";
  CHECK_THROWS_AS(MessageBuilder(o), ConfigError);
  o.topic_template = "bad topic";
  CHECK_THROWS_WITH(MessageBuilder(o), Catch::Contains("kafka.topic_template"));
}

TEST_CASE("rows that cannot become valid messages are reported with the reason", "[message]") {
  MessageBuilder b({});
  auto e = event();
  e.aggregate_type = "has space";
  CHECK(std::get<BadRow>(b.build(e)).reason.find("not a valid Kafka topic name") != std::string::npos);
  e = event();
  e.headers = {{"bad\nkey", "v"}};
  CHECK(std::holds_alternative<BadRow>(b.build(e)));
  e = event();
  e.headers.assign(100, {"k", "v"});
  CHECK(std::holds_alternative<BadRow>(b.build(e)));
  e = event();
  e.headers = {{"big", std::string(20'000, 'x')}};
  CHECK(std::holds_alternative<BadRow>(b.build(e)));
}

TEST_CASE("topic names follow Kafka's rules", "[message]") {
  CHECK(valid_topic_name("outbox.event.Order_1-x"));
  CHECK_FALSE(valid_topic_name(""));
  CHECK_FALSE(valid_topic_name("."));
  CHECK_FALSE(valid_topic_name(".."));
  CHECK_FALSE(valid_topic_name(std::string(250, 'a')));
  CHECK_FALSE(valid_topic_name("a/b"));
}

TEST_CASE("a row's own topic must match kafka.row_topic_pattern when one is set", "[message]") {
  MessageOptions o;
  o.row_topic_pattern = R"(billing\..*)";
  MessageBuilder b(o);
  auto e = event();
  e.topic = "billing.events";
  CHECK(std::get<Message>(b.build(e)).topic == "billing.events");
  e.topic = "payments.events";
  CHECK_THAT(std::get<BadRow>(b.build(e)).reason, Catch::Contains("not allowed by kafka.row_topic_pattern"));
  e.topic.reset();  // the template's topic is the operator's own choice, not checked
  CHECK(std::holds_alternative<Message>(b.build(e)));
  o.row_topic_pattern = "([";
  CHECK_THROWS_WITH(MessageBuilder(o), Catch::Contains("kafka.row_topic_pattern"));
}
