// Poison rows in a steady stream: too large for the producer, a per-row topic the broker
// rejects, a per-row topic outside kafka.row_topic_pattern, a header key the relay refuses, a
// headers value that is not a JSON object. Each burns its attempts and is dead-lettered with
// its reason; the rest of the outbox keeps flowing; the poisoned aggregates' later events wait
// behind it; once an operator fixes and requeues the rows, everything flows in order.
#include <catch2/catch.hpp>

#include <pqxx/pqxx>

#include <vector>

#include "tests/drills/drill_harness.hpp"
#include "tests/integration/pg_fixture.hpp"

using namespace outbox::test;
using namespace outbox::test::drill;
using namespace std::chrono_literals;

namespace {

struct Poison {
  std::string aggregate;
  std::string columns;  // SQL: the row's poisoned column values, in INSERT (topic, headers, payload) order
  std::string reason;   // LIKE pattern last_error must match
  std::string fix;      // SQL SET list an operator would apply before requeueing
  std::int64_t seq = 0;
};

std::int64_t insert_poison(const std::string& url, const Poison& p) {
  pqxx::connection c(url);
  pqxx::work tx(c);
  tx.exec_params("SELECT pg_advisory_xact_lock(hashtext($1))", p.aggregate);  // as the stream does
  auto seq = tx.exec1("INSERT INTO outbox_events (aggregate_type, aggregate_id, event_type, topic, headers, payload) "
                      "VALUES ('order', " + tx.quote(p.aggregate) + ", 'OrderAmountAdded', " + p.columns +
                      ") RETURNING seq")[0]
                 .as<std::int64_t>();
  tx.commit();
  return seq;
}

}  // namespace

TEST_CASE("poison rows are dead-lettered with their reason, hold back only their aggregate and flow in order once "
          "requeued",
          "[drill][poison]") {
  const std::string kAmount = "convert_to('{\"amount\": 7}', 'UTF8')";
  std::vector<Poison> poisons{
      {"order-1", "NULL, '{}', convert_to(repeat('x', 200000), 'UTF8')", "%payload is 200000 bytes%",
       "payload = " + kAmount},
      {"order-2", "'rejected.orders', '{}', " + kAmount, "%TOPIC_AUTHORIZATION_FAILED%", "topic = NULL"},
      {"order-3", "'elsewhere.events', '{}', " + kAmount, "%row_topic_pattern%", "topic = NULL"},
      {"order-4", "NULL, '{\"bad\\u0001key\": \"x\"}', " + kAmount, "%control characters%", "headers = '{}'"},
      // Only a table without the headers CHECK constraint can hold this one.
      {"order-5", "NULL, '[\"not\", \"an\", \"object\"]', " + kAmount, "%not a JSON object%", "headers = '{}'"},
  };
  Drill d("poison rows (5 kinds), then requeued");
  d.setup.relay_env = {{"OUTBOX_RELAY_RELAY_MAX_ATTEMPTS", "3"},
                       {"OUTBOX_RELAY_RELAY_RETRY_INITIAL_MS", "100"},
                       {"OUTBOX_RELAY_RELAY_RETRY_MAX_MS", "400"},
                       {"OUTBOX_RELAY_KAFKA_ROW_TOPIC_PATTERN", "outbox\\..*|rejected\\..*"},
                       {"OUTBOX_RELAY_KAFKA_PROPERTY_MESSAGE_MAX_BYTES", "100000"}};
  rd_kafka_mock_topic_set_error(d.kafka.cluster(), "rejected.orders", RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
  d.sql("ALTER TABLE outbox_events DROP CONSTRAINT outbox_events_headers_check");
  d.warm_up();

  std::string poisoned;  // SQL list of the poisoned aggregates
  for (auto& p : poisons) {
    p.seq = insert_poison(d.url, p);
    poisoned += (poisoned.empty() ? "'" : ", '") + p.aggregate + "'";
  }
  const bool dead = d.pump([&] { return d.count("dead_lettered_at IS NOT NULL") == static_cast<long>(poisons.size()); }, 30s);
  INFO(d.diagnosis());
  REQUIRE(dead);
  for (const auto& p : poisons) {
    INFO(p.aggregate << " expects last_error like " << p.reason);
    CHECK(d.count("seq = " + std::to_string(p.seq) + " AND attempts = 3 AND dead_lettered_at IS NOT NULL "
                  "AND last_error LIKE '" + p.reason + "'") == 1);
  }

  // Dead rows hold back only their own aggregates: everything else keeps flowing.
  d.hold(2s);
  const auto others_pending = "published_at IS NULL AND aggregate_id NOT IN (" + poisoned +
                              ") AND seq <= " + std::to_string(d.max_seq());
  CHECK(d.pump([&] { return d.count(others_pending) == 0; }, 10s));

  // ...and the poisoned aggregates' later events wait: none marked, none on the topic.
  std::string later = "false";
  for (const auto& p : poisons)
    later += " OR (aggregate_id = '" + p.aggregate + "' AND seq > " + std::to_string(p.seq) + ")";
  const long waiting = d.count("(" + later + ")");
  CHECK(waiting > 0);
  CHECK(d.count("(" + later + ") AND published_at IS NOT NULL") == 0);
  {
    pqxx::connection c(d.url);
    pqxx::nontransaction tx(c);
    std::set<std::string> held;
    for (const auto& row : tx.exec("SELECT id::text FROM outbox_events WHERE " + later)) held.insert(row[0].c_str());
    std::string early;
    for (const auto& m : d.reader.messages())
      if (auto id = header(m, "id"); id && held.contains(*id)) early += " " + m.key + "/" + *id;
    CHECK(early.empty());
  }

  // The operator fixes each row and requeues it: the poisoned aggregates drain in order.
  std::string fixes;
  std::vector<std::string> requeue{"dead-letters", "requeue"};
  for (const auto& p : poisons) {
    fixes += "UPDATE outbox_events SET " + p.fix + " WHERE seq = " + std::to_string(p.seq) + ";";
    requeue.push_back(std::to_string(p.seq));
  }
  d.sql(fixes);
  const auto requeued = d.run_command(requeue);
  INFO(requeued.output);
  REQUIRE(requeued.code == std::optional<int>(0));
  auto recovery = d.recover(30s);
  d.finish(recovery, std::to_string(poisons.size()) + " dead-lettered, " + std::to_string(waiting) +
                         " events held behind them until requeued");
}
