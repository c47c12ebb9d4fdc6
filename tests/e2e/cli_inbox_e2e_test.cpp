// `outbox-relay inbox status | dead-letters list|show|requeue|skip` against an inbox a worker
// has dead-lettered events in, checked from what the commands print (--json) and from the rows.
#include <catch2/catch.hpp>

#include "tests/e2e/cli_harness.hpp"
#include "tests/integration/pg_fixture.hpp"

using namespace outbox;

using namespace outbox::test::cli;
using outbox::test::exec;
using outbox::test::fresh_database;
using outbox::test::scalar;

namespace {

void land(const std::string& url) {
  exec(url,
       "INSERT INTO inbox_events (inbox, event_id, topic, partition, \"offset\", key, event_type, payload) "
       "SELECT 'payments', 'ev-' || g, 'orders', g % 2, g, convert_to('acct-' || (g % 3), 'UTF8'), 'Moved', "
       "convert_to('{}', 'UTF8') FROM generate_series(1, 9) g");
  // A worker's verdicts: ev-1 (acct-1) and ev-2 (acct-2) dead-lettered; what follows them waits.
  exec(url, "SELECT inbox_fail(seq, 'payload is not an order', 'permanent') FROM inbox_events "
            "WHERE event_id IN ('ev-1', 'ev-2')");
}

}  // namespace

TEST_CASE("inbox CLI: status, list, show, requeue and skip dead letters", "[e2e][cli][inbox]") {
  const auto url = fresh_database();
  land(url);
  const std::map<std::string, std::string> env{{"OUTBOX_RELAY_INBOX_NAME", "payments"}};

  auto status = cli(url, {"inbox", "status", "--json"}, env);
  REQUIRE(status.code == 0);
  auto s = status.json();
  CHECK(s["rows"] == 9);
  CHECK(s["dead_lettered"] == 2);
  CHECK(s["held_back"] == 4);  // ev-4, ev-7 behind ev-1; ev-5, ev-8 behind ev-2
  CHECK(s["pending"] == 3);
  CHECK(s["sources"].size() == 2);

  auto list = cli(url, {"inbox", "dead-letters", "list", "--json"}, env);
  REQUIRE(list.code == 0);
  REQUIRE(list.json()["events"].size() == 2);
  CHECK(list.json()["events"][0]["event_id"] == "ev-1");
  CHECK(list.json()["events"][0]["last_error"] == "payload is not an order");

  auto show = cli(url, {"inbox", "dead-letters", "show", "ev-2"}, env);
  REQUIRE(show.code == 0);
  CHECK(show.json()["key"]["data"] == "acct-2");
  CHECK(show.json()["payload"]["data"] == "{}");

  // Unknown references change nothing and say so.
  CHECK(cli(url, {"inbox", "dead-letters", "requeue", "ev-3"}, env).code == 1);  // kExitFailure: not dead-lettered
  CHECK(cli(url, {"inbox", "dead-letters", "skip", "no-such-event"}, env).code == 1);  // kExitFailure
  CHECK(cli(url, {"inbox", "dead-letters", "requeue"}, env).code == 64);  // kExitUsage
  CHECK(scalar(url, "SELECT count(*) FROM inbox_events WHERE dead_lettered_at IS NOT NULL") == 2);

  // Skip one: its account flows; requeue the other: pending again with attempts reset.
  REQUIRE(cli(url, {"inbox", "dead-letters", "skip", "ev-1"}, env).code == 0);
  CHECK(scalar(url, "SELECT count(*) FROM inbox_events WHERE event_id = 'ev-1' AND processed_at IS NOT NULL") == 1);
  // A skipped event is done: requeueing it is refused, its record (error, dead-lettered at) kept.
  CHECK(cli(url, {"inbox", "dead-letters", "requeue", "ev-1"}, env).code == 1);  // kExitFailure
  CHECK(scalar(url, "SELECT count(*) FROM inbox_events WHERE event_id = 'ev-1' AND dead_lettered_at IS NOT NULL") == 1);
  REQUIRE(cli(url, {"inbox", "dead-letters", "requeue", "--all"}, env).code == 0);
  CHECK(scalar(url, "SELECT count(*) FROM inbox_events WHERE event_id = 'ev-2' AND dead_lettered_at IS NULL "
                    "AND attempts = 0") == 1);
  auto after = cli(url, {"inbox", "status", "--json"}, env).json();
  CHECK(after["dead_lettered"] == 0);
  CHECK(after["held_back"] == 0);
  CHECK(after["pending"] == 8);
  // Another inbox in the same table is another name: it sees none of this.
  CHECK(cli(url, {"inbox", "status", "--json"}, {{"OUTBOX_RELAY_INBOX_NAME", "other"}}).json()["rows"] == 0);
}
