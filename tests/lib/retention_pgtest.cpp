// purge_inbox and purge_expired_keys against a real PostgreSQL: only old inbox rows and
// expired keys go, in batches of batch_size, and a row another transaction holds is skipped.
#include <catch2/catch.hpp>

#include <pqxx/pqxx>

#include <chrono>
#include <stdexcept>
#include <string>

#include "outbox/idempotency_keys.hpp"
#include "outbox/retention.hpp"
#include "tests/integration/pg_fixture.hpp"

using namespace outbox;
using namespace std::chrono_literals;

namespace {

// `count` inbox rows of consumer `consumer`, processed `age` ago (a PostgreSQL interval).
void insert_inbox(const std::string& url, const std::string& consumer, int count, const std::string& age) {
  pqxx::connection c(url);
  pqxx::work tx(c);
  tx.exec_params("INSERT INTO consumer_inbox (consumer, event_id, processed_at) "
                 "SELECT $1, gen_random_uuid(), now() - $3::interval FROM generate_series(1, $2)",
                 consumer, count, age);
  tx.commit();
}

// `count` keys named <prefix>-<n>, expiring `offset` from now (negative: already expired).
void insert_keys(const std::string& url, const std::string& prefix, int count, const std::string& offset) {
  pqxx::connection c(url);
  pqxx::work tx(c);
  tx.exec_params("INSERT INTO idempotency_keys (key, request_hash, status, response_ref, expires_at) "
                 "SELECT $1 || '-' || g, 'h', 'completed', 'r', now() + $3::interval FROM generate_series(1, $2) g",
                 prefix, count, offset);
  tx.commit();
}

}  // namespace

TEST_CASE("purge_inbox deletes only rows processed before the window, batch_size rows per transaction",
          "[lib][retention]") {
  auto url = test::fresh_database();
  insert_inbox(url, "billing", 3, "2 days");
  insert_inbox(url, "shipping", 2, "25 hours");
  insert_inbox(url, "billing", 4, "23 hours");
  insert_inbox(url, "shipping", 1, "1 second");
  pqxx::connection c(url);

  auto result = purge_inbox(c, 24h, 2);

  CHECK(result.rows == 5);
  CHECK(result.batches == 3);
  CHECK(test::scalar(url, "SELECT count(*) FROM consumer_inbox") == 5);
  CHECK(test::scalar(url, "SELECT count(*) FROM consumer_inbox WHERE processed_at < now() - interval '1 day'") == 0);

  SECTION("a second run finds nothing to delete") {
    auto again = purge_inbox(c, 24h, 2);
    CHECK(again.rows == 0);
    CHECK(again.batches == 0);
    CHECK(test::scalar(url, "SELECT count(*) FROM consumer_inbox") == 5);
  }
}

TEST_CASE("purge_inbox stops after max_batches and leaves the rest for the next run", "[lib][retention]") {
  auto url = test::fresh_database();
  insert_inbox(url, "billing", 5, "2 days");
  pqxx::connection c(url);

  auto first = purge_inbox(c, 24h, 2, 1);
  CHECK(first.rows == 2);
  CHECK(first.batches == 1);
  CHECK(test::scalar(url, "SELECT count(*) FROM consumer_inbox") == 3);

  auto rest = purge_inbox(c, 24h, 2);
  CHECK(rest.rows == 3);
  CHECK(rest.batches == 2);
  CHECK(test::scalar(url, "SELECT count(*) FROM consumer_inbox") == 0);
}

TEST_CASE("purge_expired_keys deletes only keys whose expires_at has passed, in batches", "[lib][retention]") {
  auto url = test::fresh_database();
  insert_keys(url, "old", 5, "-1 second");
  insert_keys(url, "live", 3, "1 hour");
  pqxx::connection c(url);

  auto result = purge_expired_keys(c, 2);

  CHECK(result.rows == 5);
  CHECK(result.batches == 3);
  CHECK(test::scalar(url, "SELECT count(*) FROM idempotency_keys") == 3);
  CHECK(test::scalar(url, "SELECT count(*) FROM idempotency_keys WHERE key LIKE 'live-%'") == 3);
}

TEST_CASE("purge_expired_keys skips, without waiting, an expired key that begin() is taking over",
          "[lib][retention][concurrency]") {
  auto url = test::fresh_database();
  insert_keys(url, "old", 3, "-1 second");
  IdempotencyKeys keys(1h);
  pqxx::connection service(url);
  pqxx::work taking_over(service);
  REQUIRE(keys.begin(taking_over, "old-1", "new-hash").state == KeyState::started);

  pqxx::connection purger(url);
  {
    pqxx::nontransaction session(purger);
    session.exec("SET lock_timeout = '5s'");  // a wait on the row fails the test instead of hanging it
  }
  auto result = purge_expired_keys(purger, 10);
  taking_over.commit();

  CHECK(result.rows == 2);
  CHECK(result.batches == 1);
  CHECK(test::scalar(url, "SELECT count(*) FROM idempotency_keys WHERE key = 'old-1' AND request_hash = 'new-hash' "
                          "AND status = 'in_progress' AND expires_at > now()") == 1);
  CHECK(test::scalar(url, "SELECT count(*) FROM idempotency_keys") == 1);
}

TEST_CASE("purges reject a zero batch_size, a negative window and a bad schema", "[lib][retention]") {
  auto url = test::fresh_database();
  pqxx::connection c(url);
  CHECK_THROWS_AS(purge_inbox(c, 24h, 0), std::invalid_argument);
  CHECK_THROWS_AS(purge_inbox(c, -1s), std::invalid_argument);
  CHECK_THROWS_AS(purge_expired_keys(c, 0), std::invalid_argument);
  CHECK_THROWS_AS(purge_expired_keys(c, 10, 1, "bad-schema"), std::invalid_argument);
}
