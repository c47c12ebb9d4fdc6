// IdempotencyKeys against a real PostgreSQL: every KeyState, expiry, rollback, and two
// concurrent requests with the same key decided by the database.
#include <catch2/catch.hpp>

#include <pqxx/pqxx>

#include <chrono>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>

#include "outbox/idempotency_keys.hpp"
#include "tests/integration/pg_fixture.hpp"

using namespace outbox;
using namespace std::chrono_literals;

namespace {

// A database with an `effects` table standing for the caller's business change.
std::string database_with_effects() {
  auto url = test::fresh_database();
  pqxx::connection c(url);
  pqxx::work tx(c);
  tx.exec("CREATE TABLE effects (key text NOT NULL, request_hash text NOT NULL)");
  tx.commit();
  return url;
}

// What a service does with one request: begin, run the effect and complete when started.
KeyDecision handle(const IdempotencyKeys& keys, pqxx::transaction_base& tx, const std::string& key,
                   const std::string& hash, const std::string& response_ref) {
  auto d = keys.begin(tx, key, hash);
  if (d.state == KeyState::started) {
    tx.exec_params("INSERT INTO effects (key, request_hash) VALUES ($1, $2)", key, hash);
    keys.complete(tx, key, response_ref);
  }
  return d;
}

KeyDecision handle_and_commit(const IdempotencyKeys& keys, const std::string& url, const std::string& key,
                              const std::string& hash, const std::string& response_ref) {
  pqxx::connection c(url);
  pqxx::work tx(c);
  auto d = handle(keys, tx, key, hash, response_ref);
  tx.commit();
  return d;
}

KeyDecision begin_and_commit(const IdempotencyKeys& keys, const std::string& url, const std::string& key,
                             const std::string& hash) {
  pqxx::connection c(url);
  pqxx::work tx(c);
  auto d = keys.begin(tx, key, hash);
  tx.commit();
  return d;
}

void expire(const std::string& url, const std::string& key) {
  pqxx::connection c(url);
  pqxx::work tx(c);
  tx.exec_params("UPDATE idempotency_keys SET expires_at = now() - interval '1 second' WHERE key = $1", key);
  tx.commit();
}

std::string column_of(const std::string& url, const std::string& key, const std::string& column) {
  pqxx::connection c(url);
  pqxx::nontransaction tx(c);
  auto r = tx.exec_params("SELECT coalesce(" + column + ", '<null>') FROM idempotency_keys WHERE key = $1", key);
  return r.empty() ? "<no record>" : r[0][0].as<std::string>();
}

long effects(const std::string& url) { return test::scalar(url, "SELECT count(*) FROM effects"); }

// True once the backend `pid` waits for a lock; polls pg_stat_activity with a deadline.
bool waits_for_lock(const std::string& url, int pid) {
  pqxx::connection c(url);
  pqxx::nontransaction tx(c);
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < deadline) {
    auto r = tx.exec_params("SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid);
    if (!r.empty() && !r[0][0].is_null() && r[0][0].as<bool>()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return false;
}

// The second of two concurrent requests, on its own connection and thread.
struct Concurrent {
  std::optional<KeyDecision> decision;
  std::exception_ptr error;
};

}  // namespace

TEST_CASE("begin of a new key is started and complete stores the outcome with the effect", "[lib][idempotency]") {
  auto url = database_with_effects();
  IdempotencyKeys keys(24h);

  auto d = handle_and_commit(keys, url, "req-1", "hash-a", "order-17");

  CHECK(d.state == KeyState::started);
  CHECK_FALSE(d.response_ref);
  CHECK(effects(url) == 1);
  CHECK(column_of(url, "req-1", "status") == "completed");
  CHECK(column_of(url, "req-1", "response_ref") == "order-17");
  CHECK(column_of(url, "req-1", "request_hash") == "hash-a");
  CHECK(test::scalar(url, "SELECT count(*) FROM idempotency_keys WHERE expires_at BETWEEN now() + interval '23 hours' "
                          "AND now() + interval '25 hours'") == 1);
}

TEST_CASE("a retry with the same key and request gets the stored response_ref and does not run again",
          "[lib][idempotency]") {
  auto url = database_with_effects();
  IdempotencyKeys keys(24h);
  REQUIRE(handle_and_commit(keys, url, "req-1", "hash-a", "order-17").state == KeyState::started);

  auto d = handle_and_commit(keys, url, "req-1", "hash-a", "order-18");

  CHECK(d.state == KeyState::completed);
  CHECK(d.response_ref == std::optional<std::string>("order-17"));
  CHECK(effects(url) == 1);
  CHECK(column_of(url, "req-1", "response_ref") == "order-17");
}

TEST_CASE("the same key with a different request hash is a conflict and the effect does not run",
          "[lib][idempotency]") {
  auto url = database_with_effects();
  IdempotencyKeys keys(24h);
  REQUIRE(handle_and_commit(keys, url, "req-1", "hash-a", "order-17").state == KeyState::started);

  auto d = handle_and_commit(keys, url, "req-1", "hash-b", "order-18");

  CHECK(d.state == KeyState::conflict);
  CHECK_FALSE(d.response_ref);
  CHECK(effects(url) == 1);
  CHECK(test::scalar(url, "SELECT count(*) FROM effects WHERE request_hash = 'hash-b'") == 0);
  CHECK(column_of(url, "req-1", "request_hash") == "hash-a");
}

TEST_CASE("a begin committed without complete is in_progress for the same request and a conflict for another",
          "[lib][idempotency]") {
  auto url = database_with_effects();
  IdempotencyKeys keys(24h);
  REQUIRE(begin_and_commit(keys, url, "req-1", "hash-a").state == KeyState::started);

  auto again = handle_and_commit(keys, url, "req-1", "hash-a", "order-18");
  CHECK(again.state == KeyState::in_progress);
  CHECK_FALSE(again.response_ref);
  CHECK(handle_and_commit(keys, url, "req-1", "hash-b", "order-19").state == KeyState::conflict);
  CHECK(effects(url) == 0);
  CHECK(column_of(url, "req-1", "status") == "in_progress");

  SECTION("a later transaction completes it and retries then get its outcome") {
    {
      pqxx::connection c(url);
      pqxx::work tx(c);
      keys.complete(tx, "req-1", "order-20");
      tx.commit();
    }
    auto d = begin_and_commit(keys, url, "req-1", "hash-a");
    CHECK(d.state == KeyState::completed);
    CHECK(d.response_ref == std::optional<std::string>("order-20"));
  }
}

TEST_CASE("an expired record is started again, reset to in_progress with the new request", "[lib][idempotency]") {
  auto url = database_with_effects();
  IdempotencyKeys keys(1h);

  SECTION("an expired completed record") {
    REQUIRE(handle_and_commit(keys, url, "req-1", "hash-a", "order-17").state == KeyState::started);
  }
  SECTION("an expired in_progress record left by a crashed worker") {
    REQUIRE(begin_and_commit(keys, url, "req-1", "hash-a").state == KeyState::started);
  }
  expire(url, "req-1");

  auto d = begin_and_commit(keys, url, "req-1", "hash-b");

  CHECK(d.state == KeyState::started);
  CHECK(column_of(url, "req-1", "status") == "in_progress");
  CHECK(column_of(url, "req-1", "request_hash") == "hash-b");
  CHECK(column_of(url, "req-1", "response_ref") == "<null>");
  CHECK(test::scalar(url, "SELECT count(*) FROM idempotency_keys WHERE expires_at > now()") == 1);
  CHECK(begin_and_commit(keys, url, "req-1", "hash-b").state == KeyState::in_progress);
}

TEST_CASE("a rolled-back transaction leaves no record, so the key starts again", "[lib][idempotency]") {
  auto url = database_with_effects();
  IdempotencyKeys keys(24h);
  {
    pqxx::connection c(url);
    pqxx::work tx(c);
    REQUIRE(handle(keys, tx, "req-1", "hash-a", "order-17").state == KeyState::started);
    tx.abort();
  }
  CHECK(test::scalar(url, "SELECT count(*) FROM idempotency_keys") == 0);
  CHECK(effects(url) == 0);

  CHECK(handle_and_commit(keys, url, "req-1", "hash-a", "order-18").state == KeyState::started);
  CHECK(effects(url) == 1);
  CHECK(column_of(url, "req-1", "response_ref") == "order-18");
}

TEST_CASE("two concurrent begins of one key: the second blocks on the first, the database decides",
          "[lib][idempotency][concurrency]") {
  auto url = database_with_effects();
  IdempotencyKeys keys(24h);
  pqxx::connection first_conn(url);
  pqxx::connection second_conn(url);
  const bool commit_first = GENERATE(true, false);

  pqxx::work first(first_conn);
  auto first_decision = handle(keys, first, "req-1", "hash-a", "order-first");
  REQUIRE(first_decision.state == KeyState::started);

  Concurrent second;
  std::thread t([&] {
    try {
      pqxx::work tx(second_conn);
      second.decision = handle(keys, tx, "req-1", "hash-a", "order-second");
      tx.commit();
    } catch (...) {
      second.error = std::current_exception();
    }
  });
  bool blocked = false;
  std::exception_ptr poll_error;  // rethrown after the join: a joinable std::thread must not unwind
  try {
    blocked = waits_for_lock(url, second_conn.backendpid());
  } catch (...) {
    poll_error = std::current_exception();
  }
  if (commit_first)
    first.commit();
  else
    first.abort();
  t.join();

  if (poll_error) std::rethrow_exception(poll_error);
  CHECK(blocked);
  if (second.error) std::rethrow_exception(second.error);
  REQUIRE(second.decision);
  CHECK(effects(url) == 1);
  if (commit_first) {
    CHECK(second.decision->state == KeyState::completed);
    CHECK(second.decision->response_ref == std::optional<std::string>("order-first"));
    CHECK(column_of(url, "req-1", "response_ref") == "order-first");
  } else {
    CHECK(second.decision->state == KeyState::started);
    CHECK(column_of(url, "req-1", "response_ref") == "order-second");
  }
}

TEST_CASE("complete of a key that is not in progress throws logic_error naming the key", "[lib][idempotency]") {
  auto url = database_with_effects();
  IdempotencyKeys keys(24h);
  pqxx::connection c(url);

  SECTION("an unknown key") {
    pqxx::work tx(c);
    CHECK_THROWS_MATCHES(keys.complete(tx, "never-begun", "x"), std::logic_error,
                         Catch::Message("idempotency keys: complete() of key \"never-begun\" which is not in progress "
                                        "(no record); call begin() and get started in the same transaction first"));
  }
  SECTION("a key already completed") {
    REQUIRE(handle_and_commit(keys, url, "req-1", "hash-a", "order-17").state == KeyState::started);
    pqxx::work tx(c);
    CHECK_THROWS_AS(keys.complete(tx, "req-1", "order-18"), std::logic_error);
    CHECK_THROWS_WITH(keys.complete(tx, "req-1", "order-18"), Catch::Contains("\"req-1\""));
    CHECK(column_of(url, "req-1", "response_ref") == "order-17");
  }
}

TEST_CASE("idempotency keys reject an empty key, an empty hash, a non-positive ttl and a bad schema",
          "[lib][idempotency]") {
  auto url = database_with_effects();
  IdempotencyKeys keys(24h);
  pqxx::connection c(url);
  pqxx::work tx(c);

  CHECK_THROWS_AS(keys.begin(tx, "", "hash-a"), std::invalid_argument);
  CHECK_THROWS_AS(keys.begin(tx, "req-1", ""), std::invalid_argument);
  CHECK_THROWS_AS(keys.complete(tx, "", "x"), std::invalid_argument);
  CHECK_THROWS_AS(IdempotencyKeys(0s), std::invalid_argument);
  CHECK_THROWS_AS(IdempotencyKeys(-5s), std::invalid_argument);
  CHECK_THROWS_AS(IdempotencyKeys(24h, "public; DROP TABLE x"), std::invalid_argument);
  tx.commit();
  CHECK(test::scalar(url, "SELECT count(*) FROM idempotency_keys") == 0);
}
