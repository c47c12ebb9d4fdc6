// The inbox sidecar's core against fakes of its ports: what lands, what is dead-lettered and
// why, and above all when an offset may be stored: never before its batch is in the inbox or
// on the dead-letter topic. Ends with a seeded schedule checker (revokes, crashes, database and
// dead-letter failures, redeliveries) that checks the history from outside.
#include <catch2/catch.hpp>

#include <random>

#include "relay/core/inbox_lander.hpp"
#include "tests/unit/inbox_fakes.hpp"

using namespace outbox::relay;
using namespace outbox::relay::test;
using namespace std::chrono_literals;

namespace {

InboxMessage message(const std::string& topic, int partition, std::optional<std::string> id,
                     std::string payload = "{}", std::string key = "k") {
  InboxMessage m;
  m.topic = topic;
  m.partition = partition;
  m.key = std::move(key);
  m.value = std::move(payload);
  if (id) m.headers.emplace_back("id", *id);
  m.headers.emplace_back("eventType", std::string("Moved"));
  m.headers.emplace_back("traceparent", std::string("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"));
  return m;
}

struct Rig {
  ManualClock clock;
  ClockPause pause{clock};
  FakeTopicLog log{clock};
  FakeInbox inbox;
  FakeDeadLetterTopic dlq;
  NullLogger logger;
  InboxStats stats;
  InboxOptions options;
  std::atomic<bool> stop{false};

  Rig() { options.batch_size = 4; }
  bool run() {
    log.stop_when_drained = &stop;
    InboxLander lander(log, inbox, dlq, clock, pause, logger, options, stats);
    return lander.run(stop);
  }
};

std::string id_of(const DeadLetter& l) {
  for (const auto& [k, v] : l.message.headers)
    if (k == "id" && v) return *v;
  return "";
}

}  // namespace

TEST_CASE("inbox: a batch lands in one call, in order, and its offsets are stored after it", "[inbox]") {
  Rig r;
  for (int i = 0; i < 6; ++i) r.log.append(message("orders", i % 2, "e" + std::to_string(i)));
  r.inbox.on_land = [&] { CHECK(r.log.store_calls.size() == static_cast<std::size_t>(r.inbox.land_calls - 1)); };
  CHECK(r.run());
  REQUIRE(r.inbox.landed.size() == 6);
  CHECK(r.inbox.land_calls == 2);  // 4 + 2
  // Per partition, the inbox's order is the offsets' order.
  std::map<int, std::int64_t> last;
  for (const auto& row : r.inbox.landed) {
    if (last.contains(row.message.partition)) CHECK(row.message.offset > last[row.message.partition]);
    last[row.message.partition] = row.message.offset;
  }
  CHECK(r.log.committed({"orders", 0}) == 3);
  CHECK(r.log.committed({"orders", 1}) == 3);
  const auto& first = r.inbox.landed.front();
  CHECK(first.event_type == std::optional<std::string>("Moved"));
  CHECK(first.headers_json.find("traceparent") != std::string::npos);
  CHECK(r.stats.landed_total == 6);
}

TEST_CASE("inbox: while the database is away nothing is stored, and the same rows land once it is back", "[inbox]") {
  Rig r;
  for (int i = 0; i < 3; ++i) r.log.append(message("orders", 0, "e" + std::to_string(i)));
  r.inbox.fail_next = 5;
  r.inbox.on_land = [&] {
    if (r.inbox.fail_next > 0) CHECK(r.log.store_calls.empty());
  };
  CHECK(r.run());
  CHECK(r.inbox.land_calls == 6);
  CHECK(r.inbox.landed.size() == 3);
  CHECK(r.stats.transient_errors_total == 5);
  CHECK(r.log.committed({"orders", 0}) == 3);
}

TEST_CASE("inbox: a redelivery is a duplicate, not a second row", "[inbox]") {
  Rig r;
  r.log.append(message("orders", 0, "a"));
  r.log.append(message("orders", 0, "b"));
  r.log.append(message("orders", 0, "a"));  // the relay sent it twice
  CHECK(r.run());
  CHECK(r.inbox.landed.size() == 2);
  CHECK(r.stats.duplicates_total == 1);
}

TEST_CASE("inbox: what cannot be stored is dead-lettered with its reason, and the offset moves on", "[inbox]") {
  Rig r;
  r.options.max_message_bytes = 2048;
  r.log.append(message("orders", 0, std::nullopt));                           // no id
  auto two = message("orders", 0, "x1");
  two.headers.emplace_back("id", std::string("x2"));
  r.log.append(two);                                                          // two ids
  auto null_id = message("orders", 0, std::nullopt);
  null_id.headers.emplace_back("id", std::nullopt);
  r.log.append(null_id);                                                      // id without a value
  r.log.append(message("orders", 0, "big", std::string(4096, 'x')));          // too large
  r.log.append(message("orders", 0, std::string("bad\xff", 4)));              // id not UTF-8
  auto bad_name = message("orders", 0, "n1");
  bad_name.headers.emplace_back(std::string("h\xc0", 2), std::string("v"));
  r.log.append(bad_name);                                                     // header name not UTF-8
  auto types = message("orders", 0, "t1");
  types.headers.emplace_back("eventType", std::string("Other"));
  r.log.append(types);                                                        // two event types
  auto binary = message("orders", 0, "ok-binary");
  binary.headers.emplace_back("blob", std::string("\x00\xff", 2));
  binary.headers.emplace_back("empty", std::nullopt);
  r.log.append(binary);                                                       // lands, value in base64
  r.log.append(message("orders", 0, "ok", "payload"));
  CHECK(r.run());
  REQUIRE(r.dlq.sent.size() == 7);
  auto reason = [&](std::size_t i) { return r.dlq.sent[i].reason; };
  CHECK_THAT(reason(0), Catch::Contains("no id header"));
  CHECK_THAT(reason(1), Catch::Contains("2 id headers"));
  CHECK_THAT(reason(2), Catch::Contains("has no value"));
  CHECK_THAT(reason(3), Catch::Contains("inbox.max_message_bytes"));
  CHECK_THAT(reason(4), Catch::Contains("not UTF-8"));
  CHECK_THAT(reason(5), Catch::Contains("header name"));
  CHECK_THAT(reason(6), Catch::Contains("event type is ambiguous"));
  REQUIRE(r.inbox.landed.size() == 2);
  CHECK(r.inbox.landed[0].headers_json.find(R"({"name":"blob","base64":"AP8="})") != std::string::npos);
  CHECK(r.inbox.landed[0].headers_json.find(R"({"name":"empty"})") != std::string::npos);
  CHECK(r.log.committed({"orders", 0}) == 9);
  CHECK(r.stats.dead_lettered_total == 7);
}

TEST_CASE("inbox: a message without an id can take its position as id, stable across redelivery", "[inbox]") {
  Rig r;
  r.options.missing_id = MissingIdRule::position;
  r.log.append(message("orders", 3, std::nullopt));
  CHECK(r.run());
  REQUIRE(r.inbox.landed.size() == 1);
  CHECK(r.inbox.landed[0].event_id == "kafka:orders/3/0");
  auto again = decode_message(r.log.partitions().at({"orders", 3})[0], r.options);
  CHECK(std::get<InboxRow>(again).event_id == "kafka:orders/3/0");
}

TEST_CASE("inbox: a row the database refuses is dead-lettered, and the rest of its batch lands", "[inbox]") {
  Rig r;
  r.log.append(message("orders", 0, "a"));
  r.log.append(message("orders", 0, "refused"));
  r.log.append(message("orders", 0, "c"));
  r.inbox.refuse_ids = {"refused"};
  CHECK(r.run());
  CHECK(r.inbox.landed.size() == 2);
  REQUIRE(r.dlq.sent.size() == 1);
  CHECK(id_of(r.dlq.sent[0]) == "refused");
  CHECK_THAT(r.dlq.sent[0].reason, Catch::Contains("database refused"));
  CHECK(r.log.committed({"orders", 0}) == 3);
}

TEST_CASE("inbox: a dead letter the broker has not acknowledged holds its partition's offset at it", "[inbox]") {
  Rig r;
  r.options.batch_size = 10;
  r.options.shutdown_timeout = 3'000ms;
  r.log.append(message("orders", 0, "a"));
  r.log.append(message("orders", 0, std::nullopt));  // offset 1: dead-lettered
  r.log.append(message("orders", 0, "c"));
  r.log.append(message("orders", 1, "d"));
  SECTION("the broker comes back: everything is stored once the letter is acknowledged") {
    r.dlq.fail_next = 3;
    CHECK(r.run());
    REQUIRE(r.log.store_calls.size() == 1);
    CHECK(r.dlq.sent.size() == 1);
    CHECK(r.log.committed({"orders", 0}) == 3);
    CHECK(r.log.committed({"orders", 1}) == 1);
  }
  SECTION("SIGTERM while it is away: partition 0 up to the letter, partition 1 whole") {
    r.dlq.fail_next = 1'000'000;
    r.dlq.on_send = [&] {
      if (r.dlq.send_calls == 3) r.stop = true;
    };
    const auto start = r.clock.now();
    CHECK(r.run());
    CHECK(r.dlq.sent.empty());
    CHECK(r.inbox.landed.size() == 3);
    CHECK(r.log.committed({"orders", 0}) == 1);
    CHECK(r.log.committed({"orders", 1}) == 1);
    CHECK(r.clock.now() - start < 30s);
  }
}

TEST_CASE("inbox: a revoke lands what is held before the commit, or lets it go when it cannot", "[inbox]") {
  SECTION("landed in the callback") {
    Rig r;
    r.options.batch_size = 100;
    r.options.linger = 10'000ms;
    for (int i = 0; i < 3; ++i) r.log.append(message("orders", 0, "e" + std::to_string(i)));
    // Three polls deliver the messages; the fourth revokes with the batch still held.
    r.inbox.on_land = [&] { CHECK(r.log.commits == 0); };
    InboxLander lander(r.log, r.inbox, r.dlq, r.clock, r.pause, r.logger, r.options, r.stats);
    r.log.stop_when_drained = &r.stop;
    int n = 0;
    r.clock.on_now = [&] {
      if (r.log.polls == 3 && n++ == 0) r.log.revoke_at_next_poll();
    };
    CHECK(lander.run(r.stop));
    r.clock.on_now = nullptr;
    CHECK(r.inbox.landed.size() == 3);
    CHECK(r.stats.revoked_total == 1);
    CHECK(r.log.committed({"orders", 0}) == 3);
    CHECK(r.stats.duplicates_total == 0);
  }
  SECTION("database away during the revoke: nothing stored for them, redelivered, landed once") {
    Rig r;
    r.options.batch_size = 100;
    r.options.linger = 10'000ms;
    for (int i = 0; i < 3; ++i) r.log.append(message("orders", 0, "e" + std::to_string(i)));
    r.inbox.fail_next = 1;
    InboxLander lander(r.log, r.inbox, r.dlq, r.clock, r.pause, r.logger, r.options, r.stats);
    r.log.stop_when_drained = &r.stop;
    int n = 0;
    r.clock.on_now = [&] {
      if (r.log.polls == 3 && n++ == 0) r.log.revoke_at_next_poll();
    };
    CHECK(lander.run(r.stop));
    r.clock.on_now = nullptr;
    CHECK(r.stats.dropped_on_revoke_total == 3);
    CHECK(r.inbox.landed.size() == 3);
    CHECK(r.log.committed({"orders", 0}) == 3);
  }
}

TEST_CASE("inbox: SIGTERM with the database away gives up after the shutdown timeout, storing nothing of it", "[inbox]") {
  Rig r;
  r.options.shutdown_timeout = 2'000ms;
  r.options.batch_size = 100;
  for (int i = 0; i < 3; ++i) r.log.append(message("orders", 0, "e" + std::to_string(i)));
  r.inbox.fail_next = 1'000'000;
  r.inbox.on_land = [&] {
    if (r.inbox.land_calls == 3) r.stop = true;  // SIGTERM during the outage
  };
  const auto start = r.clock.now();
  CHECK(r.run());  // the commit itself went through: it commits nothing
  CHECK(r.inbox.landed.empty());
  CHECK(r.log.committed({"orders", 0}) == 0);
  CHECK(r.clock.now() - start < 10s);
}

// The schedule checker: seeded random histories of producing (with the relay's duplicates),
// consuming, database and dead-letter outages, revokes and crashes. Checked from outside after
// every step: a committed offset never passes a message that is neither in the inbox nor on
// the dead-letter topic; at the end every message is in one of them, each event id once, and
// each partition's events in offset order in the inbox.
namespace {

struct ScheduleResult {
  std::vector<std::string> violations;
};

ScheduleResult run_schedule(std::uint32_t seed, bool planted_store_before_land) {
  std::mt19937 rng(seed);
  ScheduleResult result;
  Rig r;
  r.inbox.eager = rng() % 2 == 0;  // landed while the next batch fills, or only when waited for
  r.options.batch_size = 1 + rng() % 8;
  r.options.linger = std::chrono::milliseconds(rng() % 20);
  r.options.shutdown_timeout = 1'000ms;
  const int partitions = 1 + static_cast<int>(rng() % 3);
  int next_event = 0;
  std::vector<std::string> published_ids;
  auto produce = [&](int n) {
    for (int i = 0; i < n; ++i) {
      const int p = static_cast<int>(rng() % partitions);
      const bool poison = rng() % 25 == 0;
      const bool resend = !published_ids.empty() && rng() % 8 == 0;  // the relay's at-least-once
      std::string id = resend ? published_ids[rng() % published_ids.size()] : "e" + std::to_string(next_event++);
      if (!resend && !poison) published_ids.push_back(id);
      r.log.append(message("t", p, poison ? std::nullopt : std::optional<std::string>(id)));
    }
  };
  // A lander that stores before landing (the planted bug) is a store that lands late.
  struct Planted final : InboxStore {
    FakeInbox& inner;
    FakeTopicLog& log;
    explicit Planted(FakeInbox& i, FakeTopicLog& l) : inner(i), log(l) {}
    LandOutcome land(const std::vector<InboxRow>& rows) override {
      // Commit what the batch covers before the rows are in: what the bug would do.
      std::vector<std::pair<TopicPartition, std::int64_t>> next;
      for (const auto& row : rows) next.emplace_back(TopicPartition{row.message.topic, row.message.partition}, row.message.offset + 1);
      log.store_offsets(next);
      (void)log.commit();
      return inner.land(rows);
    }
    void ping() override { inner.ping(); }
  } planted(r.inbox, r.log);
  InboxStore& store = planted_store_before_land ? static_cast<InboxStore&>(planted) : r.inbox;

  auto check_commits = [&](const char* when) {
    for (const auto& [tp, log] : r.log.partitions()) {
      const auto c = r.log.committed(tp);
      for (std::int64_t o = 0; o < c && o < static_cast<std::int64_t>(log.size()); ++o) {
        const auto& m = log[static_cast<std::size_t>(o)];
        std::string id;
        for (const auto& [k, v] : m.headers)
          if (k == "id" && v) id = *v;
        const bool in_inbox = !id.empty() && r.inbox.by_id.contains(id);
        bool in_dlq = false;
        for (const auto& l : r.dlq.sent) in_dlq |= l.message.topic == m.topic && l.message.partition == m.partition && l.message.offset == m.offset;
        if (!in_inbox && !in_dlq) {
          result.violations.push_back(std::string("committed past an unsettled message (") + when + "): partition " +
                                      std::to_string(tp.partition) + " offset " + std::to_string(o));
          return;
        }
      }
    }
  };
  const int rounds = 4 + static_cast<int>(rng() % 5);
  for (int round = 0; round < rounds && result.violations.empty(); ++round) {
    produce(static_cast<int>(rng() % 30));
    r.inbox.fail_next = rng() % 4 == 0 ? static_cast<int>(rng() % 3) : 0;
    r.dlq.fail_next = rng() % 4 == 0 ? static_cast<int>(rng() % 3) : 0;
    const int revoke_at = rng() % 3 == 0 ? static_cast<int>(rng() % 20) : -1;
    const bool crash = rng() % 3 == 0;
    const int crash_at = static_cast<int>(rng() % 25);
    r.stop = false;
    r.log.idle_polls = 0;
    r.log.polls = 0;
    r.log.stop_when_drained = &r.stop;
    r.clock.on_now = [&] {
      if (r.log.polls == revoke_at) r.log.revoke_at_next_poll();
      if (crash && r.log.polls >= crash_at) r.stop = true;  // the lander is dropped below, not stopped cleanly
    };
    {
      InboxLander lander(r.log, store, r.dlq, r.clock, r.pause, r.logger, r.options, r.stats);
      if (crash) {
        // A crash: the lander's run is cut at a poll, its final commit never happens, and its
        // stored offsets are lost; what the auto-commit took before stays.
        struct Crash {};
        auto cut = r.log.stop_when_drained;
        r.log.stop_when_drained = nullptr;
        r.clock.on_now = [&] {
          if (r.log.polls == revoke_at) r.log.revoke_at_next_poll();
          if (r.log.polls >= crash_at) throw Crash{};
          // Auto-commit every so often, as librdkafka does with what is stored.
          if (r.log.polls % 5 == 0) (void)r.log.commit();
        };
        try {
          (void)lander.run(r.stop);
        } catch (const Crash&) {
        }
        r.clock.on_now = nullptr;
        r.log.stop_when_drained = cut;
        check_commits("before the crash");
        r.log.crash();
      } else {
        (void)lander.run(r.stop);
        r.clock.on_now = nullptr;
        check_commits("after a clean stop");
      }
    }
  }
  // Drain without faults.
  r.inbox.fail_next = 0;
  r.dlq.fail_next = 0;
  r.stop = false;
  r.log.idle_polls = 0;
  r.clock.on_now = nullptr;
  {
    InboxLander lander(r.log, r.inbox, r.dlq, r.clock, r.pause, r.logger, r.options, r.stats);
    (void)lander.run(r.stop);
  }
  check_commits("at the end");
  if (!r.log.drained()) result.violations.push_back("not drained");
  for (const auto& id : published_ids)
    if (!r.inbox.by_id.contains(id)) result.violations.push_back("lost " + id);
  std::map<int, std::int64_t> last;
  for (const auto& row : r.inbox.landed) {
    auto [it, fresh] = last.emplace(row.message.partition, row.message.offset);
    if (!fresh && row.message.offset < it->second)
      result.violations.push_back("partition " + std::to_string(row.message.partition) + " out of order");
    it->second = std::max(it->second, row.message.offset);
  }
  return result;
}

}  // namespace

TEST_CASE("inbox schedules: no commit passes an unsettled message, nothing lost, order kept", "[inbox][schedule]") {
  const auto first = static_cast<std::uint32_t>(std::random_device{}());
  for (std::uint32_t s = first; s < first + 400; ++s) {
    auto r = run_schedule(s, false);
    INFO("seed " << s << (r.violations.empty() ? "" : ": " + r.violations.front()));
    REQUIRE(r.violations.empty());
  }
}

TEST_CASE("inbox schedules: the checker catches offsets stored before their batch landed", "[inbox][schedule]") {
  int caught = 0;
  std::uint32_t first_seed = 0;
  for (std::uint32_t s = 1; s <= 400; ++s) {
    if (!run_schedule(s, true).violations.empty()) {
      if (caught++ == 0) first_seed = s;
    }
  }
  INFO("first seed that caught it: " << first_seed);
  CHECK(caught > 0);
}
