// Database trouble under a steady stream: the relay's sessions terminated again and again
// (mid-batch, at random moments), and PostgreSQL itself stopped like a crash and started
// again. The relay reconnects with backoff and resumes; nothing is lost, no attempt burnt.
#include <catch2/catch.hpp>

#include "tests/drills/drill_harness.hpp"
#include "tests/integration/pg_fixture.hpp"

using namespace outbox::test;
using namespace outbox::test::drill;
using namespace std::chrono_literals;

TEST_CASE("the relay's sessions are terminated 20 times at random moments: it reconnects and loses nothing",
          "[drill][database]") {
  Drill d("relay sessions terminated 20 times");
  // A broker 50 ms away keeps each batch on the wire a while, so terminations land between a
  // batch's fetch and its mark too.
  rd_kafka_mock_broker_set_rtt(d.kafka.cluster(), 1, 50);
  d.warm_up();
  std::uniform_int_distribution<int> gap_ms(100, 700);
  long terminated = 0;
  for (int i = 0; i < 20; ++i) {
    d.hold(Millis(gap_ms(d.rng)));
    terminated += scalar(d.url, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                "WHERE application_name LIKE 'outbox-relay%'");
  }
  auto recovery = d.recover();
  const double reconnects = d.metric("outbox_relay_database_reconnects_total");
  d.finish(recovery, std::to_string(terminated) + " sessions terminated, " +
                         std::to_string(static_cast<long>(reconnects)) + " store reconnects");
  CHECK(reconnects >= 10);  // the store session was among those terminated, again and again
}

TEST_CASE("PostgreSQL stopped like a crash for 6 s and started again: the relay backs off, resumes, loses nothing",
          "[drill][database]") {
  // Durable commits, so the crash-like stop loses no row a producer saw committed (the
  // verifier's ground truth is the table).
  PgCluster cluster({{"synchronous_commit=on"}});
  Drill d("PostgreSQL down 6 s (immediate stop)", 1, &cluster);
  d.warm_up();
  REQUIRE(eventually([&] { return d.readyz() == 200; }, 20s));
  const double transient_before = d.metric("outbox_relay_transient_errors_total");

  cluster.stop(true);
  const auto fault_end = std::chrono::steady_clock::now() + 6s;
  bool not_ready = false;
  while (std::chrono::steady_clock::now() < fault_end) {
    not_ready = not_ready || d.readyz() == 503;
    d.hold(200ms);
  }
  const double transient_during = d.metric("outbox_relay_transient_errors_total") - transient_before;
  cluster.start();

  auto recovery = d.recover();
  CHECK(eventually([&] { return d.readyz() == 200; }, 20s));
  d.finish(recovery, std::to_string(static_cast<long>(transient_during)) + " failed steps while down, " +
                         std::to_string(d.stream->failed()) + " producer commits refused");
  CHECK(not_ready);
  // Backoff, not a hot loop: 100 ms doubling to 10 s gives about 6 failed steps in 6 s.
  CHECK(transient_during >= 1);
  CHECK(transient_during <= 20);
}
