// Lanes and leases: the fair share, the keeper's renew/acquire/hand-back rounds against an
// in-memory lease table, the local deadline that stops a paused instance, and the relay
// publishing only the lanes it holds. No database, no sleeping.
#include <catch2/catch.hpp>

#include <map>
#include <memory>
#include <numeric>

#include "relay/core/readiness.hpp"
#include "relay/core/relay.hpp"
#include "tests/unit/fakes.hpp"
#include "tests/unit/lease_fakes.hpp"

using namespace outbox::relay;
using namespace outbox::relay::test;
using namespace std::chrono_literals;

namespace {

LeaseOptions lease_options() {
  LeaseOptions o;
  o.ttl = 10s;
  o.renew_interval = 3s;
  o.safety_margin = 1s;
  return o;
}

struct Member {
  Member(FakeLeaseTable& table, const ManualClock& clock, const std::string& name)
      : ownership(name, 64), store(table, name), keeper(ownership, store, clock, logger, lease_options(), stats) {}
  Ownership ownership;
  FakeLeaseStore store;
  NullLogger logger;
  LeaseStats stats;
  LeaseKeeper keeper;
  // What the relay does at its next head scan: lanes being handed back have drained.
  void relay_head_scan(Clock::time_point now) { ownership.report_drained(ownership.view(now).handing_back); }
};

}  // namespace

TEST_CASE("fair share: every lane assigned once, shares differ by at most one, same split everywhere", "[lanes]") {
  std::vector<std::string> live{"c", "a", "b"};
  std::vector<int> shares;
  for (const auto& me : live) shares.push_back(fair_share(64, live, me));
  CHECK(std::accumulate(shares.begin(), shares.end(), 0) == 64);
  CHECK(fair_share(64, live, "a") == 22);
  CHECK(fair_share(64, live, "b") == 21);
  CHECK(fair_share(64, live, "c") == 21);
  CHECK(fair_share(64, {}, "a") == 64);               // not yet listed: counts itself
  CHECK(fair_share(64, {"a", "a"}, "a") == 64);       // listed twice: once
  std::vector<std::string> many;
  for (int i = 0; i < 100; ++i) many.push_back("i" + std::to_string(1000 + i));
  int total = 0;
  for (const auto& me : many) total += fair_share(64, many, me);
  CHECK(total == 64);  // more instances than lanes: 64 hold one each, the rest are spares
  CHECK(fair_share(64, many, "i1099") == 0);
}

TEST_CASE("a lone instance takes every lane, a second one gets half without a stop", "[lanes]") {
  ManualClock clock;
  FakeLeaseTable table(clock);
  Member a(table, clock, "a");
  REQUIRE(a.keeper.tick());
  CHECK(table.held_by("a") == 64);
  CHECK(a.ownership.view(clock.now()).all);
  CHECK(a.stats.fair_share == 64);

  Member b(table, clock, "b");
  REQUIRE(b.keeper.tick());  // joins; nothing free yet
  CHECK(table.held_by("b") == 0);
  CHECK(table.changes > 0);  // the others are told at once

  REQUIRE(a.keeper.tick());  // sees two live instances: hands 32 back, still publishing the rest
  auto view = a.ownership.view(clock.now());
  CHECK(view.lanes.size() == 32);
  CHECK(view.handing_back.size() == 32);
  CHECK_FALSE(a.ownership.publishable(view.handing_back.front(), clock.now()));
  CHECK(table.held_by("a") == 64);  // not released before the relay drained them

  a.relay_head_scan(clock.now());
  REQUIRE(a.keeper.tick());
  CHECK(table.held_by("a") == 32);
  CHECK(a.stats.released_total == 32);
  REQUIRE(b.keeper.tick());
  CHECK(table.held_by("b") == 32);
  CHECK(b.ownership.view(clock.now()).lanes.size() == 32);
  for (int lane = 0; lane < 64; ++lane)  // one owner per lane
    CHECK(static_cast<bool>(a.ownership.publishable(lane, clock.now())) !=
          static_cast<bool>(b.ownership.publishable(lane, clock.now())));
}

TEST_CASE("a dead instance's lanes pass to the survivors one lease after its last renewal", "[lanes]") {
  ManualClock clock;
  FakeLeaseTable table(clock);
  Member a(table, clock, "a"), b(table, clock, "b");
  a.keeper.tick();
  b.keeper.tick();
  a.keeper.tick();
  a.relay_head_scan(clock.now());
  a.keeper.tick();
  b.keeper.tick();
  REQUIRE(table.held_by("a") == 32);
  REQUIRE(table.held_by("b") == 32);

  // a dies (no more renewals); b renews every 3 s.
  for (int i = 0; i < 3; ++i) {
    clock.advance(3s);
    b.keeper.tick();
    CHECK(table.held_by("b") == 32);  // a's leases still valid: nobody publishes them twice
  }
  clock.advance(2s);  // 11 s after a's last renewal: expired, and a is no longer live
  b.keeper.tick();
  CHECK(table.held_by("b") == 64);
  CHECK(b.stats.live_instances == 1);
  CHECK(b.stats.acquired_total == 64);
}

TEST_CASE("a paused instance stops publishing by its own clock before its lease expires, and rejoins", "[lanes]") {
  ManualClock clock;
  FakeLeaseTable table(clock);
  Member a(table, clock, "a");
  a.keeper.tick();
  const auto epoch_before = *a.ownership.publishable(5, clock.now());

  clock.advance(9s);  // ttl 10 s, margin 1 s: no longer publishable locally
  CHECK_FALSE(a.ownership.publishable(5, clock.now()));
  CHECK(a.ownership.view(clock.now()).lanes.empty());
  CHECK(table.owner_at_now(5) == "a");  // the store still has it for another second

  clock.advance(20s);  // paused long past the lease; meanwhile b took everything
  Member b(table, clock, "b");
  b.keeper.tick();
  REQUIRE(table.held_by("b") == 64);

  a.keeper.tick();  // resumes: its renewal finds nothing, it counts the loss, asks for its share
  CHECK(a.stats.lost_total == 64);
  CHECK(table.held_by("a") == 0);
  CHECK(a.ownership.view(clock.now()).lanes.empty());
  b.keeper.tick();
  b.relay_head_scan(clock.now());
  b.keeper.tick();
  a.keeper.tick();
  CHECK(table.held_by("a") == 32);
  // Lanes it had before come back under a new epoch (a fencing token).
  for (int lane : a.ownership.view(clock.now()).lanes) CHECK(*a.ownership.publishable(lane, clock.now()) > epoch_before);
}

TEST_CASE("the store away: nothing is published from the failed renewal on, the lanes come back with the next one",
          "[lanes]") {
  // A failed call may have cost the instance its id (the store's session and its lock): a
  // restarted process of the same id may take the lanes over at once, so this one stops.
  ManualClock clock;
  FakeLeaseTable table(clock);
  Member a(table, clock, "a");
  a.keeper.tick();
  REQUIRE(a.ownership.publishable(0, clock.now()));
  a.store.fail = true;
  clock.advance(3s);
  CHECK_FALSE(a.keeper.tick());
  CHECK(a.stats.renew_failures_total == 1);
  CHECK_FALSE(a.ownership.publishable(0, clock.now()));  // 3 s into a 10 s lease, still stopped
  CHECK(a.ownership.held_count(clock.now()) == 0);
  CHECK(a.keeper.renewed_within(4s));
  clock.advance(6s);
  CHECK_FALSE(a.keeper.renewed_within(4s));
  a.store.fail = false;
  CHECK(a.keeper.tick());  // back before anyone took them: renewed only if still valid
  CHECK(table.held_by("a") == 64);
  CHECK(a.ownership.publishable(0, clock.now()));
}

TEST_CASE("the store away: an instance whose renewal failed is not ready, though its lane-less steps succeed",
          "[lanes][relay]") {
  // The failed renewal drops every lane, so the relay's next steps touch nothing and pass as
  // a spare's; readiness must still say the database is away (a drill stopped PostgreSQL for
  // 6 s and /readyz stayed 200 throughout).
  ManualClock clock;
  FakeLeaseTable table(clock);
  Member a(table, clock, "a");
  FakeOutboxStore store{clock};
  FakePublisher publisher;
  RelayStats stats;
  Relay relay(store, publisher, clock, MessageBuilder({}), RelayOptions{}, stats, &a.ownership);
  store.add("x");
  a.keeper.tick();
  (void)relay.step();
  REQUIRE(store.published_count() == 1);
  CHECK(instance_ready(stats, a.keeper, clock.now(), 10s, 10s));

  a.store.fail = true;
  clock.advance(1s);
  CHECK_FALSE(a.keeper.tick());
  store.add("x");
  auto r = relay.step();
  CHECK(r.kind == StepKind::idle);
  CHECK(store.published_count() == 1);
  CHECK(stats.last_step_ok);
  CHECK_FALSE(instance_ready(stats, a.keeper, clock.now(), 10s, 10s));

  a.store.fail = false;
  clock.advance(1s);
  CHECK(a.keeper.tick());
  (void)relay.step();
  CHECK(store.published_count() == 2);
  CHECK(instance_ready(stats, a.keeper, clock.now(), 10s, 10s));
}

TEST_CASE("leaving hands every lane back at once", "[lanes]") {
  ManualClock clock;
  FakeLeaseTable table(clock);
  Member a(table, clock, "a"), b(table, clock, "b");
  a.keeper.tick();
  b.keeper.tick();
  a.keeper.leave();
  CHECK(table.held_by("a") == 0);
  CHECK_FALSE(a.ownership.publishable(0, clock.now()));
  b.keeper.tick();
  CHECK(table.held_by("b") == 64);  // no wait for expiry
}

TEST_CASE("bad lease timings are refused with the key named", "[lanes]") {
  ManualClock clock;
  FakeLeaseTable table(clock);
  Ownership own("a", 64);
  FakeLeaseStore store(table, "a");
  NullLogger logger;
  LeaseStats stats;
  auto o = lease_options();
  o.renew_interval = 5s;  // two renewals would not fit in ttl - margin
  CHECK_THROWS_WITH(LeaseKeeper(own, store, clock, logger, o, stats), Catch::Contains("ownership.renew_interval_ms"));
}

namespace {

struct LaneRelay {
  ManualClock clock;
  FakeOutboxStore store{clock};
  FakePublisher publisher;
  RelayStats stats;
  Ownership ownership{"me", 4};
  std::unique_ptr<Relay> relay;
  explicit LaneRelay(RelayOptions options = {}) {
    // Aggregate "a<n>" lives in lane n.
    store.lane_of = [](const OutboxEvent& e) { return std::stoi(e.aggregate_id.substr(1)); };
    options.batch_size = 100;
    relay = std::make_unique<Relay>(store, publisher, clock, MessageBuilder({}), options, stats, &ownership);
  }
  void hold(std::vector<LaneLease> lanes, std::vector<int> hand_back = {}) {
    ownership.update(std::move(lanes), clock.now() + 9s, std::move(hand_back));
  }
};

}  // namespace

TEST_CASE("the relay fetches and publishes only the lanes it holds", "[lanes][relay]") {
  LaneRelay f;
  for (int i = 0; i < 8; ++i) f.store.add("a" + std::to_string(i % 4));
  f.hold({{1, 7}, {3, 2}});
  auto r = f.relay->step();
  REQUIRE(f.store.fetch_requests.size() == 1);
  CHECK(f.store.fetch_requests[0].lanes == std::optional<std::vector<int>>(std::vector<int>{1, 3}));
  CHECK(r.published == 4);
  for (const auto& m : f.publisher.log) CHECK((m.key == "a1" || m.key == "a3"));

  f.hold({{0, 1}, {1, 7}, {2, 1}, {3, 2}});  // every lane: no filter
  (void)f.relay->step();
  CHECK_FALSE(f.store.fetch_requests.back().lanes);
  CHECK(f.store.published_count() == 8);
}

TEST_CASE("holding no lane: no fetch at all, idle", "[lanes][relay]") {
  LaneRelay f;
  f.store.add("a0");
  auto r = f.relay->step();
  CHECK(r.kind == StepKind::idle);
  CHECK(f.store.fetches == 0);
  CHECK(f.publisher.sends == 0);
}

TEST_CASE("a lease lapsing while a batch is read stops its sends, nothing is marked for them", "[lanes][relay]") {
  LaneRelay f;
  for (int i = 0; i < 6; ++i) f.store.add("a" + std::to_string(i % 2));
  f.hold({{0, 1}, {1, 1}});
  // Lane 1's lease goes (a renewal found it taken) once the batch is being sent.
  f.publisher.refuse = [&](const Message&) -> std::optional<DeliveryResult> {
    f.ownership.update({{0, 1}}, f.clock.now() + 9s, {});  // from the first send on, lane 1 is gone
    return std::nullopt;
  };
  (void)f.relay->step();
  for (const auto& m : f.publisher.log) CHECK(m.key == "a0");
  CHECK(f.stats.not_owned_total >= 2);
  for (const auto& [seq, row] : f.store.rows())
    CHECK(row.published == (row.event.aggregate_id == "a0"));

  f.clock.advance(10s);  // past the local deadline: nothing at all
  f.store.add("a0");
  const auto sends = f.publisher.sends;
  (void)f.relay->step();
  CHECK(f.publisher.sends == sends);
}

TEST_CASE("lanes being handed back are not sent and are reported drained at the next head scan", "[lanes][relay]") {
  LaneRelay f;
  for (int i = 0; i < 4; ++i) f.store.add("a" + std::to_string(i));
  f.hold({{0, 1}, {1, 1}, {2, 1}, {3, 1}}, {2, 3});
  (void)f.relay->step();
  for (const auto& m : f.publisher.log) CHECK((m.key == "a0" || m.key == "a1"));
  CHECK(f.store.fetch_requests[0].lanes == std::optional<std::vector<int>>(std::vector<int>{0, 1}));
  auto drained = f.ownership.take_drained();
  std::sort(drained.begin(), drained.end());
  CHECK(drained == std::vector<int>{2, 3});
}

TEST_CASE("the publisher header names instance, lane and epoch", "[lanes][relay]") {
  RelayOptions o;
  o.publisher_header = "relay";
  LaneRelay f(o);
  f.store.add("a2");
  f.hold({{2, 41}});
  (void)f.relay->step();
  REQUIRE(f.publisher.log.size() == 1);
  std::string value;
  for (const auto& [k, v] : f.publisher.log[0].headers)
    if (k == "relay") value = v.value_or("");
  CHECK(value == "me lane=2 epoch=41");
}

// The keeper renews on its own thread: between the relay's per-message lease checks, a lapsed
// lease can become valid again. An aggregate whose first event was not sent must not have its
// next one sent in the same batch (a first delivery out of order).
TEST_CASE("an event not sent for a lapsed lease holds back its aggregate's later events in the batch even if the "
          "lease is renewed meanwhile",
          "[lanes][relay][order]") {
  LaneRelay f;
  f.store.add("a1");  // sent; its send lets the lease lapse
  f.store.add("a0");  // checked while lapsed: not sent
  f.store.add("a0");  // checked after the renewal landed
  f.hold({{0, 5}, {1, 5}});
  int readings_after_lapse = -1;
  f.publisher.refuse = [&](const Message& m) -> std::optional<DeliveryResult> {
    if (m.key == "a1") {
      f.ownership.update({{0, 5}, {1, 5}}, f.clock.now() - 1ms, {});
      readings_after_lapse = 0;
    }
    return std::nullopt;
  };
  f.clock.on_now = [&] {
    if (readings_after_lapse >= 0 && ++readings_after_lapse == 2)
      f.ownership.update({{0, 5}, {1, 5}}, f.clock.now() + 9s, {});
  };
  (void)f.relay->step();
  f.clock.on_now = nullptr;
  for (const auto& m : f.publisher.log) CHECK(m.key != "a0");
  // The next head scan sends both, in order.
  f.publisher.refuse = nullptr;
  f.clock.advance(1s);
  for (int i = 0; i < 5; ++i) (void)f.relay->step();
  std::vector<std::string> a0;
  for (const auto& m : f.publisher.log)
    if (m.key == "a0") a0.push_back(FakePublisher::id_of(m));
  REQUIRE(a0.size() == 2);
  CHECK(a0[0] < a0[1]);
}
