// The whole path with real binaries: the library's writer -> outbox-relay -> Kafka (mock
// cluster) -> outbox-demo-consumer (inbox) -> PostgreSQL, with duplicates forced on purpose:
// the relay killed mid-drain and re-publishing after a lost mark, the consumer killed after
// its commits but before any offset commit, the same events consumed by two instances.
#include <catch2/catch.hpp>

#include <map>
#include <regex>
#include <set>

#include "outbox/outbox_writer.hpp"
#include "tests/e2e/child_process.hpp"
#include "tests/e2e/delivery_check.hpp"
#include "tests/integration/pg_fixture.hpp"
#include "tests/support/mock_kafka.hpp"

using namespace outbox;
using namespace std::chrono_literals;

namespace {

const std::string kRelay = OUTBOX_RELAY_BINARY;
const std::string kConsumer = OUTBOX_DEMO_CONSUMER_BINARY;

std::string temp_log(const std::string& name) {
  return "/tmp/outbox-pipeline-" + std::to_string(::getpid()) + "-" + name + ".log";
}

long stat_of(const std::string& output, const std::string& name) {
  std::smatch m;
  if (std::regex_search(output, m, std::regex(name + "=([0-9]+)"))) return std::stol(m[1]);
  return -1;
}

}  // namespace

TEST_CASE("every effect is applied exactly once and no event is missing, with duplicates forced", "[e2e][pipeline]") {
  const int kOrders = 30;
  const int kEvents = 3000;
  auto url = test::fresh_database();
  test::MockKafka kafka(1);
  kafka.create_topic("outbox.event.order", 4);
  const std::string brokers = kafka.bootstrap();

  // The producing service: business change and event in one transaction, via the library.
  std::map<std::string, long> expected_total, expected_events;
  {
    OutboxWriter writer;
    pqxx::connection c(url);
    for (int t = 0; t < kEvents / 30; ++t) {
      pqxx::work tx(c);
      for (int i = 0; i < 30; ++i) {
        int n = t * 30 + i;
        std::string order = "order-" + std::to_string(n % kOrders);
        long amount = 1 + (n * 7919) % 100;
        writer.write(tx, {"order", order, "OrderAmountAdded", "{\"amount\": " + std::to_string(amount) + "}", {}, {}, {}});
        expected_total[order] += amount;
        ++expected_events[order];
      }
      tx.commit();
    }
  }
  auto published = [&] { return test::scalar(url, "SELECT count(*) FROM outbox_events WHERE published_at IS NOT NULL"); };
  auto applied = [&] { return test::scalar(url, "SELECT count(*) FROM consumer_inbox WHERE consumer = 'balances'"); };
  const std::map<std::string, std::string> relay_env{{"OUTBOX_RELAY_DATABASE_URL", url},
                                                     {"OUTBOX_RELAY_KAFKA_BROKERS", brokers},
                                                     {"OUTBOX_RELAY_RELAY_BATCH_SIZE", "100"},
                                                     {"OUTBOX_RELAY_HTTP_LISTEN", ""}};
  auto consumer = [&](const std::string& group, const std::string& commit_ms, const std::string& log) {
    return std::make_unique<test::ChildProcess>(
        kConsumer,
        std::vector<std::string>{"--database-url", url, "--brokers", brokers, "--group", group, "--consumer-name",
                                 "balances", "--commit-interval-ms", commit_ms, "--session-timeout-ms", "6000"},
        std::map<std::string, std::string>{}, temp_log(log));
  };

  // 1. The relay is killed in the middle of a drain (small batches, so the kill lands mid-way).
  {
    auto env = relay_env;
    env["OUTBOX_RELAY_RELAY_BATCH_SIZE"] = "10";
    test::ChildProcess relay(kRelay, {"run"}, env, temp_log("relay1"));
    REQUIRE(test::eventually([&] { return published() >= 300; }, 60s, 1ms));
    relay.signal(SIGKILL);
    REQUIRE(relay.wait(10s).has_value());
  }
  CHECK(published() < kEvents);

  // 2. A consumer applies events but never gets to commit an offset before it is killed.
  auto first = consumer("balances", "600000", "consumer1");
  test::ChildProcess relay(kRelay, {"run"}, relay_env, temp_log("relay2"));
  REQUIRE(test::eventually([&] { return applied() >= 1000; }, 60s));
  first->signal(SIGKILL);
  REQUIRE(first->wait(10s).has_value());
  const long applied_before_kill = applied();

  // 3. The relay lost the marks of 300 published events (a crash between publish and mark):
  //    they go out again.
  REQUIRE(test::eventually([&] { return published() == kEvents; }, 60s));
  {
    pqxx::connection c(url);
    pqxx::work tx(c);
    tx.exec("UPDATE outbox_events SET published_at = NULL WHERE seq % 10 = 0");
    tx.commit();
  }
  REQUIRE(test::eventually([&] { return published() == kEvents; }, 60s));

  // 4. The consumer restarts (same group: redelivery from offset 0) and a second instance
  //    with the same inbox name reads everything too (another group).
  auto restarted = consumer("balances", "500", "consumer2");
  auto twin = consumer("balances-twin", "500", "consumer3");
  REQUIRE(test::eventually([&] { return applied() == kEvents; }, 120s));

  // Read the topic: every event id is there, and some more than once.
  test::TopicReader reader(brokers, "outbox.event.order");
  std::set<std::string> ids;
  REQUIRE(reader.read_until(
      [&](const auto& all) {
        ids.clear();
        for (const auto& m : all)
          if (auto id = test::header(m, "id")) ids.insert(*id);
        return ids.size() == static_cast<std::size_t>(kEvents) && all.size() >= static_cast<std::size_t>(kEvents) + 300;
      },
      60s));
  const std::size_t duplicates_on_topic = reader.messages().size() - ids.size();

  // Let both consumers finish reading the topic (no inbox insert for 500 ms), then stop.
  int quiet = 0;
  REQUIRE(test::eventually([&] {
    bool busy = test::scalar(url, "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                                  "AND query LIKE 'INSERT INTO \"public\".\"consumer_inbox\"%'") > 0;
    quiet = busy ? 0 : quiet + 1;
    return quiet >= 10;
  }, 60s));
  restarted->signal(SIGTERM);
  twin->signal(SIGTERM);
  relay.signal(SIGTERM);
  CHECK(restarted->wait(30s) == std::optional<int>(0));
  CHECK(twin->wait(30s) == std::optional<int>(0));
  CHECK(relay.wait(30s) == std::optional<int>(0));
  const long absorbed = stat_of(restarted->output(), "duplicates_absorbed") + stat_of(twin->output(), "duplicates_absorbed");

  // Every effect exactly once: each balance equals the sum of its events, each event counted once.
  pqxx::connection c(url);
  pqxx::nontransaction tx(c);
  std::map<std::string, std::pair<long, long>> balances;
  for (const auto& row : tx.exec("SELECT order_id, total, events FROM demo_balances"))
    balances[row[0].c_str()] = {row[1].as<long>(), row[2].as<long>()};
  REQUIRE(balances.size() == static_cast<std::size_t>(kOrders));
  for (const auto& [order, total] : expected_total) {
    CHECK(balances[order].first == total);
    CHECK(balances[order].second == expected_events[order]);
  }
  CHECK(applied() == kEvents);
  CHECK(ids.size() == static_cast<std::size_t>(kEvents));  // no event missing
  CHECK(duplicates_on_topic >= 300);
  CHECK(absorbed >= applied_before_kill);  // at least everything the killed consumer had applied came again
  std::printf("pipeline: %d events, %zu duplicates on the topic, %ld redeliveries absorbed by the inbox, "
              "%ld applied before the consumer was killed, 0 effects applied twice\n",
              kEvents, duplicates_on_topic, absorbed, applied_before_kill);
}
