// The inbox against a real PostgreSQL: every outcome, and concurrent deliveries decided by
// the database.
#include <catch2/catch.hpp>

#include <pqxx/pqxx>

#include <atomic>
#include <thread>

#include "outbox/inbox.hpp"
#include "outbox/outbox_writer.hpp"
#include "tests/integration/pg_fixture.hpp"

using namespace outbox;

namespace {
const std::string kEvent = "6f1c1f9e-8c1b-4c1e-9a53-000000000001";

void make_effects_table(const std::string& url) {
  pqxx::connection c(url);
  pqxx::work tx(c);
  tx.exec("CREATE TABLE IF NOT EXISTS effects (id serial PRIMARY KEY, what text NOT NULL)");
  tx.commit();
}
}  // namespace

TEST_CASE("a new event runs the handler and records it and a redelivery is skipped", "[inbox]") {
  auto url = test::fresh_database();
  make_effects_table(url);
  Inbox inbox("billing");
  pqxx::connection c(url);
  int runs = 0;
  auto handler = [&](pqxx::work& tx) {
    ++runs;
    tx.exec("INSERT INTO effects (what) VALUES ('charged')");
  };
  CHECK(inbox.process(c, kEvent, handler) == InboxOutcome::processed);
  CHECK(inbox.process(c, kEvent, handler) == InboxOutcome::duplicate);
  CHECK(runs == 1);
  CHECK(test::scalar(url, "SELECT count(*) FROM effects") == 1);
  CHECK(test::scalar(url, "SELECT count(*) FROM consumer_inbox WHERE consumer = 'billing'") == 1);
}

TEST_CASE("consumers with different names each process the same event once", "[inbox]") {
  auto url = test::fresh_database();
  pqxx::connection c(url);
  int runs = 0;
  auto handler = [&](pqxx::work&) { ++runs; };
  CHECK(Inbox("billing").process(c, kEvent, handler) == InboxOutcome::processed);
  CHECK(Inbox("shipping").process(c, kEvent, handler) == InboxOutcome::processed);
  CHECK(Inbox("shipping").process(c, kEvent, handler) == InboxOutcome::duplicate);
  CHECK(runs == 2);
}

TEST_CASE("a handler that throws rolls back its effect and the claim, so a retry processes the event", "[inbox]") {
  auto url = test::fresh_database();
  make_effects_table(url);
  Inbox inbox("billing");
  pqxx::connection c(url);
  CHECK_THROWS_WITH(inbox.process(c, kEvent,
                                  [](pqxx::work& tx) {
                                    tx.exec("INSERT INTO effects (what) VALUES ('half done')");
                                    throw std::runtime_error("payment gateway said no");
                                  }),
                    "payment gateway said no");
  CHECK(test::scalar(url, "SELECT count(*) FROM effects") == 0);
  CHECK(test::scalar(url, "SELECT count(*) FROM consumer_inbox") == 0);
  CHECK(inbox.process(c, kEvent, [](pqxx::work& tx) { tx.exec("INSERT INTO effects (what) VALUES ('done')"); }) ==
        InboxOutcome::processed);
  CHECK(test::scalar(url, "SELECT count(*) FROM effects") == 1);
}

TEST_CASE("two instances handed the same event at once run the handler once: the database decides", "[inbox]") {
  auto url = test::fresh_database();
  make_effects_table(url);
  Inbox inbox("billing");
  pqxx::connection a(url);
  pqxx::connection b(url);
  // Instance A claims the event and, still inside its transaction, applies its effect.
  pqxx::work tx_a(a);
  REQUIRE(inbox.claim(tx_a, kEvent));
  tx_a.exec("INSERT INTO effects (what) VALUES ('by a')");
  // Instance B gets the same event meanwhile: its claim waits on A's uncommitted row.
  std::atomic<int> b_outcome{-1};
  std::thread instance_b([&] {
    auto r = inbox.process(b, kEvent, [](pqxx::work& tx) { tx.exec("INSERT INTO effects (what) VALUES ('by b')"); });
    b_outcome = r == InboxOutcome::processed ? 1 : 0;
  });
  // B is blocked: its backend waits for A's transaction lock.
  bool b_waiting = false;
  for (auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
       !b_waiting && std::chrono::steady_clock::now() < until;)
    b_waiting = test::scalar(url, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                  "AND query LIKE 'INSERT INTO%consumer_inbox%'") == 1;
  CHECK(b_waiting);
  CHECK(b_outcome == -1);
  tx_a.commit();
  instance_b.join();
  CHECK(b_outcome == 0);  // duplicate
  CHECK(test::scalar(url, "SELECT count(*) FROM effects") == 1);
  CHECK(test::scalar(url, "SELECT count(*) FROM effects WHERE what = 'by a'") == 1);
}

TEST_CASE("when the first instance rolls back, the waiting one processes the event", "[inbox]") {
  auto url = test::fresh_database();
  Inbox inbox("billing");
  pqxx::connection a(url);
  pqxx::connection b(url);
  auto tx_a = std::make_unique<pqxx::work>(a);
  REQUIRE(inbox.claim(*tx_a, kEvent));
  std::atomic<int> b_outcome{-1};
  std::thread instance_b([&] { b_outcome = inbox.process(b, kEvent, [](pqxx::work&) {}) == InboxOutcome::processed; });
  for (auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
       std::chrono::steady_clock::now() < until &&
       test::scalar(url, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'") == 0;) {
  }
  tx_a->abort();
  instance_b.join();
  CHECK(b_outcome == 1);
}

TEST_CASE("an event id that is not a UUID is refused by the database", "[inbox]") {
  auto url = test::fresh_database();
  pqxx::connection c(url);
  CHECK_THROWS_AS(Inbox("billing").process(c, "not-a-uuid", [](pqxx::work&) {}), pqxx::data_exception);
  CHECK_THROWS_AS(Inbox(""), std::invalid_argument);
}

TEST_CASE("the writer inserts an event in the caller's transaction, visible only on commit", "[writer]") {
  auto url = test::fresh_database();
  OutboxWriter writer;
  pqxx::connection c(url);
  {
    pqxx::work tx(c);
    writer.write(tx, {"order", "o-1", "OrderPlaced", "{}", {}, std::nullopt, std::nullopt});
    // rolled back: no event without its business change
  }
  CHECK(test::scalar(url, "SELECT count(*) FROM outbox_events") == 0);
  pqxx::work tx(c);
  NewEvent e{"order", "o-1", "OrderPlaced", std::string("\x00\x01", 2), {{"traceparent", "00-ab"}}, "orders.v1",
             "0d4e3c1a-2222-4b4b-8888-000000000042"};
  auto id = writer.write(tx, e);
  auto generated = writer.write(tx, {"order", "o-1", "OrderPaid", "{}", {}, std::nullopt, std::nullopt});
  tx.commit();
  CHECK(id == "0d4e3c1a-2222-4b4b-8888-000000000042");
  CHECK(generated.size() == 36);
  CHECK(test::scalar(url, "SELECT count(*) FROM outbox_events WHERE id = '0d4e3c1a-2222-4b4b-8888-000000000042' "
                          "AND payload = '\\x0001'::bytea AND headers = '{\"traceparent\": \"00-ab\"}' "
                          "AND topic = 'orders.v1'") == 1);
  CHECK(test::scalar(url, "SELECT count(*) FROM outbox_events WHERE event_type = 'OrderPaid' AND topic IS NULL") == 1);
  pqxx::work tx2(c);
  CHECK_THROWS_AS(writer.write(tx2, {"", "x", "y", "", {}, std::nullopt, std::nullopt}), std::invalid_argument);
}
