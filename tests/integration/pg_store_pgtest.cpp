// PgOutboxStore, PgMigrator and PgWakeup against a real PostgreSQL cluster.
#include <catch2/catch.hpp>

#include <chrono>
#include <cstdlib>
#include <thread>

#include "relay/core/errors.hpp"
#include "relay/pg/pg_lease_store.hpp"
#include "relay/pg/pg_outbox_store.hpp"
#include "relay/pg/pg_retention.hpp"
#include "relay/pg/pg_wakeup.hpp"
#include "tests/integration/pg_fixture.hpp"

using namespace outbox;
using namespace outbox::relay;
using namespace outbox::relay::pg;
using namespace std::chrono_literals;

namespace {
PgOutboxStore store_for(const std::string& url, MarkMode mode = MarkMode::update) {
  return PgOutboxStore({harden_conninfo(url, "outbox-relay-test", 10'000), "public", mode});
}
std::vector<std::int64_t> seqs_of(const std::vector<OutboxEvent>& events) {
  std::vector<std::int64_t> s;
  for (const auto& e : events) s.push_back(e.seq);
  return s;
}
}  // namespace

TEST_CASE("migrate applies every migration once and records it", "[pg][migrate]") {
  auto url = test::fresh_database();  // already migrated once
  auto again = PgMigrator(url, "public").migrate();
  REQUIRE(again.size() == embedded_migrations().size());
  for (const auto& m : again) CHECK_FALSE(m.applied_now);
  CHECK(test::scalar(url, "SELECT count(*) FROM outbox_schema_migrations") ==
        static_cast<long>(embedded_migrations().size()));
  CHECK(test::scalar(url, "SELECT count(*) FROM information_schema.tables WHERE table_name IN "
                          "('outbox_events','consumer_inbox','idempotency_keys','outbox_relay_wakeup')") == 4);
}

TEST_CASE("migrate refuses to continue when an applied migration was edited", "[pg][migrate]") {
  auto url = test::fresh_database();
  {
    pqxx::connection c(url);
    pqxx::work tx(c);
    tx.exec("UPDATE outbox_schema_migrations SET checksum = 'edited' WHERE version = 1");
    tx.commit();
  }
  CHECK_THROWS_WITH(PgMigrator(url, "public").migrate(), Catch::Contains("forward-only"));
}

TEST_CASE("the migration files also work when applied twice by another tool", "[pg][migrate]") {
  auto url = test::fresh_database();
  pqxx::connection c(url);
  for (const auto& m : embedded_migrations()) {
    pqxx::work tx(c);
    tx.exec(m.sql);
    tx.commit();
  }
  SUCCEED("every migration re-ran without error");
  CHECK(test::scalar(url, "SELECT count(*) FROM outbox_relay_wakeup") == 1);
}

TEST_CASE("fetch returns unpublished rows in seq order with payload bytes, headers and topic", "[pg][store]") {
  auto url = test::fresh_database();
  {
    pqxx::connection c(url);
    pqxx::work tx(c);
    tx.exec("SELECT outbox_publish('order', 'o-1', 'created', '\\x00ff01'::bytea, '{\"trace\":\"t-1\",\"n\":5}', 'custom.topic')");
    tx.exec("SELECT outbox_publish('order', 'o-2', 'created', '{\"a\":1}'::jsonb)");
    tx.commit();
  }
  auto store = store_for(url);
  auto events = store.fetch({10, std::nullopt, {}});
  REQUIRE(events.size() == 2);
  CHECK(events[0].seq < events[1].seq);
  CHECK(events[0].payload == std::string("\x00\xff\x01", 3));
  CHECK(events[0].topic == std::optional<std::string>("custom.topic"));
  CHECK(events[0].headers.size() == 2);
  CHECK(std::find(events[0].headers.begin(), events[0].headers.end(), Header{"trace", "t-1"}) != events[0].headers.end());
  CHECK(std::find(events[0].headers.begin(), events[0].headers.end(), Header{"n", "5"}) != events[0].headers.end());
  CHECK(events[1].payload == "{\"a\": 1}");
  CHECK_FALSE(events[1].topic.has_value());
  CHECK(events[0].id.size() == 36);
  CHECK(events[0].retry_in == 0ms);
}

TEST_CASE("fetch honours after_seq, limit and excluded aggregates", "[pg][store]") {
  auto url = test::fresh_database();
  test::insert_events(url, 10, 5);  // agg-1, agg-2, agg-3, agg-4, agg-0, agg-1, ...
  auto store = store_for(url);
  auto all = store.fetch({100, std::nullopt, {}});
  REQUIRE(all.size() == 10);
  auto after = store.fetch({3, all[4].seq, {}});
  CHECK(seqs_of(after) == std::vector<std::int64_t>{all[5].seq, all[6].seq, all[7].seq});
  auto excluding = store.fetch({100, std::nullopt, {{"order", "agg-1"}, {"order", "agg-2"}}});
  CHECK(excluding.size() == 6);
  for (const auto& e : excluding) CHECK((e.aggregate_id != "agg-1" && e.aggregate_id != "agg-2"));
}

TEST_CASE("a dead letter holds back the later events of its aggregate only, not the earlier ones", "[pg][store]") {
  auto url = test::fresh_database();
  test::insert_events(url, 8, 2);  // agg-1: seq 1,3,5,7; agg-0: seq 2,4,6,8
  // An operator requeued seq 1 of agg-1's two dead letters (1 and 5); 5 is still parked.
  test::exec(url, "UPDATE outbox_events SET dead_lettered_at = now(), attempts = 10 WHERE seq = 5");
  auto store = store_for(url);
  CHECK(seqs_of(store.fetch({100, std::nullopt, {}})) == std::vector<std::int64_t>{1, 2, 3, 4, 6, 8});
}

TEST_CASE("a row that commits after later rows is still returned by the next head scan", "[pg][store]") {
  auto url = test::fresh_database();
  pqxx::connection slow(url);
  pqxx::work late(slow);
  late.exec("SELECT outbox_publish('order', 'late', 'created', '{}'::jsonb)");  // takes the lower seq
  test::insert_events(url, 3, 3);                                                // commits first
  auto store = store_for(url);
  auto first = store.fetch({100, std::nullopt, {}});
  CHECK(first.size() == 3);
  store.mark_published(seqs_of(first));
  late.commit();
  auto second = store.fetch({100, std::nullopt, {}});
  REQUIRE(second.size() == 1);
  CHECK(second[0].aggregate_id == "late");
  CHECK(second[0].seq < first[0].seq);
}

TEST_CASE("marking is idempotent: update mode keeps the row, delete mode removes it", "[pg][store]") {
  auto url = test::fresh_database();
  test::insert_events(url, 4, 2);
  SECTION("update") {
    auto store = store_for(url);
    auto rows = store.fetch({100, std::nullopt, {}});
    store.mark_published(seqs_of(rows));
    auto first_stamp = test::scalar(url, "SELECT (extract(epoch FROM max(published_at)) * 1000000)::bigint FROM outbox_events");
    store.mark_published(seqs_of(rows));  // again, as after an unknown commit outcome
    CHECK(test::scalar(url, "SELECT count(*) FROM outbox_events WHERE published_at IS NOT NULL") == 4);
    CHECK(test::scalar(url, "SELECT (extract(epoch FROM max(published_at)) * 1000000)::bigint FROM outbox_events") == first_stamp);
    CHECK(store.fetch({100, std::nullopt, {}}).empty());
  }
  SECTION("delete") {
    auto store = store_for(url, MarkMode::remove);
    auto rows = store.fetch({100, std::nullopt, {}});
    store.mark_published(seqs_of(rows));
    store.mark_published(seqs_of(rows));
    CHECK(test::scalar(url, "SELECT count(*) FROM outbox_events") == 0);
  }
}

TEST_CASE("failures count attempts, schedule the retry on the database clock, dead-letter at the end", "[pg][store]") {
  auto url = test::fresh_database();
  test::insert_events(url, 3, 1);  // one aggregate: rows 2 and 3 wait behind row 1
  auto store = store_for(url);
  auto rows = store.fetch({100, std::nullopt, {}});
  REQUIRE(rows.size() == 3);
  std::vector<FailedAttempt> f{{rows[0].seq, "MSG_SIZE_TOO_LARGE: too big", 1, 60'000ms, false}};
  store.record_failures(f);
  auto again = store.fetch({100, std::nullopt, {}});
  REQUIRE(again.size() == 3);
  CHECK(again[0].attempts == 1);
  CHECK(again[0].retry_in > 50'000ms);
  CHECK(again[0].retry_in <= 60'000ms);
  std::vector<FailedAttempt> dead{{rows[0].seq, "gave up", 2, 0ms, true}};
  store.record_failures(dead);
  // A dead row leaves the work list and holds back its aggregate's later rows.
  CHECK(store.fetch({100, std::nullopt, {}}).empty());
  CHECK(test::scalar(url, "SELECT count(*) FROM outbox_events WHERE dead_lettered_at IS NOT NULL AND "
                          "last_error = 'gave up' AND attempts = 2") == 1);
}

TEST_CASE("verify_schema names a missing outbox table and the command that fixes it", "[pg][store]") {
  auto& cluster = test::PgCluster::shared();
  cluster.create_database("unmigrated_" + std::to_string(::getpid()));
  auto store = store_for(cluster.conninfo("unmigrated_" + std::to_string(::getpid())));
  CHECK_THROWS_WITH(store.verify_schema(), Catch::Contains("outbox-relay migrate"));
}

TEST_CASE("an unreachable database is a transient error", "[pg][store]") {
  auto store = PgOutboxStore({harden_conninfo("host=127.0.0.1 port=1 connect_timeout=2", "t", 1000), "public",
                              MarkMode::update});
  CHECK_THROWS_AS(store.fetch({10, std::nullopt, {}}), TransientError);
}

TEST_CASE("producers send a wake-up hint only while the relay listens", "[pg][wakeup]") {
  auto url = test::fresh_database();
  PgWakeup wakeup(harden_conninfo(url, "outbox-relay-test", 10'000), "public");
  wakeup.set_listening(true);
  (void)wakeup.wait(1ms);  // establishes LISTEN
  test::insert_events(url, 1, 1);
  bool woke = false;
  for (auto deadline = std::chrono::steady_clock::now() + 5s; !woke && std::chrono::steady_clock::now() < deadline;)
    woke = wakeup.wait(100ms);
  CHECK(woke);

  wakeup.set_listening(false);
  test::insert_events(url, 1, 1);
  CHECK_FALSE(wakeup.wait(300ms));
  CHECK(test::scalar(url, "SELECT count(*) FROM outbox_relay_wakeup WHERE listening") == 0);
}

TEST_CASE("the relay role from schema/roles/relay_role.sql can do the relay's work and nothing more", "[pg][security]") {
  auto url = test::fresh_database();
  // The script uses psql's \if, so it runs through psql, as an operator would run it.
  std::string cmd = "psql -X -q -v ON_ERROR_STOP=1 -d \"" + url + "\" -f " OUTBOX_SOURCE_DIR "/schema/roles/relay_role.sql >/dev/null";
  REQUIRE(std::system(cmd.c_str()) == 0);
  REQUIRE(std::system(cmd.c_str()) == 0);  // re-runnable
  test::insert_events(url, 3, 1);

  auto params = parse_conninfo(url, "test");
  params["user"] = "outbox_relay";
  const std::string relay_url = render_conninfo(params);
  // As the relay runs: leases first, then fenced marks.
  PgLeaseStore leases({harden_conninfo(relay_url, "outbox-relay-test", 10'000), "public", "r1", "host", 1});
  (void)leases.renew({}, 10s);
  REQUIRE(leases.acquire(kLaneCount, 10s).size() == kLaneCount);
  PgOutboxStore store({harden_conninfo(relay_url, "outbox-relay-test", 10'000), "public", MarkMode::update, 2000, "r1"});
  store.verify_schema();
  auto rows = store.fetch({10, std::nullopt, {}});
  REQUIRE(rows.size() == 3);
  std::vector<FailedAttempt> f{{rows[0].seq, "x", 1, 1000ms, false}};
  store.record_failures(f);
  std::vector<std::int64_t> seqs{rows[1].seq};
  store.mark_published(seqs);
  PgWakeup wakeup(harden_conninfo(relay_url, "outbox-relay-test", 10'000), "public");
  wakeup.set_listening(true);
  // Retention, through the purge function: the published row once it is old, nothing else.
  test::exec(url, "UPDATE outbox_events SET created_at = now() - interval '3 days', published_at = "
                  "CASE WHEN published_at IS NULL THEN NULL ELSE now() - interval '2 days' END");
  RetentionOptions retention;
  retention.conninfo = relay_url;
  retention.published_window = std::chrono::hours(24);
  CHECK(PgRetention(retention).run_once().published_deleted == 1);
  CHECK(test::scalar(url, "SELECT count(*) FROM outbox_events") == 2);

  pqxx::connection c(relay_url);
  auto denied = [&](const std::string& sql) {
    try {
      pqxx::work tx(c);
      tx.exec(sql);
      tx.commit();
      return false;
    } catch (const pqxx::insufficient_privilege&) {
      return true;
    }
  };
  CHECK(denied("DELETE FROM outbox_events"));
  CHECK(denied("UPDATE outbox_events SET payload = NULL"));
  CHECK(denied("INSERT INTO outbox_events (aggregate_type, aggregate_id, event_type) VALUES ('a','b','c')"));
  CHECK(denied("SELECT * FROM consumer_inbox"));
  auto may_purge = [&](const std::string& grantee) {
    return test::scalar(url, "SELECT count(*) FROM information_schema.routine_privileges WHERE routine_name = "
                             "'outbox_purge_published' AND privilege_type = 'EXECUTE' AND grantee = '" + grantee + "'");
  };
  CHECK(may_purge("outbox_relay") == 1);
  CHECK(may_purge("PUBLIC") == 0);
  CHECK(test::scalar(url, "SELECT count(*) FROM pg_roles WHERE rolname = 'outbox_relay' AND NOT rolsuper AND NOT "
                          "rolcreatedb AND NOT rolcreaterole AND NOT rolreplication") == 1);
  CHECK(denied("UPDATE outbox_relay_lanes SET lane = 99"));
  leases.leave();
  CHECK(test::scalar(url, "SELECT count(*) FROM outbox_relay_lanes WHERE owner IS NOT NULL") == 0);
}

namespace {

// The relay role of schema/roles/relay_role.sql over `url` (run through psql, as an operator
// would), granted in `schema`.
std::string relay_role_url(const std::string& url, const std::string& schema = "") {
  std::string cmd = "psql -X -q -v ON_ERROR_STOP=1 " + (schema.empty() ? "" : "-v schema=" + schema + " ") + "-d \"" +
                    url + "\" -f " OUTBOX_SOURCE_DIR "/schema/roles/relay_role.sql >/dev/null";
  REQUIRE(std::system(cmd.c_str()) == 0);
  auto params = parse_conninfo(url, "test");
  params["user"] = "outbox_relay";
  return render_conninfo(params);
}

}  // namespace

TEST_CASE("the relay role cannot purge a row it did not mark long ago, nor purge with a short window",
          "[pg][security]") {
  auto url = test::fresh_database();
  const auto relay_url = relay_role_url(url);
  test::insert_events(url, 5, 1);
  test::exec(url, "UPDATE outbox_events SET created_at = now() - interval '3 days'");
  pqxx::connection c(relay_url);
  // A pending row made to look published a day ago, by the relay's role.
  {
    pqxx::work tx(c);
    tx.exec("UPDATE outbox_events SET published_at = now() - interval '1 day' WHERE seq <= 2");
    tx.commit();
  }
  CHECK(test::scalar(url, "SELECT count(*) FROM outbox_events WHERE published_at < now() - interval '1 hour'") == 0);
  auto purge = [&](long window_s) {
    pqxx::work tx(c);
    auto r = tx.exec_params("SELECT deleted FROM outbox_purge_published(0, 1000, $1)", window_s);
    tx.commit();
    return r[0][0].as<long>();
  };
  CHECK(purge(3600) == 0);
  CHECK_THROWS_AS(purge(0), pqxx::sql_error);
  CHECK_THROWS_AS(purge(60), pqxx::sql_error);
  {
    // Nor by lowering the minimum in its own session.
    pqxx::work tx(c);
    tx.exec("SET outbox_relay.min_purge_window_s = '0'");
    CHECK_THROWS_AS(tx.exec("SELECT deleted FROM outbox_purge_published(0, 1000, 0)"), pqxx::sql_error);
  }
  CHECK(test::scalar(url, "SELECT count(*) FROM outbox_events") == 5);
  // The owner's own backdating (an operator, a test) is kept, and such rows do go.
  test::exec(url, "UPDATE outbox_events SET published_at = now() - interval '2 days' WHERE seq = 5");
  CHECK(purge(86'400) == 1);
  // Every SECURITY DEFINER function resolves names in its schema, pg_temp last.
  CHECK(test::scalar(url, "SELECT count(*) FROM pg_proc WHERE prosecdef AND pronamespace = 'public'::regnamespace "
                          "AND NOT 'search_path=public, pg_temp' = ANY(proconfig)") == 0);
  CHECK(test::scalar(url, "SELECT count(*) FROM pg_proc WHERE prosecdef AND pronamespace = 'public'::regnamespace") == 3);
}

TEST_CASE("the relay role script grants in the schema it is given, not in public", "[pg][security]") {
  auto url = test::fresh_database();
  test::exec(url, "CREATE SCHEMA orders");
  PgMigrator(url, "orders").migrate();
  const auto relay_url = relay_role_url(url, "orders");
  test::exec(url, "INSERT INTO orders.outbox_events (aggregate_type, aggregate_id, event_type) VALUES ('order', 'o-1', 'x')");
  PgOutboxStore store({harden_conninfo(relay_url, "outbox-relay-test", 10'000), "orders", MarkMode::update});
  store.verify_schema();
  CHECK(store.fetch({10, std::nullopt, {}}).size() == 1);
  CHECK(test::scalar(url, "SELECT count(*) FROM information_schema.role_table_grants WHERE grantee = 'outbox_relay' "
                          "AND table_schema = 'orders' AND table_name = 'outbox_events'") >= 1);
}

TEST_CASE("a read-ahead fetch counts each row's unpublished predecessors behind the cursor", "[pg][store]") {
  auto url = test::fresh_database();
  pqxx::connection slow(url);
  pqxx::work late(slow);
  late.exec("SELECT outbox_publish('order', 'x', 'First', '{}'::jsonb)");  // seq 1, not yet committed
  test::insert_events(url, 4, 2);                                         // agg-1: 2, 4; agg-0: 3, 5
  auto store = store_for(url);
  auto head = store.fetch({2, std::nullopt, {}});
  REQUIRE(seqs_of(head) == std::vector<std::int64_t>{2, 3});
  for (const auto& e : head) CHECK(e.pending_before == 0);  // head scans do not count
  late.commit();
  test::exec(url, "SELECT outbox_publish('order', 'x', 'Second', '{}'::jsonb)");  // seq 6
  auto ahead = store.fetch({10, 3, {}});
  REQUIRE(seqs_of(ahead) == std::vector<std::int64_t>{4, 5, 6});
  CHECK(ahead[0].pending_before == 1);  // agg-1: seq 2, in flight
  CHECK(ahead[1].pending_before == 1);  // agg-0: seq 3, in flight
  CHECK(ahead[2].pending_before == 1);  // x: seq 1, committed late behind the cursor
}

// Contract 9, defence in depth: whatever makes the fetch statement fail on one row's content
// (here a replaced function that divides by zero for one aggregate: a failure nobody
// foresaw), the other rows are still returned, and that one comes back unreadable.
TEST_CASE("a row whose content breaks the fetch statement is isolated and the others are returned", "[pg][store]") {
  auto url = test::fresh_database();
  test::insert_events(url, 3, 3);
  test::exec(url, "SELECT outbox_publish('order', 'boom', 'created', '{}'::jsonb)");
  test::insert_events(url, 2, 2);
  test::exec(url, "CREATE OR REPLACE FUNCTION outbox_lane(p_aggregate_type text, p_aggregate_id text) RETURNS integer "
                  "LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN IF p_aggregate_id = 'boom' THEN RETURN 1 / 0; END IF; "
                  "RETURN 0; END $$");
  auto store = store_for(url);
  auto rows = store.fetch({100, std::nullopt, {}});
  REQUIRE(rows.size() == 6);
  CHECK(store.isolations() == 1);
  for (const auto& e : rows) {
    INFO("seq " << e.seq << " " << e.aggregate_id);
    CHECK(e.unreadable == (e.aggregate_id == "boom"));
    CHECK(e.defect.has_value() == (e.aggregate_id == "boom"));
  }
  auto bad = std::find_if(rows.begin(), rows.end(), [](const auto& e) { return e.unreadable; });
  REQUIRE(bad != rows.end());
  CHECK_THAT(*bad->defect, Catch::Contains("division by zero"));
  CHECK(bad->lane == -1);
}

TEST_CASE("a failure whose message is cut mid-character is still recorded", "[pg][store]") {
  auto url = test::fresh_database();
  test::insert_events(url, 1, 1);
  PgOutboxStore store({harden_conninfo(url, "outbox-relay-test", 10'000), "public", MarkMode::update, 10});
  auto rows = store.fetch({10, std::nullopt, {}});
  REQUIRE(rows.size() == 1);
  // 'é' is two bytes: a cut at byte 10 would split the fifth one.
  std::vector<FailedAttempt> f{{rows[0].seq, "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9 \xff", 1, 1000ms, false}};
  store.record_failures(f);
  CHECK(test::scalar(url, "SELECT octet_length(last_error) FROM outbox_events") == 10);
  store.record_failures(std::vector<FailedAttempt>{{rows[0].seq, "ok \xff\xfe end", 2, 1000ms, false}});
  CHECK(test::scalar(url, "SELECT count(*) FROM outbox_events WHERE last_error = 'ok ?? end'") == 1);
}

TEST_CASE("a row too big to read leaves its payload in the database and comes back as a bad row", "[pg][store]") {
  auto url = test::fresh_database();
  test::exec(url, "SELECT outbox_publish('order', 'big', 'created', convert_to(repeat('x', 5000), 'UTF8'), "
                  "jsonb_build_object('h', repeat('y', 3000)))");
  test::exec(url, "SELECT outbox_publish(repeat('t', 70000), 'long-type', 'created', '{}'::jsonb)");
  test::exec(url, "SELECT outbox_publish('order', 'fine', 'created', '{}'::jsonb)");
  PgStoreOptions o{harden_conninfo(url, "outbox-relay-test", 10'000), "public", MarkMode::update};
  o.max_payload_bytes = 1000;
  o.max_headers_bytes = 1000;
  PgOutboxStore store(o);
  auto rows = store.fetch({10, std::nullopt, {}});
  REQUIRE(rows.size() == 3);
  REQUIRE(rows[0].defect.has_value());
  CHECK_THAT(*rows[0].defect, Catch::Contains("payload is 5000 bytes") && Catch::Contains("headers are"));
  CHECK(rows[0].payload.value_or("").empty());
  REQUIRE(rows[1].defect.has_value());
  CHECK_THAT(*rows[1].defect, Catch::Contains("aggregate_type is 70000 bytes"));
  CHECK(rows[1].aggregate_type.size() < 100);  // a digest, not the value
  CHECK_FALSE(rows[2].defect.has_value());
}

// Read-ahead rows are counted only above the prefix of seq values that can no longer change
// (see PgOutboxStore::start_run): a quiet outbox counts nothing, a transaction open at the head
// scan (it may commit late, behind the cursor) makes every later row counted.
TEST_CASE("read-ahead rows are counted only above the settled prefix", "[pg][store]") {
  auto url = test::fresh_database();
  test::insert_events(url, 40, 4);
  auto store = store_for(url);
  (void)store.fetch({1, std::nullopt, {}});  // connects and samples: seqs 1..40 settled
  auto head = store.fetch({10, std::nullopt, {}});
  REQUIRE(head.size() == 10);
  auto ahead = store.fetch({10, head.back().seq, {}});
  REQUIRE(ahead.size() == 10);
  for (const auto& e : ahead) {
    CHECK(e.pending_counted_after >= head.back().seq);  // nothing behind the cursor is counted
    CHECK(e.pending_before == 0);
  }

  // A transaction holding a seq is open while the next head scan reads: nothing after the
  // last sample before it is settled, so the rows read ahead are counted.
  pqxx::connection slow(url);
  pqxx::work open(slow);
  open.exec("SELECT outbox_publish('order', 'x', 'First', '{}'::jsonb)");
  test::insert_events(url, 40, 4);
  auto head2 = store.fetch({10, std::nullopt, {}});
  REQUIRE(head2.size() == 10);
  auto ahead2 = store.fetch({50, head2.back().seq, {}});
  REQUIRE(!ahead2.empty());
  CHECK(ahead2.back().pending_counted_after < ahead2.back().seq);
  open.commit();
  auto late = store.fetch({100, ahead2.back().seq, {}});
  test::exec(url, "SELECT outbox_publish('order', 'x', 'Second', '{}'::jsonb)");
  auto after_late = store.fetch({100, ahead2.back().seq, {}});
  REQUIRE(!after_late.empty());
  CHECK(after_late.back().aggregate_id == "x");
  CHECK(after_late.back().pending_before == 1);  // x's first, behind the cursor, committed late
  (void)late;
}

TEST_CASE("a row made unpublished again makes the read-ahead count every row", "[pg][store]") {
  auto url = test::fresh_database();
  test::insert_events(url, 30, 3);
  auto store = store_for(url);
  (void)store.fetch({1, std::nullopt, {}});
  auto all = store.fetch({100, std::nullopt, {}});
  REQUIRE(all.size() == 30);
  store.mark_published(seqs_of(all));
  test::insert_events(url, 30, 3);
  auto head = store.fetch({10, std::nullopt, {}});
  REQUIRE(head.size() == 10);
  test::exec(url, "UPDATE outbox_events SET published_at = NULL WHERE seq = 1");  // a replay of seq 1
  auto ahead = store.fetch({10, head.back().seq, {}});
  REQUIRE(ahead.size() == 10);
  for (const auto& e : ahead) CHECK(e.pending_counted_after == std::numeric_limits<std::int64_t>::min());
  CHECK(test::scalar(url, "SELECT reopened FROM outbox_relay_wakeup") == 1);
}
