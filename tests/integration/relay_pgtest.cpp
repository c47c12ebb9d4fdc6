// The relay core wired to the real adapters: PostgreSQL and librdkafka's mock Kafka cluster.
// Assertions read the topic back and the outbox rows, never logs.
#include <catch2/catch.hpp>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <map>
#include <set>
#include <thread>

#include "tests/integration/wired_relay.hpp"

using namespace outbox;
using namespace outbox::relay;
using namespace std::chrono_literals;

namespace {

using Wired = test::WiredRelay;

std::map<std::string, std::int64_t> seq_by_id(const std::string& url) {
  pqxx::connection c(url);
  pqxx::nontransaction tx(c);
  std::map<std::string, std::int64_t> m;
  for (const auto& row : tx.exec("SELECT id::text, seq FROM outbox_events")) m[row[0].c_str()] = row[1].as<std::int64_t>();
  return m;
}

}  // namespace

TEST_CASE("publishes every row once acknowledged, in seq order per aggregate, and marks it", "[relay][kafka]") {
  Wired w;
  test::insert_events(w.url, 2000, 20);
  REQUIRE(w.drain());
  CHECK(test::scalar(w.url, "SELECT count(*) FROM outbox_events WHERE published_at IS NULL") == 0);

  test::TopicReader reader(w.kafka.bootstrap(), "outbox.event.order");
  REQUIRE(reader.read_until([](const auto& all) { return all.size() >= 2000; }, 30s));
  auto seqs = seq_by_id(w.url);
  std::map<std::string, std::int64_t> last;
  std::set<std::string> ids;
  for (const auto& m : reader.messages()) {
    auto id = test::header(m, "id");
    REQUIRE(id);
    REQUIRE(seqs.contains(*id));
    CHECK(test::header(m, "eventType") == std::optional<std::string>("created"));
    CHECK(m.value.size() == 200);
    ids.insert(*id);
    auto [it, fresh] = last.try_emplace(m.key, seqs[*id]);
    if (!fresh) {
      CHECK(seqs[*id] > it->second);
      it->second = seqs[*id];
    }
  }
  CHECK(ids.size() == 2000);
}

TEST_CASE("marks nothing while the broker is down and catches up when it returns", "[relay][kafka]") {
  Wired w({}, {}, {}, 1500ms);
  test::insert_events(w.url, 50, 5);
  rd_kafka_mock_broker_set_down(w.kafka.cluster(), 1);
  auto r = w.relay.step();
  CHECK(r.kind == StepKind::backoff);
  CHECK(test::scalar(w.url, "SELECT count(*) FROM outbox_events WHERE published_at IS NOT NULL") == 0);
  CHECK(test::scalar(w.url, "SELECT max(attempts) FROM outbox_events") == 0);  // no attempt burnt
  rd_kafka_mock_broker_set_up(w.kafka.cluster(), 1);
  REQUIRE(w.drain());
  CHECK(test::scalar(w.url, "SELECT count(*) FROM outbox_events WHERE published_at IS NULL") == 0);
}

TEST_CASE("a message larger than the producer allows fails permanently and other aggregates flow", "[relay][kafka]") {
  Wired w(std::map<std::string, std::string>{{"message.max.bytes", "10000"}});
  test::insert_events(w.url, 10, 5);
  {
    pqxx::connection c(w.url);
    pqxx::work tx(c);
    tx.exec("SELECT outbox_publish('order', 'huge', 'created', convert_to(repeat('x', 50000), 'UTF8'))");
    tx.exec("SELECT outbox_publish('order', 'huge', 'created', '{}'::jsonb)");
    tx.commit();
  }
  (void)w.relay.step();
  (void)w.relay.step();
  CHECK(test::scalar(w.url, "SELECT count(*) FROM outbox_events WHERE published_at IS NOT NULL") == 10);
  CHECK(test::scalar(w.url, "SELECT count(*) FROM outbox_events WHERE aggregate_id = 'huge' AND published_at IS NULL") == 2);
  CHECK(test::scalar(w.url, "SELECT count(*) FROM outbox_events WHERE aggregate_id = 'huge' AND attempts = 1 "
                            "AND last_error LIKE '%SIZE%' AND next_attempt_at > now()") == 1);
}

// librdkafka 2.0.2 does not fail a message whose topic the broker refuses in its metadata
// (TOPIC_AUTHORIZATION_FAILED): the message waits for message.timeout.ms and comes back as a
// timeout. Before the fix the row was retried as a transient failure for ever, and every
// batch that carried it held the whole relay for the delivery timeout.
TEST_CASE("a row whose topic the broker refuses fails permanently at once and does not hold up the rest",
          "[relay][kafka]") {
  Wired w({}, {}, {}, 20s);
  rd_kafka_mock_topic_set_error(w.kafka.cluster(), "refused.orders", RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
  test::insert_events(w.url, 20, 5);
  test::scalar(w.url, "SELECT count(outbox_publish('order', 'refused', 'created', '{}'::jsonb, '{}'::jsonb, "
                      "'refused.orders'))");
  test::insert_events(w.url, 20, 5);
  const auto start = std::chrono::steady_clock::now();
  (void)w.relay.step();
  (void)w.relay.step();
  CHECK(std::chrono::steady_clock::now() - start < 10s);  // not a delivery timeout
  CHECK(test::scalar(w.url, "SELECT count(*) FROM outbox_events WHERE published_at IS NOT NULL") == 40);
  CHECK(test::scalar(w.url, "SELECT count(*) FROM outbox_events WHERE aggregate_id = 'refused' AND attempts = 1 "
                            "AND last_error LIKE '%TOPIC_AUTHORIZATION_FAILED%'") == 1);
}
