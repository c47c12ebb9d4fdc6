// Contract 2 against PostgreSQL's real visibility rules: an event written after an earlier
// event of its aggregate committed is never delivered before it, whatever the relay is doing
// (reading ahead of its last batch, rescanning, replaying). The relay core drives the real
// store; a recording publisher acknowledges at once, so the order it saw is the order a
// consumer would read.
#include <catch2/catch.hpp>

#include <pqxx/pqxx>

#include <map>
#include <set>

#include "relay/core/relay.hpp"
#include "relay/pg/pg_admin.hpp"
#include "relay/pg/pg_outbox_store.hpp"
#include "tests/integration/pg_fixture.hpp"
#include "tests/unit/fakes.hpp"

using namespace outbox;
using namespace outbox::relay;
using namespace std::chrono_literals;
namespace fake = outbox::relay::test;
namespace ot = outbox::test;

namespace {

struct Wired {
  std::string url = ot::fresh_database();
  fake::ManualClock clock;  // never advanced: the rescan deadline never comes by itself
  RelayStats stats;
  pg::PgOutboxStore store{{pg::harden_conninfo(url, "outbox-relay-test", 10'000), "public", pg::MarkMode::update}};
  fake::FakePublisher publisher;
  std::unique_ptr<Relay> relay;

  explicit Wired(std::size_t batch) {
    RelayOptions o;
    o.batch_size = batch;
    o.rescan_interval = 1h;
    relay = std::make_unique<Relay>(store, publisher, clock, MessageBuilder({}), o, stats);
  }
  // Steps until the outbox is drained (an idle step that fetched nothing).
  void drain(int max_steps = 10'000) {
    for (int i = 0; i < max_steps; ++i) {
      auto r = relay->step();
      REQUIRE(r.kind != StepKind::backoff);
      if (r.kind == StepKind::idle && r.fetched == 0) return;
    }
    FAIL("the relay did not drain");
  }
  // The order in which the publisher first saw each event of `aggregate`, as event ids.
  std::vector<std::string> first_deliveries(const std::string& aggregate) const {
    std::vector<std::string> out;
    std::set<std::string> seen;
    for (const auto& m : publisher.log)
      if (m.key == aggregate && seen.insert(fake::FakePublisher::id_of(m)).second)
        out.push_back(fake::FakePublisher::id_of(m));
    return out;
  }
};

std::string publish(pqxx::transaction_base& tx, const std::string& aggregate, const std::string& type) {
  return tx.exec_params("SELECT outbox_publish('order', $1, $2, '{}'::jsonb)::text", aggregate, type)[0][0]
      .as<std::string>();
}

void burst(const std::string& url, int rows) {
  pqxx::connection c(url);
  pqxx::work tx(c);
  tx.exec_params("INSERT INTO outbox_events (aggregate_type, aggregate_id, event_type, payload) "
                 "SELECT 'order', 'other-' || (g % 50), 'created', '\\x7b7d'::bytea FROM generate_series(1, $1) g",
                 rows);
  tx.commit();
}

}  // namespace

TEST_CASE("an event written after its aggregate's late commit is not delivered first while the relay reads ahead",
          "[pg][order]") {
  Wired w(10);
  // X's first event takes a low seq in a transaction that stays open while a burst commits.
  pqxx::connection slow(w.url);
  pqxx::work first_tx(slow);
  const std::string first = publish(first_tx, "x", "First");
  burst(w.url, 300);
  // The relay is busy: it reads the burst batch after batch, each read ahead of the last.
  for (int i = 0; i < 3; ++i) REQUIRE(w.relay->step().kind == StepKind::busy);
  first_tx.commit();
  // Causally after the first: written once the first committed.
  std::string second;
  {
    pqxx::connection c(w.url);
    pqxx::work tx(c);
    second = publish(tx, "x", "Second");
    tx.commit();
  }
  w.drain();
  CHECK(w.first_deliveries("x") == std::vector<std::string>{first, second});
  CHECK(ot::scalar(w.url, "SELECT count(*) FROM outbox_events WHERE published_at IS NULL") == 0);
}

TEST_CASE("events written after a replay committed are delivered after the replayed ones, even under load",
          "[pg][order]") {
  Wired w(10);
  std::vector<std::string> old;
  {
    pqxx::connection c(w.url);
    pqxx::work tx(c);
    for (int i = 0; i < 3; ++i) old.push_back(publish(tx, "x", "Old"));
    tx.commit();
  }
  w.drain();
  burst(w.url, 300);
  for (int i = 0; i < 3; ++i) REQUIRE(w.relay->step().kind == StepKind::busy);
  // An operator replays X's events while the relay is busy with the burst...
  pg::PgAdmin admin(w.url, "public", "outbox-relay-test");
  pg::ReplaySelector sel;
  sel.aggregate_type = "order";
  sel.aggregate_id = "x";
  REQUIRE(admin.replay(sel, 0, false).replayed == 3);
  // ...and then the service writes X's next event.
  std::string next;
  {
    pqxx::connection c(w.url);
    pqxx::work tx(c);
    next = publish(tx, "x", "Next");
    tx.commit();
  }
  w.drain();
  // Every delivery of X, in the order the broker got them: the replayed events, then the new one.
  std::vector<std::string> x;
  for (const auto& m : w.publisher.log)
    if (m.key == "x") x.push_back(fake::FakePublisher::id_of(m));
  std::vector<std::string> expected = old;
  expected.insert(expected.end(), old.begin(), old.end());
  expected.push_back(next);
  CHECK(x == expected);
}
