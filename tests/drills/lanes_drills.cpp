// Several relay instances on one outbox under a steady stream: one SIGKILLed, one SIGSTOPped
// past its lease and resumed, one restarted with SIGTERM. Checked from the topic and the
// database: nothing lost, first deliveries in order per aggregate, and every aggregate
// published by one instance at a time: each message carries (instance, lane, lease epoch) in a
// header and its producer timestamp; per aggregate, in producer-time order, the epochs never go
// back and every epoch belongs to one instance.
#include <catch2/catch.hpp>

#include <csignal>
#include <map>
#include <regex>
#include <set>

#include "tests/drills/drill_harness.hpp"
#include "tests/integration/pg_fixture.hpp"

using namespace outbox::test;
using namespace outbox::test::drill;
using namespace std::chrono_literals;

namespace {

constexpr const char* kPublisherHeader = "relay";
constexpr int kLeaseTtlMs = 3000;

std::int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

struct Instance {
  std::string name;  // its ownership.instance_id
  int port = 0;
  std::unique_ptr<ChildProcess> process;
};

struct Stamp {
  std::string instance;
  int lane = -1;
  long long epoch = -1;
};

std::optional<Stamp> stamp_of(const ConsumedMessage& m) {
  static const std::regex format(R"(^(\S+) lane=(\d+) epoch=(\d+)$)");
  auto value = header(m, kPublisherHeader);
  std::smatch match;
  if (!value || !std::regex_match(*value, match, format)) return std::nullopt;
  return Stamp{match[1], std::stoi(match[2]), std::stoll(match[3])};
}

// Per aggregate (topic + key), in producer-time order: epochs never decrease, and each
// (lane, epoch) was used by one instance only. Returns the first violation, empty if none.
std::string one_publisher_at_a_time(const std::vector<ConsumedMessage>& messages, std::size_t& checked) {
  std::map<std::pair<int, long long>, std::string> epoch_owner;
  std::map<std::string, std::vector<const ConsumedMessage*>> by_key;
  for (const auto& m : messages) by_key[m.topic + "/" + m.key].push_back(&m);
  checked = by_key.size();
  for (auto& [key, list] : by_key) {
    std::stable_sort(list.begin(), list.end(), [](auto* a, auto* b) { return a->timestamp_ms < b->timestamp_ms; });
    long long last_epoch = -1;
    int lane = -1;
    std::string last_instance;
    for (const auto* m : list) {
      auto s = stamp_of(*m);
      if (!s) return key + ": a message without a valid " + kPublisherHeader + " header";
      if (lane != -1 && s->lane != lane) return key + ": published under lanes " + std::to_string(lane) + " and " + std::to_string(s->lane);
      lane = s->lane;
      auto [it, fresh] = epoch_owner.try_emplace({s->lane, s->epoch}, s->instance);
      if (!fresh && it->second != s->instance)
        return "lane " + std::to_string(s->lane) + " epoch " + std::to_string(s->epoch) + " used by " + it->second +
               " and " + s->instance;
      if (s->epoch < last_epoch)
        return key + ": " + s->instance + " (epoch " + std::to_string(s->epoch) + ") produced at " +
               std::to_string(m->timestamp_ms) + " after " + last_instance + " (epoch " + std::to_string(last_epoch) +
               ") had taken the lane";
      last_epoch = s->epoch;
      last_instance = s->instance;
    }
  }
  return {};
}

// The first message, produced at or after `since_ms`, of one of `lanes` by an instance other
// than `gone`: when the lanes' new owners started publishing.
std::optional<std::int64_t> first_takeover(const std::vector<ConsumedMessage>& messages, const std::set<int>& lanes,
                                           const std::string& gone, std::int64_t since_ms) {
  std::optional<std::int64_t> first;
  for (const auto& m : messages) {
    auto s = stamp_of(m);
    if (!s || s->instance == gone || !lanes.contains(s->lane) || m.timestamp_ms < since_ms) continue;
    if (!first || m.timestamp_ms < *first) first = m.timestamp_ms;
  }
  return first;
}

}  // namespace

TEST_CASE("three relays: one SIGKILLed, one SIGSTOPped past its lease, one restarted with SIGTERM", "[drill][lanes]") {
  Drill d("3 relays: SIGKILL one, SIGSTOP one 6 s (lease 3 s), SIGTERM and restart one");
  d.setup.aggregates = 60;
  std::map<std::string, Instance> relays;
  int starts = 0;
  auto start = [&](const std::string& role) {
    Instance in{role + "-" + std::to_string(++starts), free_loopback_port(), nullptr};
    std::map<std::string, std::string> env{{"OUTBOX_RELAY_DATABASE_URL", d.url},
                                           {"OUTBOX_RELAY_KAFKA_BROKERS", d.kafka.bootstrap()},
                                           {"OUTBOX_RELAY_RELAY_BATCH_SIZE", "100"},
                                           {"OUTBOX_RELAY_KAFKA_DELIVERY_TIMEOUT_MS", "5000"},
                                           {"OUTBOX_RELAY_HTTP_LISTEN", "127.0.0.1:" + std::to_string(in.port)},
                                           {"OUTBOX_RELAY_OWNERSHIP_INSTANCE_ID", in.name},
                                           {"OUTBOX_RELAY_OWNERSHIP_LEASE_TTL_MS", std::to_string(kLeaseTtlMs)},
                                           {"OUTBOX_RELAY_OWNERSHIP_RENEW_INTERVAL_MS", "1000"},
                                           {"OUTBOX_RELAY_MESSAGE_PUBLISHER_HEADER", kPublisherHeader},
                                           {"OUTBOX_RELAY_LOG_FORMAT", "text"}};
    in.process = std::make_unique<ChildProcess>(kRelayBinary, std::vector<std::string>{"run"}, env,
                                                "/tmp/outbox-drill-" + std::to_string(::getpid()) + "-" + in.name + ".log");
    relays[role] = std::move(in);
  };
  auto held = [&](const std::string& role) {
    return scalar(d.url, "SELECT count(*) FROM outbox_relay_lanes WHERE owner = '" + relays[role].name +
                             "' AND lease_until > now()");
  };
  auto lanes_of = [&](const std::string& role) {
    std::set<int> lanes;
    pqxx::connection c(d.url);
    pqxx::nontransaction tx(c);
    for (const auto& row : tx.exec_params("SELECT lane FROM outbox_relay_lanes WHERE owner = $1 AND lease_until > now()",
                                          relays[role].name))
      lanes.insert(row[0].as<int>());
    return lanes;
  };
  auto shared_fairly = [&](const std::vector<std::string>& roles) {
    long total = 0;
    for (const auto& r : roles) {
      const long n = held(r);
      if (n < 64 / static_cast<long>(roles.size())) return false;
      total += n;
    }
    return total == 64;
  };

  d.start_stream();
  start("a");
  start("b");
  start("c");
  REQUIRE(d.pump([&] { return shared_fairly({"a", "b", "c"}); }, 30s));
  REQUIRE(d.pump([&] { return d.count("published_at IS NOT NULL") >= 600; }, 30s));
  for (const auto& role : {"a", "b", "c"})
    CHECK(metric_value(relays[role].port, "outbox_relay_lanes_held") >= 21);

  // SIGKILL: a's lanes pass to b and c one lease after a's last renewal.
  const auto killed_lanes = lanes_of("a");
  const std::string killed = relays["a"].name;
  const auto kill_ms = wall_ms();
  relays["a"].process->signal(SIGKILL);
  (void)relays["a"].process->wait(10s);
  CHECK(d.pump([&] { return shared_fairly({"b", "c"}); }, 20s));
  const auto after_kill = d.recover(30s);
  CHECK(after_kill.has_value());
  std::optional<std::int64_t> takeover;
  CHECK(d.pump([&] { return (takeover = first_takeover(d.reader.messages(), killed_lanes, killed, kill_ms)).has_value(); }, 20s));

  // SIGSTOP b past its lease: c takes everything; b, resumed, finds its leases gone, stops
  // publishing them (its renewal counts them lost) and gets its share back under new epochs.
  const std::string paused = relays["b"].name;
  relays["b"].process->signal(SIGSTOP);
  d.hold(std::chrono::milliseconds(2 * kLeaseTtlMs));
  CHECK(held("c") == 64);
  relays["b"].process->signal(SIGCONT);
  CHECK(d.pump([&] { return shared_fairly({"b", "c"}); }, 20s));
  CHECK(metric_value(relays["b"].port, "outbox_relay_lanes_lost_total") >= 32);
  CHECK(d.recover(30s).has_value());

  // SIGTERM c: it drains, hands its lanes back at once, and its successor joins.
  const auto handed_lanes = lanes_of("c");
  const std::string stopped = relays["c"].name;
  const auto term_ms = wall_ms();
  relays["c"].process->signal(SIGTERM);
  CHECK(relays["c"].process->wait(30s) == std::optional<int>(0));
  const auto handed_back_ms = wall_ms() - term_ms;
  std::optional<std::int64_t> handover;
  CHECK(d.pump([&] { return (handover = first_takeover(d.reader.messages(), handed_lanes, stopped, term_ms)).has_value(); }, 20s));
  start("c");
  CHECK(d.pump([&] { return shared_fairly({"b", "c"}); }, 20s));
  CHECK(d.recover(30s).has_value());

  // Drain and stop everything; every lane is free again.
  d.stream->stop();
  CHECK(d.pump([&] { return d.count("published_at IS NULL") == 0; }, 60s));
  const long rows = d.count("true");
  std::set<std::string> ids;
  std::size_t scanned = 0;
  CHECK(d.reader.read_until(
      [&](const auto& all) {
        for (; scanned < all.size(); ++scanned)
          if (auto id = header(all[scanned], "id")) ids.insert(*id);
        return static_cast<long>(ids.size()) >= rows;
      },
      60s));
  for (const auto& role : {"b", "c"}) {
    relays[role].process->signal(SIGTERM);
    CHECK(relays[role].process->wait(30s) == std::optional<int>(0));
  }
  CHECK(scalar(d.url, "SELECT count(*) FROM outbox_relay_lanes WHERE owner IS NOT NULL") == 0);
  CHECK(scalar(d.url, "SELECT count(*) FROM outbox_relay_instances WHERE expires_at > now()") == 0);

  const auto v = check_deliveries(d.url, d.reader.messages());
  std::size_t aggregates = 0;
  const auto violation = one_publisher_at_a_time(d.reader.messages(), aggregates);
  std::map<std::string, long> per_instance;
  for (const auto& m : d.reader.messages())
    if (auto s = stamp_of(m)) ++per_instance[s->instance];
  std::string shares;
  for (const auto& [name, n] : per_instance) shares += (shares.empty() ? "" : ", ") + name + " " + std::to_string(n);

  DrillResult r;
  r.scenario = d.scenario;
  r.sent = static_cast<long>(v.rows);
  r.lost = v.missing;
  r.duplicates = v.duplicates;
  if (takeover) r.recovery = Millis(*takeover - kill_ms);
  r.detail = "SIGKILL to first publication by a new owner " +
             (takeover ? std::to_string(*takeover - kill_ms) + " ms" : std::string("never")) +
             "; SIGTERM to exit " + std::to_string(handed_back_ms) + " ms, to first publication by a new owner " +
             (handover ? std::to_string(*handover - term_ms) + " ms" : std::string("never")) + "; " +
             std::to_string(aggregates) + " aggregates, one publisher at a time: " +
             (violation.empty() ? "yes" : "NO") + "; published by " + shares;
  report(r);

  INFO(v.first_problem);
  INFO(violation);
  CHECK(v.rows > 0);
  CHECK(v.missing == 0);
  CHECK(v.ordered());
  CHECK(violation.empty());
  CHECK(aggregates == static_cast<std::size_t>(d.setup.aggregates));
  CHECK(d.burnt_attempts() == 0);
  CHECK(per_instance.size() == 4);  // a, b, c and c's successor all published
  // Failover is bounded by the lease (3 s) plus a renewal interval (1 s) and a step.
  REQUIRE(takeover);
  CHECK(*takeover - kill_ms < kLeaseTtlMs + 2000);
  REQUIRE(handover);
  CHECK(*handover - term_ms < 2000 + handed_back_ms);
}
