// Two relays on one outbox: the second one joining gets half of the lanes without a stop, both
// are ready, and when one is killed the other takes every lane one lease later. Readiness and
// the lane gauges, seen from outside.
#include <catch2/catch.hpp>

#include <csignal>
#include <filesystem>

#include "tests/e2e/child_process.hpp"
#include "tests/e2e/delivery_check.hpp"
#include "tests/e2e/http_get.hpp"
#include "tests/integration/pg_fixture.hpp"
#include "tests/support/mock_kafka.hpp"

using namespace outbox;
using namespace std::chrono_literals;

TEST_CASE("a second relay takes half of the lanes, both are ready, and the survivor takes all when one is killed",
          "[e2e][lanes]") {
  auto url = test::fresh_database();
  test::MockKafka kafka(1);
  auto start = [&](const std::string& name, int port) {
    std::map<std::string, std::string> env{{"OUTBOX_RELAY_DATABASE_URL", url},
                                           {"OUTBOX_RELAY_KAFKA_BROKERS", kafka.bootstrap()},
                                           {"OUTBOX_RELAY_HTTP_LISTEN", "127.0.0.1:" + std::to_string(port)},
                                           {"OUTBOX_RELAY_OWNERSHIP_LEASE_TTL_MS", "3000"},
                                           {"OUTBOX_RELAY_OWNERSHIP_RENEW_INTERVAL_MS", "1000"},
                                           {"OUTBOX_RELAY_LOG_FORMAT", "text"}};
    auto log = std::filesystem::temp_directory_path() /
               ("outbox-e2e-" + std::to_string(::getpid()) + "-" + name + ".log");
    return std::make_unique<test::ChildProcess>(OUTBOX_RELAY_BINARY, std::vector<std::string>{"run"}, env,
                                                log.string());
  };
  auto unpublished = [&] { return test::scalar(url, "SELECT count(*) FROM outbox_events WHERE published_at IS NULL"); };

  const int first_port = test::free_loopback_port();
  auto first = start("publisher", first_port);
  test::insert_events(url, 200, 10);
  REQUIRE(test::eventually([&] { return unpublished() == 0; }, 60s));
  REQUIRE(test::metric_value(first_port, "outbox_relay_is_publisher") == 1);

  REQUIRE(test::metric_value(first_port, "outbox_relay_lanes_held") == 64);

  const int second_port = test::free_loopback_port();
  auto second = start("second", second_port);
  auto held = [](int port) { return test::metric_value(port, "outbox_relay_lanes_held"); };
  CHECK(test::eventually([&] { return held(first_port) == 32 && held(second_port) == 32; }, 30s));
  CHECK(test::http_get(second_port, "/readyz").status == 200);
  CHECK(test::http_get(first_port, "/readyz").status == 200);
  CHECK(test::metric_value(second_port, "outbox_relay_is_publisher") == 1);
  CHECK(test::metric_value(second_port, "outbox_relay_live_instances") == 2);
  test::insert_events(url, 200, 40);
  CHECK(test::eventually([&] { return unpublished() == 0; }, 60s));
  CHECK(test::metric_value(second_port, "outbox_relay_published_total") > 0);

  first->signal(SIGKILL);
  (void)first->wait(10s);
  test::insert_events(url, 100, 40);
  // The killed instance's leases expire 3 s after its last renewal; the survivor takes them.
  CHECK(test::eventually([&] { return held(second_port) == 64; }, 30s));
  CHECK(test::eventually([&] { return unpublished() == 0; }, 60s));
  CHECK(test::metric_value(second_port, "outbox_relay_lanes_acquired_total") == 64);
  CHECK(test::http_get(second_port, "/readyz").status == 200);
  second->signal(SIGTERM);
  CHECK(second->wait(30s) == std::optional<int>(0));
  CHECK(test::scalar(url, "SELECT count(*) FROM outbox_relay_lanes WHERE owner IS NOT NULL") == 0);
}
