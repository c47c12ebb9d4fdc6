// The relay with sink.type nats, end to end: the real binary, a throwaway PostgreSQL and the
// real nats-server with JetStream, read back from the stream in stream order.
#include <catch2/catch.hpp>

#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <cstdio>
#include <map>
#include <regex>
#include <set>
#include <thread>

#include "tests/e2e/child_process.hpp"
#include "tests/e2e/delivery_check.hpp"
#include "tests/integration/pg_fixture.hpp"
#include "tests/support/nats_client.hpp"
#include "tests/support/server_process.hpp"

using namespace outbox;
using namespace std::chrono_literals;

namespace {

const std::string kRelay = OUTBOX_RELAY_BINARY;

std::string temp_log(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("outbox-nats-e2e-" + std::to_string(::getpid()) + "-" + name + ".log"))
      .string();
}

std::map<std::string, std::string> nats_env(const std::string& url, const std::string& nats_url) {
  return {{"OUTBOX_RELAY_DATABASE_URL", url},
          {"OUTBOX_RELAY_SINK_TYPE", "nats"},
          {"OUTBOX_RELAY_NATS_URL", nats_url},
          {"OUTBOX_RELAY_RELAY_BATCH_SIZE", "500"},
          {"OUTBOX_RELAY_LOG_FORMAT", "text"},
          {"OUTBOX_RELAY_HTTP_LISTEN", ""}};
}

// The stream's messages as the delivery check reads them: subject as topic, the key header
// as key, every header.
std::vector<test::ConsumedMessage> as_consumed(const std::vector<test::StreamMessage>& stored) {
  std::vector<test::ConsumedMessage> out;
  for (const auto& m : stored) {
    test::ConsumedMessage c;
    c.topic = m.subject;
    c.offset = static_cast<std::int64_t>(m.sequence);
    if (auto k = m.headers.find("key"); k != m.headers.end()) c.key = k->second;
    c.value = m.data;
    for (const auto& [name, value] : m.headers) c.headers.emplace_back(name, value);
    out.push_back(std::move(c));
  }
  return out;
}

long unpublished(const std::string& url) {
  return test::scalar(url, "SELECT count(*) FROM outbox_events WHERE published_at IS NULL");
}

// Waits until every row is published, then SIGTERM: the relay exits 0.
void drain_then_sigterm(test::ChildProcess& relay, const std::string& url) {
  const bool drained = test::eventually([&] { return unpublished(url) == 0; }, 120s);
  INFO(relay.output());
  REQUIRE(drained);
  relay.signal(SIGTERM);
  CHECK(relay.wait(30s) == std::optional<int>(0));
}

}  // namespace

TEST_CASE("nats: 10,000 events over 100 aggregates reach the JetStream stream in order per aggregate, SIGTERM exits 0",
          "[e2e][nats]") {
  auto url = test::fresh_database();
  test::NatsServer server;
  test::NatsClient client(server.url());
  client.add_stream("OUTBOX", {"outbox.event.>"});
  test::insert_events(url, 5000, 100);
  test::ChildProcess relay(kRelay, {"run"}, nats_env(url, server.url()), temp_log("drain"));
  test::insert_events(url, 5000, 100);  // more arrive while it runs
  drain_then_sigterm(relay, url);

  const auto stored = client.read_all("OUTBOX");
  const auto v = test::check_deliveries(url, as_consumed(stored));
  CHECK(v.distinct == 10000);
  CHECK(v.missing == 0);
  CHECK(v.duplicates == 0);
  INFO(v.first_problem);
  CHECK(v.ordered());
  CHECK(stored.size() == 10000);
  for (const auto& m : stored) REQUIRE(m.headers.at("Nats-Msg-Id") == m.headers.at("id"));
}

TEST_CASE("nats: rows no stream captures, or forging Nats-Msg-Id, are dead-lettered with the reason and requeued once a stream is added",
          "[e2e][nats]") {
  auto url = test::fresh_database();
  test::NatsServer server;
  test::NatsClient client(server.url());
  client.add_stream("OUTBOX", {"outbox.event.order"});  // captures orders only
  test::insert_events(url, 200, 10);
  test::insert_events(url, 3, 3, "invoice");  // outbox.event.invoice: no stream (3 aggregates: none waits)
  auto env = nats_env(url, server.url());
  env["OUTBOX_RELAY_RELAY_MAX_ATTEMPTS"] = "1";
  test::ChildProcess relay(kRelay, {"run"}, env, temp_log("nostream"));
  const bool settled = test::eventually([&] {
    return test::scalar(url, "SELECT count(*) FROM outbox_events WHERE published_at IS NOT NULL") == 200 &&
           test::scalar(url, "SELECT count(*) FROM outbox_events WHERE dead_lettered_at IS NOT NULL") == 3;
  }, 60s);
  INFO(relay.output());
  REQUIRE(settled);
  CHECK(test::scalar(url, "SELECT count(*) FROM outbox_events WHERE aggregate_type = 'invoice' AND last_error LIKE "
                          "'%no JetStream stream captures subject outbox.event.invoice%'") == 3);
  CHECK(client.count("OUTBOX") == 200);
  // A row forging the stream's dedup header: dead-lettered, never on the stream.
  test::exec(url, "INSERT INTO outbox_events (aggregate_type, aggregate_id, event_type, payload, headers) VALUES "
                  "('order', 'poison', 'created', 'x', '{\"Nats-Msg-Id\": \"forged\"}')");
  REQUIRE(test::eventually([&] {
    return test::scalar(url, "SELECT count(*) FROM outbox_events WHERE aggregate_id = 'poison' AND dead_lettered_at "
                             "IS NOT NULL AND last_error LIKE '%NATS reserves Nats- headers%'") == 1;
  }, 60s));
  // The operator adds a stream for invoices and requeues every dead letter: the invoices go
  // out, in order; the forged row is refused again, and nothing is lost.
  client.add_stream("INVOICES", {"outbox.event.invoice"});
  test::ChildProcess requeue(kRelay, {"dead-letters", "requeue", "--all"}, nats_env(url, server.url()),
                             temp_log("requeue"));
  const auto requeued = requeue.wait(30s);
  INFO(requeue.output());
  REQUIRE(requeued == std::optional<int>(0));
  REQUIRE(test::eventually([&] { return client.count("INVOICES") == 3; }, 60s));
  REQUIRE(test::eventually([&] {
    return test::scalar(url, "SELECT count(*) FROM outbox_events WHERE dead_lettered_at IS NOT NULL") == 1 &&
           test::scalar(url, "SELECT count(*) FROM outbox_events WHERE published_at IS NULL") == 1;
  }, 60s));
  CHECK(test::scalar(url, "SELECT count(*) FROM outbox_events WHERE aggregate_id = 'poison' AND dead_lettered_at IS "
                          "NOT NULL") == 1);
  CHECK(client.count("OUTBOX") == 200);
  const auto v = test::check_deliveries(url, as_consumed(client.read_all("INVOICES")));
  CHECK(v.distinct == 3);
  CHECK(v.duplicates == 0);
  relay.signal(SIGTERM);
  CHECK(relay.wait(30s) == std::optional<int>(0));
}

// The relay SIGKILLed 5 times mid-drain, each time restarted: nothing lost, first deliveries
// in order per aggregate, and the duplicates a consumer reads counted: with the stream's
// duplicate window (Nats-Msg-Id), and with a window of 100 ms (the least JetStream takes), shorter than any restart.
TEST_CASE("nats: the relay SIGKILLed 5 times mid-drain: none lost, in order, the duplicate window absorbs the re-sends",
          "[e2e][nats]") {
  for (const auto window : {std::chrono::milliseconds(120'000), std::chrono::milliseconds(100)}) {
    CAPTURE(window.count());
    auto url = test::fresh_database();
    test::NatsServer server;
    test::NatsClient client(server.url());
    client.add_stream("OUTBOX", {"outbox.event.>"}, window);
    test::insert_events(url, 10000, 100);
    auto env = nats_env(url, server.url());
    env["OUTBOX_RELAY_RELAY_BATCH_SIZE"] = "100";  // many batches, so each kill lands mid-drain
    long kills_mid_drain = 0;
    for (int k = 1; k <= 5; ++k) {
      test::ChildProcess relay(kRelay, {"run"}, env, temp_log("kill" + std::to_string(k)));
      const long below = 10000 - 1500 * k;
      REQUIRE(test::eventually([&] { return unpublished(url) < below; }, 60s, 1ms));
      relay.signal(SIGKILL);
      REQUIRE(relay.wait(10s) == std::optional<int>(128 + SIGKILL));
      kills_mid_drain += unpublished(url) > 0 ? 1 : 0;
    }
    CHECK(kills_mid_drain == 5);
    test::ChildProcess last(kRelay, {"run"}, env, temp_log("kill-last"));
    REQUIRE(test::eventually([&] { return unpublished(url) == 0; }, 120s));
    last.signal(SIGTERM);
    CHECK(last.wait(30s) == std::optional<int>(0));
    const auto v = test::check_deliveries(url, as_consumed(client.read_all("OUTBOX")));
    CHECK(v.missing == 0);
    CHECK(v.distinct == 10000);
    INFO(v.first_problem);
    CHECK(v.ordered());
    if (window.count() > 100) CHECK(v.duplicates == 0);  // every re-send fell inside the window
    std::printf("nats kill drill (duplicate window %lld ms): 5 SIGKILLs mid-drain, 0 missing, %zu duplicates read "
                "from the stream\n",
                static_cast<long long>(window.count()), v.duplicates);
  }
}

// nats-server SIGKILLed under a draining relay, down 2 s, restarted on the same store: the
// relay rides it out (transient failures, reconnects), nothing lost, order kept.
TEST_CASE("nats: the server SIGKILLed mid-drain and restarted: the relay recovers, none lost, in order", "[e2e][nats]") {
  auto url = test::fresh_database();
  test::NatsServer server;
  {
    test::NatsClient client(server.url());
    client.add_stream("OUTBOX", {"outbox.event.>"}, std::chrono::milliseconds(120'000));
  }
  test::insert_events(url, 10000, 100);
  auto env = nats_env(url, server.url());
  env["OUTBOX_RELAY_RELAY_BATCH_SIZE"] = "100";
  env["OUTBOX_RELAY_NATS_ACK_TIMEOUT_MS"] = "1000";
  test::ChildProcess relay(kRelay, {"run"}, env, temp_log("server-kill"));
  REQUIRE(test::eventually([&] { return unpublished(url) < 7000; }, 60s, 1ms));
  server.process().kill();
  const long at_kill = unpublished(url);
  const auto down_until = std::chrono::steady_clock::now() + 2s;
  // Nothing can be acknowledged while the server is away: no row is marked meanwhile.
  while (std::chrono::steady_clock::now() < down_until) {
    CHECK(unpublished(url) >= at_kill - 100);  // at most the batch whose acks were in hand
    std::this_thread::sleep_for(100ms);
  }
  server.process().start();
  const auto restarted = std::chrono::steady_clock::now();
  const bool drained = test::eventually([&] { return unpublished(url) == 0; }, 120s);
  INFO(relay.output());
  REQUIRE(drained);
  const double recovery_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - restarted).count();
  relay.signal(SIGTERM);
  CHECK(relay.wait(30s) == std::optional<int>(0));
  test::NatsClient client(server.url());
  const auto v = test::check_deliveries(url, as_consumed(client.read_all("OUTBOX")));
  CHECK(at_kill > 0);
  CHECK(v.missing == 0);
  CHECK(v.distinct == 10000);
  INFO(v.first_problem);
  CHECK(v.ordered());
  CHECK(v.duplicates == 0);  // the re-sends fell inside the stream's window
  std::printf("nats server drill: SIGKILLed with %ld of 10000 unpublished, down 2 s; drained %.1f s after the restart, "
              "0 missing, %zu duplicates\n",
              at_kill, recovery_s, v.duplicates);
}

// Three relays share the lanes of one outbox and publish to one stream; one is SIGKILLed
// mid-drain and its lanes pass to the others when its leases expire. The stream's own order
// is the history: nothing lost, first deliveries in order per aggregate, and per aggregate
// the publishing (lane, epoch) never goes back and each epoch is one instance's.
TEST_CASE("nats: three relays with lanes, one SIGKILLed mid-drain: none lost, in order, one publisher per aggregate",
          "[e2e][nats]") {
  auto url = test::fresh_database();
  test::NatsServer server;
  test::NatsClient client(server.url());
  client.add_stream("OUTBOX", {"outbox.event.>"}, std::chrono::milliseconds(120'000));
  std::vector<std::unique_ptr<test::ChildProcess>> relays;
  for (const std::string name : {"a", "b", "c"}) {
    auto env = nats_env(url, server.url());
    env["OUTBOX_RELAY_RELAY_BATCH_SIZE"] = "100";
    env["OUTBOX_RELAY_OWNERSHIP_INSTANCE_ID"] = "nats-" + name;
    env["OUTBOX_RELAY_OWNERSHIP_LEASE_TTL_MS"] = "3000";
    env["OUTBOX_RELAY_OWNERSHIP_RENEW_INTERVAL_MS"] = "1000";
    env["OUTBOX_RELAY_MESSAGE_PUBLISHER_HEADER"] = "relay";
    relays.push_back(std::make_unique<test::ChildProcess>(kRelay, std::vector<std::string>{"run"}, env,
                                                          temp_log("lanes-" + name)));
  }
  auto held = [&](const std::string& id) {
    return test::scalar(url, "SELECT count(*) FROM outbox_relay_lanes WHERE owner = '" + id + "' AND lease_until > now()");
  };
  REQUIRE(test::eventually([&] { return held("nats-a") >= 21 && held("nats-b") >= 21 && held("nats-c") >= 21; }, 60s));
  test::insert_events(url, 10000, 100);
  REQUIRE(test::eventually([&] { return unpublished(url) < 6000; }, 60s, 1ms));
  relays[0]->signal(SIGKILL);
  REQUIRE(relays[0]->wait(10s) == std::optional<int>(128 + SIGKILL));
  const bool drained = test::eventually([&] { return unpublished(url) == 0; }, 120s);
  INFO(relays[1]->output());
  REQUIRE(drained);
  for (std::size_t i = 1; i < relays.size(); ++i) {
    relays[i]->signal(SIGTERM);
    CHECK(relays[i]->wait(30s) == std::optional<int>(0));
  }
  const auto stored = client.read_all("OUTBOX");
  const auto v = test::check_deliveries(url, as_consumed(stored));
  CHECK(v.missing == 0);
  CHECK(v.distinct == 10000);
  INFO(v.first_problem);
  CHECK(v.ordered());
  // One publisher at a time, read in stream order.
  static const std::regex format(R"(^(\S+) lane=(\d+) epoch=(\d+)$)");
  std::map<std::string, long long> last_epoch;                      // aggregate -> epoch
  std::map<std::pair<int, long long>, std::string> epoch_owner;     // (lane, epoch) -> instance
  std::set<std::string> publishers;
  for (const auto& m : stored) {
    std::smatch match;
    const auto& stamp = m.headers.at("relay");
    REQUIRE(std::regex_match(stamp, match, format));
    const std::string instance = match[1];
    const int lane = std::stoi(match[2]);
    const long long epoch = std::stoll(match[3]);
    publishers.insert(instance);
    auto [owner, fresh] = epoch_owner.try_emplace({lane, epoch}, instance);
    INFO("lane " << lane << " epoch " << epoch);
    CHECK(owner->second == instance);
    auto [it, first] = last_epoch.try_emplace(m.headers.at("key"), epoch);
    INFO("aggregate " << m.headers.at("key"));
    CHECK(epoch >= it->second);
    it->second = epoch;
  }
  CHECK(publishers.size() == 3);
  std::printf("nats lanes drill: 3 relays, one SIGKILLed mid-drain; %zu messages, %zu duplicates, 0 missing\n",
              stored.size(), v.duplicates);
}

TEST_CASE("nats: cloudevents binary mode puts ce- attributes in headers and the event id in Nats-Msg-Id", "[e2e][nats][cloudevents]") {
  auto url = test::fresh_database();
  test::NatsServer server;
  test::NatsClient client(server.url());
  client.add_stream("OUTBOX", {"outbox.event.>"});
  test::insert_events(url, 1000, 20);
  test::exec(url, "INSERT INTO outbox_events (aggregate_type, aggregate_id, event_type, payload) "
                  "VALUES ('order', 'caf\u00e9 1', 'created', 'x')");
  auto env = nats_env(url, server.url());
  env["OUTBOX_RELAY_MESSAGE_FORMAT"] = "cloudevents";
  test::ChildProcess relay(kRelay, {"run"}, env, temp_log("cloudevents"));
  drain_then_sigterm(relay, url);

  const auto stored = client.read_all("OUTBOX");
  const auto v = test::check_deliveries(url, as_consumed(stored), "ce-id");
  CHECK(v.distinct == 1001);
  CHECK(v.missing == 0);
  CHECK(v.duplicates == 0);
  CHECK(v.ordered());
  int encoded = 0;
  for (const auto& m : stored) {
    REQUIRE(m.headers.at("Nats-Msg-Id") == m.headers.at("ce-id"));
    REQUIRE(m.headers.at("ce-specversion") == "1.0");
    REQUIRE(m.headers.at("ce-type") == "created");
    REQUIRE(m.headers.at("ce-source") == "/outbox/order");
    REQUIRE(m.headers.at("content-type") == "application/json");
    REQUIRE(m.headers.count("id") == 0);
    // The key header carries the aggregate id as it is; the subject attribute is percent-encoded.
    if (m.headers.at("key") == "caf\u00e9 1") {
      ++encoded;
      CHECK(m.headers.at("ce-subject") == "caf%C3%A9%201");
    } else {
      REQUIRE(m.headers.at("ce-subject") == m.headers.at("key"));
    }
  }
  CHECK(encoded == 1);
}
