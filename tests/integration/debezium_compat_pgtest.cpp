// Debezium compatibility, byte for byte: what the relay puts on the topic against what
// Debezium's outbox event router (defaults: route by aggregatetype to
// outbox.event.<aggregatetype>, key = aggregateid through the string converter, value =
// payload through the byte-array converter, a NULL payload as a null value, header id = the
// event id as text) and Java's default partitioner (toPositive(murmur2(key)) % partitions)
// would produce for the same rows. The expectations are computed here from the rows alone.
#include <catch2/catch.hpp>

#include <pqxx/pqxx>

#include <map>

#include "tests/integration/wired_relay.hpp"
#include "tests/support/java_partitioner.hpp"

using namespace outbox;
using namespace std::chrono_literals;

namespace {

struct Row {
  std::string aggregate_type;
  std::string aggregate_id;
  std::optional<std::string> payload;  // bytes; nullopt: NULL
};

struct Expected {
  std::string topic;
  std::string key;
  std::optional<std::string> value;
  int partition = 0;
};

// Debezium's outbox event router, default configuration.
Expected debezium(const Row& r, const std::string& id, int partitions) {
  (void)id;
  Expected e;
  e.topic = "outbox.event." + r.aggregate_type;  // route.topic.replacement outbox.event.${routedByValue}
  e.key = r.aggregate_id;                         // StringConverter: the UTF-8 bytes of aggregateid
  e.value = r.payload;                            // ByteArrayConverter: the bytea as is; NULL -> null
  e.partition = test::java_partition(e.key, partitions);
  return e;
}

std::string bytes(std::initializer_list<int> b) {
  std::string s;
  for (int c : b) s += static_cast<char>(c);
  return s;
}

}  // namespace

TEST_CASE("messages equal Debezium's outbox router's for the same rows: topic, key, value or null, id, partition",
          "[relay][debezium]") {
  relay::MessageOptions m;
  m.event_type_header = "";  // Debezium adds no event type header unless configured to
  test::WiredRelay w({}, {}, m);
  const int partitions = 6;
  for (const char* t : {"outbox.event.order", "outbox.event.Customer", "outbox.event.shipment_v2"})
    w.kafka.create_topic(t, partitions);
  const std::vector<Row> rows{
      {"order", "o-42", std::string("{\"amount\": 1200}")},
      {"order", "o-42", std::nullopt},  // a tombstone for o-42
      {"order", "", std::string("{}")},
      {"order", "\xc3\xa9t\xc3\xa9-17", std::string("{\"\\u00e9\": 1}")},
      {"Customer", "c/with spaces", bytes({0, 1, 2, 255, 254, 0})},  // Avro-ish binary, NUL bytes included
      {"Customer", std::string(300, 'k'), std::string()},            // an empty payload stays empty
      {"shipment_v2", "1", std::string(5000, 'p')},
  };
  std::map<std::string, Expected> expected;
  {
    pqxx::connection c(w.url);
    pqxx::work tx(c);
    for (const auto& r : rows) {
      std::optional<std::string> hex;
      if (r.payload) {
        hex = "";
        for (unsigned char ch : *r.payload) {
          static const char* d = "0123456789abcdef";
          *hex += d[ch >> 4];
          *hex += d[ch & 15];
        }
      }
      auto id = tx.exec_params("INSERT INTO outbox_events (aggregate_type, aggregate_id, event_type, payload) "
                               "VALUES ($1, $2, 'SomethingHappened', decode($3, 'hex')) RETURNING id::text",
                               r.aggregate_type, r.aggregate_id, hex)[0][0]
                    .as<std::string>();
      expected[id] = debezium(r, id, partitions);
    }
    tx.commit();
  }
  REQUIRE(w.drain(20s));
  std::map<std::string, test::ConsumedMessage> got;
  for (const char* t : {"outbox.event.order", "outbox.event.Customer", "outbox.event.shipment_v2"}) {
    test::TopicReader reader(w.kafka.bootstrap(), t);
    std::size_t want = 0;
    for (const auto& [id, e] : expected) want += e.topic == t ? 1 : 0;
    REQUIRE(reader.read_until([&](const auto& all) { return all.size() >= want; }, 20s));
    for (const auto& msg : reader.messages()) got.emplace(test::header(msg, "id").value_or(""), msg);
  }
  REQUIRE(got.size() == expected.size());
  for (const auto& [id, e] : expected) {
    INFO("event " << id << " key \"" << e.key << "\"");
    REQUIRE(got.contains(id));
    const auto& msg = got.at(id);
    CHECK(msg.topic == e.topic);
    CHECK_FALSE(msg.null_key);
    CHECK(msg.key == e.key);
    CHECK(msg.null_value == !e.value.has_value());
    if (e.value) CHECK(msg.value == *e.value);
    CHECK(msg.partition == e.partition);
    // Exactly Debezium's headers: the event id, once, as text.
    CHECK(msg.headers == std::vector<std::pair<std::string, std::optional<std::string>>>{{"id", id}});
  }
}

// The test's murmur2 against the values Kafka's own Utils.murmur2 tests pin down.
TEST_CASE("the test's Java murmur2 gives the values Kafka's clients compute", "[debezium]") {
  CHECK(test::java_murmur2("21") == -973932308);
  CHECK(test::java_murmur2("foobar") == -790332482);
  CHECK(test::java_murmur2("a-little-bit-long-string") == -985981536);
  CHECK(test::java_murmur2("a-little-bit-longer-string") == -1486304829);
  CHECK(test::java_murmur2("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") == -58897971);
  CHECK(test::java_murmur2("abc") == 479470107);
  CHECK(test::java_partition("o-42", 4) == 2);  // where Java puts it; librdkafka's CRC32 said 1
}
