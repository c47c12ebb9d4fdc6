// The inbox's SQL API from other languages: the shipped Python (psycopg2) and Node (pg) workers
// in schema/examples on one inbox, one of each language SIGKILLed mid-run, with poison events whose
// aggregates must wait. Checked from the service's own tables: every good event's effect once,
// in each account's order, the poison dead-lettered with a reason and what is behind it held.
#include <catch2/catch.hpp>

#include <pqxx/pqxx>

#include <signal.h>

#include <chrono>
#include <map>
#include <optional>
#include <random>
#include <thread>

#include "tests/e2e/child_process.hpp"
#include "tests/integration/pg_fixture.hpp"
#include "tests/support/eventually.hpp"

using namespace outbox::test;
using namespace std::chrono_literals;

namespace {

const std::string kExamples = std::string(OUTBOX_SOURCE_DIR) + "/schema/examples";

}  // namespace

TEST_CASE("Python and Node workers through the SQL API: effects once and in order, a worker killed, poison held",
          "[pg][inbox][examples]") {
  const auto url = fresh_database();
  exec(url, "CREATE TABLE example_balances (account text PRIMARY KEY, balance bigint NOT NULL)");
  // applied_by (the test's, not the example's): which worker's session wrote the line.
  exec(url, "CREATE TABLE example_ledger (id bigserial PRIMARY KEY, event_id text NOT NULL, account text NOT NULL, "
            "amount bigint NOT NULL, seq bigint NOT NULL, "
            "applied_by text NOT NULL DEFAULT current_setting('application_name'))");

  // 5,000 events over 30 accounts (one partition each of three), amounts from the seed; two
  // poison events (not JSON; a tombstone) each with events of its account behind it. They land
  // in three phases: the first only Python workers see, the second only Node workers, the third
  // both at once. So each language's share is known by construction, not by which one started
  // faster (under load the Node workers once drained everything before Python had connected).
  const auto seed = static_cast<unsigned>(std::random_device{}());
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  std::map<std::string, long> expected;
  std::map<int, long> offsets;
  int next_event = 0;
  auto land = [&](int count, bool with_poison) {
    pqxx::connection c(url);
    pqxx::work tx(c);
    auto add = [&](const std::string& id, const std::string& account, std::optional<std::string> payload) {
      const int partition = static_cast<int>(std::hash<std::string>{}(account) % 3);
      tx.exec_params("INSERT INTO inbox_events (inbox, event_id, topic, partition, \"offset\", key, event_type, payload) "
                     "VALUES ('payments', $1, 'outbox.event.account', $2, $3, convert_to($4::text, 'UTF8'), 'Moved', "
                     "convert_to($5::text, 'UTF8'))",
                     id, partition, offsets[partition]++, account, payload);
    };
    for (int i = 0; i < count; ++i, ++next_event) {
      const std::string account = "acct-" + std::to_string(rng() % 30);
      const long amount = static_cast<long>(rng() % 1000) - 300;
      expected[account] += amount;
      add("ev-" + std::to_string(next_event), account,
          "{\"account\": \"" + account + "\", \"amount\": " + std::to_string(amount) + "}");
    }
    if (with_poison) {
      add("poison-1", "acct-poison-a", std::string("not json at all"));
      add("behind-1a", "acct-poison-a", std::string("{\"account\": \"acct-poison-a\", \"amount\": 1}"));
      add("behind-1b", "acct-poison-a", std::string("{\"account\": \"acct-poison-a\", \"amount\": 2}"));
      add("poison-2", "acct-poison-b", std::nullopt);
      add("behind-2a", "acct-poison-b", std::string("{\"account\": \"acct-poison-b\", \"amount\": 3}"));
    }
    tx.commit();
  };

  auto python = [&](const std::string& name) {
    return std::make_unique<ChildProcess>("/usr/bin/python3",
                                          std::vector<std::string>{kExamples + "/inbox_worker.py", "--dsn", url,
                                                                   "--inbox", "payments", "--batch", "50", "--drain"},
                                          std::map<std::string, std::string>{},
                                          "/tmp/outbox-inbox-example-py-" + name + "-" + std::to_string(::getpid()) +
                                              ".log");
  };
  auto node = [&](const std::string& name) {
    return std::make_unique<ChildProcess>("/usr/bin/env",
                                          std::vector<std::string>{"node", kExamples + "/inbox_worker.mjs", "--dsn", url,
                                                                   "--inbox", "payments", "--batch", "50", "--drain"},
                                          std::map<std::string, std::string>{},
                                          "/tmp/outbox-inbox-example-node-" + name + "-" + std::to_string(::getpid()) +
                                              ".log");
  };
  auto lines = [&] { return scalar(url, "SELECT count(*) FROM example_ledger"); };
  // One worker of a phase is killed once the phase has seen some work: whatever its open
  // transaction held is claimed again by the other.
  auto run_phase = [&](std::unique_ptr<ChildProcess> victim, std::unique_ptr<ChildProcess> survivor, long kill_at) {
    REQUIRE(eventually([&] { return lines() >= kill_at; }, 60s));
    victim->signal(SIGKILL);
    (void)victim->wait(10s);
    const auto code = survivor->wait(120s);
    INFO(survivor->output());
    CHECK(code == std::optional<int>(0));
  };

  land(2000, true);
  run_phase(python("victim"), python("a"), 300);
  land(2000, false);
  run_phase(node("victim"), node("a"), 2300);
  land(1000, false);
  {
    auto py = python("b");
    auto js = node("b");
    for (auto* w : {py.get(), js.get()}) {
      const auto code = w->wait(120s);
      INFO(w->output());
      CHECK(code == std::optional<int>(0));
    }
  }

  pqxx::connection c(url);
  pqxx::nontransaction tx(c);
  // Every good event once; nothing of the poisoned accounts.
  CHECK(scalar(url, "SELECT count(*) FROM example_ledger") == 5000);
  CHECK(scalar(url, "SELECT count(DISTINCT event_id) FROM example_ledger") == 5000);
  CHECK(scalar(url, "SELECT count(*) FROM example_ledger WHERE account LIKE 'acct-poison%'") == 0);
  // Each language applied at least its own phase, and no good event needed a second attempt (a
  // worker whose every call fails would otherwise hide behind the others).
  CHECK(scalar(url, "SELECT count(*) FROM example_ledger WHERE applied_by = 'inbox-worker-python'") >= 2000);
  CHECK(scalar(url, "SELECT count(*) FROM example_ledger WHERE applied_by = 'inbox-worker-node'") >= 2000);
  CHECK(scalar(url, "SELECT count(*) FROM inbox_events WHERE attempts > 0 AND event_id NOT LIKE 'poison%'") == 0);
  // Each account's lines in its events' order (ledger ids follow the balance row's lock).
  CHECK(scalar(url, "SELECT count(*) FROM (SELECT seq < lag(seq) OVER (PARTITION BY account ORDER BY id) AS back "
                    "FROM example_ledger) l WHERE back") == 0);
  for (const auto& [account, sum] : expected) {
    INFO(account);
    CHECK(tx.exec_params("SELECT balance FROM example_balances WHERE account = $1", account)[0][0].as<long>() == sum);
  }
  // The poison: dead-lettered with the worker's reason; what is behind it held, unprocessed.
  auto dead = tx.exec("SELECT event_id, last_error FROM inbox_events WHERE dead_lettered_at IS NOT NULL ORDER BY seq");
  REQUIRE(dead.size() == 2);
  CHECK(dead[0][0].as<std::string>() == "poison-1");
  CHECK_THAT(dead[0][1].as<std::string>(), Catch::Contains("payload is not"));
  CHECK(dead[1][0].as<std::string>() == "poison-2");
  auto backlog = tx.exec("SELECT pending, retrying, dead_lettered, held_back FROM inbox_backlog('payments')")[0];
  CHECK(backlog[0].as<long>() == 0);
  CHECK(backlog[1].as<long>() == 0);
  CHECK(backlog[2].as<long>() == 2);
  CHECK(backlog[3].as<long>() == 3);
  CHECK(scalar(url, "SELECT count(*) FROM inbox_events WHERE processed_at IS NULL") == 5);

  // An operator skips one poison event: its account flows again, in order, once.
  CHECK(scalar(url, "SELECT count(*) FROM inbox_skip('payments', ARRAY[(SELECT seq FROM inbox_events "
                    "WHERE event_id = 'poison-1')])") == 1);
  auto again = python("after-skip");
  CHECK(again->wait(60s) == std::optional<int>(0));
  CHECK(scalar(url, "SELECT count(*) FROM example_ledger WHERE account = 'acct-poison-a'") == 2);
  CHECK(scalar(url, "SELECT balance FROM example_balances WHERE account = 'acct-poison-a'") == 3);
}
