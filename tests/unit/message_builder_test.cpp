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

// Contract 8: a row header named like one the relay writes would give the message two of it.
TEST_CASE("a row header named like a header the relay writes makes the row a bad row", "[message]") {
  MessageBuilder b({});
  b.reserve("relay", "message.publisher_header");
  for (const char* name : {"id", "eventType", "relay"}) {
    auto e = event();
    e.headers = {{"traceparent", "00-1"}, {name, "forged"}};
    auto built = b.build(e);
    REQUIRE(std::holds_alternative<BadRow>(built));
    CHECK_THAT(std::get<BadRow>(built).reason, Catch::Contains(std::string("\"") + name + "\" is written by the relay"));
  }
  // Header names are case-sensitive in Kafka: "Id" is the row's own.
  auto e = event();
  e.headers = {{"Id", "x"}};
  CHECK(std::holds_alternative<Message>(b.build(e)));
  // Without an event type header, the row may carry one of that name.
  MessageOptions o;
  o.event_type_header = "";
  e.headers = {{"eventType", "x"}};
  CHECK(std::holds_alternative<Message>(MessageBuilder(o).build(e)));
}

TEST_CASE("two of the relay's headers cannot share a name", "[message]") {
  MessageOptions o;
  o.event_type_header = "id";
  CHECK_THROWS_WITH(MessageBuilder(o), Catch::Contains("message.event_type_header"));
  MessageBuilder b({});
  CHECK_THROWS_WITH(b.reserve("eventType", "message.publisher_header"), Catch::Contains("message.publisher_header"));
  CHECK_THROWS_AS(b.reserve("", "message.publisher_header"), ConfigError);
}

TEST_CASE("a NULL payload is a null value and a null header value stays null", "[message]") {
  MessageBuilder b({});
  auto e = event();
  e.payload.reset();
  e.headers = {{"gone", std::nullopt}};
  auto m = std::get<Message>(b.build(e));
  CHECK_FALSE(m.value.has_value());
  CHECK(m.headers.back() == Header{"gone", std::nullopt});
  e.payload = "";
  CHECK(std::get<Message>(b.build(e)).value == std::optional<std::string>(""));
}

TEST_CASE("topics Kafka keeps for itself are refused", "[message]") {
  MessageBuilder b({});
  auto e = event();
  e.topic = "__consumer_offsets";
  CHECK_THAT(std::get<BadRow>(b.build(e)).reason, Catch::Contains("internal topics"));
  MessageOptions o;
  o.topic_template = "__${aggregate_type}";
  CHECK_THROWS_WITH(MessageBuilder(o), Catch::Contains("kafka.topic_template"));
}

namespace {
MessageOptions cloudevents(const std::string& prefix = "ce_", bool encode = false) {
  MessageOptions o;
  o.format = MessageFormat::cloudevents;
  o.ce_prefix = prefix;
  o.ce_percent_encode = encode;
  return o;
}
std::optional<std::string> header_of(const Message& m, const std::string& name) {
  int n = 0;
  std::optional<std::string> v;
  for (const auto& [k, value] : m.headers)
    if (k == name) ++n, v = value;
  REQUIRE(n <= 1);
  return v;
}
}  // namespace

TEST_CASE("CloudEvents binary mode on Kafka: ce_ attributes, content-type, the key and data unchanged", "[message][cloudevents]") {
  MessageBuilder b(cloudevents());
  auto m = std::get<Message>(b.build(event()));
  CHECK(m.key == "order-42");
  CHECK(m.value == std::string("\x00\x01binary", 8));
  CHECK(header_of(m, "ce_specversion") == "1.0");
  CHECK(header_of(m, "ce_id") == "5d3c2a8e-1111-4c4c-9999-000000000001");
  CHECK(header_of(m, "ce_type") == "OrderCreated");
  CHECK(header_of(m, "ce_source") == "/outbox/Order");
  CHECK(header_of(m, "ce_subject") == "order-42");
  CHECK(header_of(m, "content-type") == "application/json");
  CHECK(header_of(m, "traceparent") == "00-abc-def-01");
  CHECK_FALSE(header_of(m, "id"));  // Debezium's headers are not written twice
  CHECK_FALSE(header_of(m, "eventType"));
  CHECK(m.headers.size() == 7);
}

TEST_CASE("CloudEvents on NATS: ce- attributes percent-encoded as HTTP's binding says", "[message][cloudevents]") {
  auto o = cloudevents("ce-", true);
  o.topic_template = "orders";  // the aggregate type below is no subject name
  MessageBuilder b(o);
  auto e = event();
  e.aggregate_id = "caf\xc3\xa9 42%\"";
  e.aggregate_type = "Order Line/x";
  auto m = std::get<Message>(b.build(e));
  CHECK(header_of(m, "ce-subject") == "caf%C3%A9%2042%25%22");
  // The source is a URI-reference: the placeholder's value is encoded as a URI part, then the
  // attribute as a header value ('%' once more).
  CHECK(header_of(m, "ce-source") == "/outbox/Order%2520Line%252Fx");
  CHECK(header_of(m, "ce-id") == "5d3c2a8e-1111-4c4c-9999-000000000001");
  CHECK(percent_encode_attribute("a b\x7f") == "a%20b%7F");
}

TEST_CASE("CloudEvents: a keyless row has no subject, an empty event type is a bad row", "[message][cloudevents]") {
  MessageBuilder b(cloudevents());
  auto e = event();
  e.aggregate_id = "";
  CHECK_FALSE(header_of(std::get<Message>(b.build(e)), "ce_subject"));
  e.event_type = "";
  auto bad = b.build(e);
  REQUIRE(std::holds_alternative<BadRow>(bad));
  CHECK_THAT(std::get<BadRow>(bad).reason, Catch::Contains("type"));
}

TEST_CASE("CloudEvents: the source template takes placeholders and must be a URI-reference", "[message][cloudevents]") {
  auto o = cloudevents();
  o.ce_source_template = "urn:svc:${aggregate_type}:${event_type}";
  CHECK(header_of(std::get<Message>(MessageBuilder(o).build(event())), "ce_source") == "urn:svc:Order:OrderCreated");
  o.ce_source_template = "has space";
  CHECK_THROWS_WITH(MessageBuilder(o), Catch::Contains("message.cloudevents_source"));
  o.ce_source_template = "/x/${nope}";
  CHECK_THROWS_WITH(MessageBuilder(o), Catch::Contains("message.cloudevents_source: unknown placeholder ${nope}"));
  o.ce_source_template = "";
  CHECK_THROWS_WITH(MessageBuilder(o), Catch::Contains("message.cloudevents_source"));
  o = cloudevents();
  o.content_type = "json";
  CHECK_THROWS_WITH(MessageBuilder(o), Catch::Contains("message.content_type"));
}

TEST_CASE("CloudEvents: a row's content-type is the data's, one only, and its attributes are extensions", "[message][cloudevents]") {
  MessageBuilder b(cloudevents());
  auto e = event();
  e.headers = {{"Content-Type", "application/protobuf"}, {"ce_time", "2026-12-02T11:00:00Z"}, {"ce_tenant7", "acme"}};
  auto m = std::get<Message>(b.build(e));
  CHECK_FALSE(header_of(m, "content-type"));
  CHECK(header_of(m, "Content-Type") == "application/protobuf");
  CHECK(header_of(m, "ce_time") == "2026-12-02T11:00:00Z");
  CHECK(header_of(m, "ce_tenant7") == "acme");

  auto refused = [&](std::vector<Header> headers, const std::string& why) {
    auto row = event();
    row.headers = std::move(headers);
    auto r = b.build(row);
    REQUIRE(std::holds_alternative<BadRow>(r));
    CHECK_THAT(std::get<BadRow>(r).reason, Catch::Contains(why));
  };
  refused({{"content-type", "a/b"}, {"Content-Type", "c/d"}}, "ambiguous");
  refused({{"content-type", std::nullopt}}, "no value");
  refused({{"ce_id", "forged"}}, "written by the relay");
  refused({{"ce_type", "Forged"}}, "written by the relay");
  refused({{"ce_source", "/elsewhere"}}, "written by the relay");
  refused({{"ce_specversion", "0.3"}}, "written by the relay");
  refused({{"CE_ID", "forged"}}, "lowercase");  // a case-insensitive reader would take it for ce_id
  refused({{"ce_Tenant", "x"}}, "lowercase");
  refused({{"ce_", "x"}}, "lowercase");
  refused({{"ce_averyveryverylongattribute", "x"}}, "1 to 20");
  refused({{"ce_datacontenttype", "a/b"}}, "content-type");
  refused({{"ce_data", "x"}}, "content-type");
}

TEST_CASE("CloudEvents: the header limit counts every header the relay writes", "[message][cloudevents]") {
  MessageBuilder b(cloudevents());
  auto e = event();
  e.headers.clear();
  for (int i = 0; i < 58; ++i) e.headers.emplace_back("h" + std::to_string(i), "v");
  auto m = std::get<Message>(b.build(e));
  CHECK(m.headers.size() == 64);  // specversion, id, type, source, subject, content-type and 58
  e.headers.emplace_back("h58", "v");
  CHECK(std::holds_alternative<BadRow>(b.build(e)));
}

TEST_CASE("Debezium mode leaves ce_ and content-type row headers alone", "[message][cloudevents]") {
  MessageBuilder b({});
  auto e = event();
  e.headers = {{"ce_ID", "x"}, {"content-type", "a/b"}};
  auto m = std::get<Message>(b.build(e));
  CHECK(header_of(m, "ce_ID") == "x");
  CHECK(header_of(m, "content-type") == "a/b");
}
