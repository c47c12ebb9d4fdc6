// Rows a producer can insert that the relay must survive (contracts 8 and 9) and the message
// shape consumers rely on (Debezium's and Java's): checked on the topic read back from the
// mock cluster and on the outbox rows.
#include <catch2/catch.hpp>

#include <pqxx/pqxx>

#include <map>
#include <set>

#include "relay/pg/pg_admin.hpp"
#include "relay/pg/pg_status.hpp"
#include "tests/integration/wired_relay.hpp"
#include "tests/support/java_partitioner.hpp"

using namespace outbox;
using namespace outbox::relay;
using namespace std::chrono_literals;

namespace {

using Wired = test::WiredRelay;

// Inserts one row with the given column values (SQL expressions) over the defaults.
std::string insert_row(const std::string& url, const std::map<std::string, std::string>& columns) {
  std::string names = "aggregate_type, aggregate_id, event_type, payload";
  std::map<std::string, std::string> values{{"aggregate_type", "'order'"},
                                            {"aggregate_id", "'healthy'"},
                                            {"event_type", "'created'"},
                                            {"payload", "'\\x7b7d'::bytea"}};
  for (const auto& [k, v] : columns) values[k] = v;
  std::string cols, vals;
  for (const auto& [k, v] : values) {
    cols += (cols.empty() ? "" : ", ") + k;
    vals += (vals.empty() ? "" : ", ") + v;
  }
  pqxx::connection c(url);
  pqxx::work tx(c);
  auto id = tx.exec("INSERT INTO outbox_events (" + cols + ") VALUES (" + vals + ") RETURNING id::text")[0][0]
                .as<std::string>();
  tx.commit();
  return id;
}

std::map<std::string, test::ConsumedMessage> by_id(const std::vector<test::ConsumedMessage>& messages) {
  std::map<std::string, test::ConsumedMessage> out;
  for (const auto& m : messages)
    if (auto id = test::header(m, "id")) out.emplace(*id, m);
  return out;
}

}  // namespace

TEST_CASE("rows with infinite or extreme timestamps are published and never stall the relay", "[relay][hostile]") {
  Wired w;
  std::vector<std::string> ids;
  for (const char* ts : {"'infinity'", "'-infinity'", "'294276-12-31 23:59:59+00'", "'4713-01-01 00:00:00+00 BC'"}) {
    ids.push_back(insert_row(w.url, {{"aggregate_id", "'created-" + std::string(ts).substr(1, 4) + "'"}, {"created_at", ts}}));
    ids.push_back(insert_row(w.url, {{"aggregate_id", "'next-" + std::string(ts).substr(1, 4) + "'"}, {"next_attempt_at", ts}}));
  }
  for (int i = 0; i < 5; ++i) ids.push_back(insert_row(w.url, {}));
  REQUIRE(w.drain(20s));
  CHECK(test::scalar(w.url, "SELECT count(*) FROM outbox_events WHERE published_at IS NULL") == 0);
  test::TopicReader reader(w.kafka.bootstrap(), "outbox.event.order");
  REQUIRE(reader.read_until([&](const auto& all) { return by_id(all).size() >= ids.size(); }, 20s));
  auto got = by_id(reader.messages());
  for (const auto& id : ids) CHECK(got.contains(id));
}

TEST_CASE("status and operator queries answer while rows with infinite timestamps are pending", "[relay][hostile]") {
  auto url = test::fresh_database();
  insert_row(url, {{"aggregate_id", "'a'"}, {"created_at", "'-infinity'"}});
  insert_row(url, {{"aggregate_id", "'b'"}, {"created_at", "'infinity'"}, {"next_attempt_at", "'infinity'"}});
  const auto dead = insert_row(url, {{"aggregate_id", "'c'"}, {"created_at", "'infinity'"},
                                     {"dead_lettered_at", "'infinity'"}, {"next_attempt_at", "'-infinity'"}});
  insert_row(url, {{"aggregate_id", "'d'"}});
  pg::PgStatus status(url, "public");
  auto s = status.read();
  CHECK(s.backlog == 3);
  CHECK(s.dead_lettered == 1);
  CHECK(s.oldest_unpublished_age_s >= 0);
  CHECK(s.oldest_unpublished_age_s < 3600);  // the finite rows say how old the backlog is
  pg::PgAdmin admin(url, "public", "outbox-relay");
  CHECK_NOTHROW(admin.activity());
  CHECK(admin.list_dead_letters(std::nullopt, std::nullopt, 10).rows.size() == 1);
  pg::EventRefs refs;
  refs.ids = {dead};
  auto e = admin.find_event(refs);
  REQUIRE(e.has_value());
  CHECK(e->created_at == "infinity");
  CHECK(e->next_attempt_at == std::optional<std::string>("-infinity"));
}

// Contract 8: what the relay writes on a message is the relay's. A row header named like one
// the relay writes (the event id, the event type) would make a second header of that name, and
// consumers that take the last one (Java's lastHeader, for one) would read the row's value:
// distinct events sharing it were dropped by inboxes as duplicates. Such a row is refused as a
// bad row and dead-lettered with the reason; nothing else is held back.
TEST_CASE("a row header cannot shadow the relay's id or event type header", "[relay][hostile]") {
  RelayOptions o;
  o.max_attempts = 1;
  Wired w({}, o);
  const std::string spoofed = "6f1c1f9e-8c1b-4c1e-9a53-000000000099";
  const auto a = insert_row(w.url, {{"aggregate_id", "'a'"}, {"headers", "'{\"id\": \"" + spoofed + "\"}'"}});
  const auto b = insert_row(w.url, {{"aggregate_id", "'b'"}, {"headers", "'{\"id\": \"" + spoofed + "\"}'"}});
  const auto t = insert_row(w.url, {{"aggregate_id", "'t'"}, {"headers", "'{\"eventType\": \"Forged\"}'"}});
  const auto ok = insert_row(w.url, {{"aggregate_id", "'ok'"}, {"headers", "'{\"Id\": \"x\", \"trace\": \"t\"}'"}});
  REQUIRE(w.drain(20s));
  for (const auto& id : {a, b, t})
    CHECK(test::scalar(w.url, "SELECT count(*) FROM outbox_events WHERE id = '" + id +
                              "' AND dead_lettered_at IS NOT NULL AND last_error LIKE '%written by the relay%'") == 1);
  test::TopicReader reader(w.kafka.bootstrap(), "outbox.event.order");
  REQUIRE(reader.read_until([&](const auto& all) { return by_id(all).contains(ok); }, 20s));
  CHECK(reader.poll_for(300ms) == 0);
  for (const auto& m : reader.messages()) {
    CHECK(test::headers_named(m, "id").size() == 1);
    CHECK(test::headers_named(m, "eventType").size() == 1);
  }
  CHECK(reader.messages().size() == 1);
}

// Debezium's outbox router sends a NULL payload as a null value (a tombstone, which compacted
// topics rely on) and keeps an empty one empty; a JSON null header has a null value.
TEST_CASE("a NULL payload is a tombstone, an empty payload is empty, a JSON null header is a null header",
          "[relay][hostile]") {
  Wired w;
  const auto tomb = insert_row(w.url, {{"payload", "NULL"},
                                       {"headers", "'{\"gone\": null, \"n\": 5, \"o\": {\"k\": [1]}, \"s\": \"x\"}'"}});
  const auto empty = insert_row(w.url, {{"payload", "''::bytea"}});
  REQUIRE(w.drain(20s));
  test::TopicReader reader(w.kafka.bootstrap(), "outbox.event.order");
  REQUIRE(reader.read_until([&](const auto& all) { return by_id(all).size() >= 2; }, 20s));
  auto got = by_id(reader.messages());
  const auto& t = got.at(tomb);
  CHECK(t.null_value);
  CHECK(test::headers_named(t, "gone") == std::vector<std::optional<std::string>>{std::nullopt});
  CHECK(test::headers_named(t, "n") == std::vector<std::optional<std::string>>{"5"});
  CHECK(test::headers_named(t, "o") == std::vector<std::optional<std::string>>{"{\"k\":[1]}"});
  CHECK(test::headers_named(t, "s") == std::vector<std::optional<std::string>>{"x"});
  const auto& e = got.at(empty);
  CHECK_FALSE(e.null_value);
  CHECK(e.value.empty());
}

// Contract 10: keys land where Java's producer (Kafka Connect, Debezium) puts them, and an
// empty aggregate id is still one key on one partition.
TEST_CASE("keys land on the partition Java's default partitioner picks and an empty key stays on one", "[relay][hostile]") {
  Wired w;
  w.kafka.create_topic("outbox.event.order", 4);
  std::vector<std::string> keys{"", "o-42", "a", "ab", "abc", "abcd", "order-17", "\xc3\xa9t\xc3\xa9", "k/with spaces"};
  for (int round = 0; round < 6; ++round)
    for (const auto& k : keys) {
      pqxx::connection c(w.url);
      pqxx::work tx(c);
      tx.exec_params("SELECT outbox_publish('order', $1, 'created', '{}'::jsonb)", k);
      tx.commit();
    }
  REQUIRE(w.drain(20s));
  test::TopicReader reader(w.kafka.bootstrap(), "outbox.event.order");
  const auto expected = keys.size() * 6;
  REQUIRE(reader.read_until([&](const auto& all) { return all.size() >= expected; }, 20s));
  std::map<std::string, std::set<int>> partitions;
  for (const auto& m : reader.messages()) {
    CHECK_FALSE(m.null_key);
    partitions[m.key].insert(m.partition);
  }
  REQUIRE(partitions.size() == keys.size());
  for (const auto& k : keys) {
    INFO("key \"" << k << "\"");
    CHECK(partitions[k] == std::set<int>{test::java_partition(k, 4)});
  }
}
