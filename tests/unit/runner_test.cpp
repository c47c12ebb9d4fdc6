// The runner's waiting rules, driven by a manual clock and a scripted wake-up.
#include <catch2/catch.hpp>

#include "relay/core/runner.hpp"
#include "tests/unit/fakes.hpp"

using namespace outbox::relay;
using namespace outbox::relay::test;
using namespace std::chrono_literals;

namespace {
struct RunnerFixture {
  ManualClock clock;
  FakeOutboxStore store{clock};
  FakePublisher publisher;
  RelayStats stats;
  FakeWakeup wakeup{clock};
  NullLogger logger;
  RunnerOptions options;
  std::atomic<bool> stop{false};

  RunnerFixture() {
    options.poll_interval = 500ms;
    options.stop_check = 100ms;
    options.linger = 2ms;
  }
};
}  // namespace

TEST_CASE("an idle relay asks for wake-up hints, looks once more, then waits", "[runner]") {
  RunnerFixture f;
  Relay relay(f.store, f.publisher, f.clock, MessageBuilder({}), {}, f.stats);
  Runner runner(relay, f.wakeup, f.clock, f.logger, f.options);
  f.wakeup.on_wait = [&] {
    if (f.wakeup.waits.size() == 3) f.store.add("a");  // an insert arrives while idle
    if (f.wakeup.waits.size() == 12) f.stop = true;
  };
  CHECK(runner.run(f.stop) == RunnerExit::stopped);
  CHECK(f.store.published_count() == 1);
  REQUIRE(f.wakeup.listening_changes.size() >= 3);
  CHECK(f.wakeup.listening_changes[0] == true);   // empty outbox: hints on
  CHECK(f.wakeup.listening_changes[1] == false);  // rows found: hints off while busy
  CHECK(f.wakeup.listening_changes[2] == true);   // empty again
  for (auto w : f.wakeup.waits) CHECK(w <= 100ms);  // sliced so a stop is noticed
}

TEST_CASE("a busy relay neither waits nor asks producers for hints", "[runner]") {
  RunnerFixture f;
  for (int i = 0; i < 50; ++i) f.store.add("a" + std::to_string(i));
  RelayOptions ro;
  ro.batch_size = 10;
  Relay relay(f.store, f.publisher, f.clock, MessageBuilder({}), ro, f.stats);
  Runner runner(relay, f.wakeup, f.clock, f.logger, f.options);
  f.wakeup.on_wait = [&] { f.stop = true; };
  runner.run(f.stop);
  CHECK(f.store.published_count() == 50);
  CHECK(f.wakeup.waits.size() == 1);  // the first wait came only once the outbox was empty
}

TEST_CASE("after a transient failure the runner waits the backoff before the next step", "[runner]") {
  RunnerFixture f;
  f.store.add("a");
  f.store.fail_fetches = 3;
  Relay relay(f.store, f.publisher, f.clock, MessageBuilder({}), {}, f.stats);
  Runner runner(relay, f.wakeup, f.clock, f.logger, f.options);
  f.wakeup.on_wait = [&] {
    if (f.store.published_count() == 1) f.stop = true;
  };
  runner.run(f.stop);
  CHECK(f.store.published_count() == 1);
  std::chrono::milliseconds waited{0};
  for (auto w : f.wakeup.waits) waited += w;
  CHECK(waited >= 100ms + 200ms + 400ms);
}

TEST_CASE("on stop the runner marks acknowledged rows and returns", "[runner]") {
  RunnerFixture f;
  for (int i = 0; i < 20; ++i) f.store.add("a" + std::to_string(i));
  RelayOptions ro;
  ro.batch_size = 5;
  Relay relay(f.store, f.publisher, f.clock, MessageBuilder({}), ro, f.stats);
  Runner runner(relay, f.wakeup, f.clock, f.logger, f.options);
  f.stop = true;
  CHECK(runner.run(f.stop) == RunnerExit::stopped);
  CHECK(f.store.published_count() == f.publisher.log.size());
}

TEST_CASE("gives up marking after the shutdown timeout when the database stays away", "[runner]") {
  RunnerFixture f;
  for (int i = 0; i < 5; ++i) f.store.add("a" + std::to_string(i));
  RelayOptions ro;
  ro.batch_size = 5;
  Relay relay(f.store, f.publisher, f.clock, MessageBuilder({}), ro, f.stats);
  f.options.shutdown_timeout = 2s;
  Runner runner(relay, f.wakeup, f.clock, f.logger, f.options);
  REQUIRE(relay.step().kind == StepKind::busy);  // acknowledged, marks pending
  f.store.fail_marks = 1000;
  f.stop = true;
  CHECK(runner.run(f.stop) == RunnerExit::shutdown_timeout);
  CHECK(f.store.published_count() == 0);  // never marked: re-published next run, not lost
}

TEST_CASE("the heartbeat never goes stale while idle or backing off, only the thread's own hang could", "[runner]") {
  RunnerFixture f;
  f.store.fail_fetches = 3;  // backing off for a while, then idle
  Relay relay(f.store, f.publisher, f.clock, MessageBuilder({}), {}, f.stats);
  Runner runner(relay, f.wakeup, f.clock, f.logger, f.options);
  auto now_ns = [&] { return std::chrono::duration_cast<std::chrono::nanoseconds>(f.clock.now().time_since_epoch()).count(); };
  std::int64_t worst_gap_ns = 0;
  f.wakeup.on_wait = [&] {
    worst_gap_ns = std::max(worst_gap_ns, now_ns() - f.stats.heartbeat_ns.load());
    if (f.wakeup.waits.size() == 80) f.stop = true;
  };
  CHECK(runner.run(f.stop) == RunnerExit::stopped);
  CHECK(f.stats.transient_errors_total == 3);
  CHECK(worst_gap_ns > 0);
  CHECK(worst_gap_ns <= std::chrono::nanoseconds(f.options.stop_check).count());
}

TEST_CASE("a relay holding no lane asks for no hints and steps again as soon as it gets lanes", "[runner][lanes]") {
  RunnerFixture f;
  Ownership ownership("me", 1);
  Relay relay(f.store, f.publisher, f.clock, MessageBuilder({}), {}, f.stats, &ownership);
  Runner runner(relay, f.wakeup, f.clock, f.logger, f.options);
  f.store.add("a");
  f.wakeup.on_wait = [&] {
    // The keeper is granted the only lane during the 4th slice of a poll-interval wait; until
    // then the spare has neither published nor asked producers for hints.
    if (f.wakeup.waits.size() == 4) {
      CHECK(f.wakeup.listening_changes.empty());
      CHECK(f.stats.published_total == 0);
      ownership.update({{0, 1}}, f.clock.now() + 10s, {});
    }
    if (f.store.published_count() == 1) f.stop = true;
  };
  CHECK(runner.run(f.stop) == RunnerExit::stopped);
  CHECK(f.store.published_count() == 1);
  // Woken by the grant, not by the end of the 500 ms poll interval: 4 slices of 100 ms.
  CHECK(f.wakeup.waits.size() <= 6);
}
