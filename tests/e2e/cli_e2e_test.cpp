// The operator CLI's dead-letter and replay commands of the real outbox-relay binary against a
// throwaway PostgreSQL cluster, with a running relay and the mock Kafka cluster where it matters.
#include <catch2/catch.hpp>

#include <set>

#include "tests/e2e/cli_harness.hpp"
#include "tests/e2e/delivery_check.hpp"
#include "tests/integration/pg_fixture.hpp"
#include "tests/support/mock_kafka.hpp"

using namespace outbox;
using namespace std::chrono_literals;
using namespace outbox::test::cli;

namespace {

std::string text_of(const std::string& url, const std::string& sql) {
  pqxx::connection c(url);
  pqxx::nontransaction tx(c);
  return tx.exec(sql)[0][0].as<std::string>();
}

std::string id_of(const std::string& url, std::int64_t seq) {
  return text_of(url, "SELECT id::text FROM outbox_events WHERE seq = " + std::to_string(seq));
}

long unpublished(const std::string& url) {
  return test::scalar(url, "SELECT count(*) FROM outbox_events WHERE published_at IS NULL");
}

// Event ids in the order the topic delivered them (one aggregate stays on one partition).
std::vector<std::string> consumed_ids(const test::TopicReader& reader) {
  std::vector<std::string> ids;
  for (const auto& m : reader.messages())
    if (auto id = test::header(m, "id")) ids.push_back(*id);
  return ids;
}

std::multiset<std::string> ids_where(const std::string& url, const std::string& condition) {
  pqxx::connection c(url);
  pqxx::nontransaction tx(c);
  std::multiset<std::string> ids;
  for (const auto& row : tx.exec("SELECT id::text FROM outbox_events WHERE " + condition)) ids.insert(row[0].c_str());
  return ids;
}

// The messages after the first `skip`, as a multiset of event ids.
std::multiset<std::string> consumed_after(const test::TopicReader& reader, std::size_t skip) {
  auto ids = consumed_ids(reader);
  return {ids.begin() + static_cast<std::ptrdiff_t>(std::min(skip, ids.size())), ids.end()};
}

}  // namespace

TEST_CASE("cli: dead-letters list and show print every field, tables for people and JSON for scripts", "[e2e][cli]") {
  auto url = test::fresh_database();
  const std::string long_error = "message too large: " + std::string(200, 'e');
  auto text_seq = insert_event(url, "o-1", "convert_to('{\"amount\": 1200, \"note\": \"café\"}', 'UTF8')", long_error);
  auto binary_seq = insert_event(url, "o-2", "'\\x00ff01'::bytea", "bad row: headers");
  insert_event(url, "o-1", "'\\x01'::bytea");  // waits behind o-1's dead letter
  insert_event(url, "o-3", "'\\x01'::bytea");  // pending, not dead

  auto list = cli(url, {"dead-letters", "list", "--json"});
  REQUIRE(list.code == 0);
  auto j = list.json();
  CHECK(j["total"] == 2);
  REQUIRE(j["events"].size() == 2);
  CHECK(j["events"][0]["seq"] == text_seq);
  CHECK(j["events"][0]["id"] == id_of(url, text_seq));
  CHECK(j["events"][0]["aggregate_type"] == "order");
  CHECK(j["events"][0]["aggregate_id"] == "o-1");
  CHECK(j["events"][0]["event_type"] == "OrderPaid");
  CHECK(j["events"][0]["attempts"] == 10);
  CHECK(j["events"][0]["last_error"] == long_error);  // whole in JSON
  CHECK(j["events"][0]["dead_lettered_at"].get<std::string>().ends_with("Z"));
  CHECK(j["events"][1]["seq"] == binary_seq);

  auto table = cli(url, {"dead-letters", "list"});
  REQUIRE(table.code == 0);
  CHECK_THAT(table.output, Catch::Contains("order:o-1") && Catch::Contains(id_of(url, binary_seq)));
  CHECK_THAT(table.output, Catch::Contains("message too large: eee") && !Catch::Contains(long_error));
  CHECK_THAT(table.output, Catch::Contains("2 of 2 dead-lettered events"));

  auto one = cli(url, {"dead-letters", "list", "--limit", "1", "--json"});
  REQUIRE(one.code == 0);
  CHECK(one.json()["events"].size() == 1);
  CHECK(one.json()["total"] == 2);
  auto by_aggregate = cli(url, {"dead-letters", "list", "--aggregate", "order:o-2", "--json"});
  REQUIRE(by_aggregate.code == 0);
  REQUIRE(by_aggregate.json()["events"].size() == 1);
  CHECK(by_aggregate.json()["events"][0]["seq"] == binary_seq);

  auto shown = cli(url, {"dead-letters", "show", std::to_string(text_seq), "--json"});
  REQUIRE(shown.code == 0);
  auto s = shown.json();
  CHECK(s["state"] == "dead-lettered");
  CHECK(s["payload"]["encoding"] == "utf-8");
  CHECK(s["payload"]["data"] == "{\"amount\": 1200, \"note\": \"café\"}");
  CHECK(s["payload"]["size"] == std::string("{\"amount\": 1200, \"note\": \"café\"}").size());
  CHECK(s["headers"]["traceparent"] == "00-abc");
  CHECK(s["last_error"] == long_error);
  CHECK(s["later_events_waiting"] == 1);
  CHECK(s["published_at"].is_null());
  for (const char* key : {"seq", "id", "aggregate_type", "aggregate_id", "event_type", "topic", "created_at",
                          "attempts", "next_attempt_at", "dead_lettered_at"})
    CHECK(s.contains(key));

  auto binary = cli(url, {"dead-letters", "show", id_of(url, binary_seq), "--json"});  // by event id
  REQUIRE(binary.code == 0);
  CHECK(binary.json()["seq"] == binary_seq);
  CHECK(binary.json()["payload"] == Json{{"size", 3}, {"encoding", "base64"}, {"data", "AP8B"}});
  auto binary_text = cli(url, {"dead-letters", "show", std::to_string(binary_seq)});
  REQUIRE(binary_text.code == 0);
  CHECK_THAT(binary_text.output, Catch::Contains("3 bytes, binary (hex):\n000000 00 ff 01"));
  CHECK_THAT(cli(url, {"dead-letters", "show", std::to_string(text_seq)}).output,
             Catch::Contains("bytes, UTF-8 text:\n{\"amount\": 1200"));

  auto missing = cli(url, {"dead-letters", "show", "999999"});
  CHECK(missing.code == 1);
  CHECK_THAT(missing.output, Catch::Contains("no event with seq 999999"));
  auto unknown = cli(url, {"dead-letters", "show", "8c1f5a52-55a5-4a4a-9d0b-6a3b1a2c3d4e"});
  CHECK(unknown.code == 1);
  CHECK_THAT(unknown.output, Catch::Contains("no event with id 8c1f5a52-55a5-4a4a-9d0b-6a3b1a2c3d4e"));
  auto bad = cli(url, {"dead-letters", "show", "12x"});
  CHECK(bad.code == 64);
  CHECK_THAT(bad.output, Catch::Contains("\"12x\" is neither a seq"));
  auto bad_aggregate = cli(url, {"dead-letters", "list", "--aggregate", "o-1"});
  CHECK(bad_aggregate.code == 64);
  CHECK_THAT(bad_aggregate.output, Catch::Contains("--aggregate: expected TYPE:ID"));
}

TEST_CASE("cli: requeue sends a dead-lettered event again, and the running relay publishes it before its aggregate's later events",
          "[e2e][cli]") {
  auto url = test::fresh_database();
  test::MockKafka kafka(1);
  test::TopicReader reader(kafka.bootstrap(), "outbox.event.order");
  auto dead = insert_event(url, "o-1", "convert_to('first', 'UTF8')", "topic rejected");
  auto behind = insert_event(url, "o-1", "convert_to('second', 'UTF8')");
  auto other = insert_event(url, "o-2", "convert_to('other', 'UTF8')");
  auto relay = start_relay(url, kafka.bootstrap());
  const auto published = [&](std::int64_t seq) {
    return test::scalar(url, "SELECT count(*) FROM outbox_events WHERE published_at IS NOT NULL AND seq = " +
                                 std::to_string(seq)) == 1;
  };
  REQUIRE(test::poll_reading(reader, [&] { return published(other); }, 60s));
  CHECK_FALSE(published(behind));  // held back behind the dead letter

  // A bad or unknown reference changes nothing.
  auto unknown = cli(url, {"dead-letters", "requeue", std::to_string(dead), "8c1f5a52-55a5-4a4a-9d0b-6a3b1a2c3d4e"});
  CHECK(unknown.code == 1);
  CHECK_THAT(unknown.output, Catch::Contains("8c1f5a52-55a5-4a4a-9d0b-6a3b1a2c3d4e: no such event"));
  auto not_dead = cli(url, {"dead-letters", "requeue", std::to_string(other)});
  CHECK(not_dead.code == 1);
  CHECK_THAT(not_dead.output, Catch::Contains(std::to_string(other) + ": published, not dead-lettered"));
  CHECK(test::scalar(url, "SELECT count(*) FROM outbox_events WHERE dead_lettered_at IS NOT NULL") == 1);
  CHECK(cli(url, {"dead-letters", "requeue", "-3"}).code == 64);
  CHECK(cli(url, {"dead-letters", "requeue"}).code == 64);

  auto requeued = cli(url, {"dead-letters", "requeue", std::to_string(dead), "--json"});
  REQUIRE(requeued.code == 0);
  auto j = requeued.json();
  CHECK(j["requeued"] == 1);
  REQUIRE(j["events"].size() == 1);
  CHECK(j["events"][0]["seq"] == dead);
  CHECK(j["events"][0]["attempts"] == 10);  // as it was
  CHECK(test::scalar(url, "SELECT count(*) FROM outbox_events WHERE seq = " + std::to_string(dead) +
                              " AND dead_lettered_at IS NULL AND attempts = 0 AND next_attempt_at IS NULL") == 1);

  REQUIRE(test::poll_reading(reader, [&] { return unpublished(url) == 0; }, 60s));
  const std::string first = id_of(url, dead), second = id_of(url, behind);
  REQUIRE(reader.read_until([&](const auto&) {
    auto ids = consumed_ids(reader);
    return std::count(ids.begin(), ids.end(), second) == 1;
  }, 30s));
  auto ids = consumed_ids(reader);
  auto at_first = std::find(ids.begin(), ids.end(), first);
  auto at_second = std::find(ids.begin(), ids.end(), second);
  REQUIRE(at_first != ids.end());
  CHECK(at_first < at_second);  // the aggregate's order holds
  CHECK(test::scalar(url, "SELECT count(*) FROM outbox_events WHERE dead_lettered_at IS NOT NULL OR attempts <> 0") == 0);
  stop_relay(relay);

  // --all requeues every dead letter; none left is not an error.
  insert_event(url, "o-4", "'\\x01'::bytea", "x");
  insert_event(url, "o-5", "'\\x01'::bytea", "y");
  auto all = cli(url, {"dead-letters", "requeue", "--all", "--json"});
  REQUIRE(all.code == 0);
  CHECK(all.json()["requeued"] == 2);
  CHECK(test::scalar(url, "SELECT count(*) FROM outbox_events WHERE dead_lettered_at IS NOT NULL") == 0);
  auto none = cli(url, {"dead-letters", "requeue", "--all"});
  CHECK(none.code == 0);
  CHECK_THAT(none.output, Catch::Contains("no dead-lettered events to requeue"));
}

TEST_CASE("cli: purge deletes dead-lettered events only, and --all needs --yes", "[e2e][cli]") {
  auto url = test::fresh_database();
  auto a = insert_event(url, "o-1", "'\\x01'::bytea", "x");
  auto b = insert_event(url, "o-2", "'\\x01'::bytea", "y");
  auto c = insert_event(url, "o-3", "'\\x01'::bytea", "z");
  auto pending = insert_event(url, "o-1", "'\\x01'::bytea");

  auto refused = cli(url, {"dead-letters", "purge", "--all"});
  CHECK(refused.code == 64);
  CHECK_THAT(refused.output, Catch::Contains("--yes"));
  auto not_dead = cli(url, {"dead-letters", "purge", std::to_string(a), std::to_string(pending)});
  CHECK(not_dead.code == 1);
  CHECK_THAT(not_dead.output, Catch::Contains(std::to_string(pending) + ": pending, not dead-lettered"));
  CHECK(test::scalar(url, "SELECT count(*) FROM outbox_events") == 4);  // all or nothing

  auto purged = cli(url, {"dead-letters", "purge", std::to_string(a), id_of(url, b), "--json"});
  REQUIRE(purged.code == 0);
  CHECK(purged.json()["purged"] == 2);
  CHECK(purged.json()["events"][0]["seq"] == a);
  CHECK(purged.json()["events"][1]["seq"] == b);
  CHECK(test::scalar(url, "SELECT count(*) FROM outbox_events WHERE seq IN (" + std::to_string(a) + "," +
                              std::to_string(b) + ")") == 0);
  CHECK(test::scalar(url, "SELECT count(*) FROM outbox_events WHERE seq = " + std::to_string(pending)) == 1);

  auto all = cli(url, {"dead-letters", "purge", "--all", "--yes", "--json"});
  REQUIRE(all.code == 0);
  CHECK(all.json()["purged"] == 1);
  CHECK(all.json()["events"][0]["seq"] == c);
  CHECK(test::scalar(url, "SELECT count(*) FROM outbox_events") == 1);

  // The relay role may not delete (relay_role.sql grants DELETE only for mark_mode: delete): say so.
  insert_event(url, "o-6", "'\\x01'::bytea", "x");
  auto denied = cli(as_relay_role(url), {"dead-letters", "purge", "--all", "--yes"});
  CHECK(denied.code == 1);
  CHECK_THAT(denied.output, Catch::Contains("permission denied") && Catch::Contains("DELETE"));
  auto requeued = cli(as_relay_role(url), {"dead-letters", "requeue", "--all", "--json"});
  REQUIRE(requeued.code == 0);  // but it may requeue
  CHECK(requeued.json()["requeued"] == 1);
}

TEST_CASE("cli: replay by seq range, aggregate or time range republishes exactly those rows, and --dry-run changes nothing",
          "[e2e][cli]") {
  auto url = test::fresh_database();
  test::MockKafka kafka(1);
  test::TopicReader reader(kafka.bootstrap(), "outbox.event.order");
  test::insert_events(url, 30, 3);
  auto relay = start_relay(url, kafka.bootstrap());
  REQUIRE(test::poll_reading(reader, [&] { return unpublished(url) == 0; }, 60s));
  REQUIRE(reader.read_until([](const auto& all) { return all.size() >= 30; }, 30s));
  const auto first_seq = test::scalar(url, "SELECT min(seq) FROM outbox_events");
  const auto seq = [&](int n) { return std::to_string(first_seq + n - 1); };  // the n-th event

  // Republishes, then waits for the relay and the topic: exactly `expected` arrive again.
  auto republished = [&](const std::multiset<std::string>& expected) {
    const auto before = reader.messages().size();
    return [&, before, expected] {
      REQUIRE(test::poll_reading(reader, [&] { return unpublished(url) == 0; }, 60s));
      REQUIRE(reader.read_until([&](const auto& all) { return all.size() >= before + expected.size(); }, 30s));
      reader.poll_for(300ms);  // anything beyond them would show up here
      CHECK(consumed_after(reader, before) == expected);
    };
  };

  SECTION("a seq range") {
    auto dry = cli(url, {"replay", "--from-seq", seq(5), "--to-seq", seq(9), "--dry-run", "--json"});
    REQUIRE(dry.code == 0);
    CHECK(dry.json()["matched"] == 5);
    CHECK(dry.json()["replayed"] == 0);
    CHECK(dry.json()["dry_run"] == true);
    CHECK(unpublished(url) == 0);
    CHECK_THAT(cli(url, {"replay", "--from-seq", seq(5), "--to-seq", seq(9), "--dry-run"}).output,
               Catch::Contains("would replay 5 published events (seq " + seq(5) + ".." + seq(9)));

    auto expected = ids_where(url, "seq BETWEEN " + seq(5) + " AND " + seq(9));
    auto check = republished(expected);
    auto run = cli(url, {"replay", "--from-seq", seq(5), "--to-seq", seq(9), "--json"});
    REQUIRE(run.code == 0);
    CHECK(run.json()["replayed"] == 5);
    CHECK(run.json()["min_seq"] == first_seq + 4);
    CHECK(run.json()["max_seq"] == first_seq + 8);
    check();
  }
  SECTION("an aggregate") {
    auto expected = ids_where(url, "aggregate_type = 'order' AND aggregate_id = 'agg-1'");
    REQUIRE(expected.size() == 10);
    auto over = cli(url, {"replay", "--aggregate", "order:agg-1", "--limit", "9"});
    CHECK(over.code == 64);
    CHECK_THAT(over.output, Catch::Contains("more than 9 published events match; nothing replayed"));
    CHECK(unpublished(url) == 0);
    auto check = republished(expected);
    auto run = cli(url, {"replay", "--aggregate", "order:agg-1", "--limit", "10"});
    REQUIRE(run.code == 0);
    CHECK_THAT(run.output, Catch::Contains("replayed 10 published events"));
    check();
  }
  SECTION("a time range") {
    test::exec(url, "UPDATE outbox_events SET published_at = '2020-01-01 10:00:00+00' WHERE seq IN (" + seq(3) + "," +
                  seq(4) + ")");
    test::exec(url, "UPDATE outbox_events SET published_at = '2020-01-01 12:00:00+00' WHERE seq = " + seq(6));
    auto expected = ids_where(url, "seq IN (" + seq(3) + "," + seq(4) + ")");
    auto dry = cli(url, {"replay", "--since", "2020-01-01T09:00:00Z", "--until", "2020-01-01 11:00", "--dry-run", "--json"});
    REQUIRE(dry.code == 0);
    CHECK(dry.json()["matched"] == 2);
    CHECK(test::scalar(url, "SELECT count(*) FROM outbox_events WHERE published_at < '2021-01-01'") == 3);
    auto check = republished(expected);
    auto run = cli(url, {"replay", "--since", "2020-01-01T09:00:00Z", "--until", "2020-01-01 11:00", "--json"});
    REQUIRE(run.code == 0);
    CHECK(run.json()["replayed"] == 2);
    check();
  }
  stop_relay(relay);
}

TEST_CASE("cli: bad operator input exits 64 naming the problem and changes nothing", "[e2e][cli]") {
  auto url = test::fresh_database();
  test::insert_events(url, 5, 1);
  test::exec(url, "UPDATE outbox_events SET published_at = now()");
  auto expect_usage = [&](const std::vector<std::string>& args, const std::string& says) {
    auto r = cli(url, args);
    INFO(r.output);
    CHECK(r.code == 64);
    CHECK_THAT(r.output, Catch::Contains(says));
  };
  expect_usage({"replay"}, "replay needs one selector");
  expect_usage({"replay", "--from-seq", "1", "--to-seq", "3", "--aggregate", "order:agg-0"},
               "one selector family, got --from-seq/--to-seq and --aggregate");
  expect_usage({"replay", "--from-seq", "1"}, "--from-seq and --to-seq go together");
  expect_usage({"replay", "--from-seq", "x", "--to-seq", "3"}, "--from-seq: \"x\" is not a seq");
  expect_usage({"replay", "--from-seq", "5", "--to-seq", "3"}, "is after --to-seq");
  expect_usage({"replay", "--since", "yesterday-ish"}, "--since: PostgreSQL cannot read \"yesterday-ish\" as a timestamp");
  expect_usage({"replay", "--since", "2024-01-01", "--until", "2024-13-45"}, "--until: PostgreSQL cannot read");
  expect_usage({"replay", "--since", "2024-02-01", "--until", "2024-01-01"}, "is not after --since");
  expect_usage({"replay", "--until", "2024-01-01"}, "--until needs --since");
  expect_usage({"replay", "--aggregate", "order:agg-0", "--limit", "-1"}, "--limit");
  expect_usage({"dead-letters", "show", "not-a-uuid"}, "neither a seq");
  expect_usage({"dead-letters", "purge", "--all"}, "add --yes");
  expect_usage({"dead-letters", "requeue", "1", "--all"}, "not both");
  expect_usage({"dead-letters"}, "A subcommand is required");
  expect_usage({"status", "--bogus"}, "--bogus");
  CHECK(unpublished(url) == 0);

  // A bad config is still a config error (78), as for `run`.
  auto bad_config = cli(url, {"status", "--set", "database.schema=no-such;schema"});
  CHECK(bad_config.code == 78);
  CHECK_THAT(bad_config.output, Catch::Contains("database.schema"));
}

TEST_CASE("cli: an unreachable database exits 1 without printing the password", "[e2e][cli]") {
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"status"}, {"dead-letters", "list", "--json"}, {"replay", "--from-seq", "1", "--to-seq", "2"}}) {
    auto r = cli("postgresql://relay:hunter2@127.0.0.1:1/x", args);
    INFO(r.output);
    CHECK(r.code == 1);
    CHECK_THAT(r.output, Catch::Contains("database unavailable") && !Catch::Contains("hunter2"));
  }
}

TEST_CASE("cli: replay in mark_mode delete says the published rows are gone", "[e2e][cli]") {
  auto url = test::fresh_database();
  auto r = cli(url, {"replay", "--from-seq", "1", "--to-seq", "100"}, {{"OUTBOX_RELAY_RELAY_MARK_MODE", "delete"}});
  CHECK(r.code == 1);
  CHECK_THAT(r.output, Catch::Contains("relay.mark_mode is delete") && Catch::Contains("nothing left to replay"));
  auto status = cli(url, {"status"}, {{"OUTBOX_RELAY_RELAY_MARK_MODE", "delete"}});
  CHECK(status.code == 0);
  CHECK_THAT(status.output, Catch::Contains("not kept (relay.mark_mode=delete"));
}
