// Lanes in PostgreSQL: PgLeaseStore's leases (one owner per lane, renewal, expiry by the
// database clock, takeover, release, hints) and PgOutboxStore's lane filter and fencing.
#include <catch2/catch.hpp>

#include <chrono>
#include <set>
#include <thread>

#include "relay/pg/pg_lease_store.hpp"
#include "relay/pg/pg_outbox_store.hpp"
#include "tests/e2e/delivery_check.hpp"
#include "tests/integration/pg_fixture.hpp"

using namespace outbox;
using namespace outbox::relay;
using namespace outbox::relay::pg;
using namespace std::chrono_literals;

namespace {

PgLeaseStore leases_for(const std::string& url, const std::string& instance) {
  return PgLeaseStore({harden_conninfo(url, "outbox-relay-test", 5'000), "public", instance, "test-host", 42});
}

PgOutboxStore fenced_store(const std::string& url, const std::string& owner) {
  return PgOutboxStore({harden_conninfo(url, "outbox-relay-test", 10'000), "public", MarkMode::update, 2000, owner});
}

std::set<int> lanes_of(const std::vector<LaneLease>& leases) {
  std::set<int> s;
  for (const auto& l : leases) s.insert(l.lane);
  return s;
}

}  // namespace

TEST_CASE("leases: one owner per lane, renewal, expiry by the database clock, takeover and release",
          "[pg][lanes]") {
  auto url = test::fresh_database();
  auto a = leases_for(url, "a");
  auto b = leases_for(url, "b");
  auto joined = a.renew({}, 10s);
  CHECK(joined.live == std::vector<std::string>{"a"});
  CHECK(joined.lane_count == kLaneCount);
  CHECK(joined.held.empty());
  auto first = a.acquire(kLaneCount, 10s);
  REQUIRE(first.size() == kLaneCount);
  for (const auto& l : first) CHECK(l.epoch == 1);

  auto b_joined = b.renew({}, 10s);
  CHECK(b_joined.live.size() == 2);
  CHECK(a.await_change(2s));           // a is told that b joined
  CHECK(b.acquire(32, 10s).empty());   // nothing free: a's leases are valid

  std::vector<int> upper;
  for (int lane = 32; lane < 64; ++lane) upper.push_back(lane);
  auto renewed = a.renew(upper, 10s);  // hands the upper half back, renews the rest
  CHECK(lanes_of(renewed.held).size() == 32);
  CHECK(*lanes_of(renewed.held).rbegin() == 31);
  CHECK(b.await_change(2s));
  auto taken = b.acquire(32, 10s);
  REQUIRE(lanes_of(taken) == std::set<int>(upper.begin(), upper.end()));
  for (const auto& l : taken) CHECK(l.epoch == 2);  // a new epoch: a fencing token
  CHECK(test::scalar(url, "SELECT count(DISTINCT owner) FROM outbox_relay_lanes WHERE lease_until > now()") == 2);

  // a stops renewing with a short lease; b takes a's lanes once it expired, not before.
  (void)a.renew({}, 1500ms);
  CHECK(b.acquire(64, 10s).empty());
  REQUIRE(test::eventually([&] { return !b.acquire(64, 10s).empty(); }, 10s));
  CHECK(test::scalar(url, "SELECT count(*) FROM outbox_relay_lanes WHERE owner = 'b' AND lease_until > now()") == 64);
  auto late = a.renew({}, 10s);  // a comes back: its expired leases are not renewed
  CHECK(late.held.empty());

  b.leave();
  CHECK(test::scalar(url, "SELECT count(*) FROM outbox_relay_lanes WHERE owner IS NOT NULL") == 0);
  CHECK(test::scalar(url, "SELECT count(*) FROM outbox_relay_instances WHERE instance = 'b'") == 0);
  CHECK(a.await_change(2s));
  CHECK(a.acquire(64, 10s).size() == 64);  // at once, no expiry to wait for
}

TEST_CASE("two instances acquiring at the same moment take disjoint lanes", "[pg][lanes]") {
  auto url = test::fresh_database();
  std::vector<LaneLease> got_a, got_b;
  {
    auto a = leases_for(url, "a");
    auto b = leases_for(url, "b");
    (void)a.renew({}, 10s);
    (void)b.renew({}, 10s);
    std::thread ta([&] {
      for (int i = 0; i < 8; ++i) {
        auto l = a.acquire(8, 10s);
        got_a.insert(got_a.end(), l.begin(), l.end());
      }
    });
    std::thread tb([&] {
      for (int i = 0; i < 8; ++i) {
        auto l = b.acquire(8, 10s);
        got_b.insert(got_b.end(), l.begin(), l.end());
      }
    });
    ta.join();
    tb.join();
  }
  CHECK(got_a.size() + got_b.size() == 64);
  auto la = lanes_of(got_a), lb = lanes_of(got_b);
  for (int lane : la) CHECK_FALSE(lb.contains(lane));
}

TEST_CASE("the store fetches only the lanes asked for and marks only rows of lanes it holds", "[pg][lanes][store]") {
  auto url = test::fresh_database();
  test::insert_events(url, 200, 40);
  auto leases = leases_for(url, "a");
  (void)leases.renew({}, 10s);
  REQUIRE(leases.acquire(64, 10s).size() == 64);
  auto store = fenced_store(url, "a");

  auto all = store.fetch({1000, std::nullopt, {}});
  REQUIRE(all.size() == 200);
  for (const auto& e : all)
    CHECK(e.lane == test::scalar(url, "SELECT outbox_lane('" + e.aggregate_type + "', '" + e.aggregate_id + "')"));
  std::vector<int> some{all[0].lane, all[1].lane};
  auto filtered = store.fetch({1000, std::nullopt, {}, some});
  REQUIRE_FALSE(filtered.empty());
  CHECK(filtered.size() < all.size());
  for (const auto& e : filtered) CHECK((e.lane == some[0] || e.lane == some[1]));

  // Lose the lane of the first row (its lease expired): marks and failures there match nothing.
  const int lost = all[0].lane;
  test::exec(url, "UPDATE outbox_relay_lanes SET lease_until = now() - interval '1 second' WHERE lane = " +
                      std::to_string(lost));
  std::vector<std::int64_t> seqs;
  std::vector<FailedAttempt> failures;
  for (const auto& e : all) {
    if (e.lane == lost)
      failures.push_back({e.seq, "fenced", 1, 1000ms, false});
    else
      seqs.push_back(e.seq);
  }
  seqs.push_back(all[0].seq);  // of the lost lane
  store.mark_published(seqs);
  store.record_failures(failures);
  const long in_lost = test::scalar(url, "SELECT count(*) FROM outbox_events WHERE outbox_lane(aggregate_type, aggregate_id) = " +
                                             std::to_string(lost));
  CHECK(test::scalar(url, "SELECT count(*) FROM outbox_events WHERE published_at IS NOT NULL") == 200 - in_lost);
  CHECK(test::scalar(url, "SELECT count(*) FROM outbox_events WHERE published_at IS NULL AND attempts = 0") == in_lost);
  CHECK(store.marks_unmatched() == 1);

  // Another instance owning the lane is not fenced.
  auto other = leases_for(url, "b");
  (void)other.renew({}, 10s);
  REQUIRE(lanes_of(other.acquire(64, 10s)) == std::set<int>{lost});
  auto store_b = fenced_store(url, "b");
  std::vector<std::int64_t> lost_seqs;
  for (const auto& e : all)
    if (e.lane == lost) lost_seqs.push_back(e.seq);
  store_b.mark_published(lost_seqs);
  CHECK(test::scalar(url, "SELECT count(*) FROM outbox_events WHERE published_at IS NULL") == 0);
}
