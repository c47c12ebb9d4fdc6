// PgRetention against a real PostgreSQL cluster: only published rows past the window go,
// in batches, and pending or dead-lettered rows are never touched, wherever they sit.
#include <catch2/catch.hpp>

#include "relay/core/errors.hpp"
#include "relay/pg/pg_retention.hpp"
#include "tests/integration/pg_fixture.hpp"

using namespace outbox;
using namespace outbox::relay;
using namespace outbox::relay::pg;
using namespace std::chrono_literals;

TEST_CASE("retention deletes published rows older than the window and nothing else", "[pg][retention]") {
  auto url = test::fresh_database();
  test::insert_events(url, 100, 10);  // seq 1..100, all created "now"
  // seq 1..40: published 10 days ago, created 11 days ago; among them seq 5 (pending, old)
  // and seq 6 (dead-lettered, old) stay put. seq 41..60: published an hour ago. 61..100 pending.
  test::exec(url,
       "UPDATE outbox_events SET created_at = now() - interval '11 days', "
       "published_at = now() - interval '10 days' WHERE seq <= 40");
  test::exec(url, "UPDATE outbox_events SET published_at = NULL WHERE seq = 5");
  test::exec(url, "UPDATE outbox_events SET published_at = NULL, dead_lettered_at = now(), attempts = 10 WHERE seq = 6");
  test::exec(url, "UPDATE outbox_events SET published_at = now() - interval '1 hour' WHERE seq BETWEEN 41 AND 60");

  RetentionOptions o;
  o.conninfo = url;
  o.published_window = std::chrono::hours(24 * 7);
  o.batch_size = 7;  // many small batches, the walk steps over the rows it keeps
  PgRetention retention(o);
  auto pass = retention.run_once();
  CHECK(pass.published_deleted == 38);
  CHECK(pass.inbox_deleted == 0);
  CHECK(test::scalar(url, "SELECT count(*) FROM outbox_events") == 62);
  CHECK(test::scalar(url, "SELECT count(*) FROM outbox_events WHERE seq IN (5, 6)") == 2);
  CHECK(test::scalar(url, "SELECT count(*) FROM outbox_events WHERE seq BETWEEN 41 AND 100") == 60);
  CHECK(retention.run_once().published_deleted == 0);  // idempotent

  // A shorter window reaches the rows published an hour ago, but only once they were created
  // before the cutoff too.
  // (Under the purge function's one-hour floor: the owner lowers it, as migration 0008 says.)
  test::exec(url, "ALTER FUNCTION outbox_purge_published(bigint, integer, bigint) SET outbox_relay.min_purge_window_s = '0'");
  o.published_window = std::chrono::minutes(30);
  test::exec(url, "UPDATE outbox_events SET created_at = now() - interval '2 hours' WHERE seq BETWEEN 41 AND 60");
  CHECK(PgRetention(o).run_once().published_deleted == 20);
  CHECK(test::scalar(url, "SELECT count(*) FROM outbox_events WHERE published_at IS NOT NULL") == 0);
  CHECK(test::scalar(url, "SELECT count(*) FROM outbox_events") == 42);
}

TEST_CASE("retention stops at max_batches and leaves the rest for the next pass", "[pg][retention]") {
  auto url = test::fresh_database();
  test::insert_events(url, 50, 5);
  test::exec(url, "UPDATE outbox_events SET created_at = now() - interval '3 days', published_at = now() - interval '2 days'");
  RetentionOptions o;
  o.conninfo = url;
  o.published_window = std::chrono::hours(24);
  o.batch_size = 10;
  o.max_batches = 2;
  PgRetention retention(o);
  CHECK(retention.run_once().published_deleted == 20);
  CHECK(retention.run_once().published_deleted == 20);
  CHECK(retention.run_once().published_deleted == 10);
  CHECK(test::scalar(url, "SELECT count(*) FROM outbox_events") == 0);
}

TEST_CASE("retention purges the inbox when asked and names a missing inbox table", "[pg][retention]") {
  auto url = test::fresh_database();
  test::exec(url,
       "INSERT INTO consumer_inbox (consumer, event_id, processed_at) "
       "SELECT 'billing', gen_random_uuid(), now() - (g || ' hours')::interval FROM generate_series(1, 30) g");
  RetentionOptions o;
  o.conninfo = url;
  o.inbox_window = std::chrono::minutes(630);  // 10.5 hours: rows processed 11..30 hours ago go
  o.batch_size = 4;
  CHECK(PgRetention(o).run_once().inbox_deleted == 20);
  CHECK(test::scalar(url, "SELECT count(*) FROM consumer_inbox") == 10);

  test::exec(url, "DROP TABLE consumer_inbox");
  CHECK_THROWS_AS(PgRetention(o).run_once(), FatalError);
  CHECK_THROWS_WITH(PgRetention(o).run_once(), Catch::Contains("consumer_inbox does not exist"));
}

TEST_CASE("retention reports a database that is away as transient", "[pg][retention]") {
  RetentionOptions o;
  o.conninfo = "host=127.0.0.1 port=1 dbname=none connect_timeout=2";
  o.published_window = std::chrono::hours(1);
  CHECK_THROWS_AS(PgRetention(o).run_once(), TransientError);
}
