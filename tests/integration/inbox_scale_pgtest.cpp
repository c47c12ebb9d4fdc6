// The inbox's SQL API on the backlogs a bad day leaves: one aggregate holding most of it (a hot
// account after an outage), or many aggregates each stuck behind a dead letter. What a claim or
// a backlog reading costs must grow with the aggregates it has to look at, never with the rows
// queued behind their heads. Counted in index and table tuples read (pg_stat_xact_*, exact and
// the same on any machine), not in seconds; and the answers are checked too.
#include <catch2/catch.hpp>

#include <pqxx/pqxx>

#include <set>

#include "tests/integration/pg_fixture.hpp"

using namespace outbox::test;

namespace {

// Tuples read from inbox_events and its indexes by this transaction so far.
long tuples_read(pqxx::work& tx) {
  return tx.exec("SELECT (SELECT coalesce(sum(pg_stat_get_xact_tuples_returned(indexrelid)), 0) FROM pg_index "
                 "WHERE indrelid = 'inbox_events'::regclass) + pg_stat_get_xact_tuples_returned('inbox_events'::regclass) "
                 "+ pg_stat_get_xact_tuples_fetched('inbox_events'::regclass)")[0][0]
      .as<long>();
}

// `rows` events of aggregate (t, hot) in offset order, then `others` aggregates of one event
// each and `keyless` events without a key, all after them.
void land(const std::string& url, int rows, int others, int keyless) {
  exec(url,
       "INSERT INTO inbox_events (inbox, event_id, topic, partition, \"offset\", key) "
       "SELECT 'scale', 'hot-' || g, 't', 0, g, 'hot' FROM generate_series(1, " + std::to_string(rows) + ") g");
  exec(url,
       "INSERT INTO inbox_events (inbox, event_id, topic, partition, \"offset\", key) "
       "SELECT 'scale', 'other-' || g, 't', 1, g, convert_to('other-' || g, 'UTF8') FROM generate_series(1, " +
           std::to_string(others) + ") g");
  exec(url,
       "INSERT INTO inbox_events (inbox, event_id, topic, partition, \"offset\", key) "
       "SELECT 'scale', 'keyless-' || g, 't', 2, g, NULL FROM generate_series(1, " + std::to_string(keyless) + ") g");
  exec(url, "ANALYZE inbox_events");
}

}  // namespace

TEST_CASE("inbox SQL API: a claim behind one aggregate's 40,000 queued events reads what it returns, not the queue",
          "[pg][inbox]") {
  const auto url = fresh_database();
  constexpr int kHot = 40'000;
  land(url, kHot, 30, 20);

  pqxx::connection c(url);
  pqxx::work tx(c);
  const long before = tuples_read(tx);
  std::set<std::string> claimed;
  for (const auto& r : tx.exec("SELECT event_id FROM inbox_claim('scale', 100)")) claimed.insert(r[0].c_str());
  const long read = tuples_read(tx) - before;
  // The hot aggregate's head, the 30 other heads, the 20 keyless events: 51, nothing else.
  CHECK(claimed.size() == 51);
  CHECK(claimed.count("hot-1") == 1);
  CHECK(claimed.count("hot-2") == 0);
  CHECK(claimed.count("other-30") == 1);
  CHECK(claimed.count("keyless-20") == 1);
  INFO("tuples read by one claim: " << read);
  CHECK(read < 10'000);  // walking the whole queue reads it at least once: 40,000+

  // A second worker meanwhile: the heads are locked, so it gets nothing, and reads as little.
  pqxx::connection c2(url);
  pqxx::work tx2(c2);
  const long before2 = tuples_read(tx2);
  CHECK(tx2.exec("SELECT count(*) FROM inbox_claim('scale', 100)")[0][0].as<long>() == 0);
  const long read2 = tuples_read(tx2) - before2;
  INFO("tuples read by a claim finding every head locked: " << read2);
  CHECK(read2 < 10'000);
}

TEST_CASE("inbox SQL API: the backlog of aggregates held behind dead letters is read in one pass", "[pg][inbox]") {
  const auto url = fresh_database();
  constexpr int kHot = 6'000;
  land(url, kHot, 200, 10);
  // The hot aggregate's 3rd event is dead-lettered: the 2 before it are pending, the rest held.
  exec(url, "UPDATE inbox_events SET dead_lettered_at = now(), attempts = 10 WHERE event_id = 'hot-3'");
  // Two others retry later, one is dead-lettered (nothing behind it).
  exec(url, "UPDATE inbox_events SET next_attempt_at = now() + interval '1 hour' WHERE event_id IN ('other-1', 'other-2')");
  exec(url, "UPDATE inbox_events SET dead_lettered_at = now() WHERE event_id = 'other-3'");

  pqxx::connection c(url);
  pqxx::work tx(c);
  const long before = tuples_read(tx);
  const auto b = tx.exec("SELECT pending, retrying, dead_lettered, held_back FROM inbox_backlog('scale')")[0];
  const long read = tuples_read(tx) - before;
  CHECK(b[0].as<long>() == 2 + 197 + 10);  // hot-1, hot-2; 197 other heads; the keyless
  CHECK(b[1].as<long>() == 2);
  CHECK(b[2].as<long>() == 2);
  CHECK(b[3].as<long>() == kHot - 3);
  INFO("tuples read by one backlog reading over " << kHot + 210 << " rows: " << read);
  CHECK(read < 4 * (kHot + 210));  // one probe of the aggregate per row behind it reads ~18 million
}
