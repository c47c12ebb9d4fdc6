// Crashes under a steady stream: the relay SIGKILLed at random points of its drain and
// restarted, again and again; the consumer SIGKILLed after its database commits and before
// its offset commit, and restarted. Nothing is lost, order holds, every effect once.
#include <catch2/catch.hpp>

#include "tests/drills/drill_harness.hpp"
#include "tests/integration/pg_fixture.hpp"

using namespace outbox::test;
using namespace outbox::test::drill;
using namespace std::chrono_literals;

TEST_CASE("the relay is SIGKILLed 8 times at random 100-1500 ms intervals: nothing lost, every effect once",
          "[drill][crash]") {
  Drill d("relay SIGKILLed 8 times");
  // A backlog and a broker 50 ms away: the drain takes seconds and a batch spends its time on
  // the wire, so the kills land in the middle of the drain, some between acknowledgement and mark.
  d.prefill(10'000);
  rd_kafka_mock_broker_set_rtt(d.kafka.cluster(), 1, 50);
  d.start_consumer();
  d.warm_up();
  std::uniform_int_distribution<int> gap_ms(100, 1500);
  long unpublished_at_kills = 0;
  for (int i = 0; i < 8; ++i) {
    d.hold(Millis(gap_ms(d.rng)));
    d.kill_relay();
    unpublished_at_kills += d.count("published_at IS NULL");
    d.start_relay();
  }
  auto recovery = d.recover();
  d.finish(recovery, std::to_string(unpublished_at_kills / 8) + " rows unpublished at a kill on average");
  CHECK(unpublished_at_kills > 8 * 300);  // the kills interrupted the drain of the backlog
}

TEST_CASE("the consumer is SIGKILLed 3 times between its commits and its offset commit: every effect once",
          "[drill][crash]") {
  Drill d("consumer SIGKILLed 3 times");
  auto applied = [&] { return scalar(d.url, "SELECT count(*) FROM consumer_inbox WHERE consumer = 'balances'"); };
  // Offsets are committed every 10 minutes, that is never in this drill: everything a killed
  // consumer applied comes again to the next one, and its inbox must absorb it.
  d.start_consumer(600'000);
  d.warm_up();
  std::uniform_int_distribution<int> extra_ms(0, 1000);
  for (int i = 0; i < 3; ++i) {
    const long before = applied();
    REQUIRE(d.pump([&] { return applied() >= before + 300; }, 30s));
    d.hold(Millis(extra_ms(d.rng)));
    d.kill_consumer();
    d.start_consumer(i < 2 ? 600'000 : 500);
  }
  // Recovery: from the last restart until the consumer has applied every row there was then.
  const long rows = d.count("true");
  const auto from = std::chrono::steady_clock::now();
  std::optional<Millis> recovery;
  if (d.pump([&] { return applied() >= rows; }, 60s))
    recovery = std::chrono::duration_cast<Millis>(std::chrono::steady_clock::now() - from);
  d.finish(recovery);
  CHECK(d.consumer_absorbed >= 900);  // what the killed consumers applied came again, absorbed
}
