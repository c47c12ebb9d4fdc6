// The relay loop against fakes: delivery contract, per-aggregate order, no skipped rows,
// retry and dead-letter rules. No database, no broker, no sleeping.
#include <catch2/catch.hpp>

#include <map>
#include <set>

#include "relay/core/relay.hpp"
#include "tests/unit/fakes.hpp"

using namespace outbox::relay;
using namespace outbox::relay::test;
using namespace std::chrono_literals;

namespace {

struct Fixture {
  ManualClock clock;
  FakeOutboxStore store{clock};
  FakePublisher publisher;
  RelayStats stats;
  RelayOptions options;
  std::unique_ptr<Relay> relay;

  Fixture() {
    options.batch_size = 4;
    options.max_attempts = 3;
    options.row_retry = {1s, 4s};
    options.transient_retry = {100ms, 400ms};
    options.rescan_interval = 1s;
  }
  Relay& r() {
    if (!relay) relay = std::make_unique<Relay>(store, publisher, clock, MessageBuilder({}), options, stats);
    return *relay;
  }
  // Steps until the relay reports idle (everything visible is settled) or `max_steps`.
  void drain(int max_steps = 100) {
    for (int i = 0; i < max_steps; ++i) {
      auto res = r().step();
      if (res.kind == StepKind::backoff) clock.advance(res.wait);
      if (res.kind == StepKind::idle && res.fetched == 0) return;
    }
    FAIL("relay did not become idle");
  }
};

std::int64_t seq_of(const Message& m) {
  auto id = FakePublisher::id_of(m);
  return std::stoll(id.substr(24)) - 100000000000;
}

bool ordered_per_aggregate(const std::vector<Message>& log) {
  std::map<std::string, std::int64_t> last;
  std::set<std::int64_t> seen;
  for (const auto& m : log) {
    auto s = seq_of(m);
    if (!seen.insert(s).second) continue;  // only first deliveries count
    auto [it, inserted] = last.try_emplace(m.key, s);
    if (!inserted) {
      if (s < it->second) return false;
      it->second = s;
    }
  }
  return true;
}

}  // namespace

TEST_CASE("marks rows published only after the broker acknowledged them", "[relay]") {
  Fixture f;
  for (int i = 0; i < 3; ++i) f.store.add("a" + std::to_string(i));
  f.publisher.broker = [](const Message&) -> std::optional<DeliveryResult> {
    return DeliveryResult{DeliveryStatus::transient_failure, "broker down"};
  };
  auto res = f.r().step();
  CHECK(res.kind == StepKind::backoff);
  CHECK(f.store.published_count() == 0);
  for (const auto& [seq, row] : f.store.rows()) CHECK(row.event.attempts == 0);  // no attempt burnt

  f.publisher.broker = nullptr;
  f.clock.advance(res.wait);
  f.drain();
  CHECK(f.store.published_count() == 3);
  CHECK(f.publisher.log.size() == 3);
}

TEST_CASE("publishes with key = aggregate id, payload unchanged and the event id header", "[relay]") {
  Fixture f;
  auto seq = f.store.add("order-7");
  f.drain();
  REQUIRE(f.publisher.log.size() == 1);
  const auto& m = f.publisher.log[0];
  CHECK(m.topic == "outbox.event.order");
  CHECK(m.key == "order-7");
  CHECK(m.value == f.store.row(seq).event.payload);
  CHECK(FakePublisher::id_of(m) == f.store.row(seq).event.id);
}

TEST_CASE("transient broker failures back off exponentially, capped, without burning attempts", "[relay]") {
  Fixture f;
  f.store.add("a");
  f.publisher.broker = [](const Message&) -> std::optional<DeliveryResult> {
    return DeliveryResult{DeliveryStatus::transient_failure, "timed out"};
  };
  std::vector<std::chrono::milliseconds> waits;
  for (int i = 0; i < 4; ++i) {
    auto res = f.r().step();
    REQUIRE(res.kind == StepKind::backoff);
    waits.push_back(res.wait);
    f.clock.advance(res.wait);
  }
  CHECK(waits == std::vector<std::chrono::milliseconds>{100ms, 200ms, 400ms, 400ms});
  CHECK(f.store.row(1).event.attempts == 0);
  CHECK_FALSE(f.store.row(1).dead);
}

TEST_CASE("a failed event holds back later events of its aggregate and nothing else", "[relay]") {
  Fixture f;
  f.options.batch_size = 10;
  auto a1 = f.store.add("A");
  f.store.add("B");
  auto a2 = f.store.add("A");
  f.store.add("B");
  auto a3 = f.store.add("A");
  int a1_failures = 1;
  f.publisher.broker = [&](const Message& m) -> std::optional<DeliveryResult> {
    if (seq_of(m) == a1 && a1_failures-- > 0)
      return DeliveryResult{DeliveryStatus::permanent_failure, "MSG_SIZE_TOO_LARGE"};
    return std::nullopt;
  };
  auto res = f.r().step();
  CHECK(res.kind == StepKind::idle);
  // B went out; nothing of A is marked and a1 has one attempt and a retry time.
  CHECK(f.store.row(2).published);
  CHECK(f.store.row(4).published);
  CHECK_FALSE(f.store.row(a1).published);
  CHECK_FALSE(f.store.row(a2).published);
  CHECK_FALSE(f.store.row(a3).published);
  CHECK(f.store.row(a1).event.attempts == 1);
  CHECK(f.store.row(a1).last_error == "MSG_SIZE_TOO_LARGE");

  // Before the retry time nothing of A is sent, even though B keeps flowing.
  auto b3 = f.store.add("B");
  auto sends_before = f.publisher.sends;
  (void)f.r().step();
  CHECK(f.store.row(b3).published);
  CHECK(f.publisher.sends == sends_before + 1);

  f.clock.advance(1s);
  f.drain();
  CHECK(f.store.row(a1).published);
  CHECK(f.store.row(a2).published);
  CHECK(f.store.row(a3).published);
  CHECK(ordered_per_aggregate(f.publisher.log));
}

TEST_CASE("an event refused locally stops later events of its aggregate from being sent", "[relay]") {
  Fixture f;
  auto a1 = f.store.add("A");
  auto a2 = f.store.add("A");
  f.store.add("B");
  bool refuse = true;
  f.publisher.refuse = [&](const Message& m) -> std::optional<DeliveryResult> {
    if (refuse && seq_of(m) == a1) return DeliveryResult{DeliveryStatus::permanent_failure, "too large"};
    return std::nullopt;
  };
  (void)f.r().step();
  for (const auto& m : f.publisher.log) CHECK(seq_of(m) != a2);
  CHECK(f.store.row(3).published);
  refuse = false;
  f.clock.advance(1s);
  f.drain();
  CHECK(f.store.row(a1).published);
  CHECK(f.store.row(a2).published);
  CHECK(ordered_per_aggregate(f.publisher.log));
}

TEST_CASE("dead-letters a row after max_attempts, holds its aggregate, keeps the rest flowing", "[relay]") {
  Fixture f;
  auto poison = f.store.add("A");
  auto after = f.store.add("A");
  auto other = f.store.add("B");
  f.publisher.broker = [&](const Message& m) -> std::optional<DeliveryResult> {
    if (seq_of(m) == poison) return DeliveryResult{DeliveryStatus::permanent_failure, "INVALID_RECORD"};
    return std::nullopt;
  };
  for (int i = 0; i < 20 && !f.store.row(poison).dead; ++i) {
    (void)f.r().step();
    f.clock.advance(4s);
  }
  CHECK(f.store.row(poison).dead);
  CHECK(f.store.row(poison).event.attempts == 3);
  CHECK(f.store.row(poison).last_error == "INVALID_RECORD");
  CHECK(f.store.row(other).published);
  f.drain();
  CHECK_FALSE(f.store.row(after).published);  // waits behind the dead row
  CHECK(f.stats.dead_lettered_total == 1);
}

TEST_CASE("a row the relay cannot turn into a message fails permanently without reaching the broker", "[relay]") {
  Fixture f;
  auto bad_topic = f.store.add("A");
  f.store.row(bad_topic).event.topic = "no spaces allowed";
  auto defect = f.store.add("B");
  f.store.row(defect).event.defect = "headers column is not a JSON object";
  f.store.add("C");
  (void)f.r().step();
  CHECK(f.publisher.log.size() == 1);
  CHECK(f.store.row(bad_topic).event.attempts == 1);
  CHECK(f.store.row(bad_topic).last_error.find("not a valid Kafka topic") != std::string::npos);
  CHECK(f.store.row(defect).last_error == "bad row: headers column is not a JSON object");
  CHECK(f.store.row(3).published);
}

TEST_CASE("never skips a row that commits after later rows were published", "[relay]") {
  Fixture f;
  f.options.batch_size = 2;
  for (int i = 1; i <= 10; ++i) f.store.add("agg" + std::to_string(i), "order", i != 3);
  // Busy: several pipelined steps read ahead of row 3.
  for (int i = 0; i < 10; ++i) (void)f.r().step();
  CHECK_FALSE(f.store.row(3).published);
  CHECK(f.store.published_count() == 9);
  f.store.row(3).visible = true;  // its transaction commits now
  f.clock.advance(1s);            // the rescan interval bounds the wait
  f.drain();
  CHECK(f.store.row(3).published);
}

TEST_CASE("under continuous load a late row is still found within the rescan interval", "[relay]") {
  Fixture f;
  f.options.batch_size = 2;
  f.store.add("x", "order", false);  // seq 1 commits late
  for (int i = 0; i < 6; ++i) f.store.add("y" + std::to_string(i));
  (void)f.r().step();
  (void)f.r().step();
  f.store.row(1).visible = true;
  // Keep the outbox busy: every step finds a full batch ahead.
  for (int i = 0; i < 20 && !f.store.row(1).published; ++i) {
    f.store.add("z" + std::to_string(i));
    f.store.add("w" + std::to_string(i));
    (void)f.r().step();
    f.clock.advance(200ms);
  }
  CHECK(f.store.row(1).published);
}

TEST_CASE("pipelined: the previous batch is marked and the next one read while a batch is on the wire", "[relay]") {
  Fixture f;
  f.options.batch_size = 2;
  for (int i = 0; i < 6; ++i) f.store.add("a" + std::to_string(i));
  std::vector<std::string> timeline;
  f.store.timeline = &timeline;
  f.publisher.timeline = &timeline;

  auto first = f.r().step();
  CHECK(first.kind == StepKind::busy);
  CHECK(f.store.published_count() == 0);  // acknowledged, not yet marked
  CHECK(f.r().unmarked() == 2);
  CHECK(timeline == std::vector<std::string>{"fetch", "send", "send", "fetch>2", "await"});

  timeline.clear();
  auto second = f.r().step();
  CHECK(second.published == 2);
  // Batch 2 (prefetched) goes out first; batch 1's marks and batch 3's read happen before
  // the relay waits for batch 2's acknowledgements.
  CHECK(timeline == std::vector<std::string>{"send", "send", "mark 2", "fetch>4", "await"});

  f.drain();
  CHECK(f.store.published_count() == 6);
  CHECK(f.publisher.log.size() == 6);
}

TEST_CASE("keeps acknowledged marks across a database failure and writes them once it is back", "[relay]") {
  Fixture f;
  f.options.batch_size = 10;
  for (int i = 0; i < 3; ++i) f.store.add("a" + std::to_string(i));
  f.store.fail_marks = 1;
  SECTION("the failed mark did not commit") {}
  SECTION("the failed mark committed but the outcome was lost") { f.store.commit_then_fail = true; }
  auto res = f.r().step();
  CHECK(res.kind == StepKind::backoff);
  CHECK(f.r().unmarked() == 3);
  f.clock.advance(res.wait);
  f.drain();
  CHECK(f.store.published_count() == 3);
  CHECK(f.publisher.log.size() == 3);  // nothing re-sent: the marks were kept
}

TEST_CASE("a fetch failure backs off and the next step resumes from the head", "[relay]") {
  Fixture f;
  f.store.add("a");
  f.store.fail_fetches = 2;
  CHECK(f.r().step().kind == StepKind::backoff);
  CHECK(f.r().step().kind == StepKind::backoff);
  f.drain();
  CHECK(f.store.published_count() == 1);
  CHECK(f.stats.transient_errors_total == 2);
}

TEST_CASE("stop marks what was acknowledged and takes no new rows", "[relay]") {
  Fixture f;
  f.options.batch_size = 2;
  for (int i = 0; i < 6; ++i) f.store.add("a" + std::to_string(i));
  CHECK(f.r().step().kind == StepKind::busy);
  CHECK(f.r().unmarked() == 2);
  f.r().request_stop();
  auto fetches = f.store.fetches;
  auto res = f.r().step();
  CHECK(res.kind == StepKind::stopped);
  CHECK(res.published == 2);
  CHECK(f.store.fetches == fetches);
  CHECK(f.store.published_count() == 2);
}

TEST_CASE("a row in retry backoff after a restart holds back its aggregate until due", "[relay]") {
  Fixture f;
  auto a1 = f.store.add("A");
  auto a2 = f.store.add("A");
  f.store.row(a1).next_attempt_at = f.clock.now() + 2s;  // set by a previous run
  f.store.row(a1).event.attempts = 1;
  f.drain();
  CHECK_FALSE(f.store.row(a1).published);
  CHECK_FALSE(f.store.row(a2).published);
  CHECK(f.stats.held_back_total >= 2);
  f.clock.advance(2s);
  f.drain();
  CHECK(f.store.row(a1).published);
  CHECK(f.store.row(a2).published);
  CHECK(ordered_per_aggregate(f.publisher.log));
}

TEST_CASE("keeps per-aggregate order of first deliveries under random broker failures", "[relay]") {
  Fixture f;
  f.options.batch_size = 7;
  for (int i = 0; i < 300; ++i) f.store.add("agg" + std::to_string(i % 13));
  std::uint64_t rng = 42;
  f.publisher.broker = [&](const Message&) -> std::optional<DeliveryResult> {
    rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
    auto roll = (rng >> 33) % 100;
    if (roll < 5) return DeliveryResult{DeliveryStatus::transient_failure, "timeout"};
    if (roll < 7) return DeliveryResult{DeliveryStatus::permanent_failure, "rejected"};
    return std::nullopt;
  };
  f.options.max_attempts = 1000;
  for (int i = 0; i < 5000 && f.store.published_count() < 300; ++i) {
    auto res = f.r().step();
    f.clock.advance(res.kind == StepKind::backoff ? res.wait : 500ms);
  }
  CHECK(f.store.published_count() == 300);
  CHECK(ordered_per_aggregate(f.publisher.log));
  std::set<std::int64_t> delivered;
  for (const auto& m : f.publisher.log) delivered.insert(seq_of(m));
  CHECK(delivered.size() == 300);
}

TEST_CASE("readiness facts: a failed step clears last_step_ok, a good one sets it and its time", "[relay]") {
  Fixture f;
  f.store.add("a");
  CHECK_FALSE(f.stats.last_step_ok);
  f.store.fail_fetches = 1;
  (void)f.r().step();
  CHECK_FALSE(f.stats.last_step_ok);
  f.clock.advance(1s);
  (void)f.r().step();
  CHECK(f.stats.last_step_ok);
  CHECK(f.stats.last_ok_steady_ns ==
        std::chrono::duration_cast<std::chrono::nanoseconds>(f.clock.now().time_since_epoch()).count());
}

TEST_CASE("latency histograms: a batch from fetch to acknowledgement, an event from created_at on", "[relay]") {
  Fixture f;
  f.options.batch_size = 10;
  for (int i = 0; i < 3; ++i) f.store.add("a" + std::to_string(i));
  f.store.row(1).event.age = 40ms;  // the row was 40 ms old when fetched
  f.store.row(2).event.age = 2s;
  f.publisher.broker = [](const Message& m) -> std::optional<DeliveryResult> {
    if (m.key == "a2") return DeliveryResult{DeliveryStatus::permanent_failure, "too large"};
    return std::nullopt;
  };
  f.publisher.on_await = [&] { f.clock.advance(30ms); };  // the broker round trip
  (void)f.r().step();

  auto batch = f.stats.batch_duration.snapshot();
  CHECK(batch.cumulative.back() == 1);
  CHECK(batch.sum_s == Approx(0.030));
  auto latency = f.stats.commit_to_ack.snapshot();
  CHECK(latency.cumulative.back() == 2);  // delivered events only
  CHECK(latency.sum_s == Approx(0.070 + 2.030));
  auto le = [&](double bound) {
    auto at = std::find(latency.upper_bounds_s.begin(), latency.upper_bounds_s.end(), bound);
    REQUIRE(at != latency.upper_bounds_s.end());
    return latency.cumulative[static_cast<std::size_t>(at - latency.upper_bounds_s.begin())];
  };
  CHECK(le(0.05) == 0);
  CHECK(le(0.1) == 1);  // 70 ms
  CHECK(le(2.5) == 2);  // 2.03 s

  // An idle step (nothing fetched, nothing sent) observes nothing.
  f.publisher.broker = nullptr;
  f.drain();
  (void)f.r().step();
  CHECK(f.stats.batch_duration.snapshot().cumulative.back() == static_cast<std::uint64_t>(f.publisher.awaits));
}

// Contract 2 while reading ahead: the relay reads the batch behind the one in flight
// (seq > its last). A row of aggregate X that committed late, behind that cursor, was never
// read; X's next event, written after it committed, must not go out first.
TEST_CASE("a read-ahead event waits for an earlier event of its aggregate that committed behind the cursor",
          "[relay][order]") {
  Fixture f;
  f.options.batch_size = 2;
  f.options.rescan_interval = 1h;
  auto x1 = f.store.add("X", "order", /*visible=*/false);
  for (int i = 0; i < 6; ++i) f.store.add("o" + std::to_string(i));
  REQUIRE(f.r().step().kind == StepKind::busy);  // head scan: o0 o1 sent, o2 o3 read ahead
  f.store.row(x1).visible = true;                // X's first commits...
  auto x2 = f.store.add("X");                    // ...and then X's second is written
  f.drain();
  std::vector<std::int64_t> x;
  for (const auto& m : f.publisher.log)
    if (m.key == "X") x.push_back(seq_of(m));
  CHECK(x == std::vector<std::int64_t>{x1, x2});
  CHECK(f.stats.held_behind_late_total > 0);
  CHECK(ordered_per_aggregate(f.publisher.log));
}

TEST_CASE("an event of the batch in flight is no reason to hold its aggregate's read-ahead events", "[relay][order]") {
  Fixture f;
  f.options.batch_size = 2;
  f.options.rescan_interval = 1h;
  for (int i = 0; i < 8; ++i) f.store.add("A");  // one aggregate across every batch
  f.drain();
  CHECK(f.store.published_count() == 8);
  CHECK(f.stats.held_behind_late_total == 0);
  CHECK(f.stats.batches_total <= 5);  // pipelined all the way: no rescans forced
  CHECK(ordered_per_aggregate(f.publisher.log));
}

TEST_CASE("a next attempt beyond the retry policy's longest delay is due now", "[relay][hostile]") {
  Fixture f;  // row_retry max 4 s
  auto a = f.store.add("A");
  f.store.row(a).next_attempt_at = f.clock.now() + std::chrono::hours(24 * 365 * 100);  // a century: far beyond the policy
  auto b = f.store.add("B");
  f.store.row(b).next_attempt_at = f.clock.now() + 3s;  // one the relay could have scheduled: waits
  f.drain();
  CHECK(f.store.row(a).published);
  CHECK_FALSE(f.store.row(b).published);
}

TEST_CASE("an attempts count a producer wrote cannot overflow or buy extra attempts", "[relay][hostile]") {
  Fixture f;  // max_attempts 3
  auto big = f.store.add("A");
  f.store.row(big).event.attempts = std::numeric_limits<int>::max();
  f.store.row(big).event.defect = "headers column is not a JSON object";
  auto negative = f.store.add("B");
  f.store.row(negative).event.attempts = -1'000'000;
  f.store.row(negative).event.defect = "headers column is not a JSON object";
  (void)f.r().step();
  CHECK(f.store.row(big).dead);                      // counted as its last attempt
  CHECK(f.store.row(negative).event.attempts == 1);  // counted from zero
}

TEST_CASE("a row the store could not read at all is dead-lettered at its first failure", "[relay][hostile]") {
  Fixture f;
  auto a = f.store.add("A");
  f.store.row(a).event.defect = "row cannot be read (division by zero)";
  f.store.row(a).event.unreadable = true;
  f.store.add("B");
  (void)f.r().step();
  CHECK(f.store.row(a).dead);
  CHECK(f.store.row(a).event.attempts == 1);
  CHECK_THAT(f.store.row(a).last_error, Catch::Contains("division by zero"));
  CHECK(f.store.row(2).published);
}
