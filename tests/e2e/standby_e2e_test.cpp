// Two relays on one outbox: one publishes, the other is a ready standby that takes over when
// the publisher dies. Readiness and the publisher gauge, seen from outside.
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

TEST_CASE("a standby relay is ready and not the publisher, and takes over when the publisher is killed",
          "[e2e][standby]") {
  auto url = test::fresh_database();
  test::MockKafka kafka(1);
  auto start = [&](const std::string& name, int port) {
    std::map<std::string, std::string> env{{"OUTBOX_RELAY_DATABASE_URL", url},
                                           {"OUTBOX_RELAY_KAFKA_BROKERS", kafka.bootstrap()},
                                           {"OUTBOX_RELAY_HTTP_LISTEN", "127.0.0.1:" + std::to_string(port)},
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

  const int second_port = test::free_loopback_port();
  auto second = start("standby", second_port);
  CHECK(test::eventually([&] { return test::http_get(second_port, "/readyz").status == 200; }, 30s));
  CHECK(test::metric_value(second_port, "outbox_relay_is_publisher") == 0);
  CHECK(test::metric_value(second_port, "outbox_relay_published_total") == 0);
  CHECK(test::http_get(first_port, "/readyz").status == 200);

  first->signal(SIGKILL);
  (void)first->wait(10s);
  test::insert_events(url, 100, 10);
  // The standby retries the lock at most 10 s apart once the killed session is gone.
  CHECK(test::eventually([&] { return unpublished() == 0; }, 60s));
  CHECK(test::metric_value(second_port, "outbox_relay_is_publisher") == 1);
  CHECK(test::metric_value(second_port, "outbox_relay_published_total") >= 100);
  CHECK(test::http_get(second_port, "/readyz").status == 200);
  second->signal(SIGTERM);
  CHECK(second->wait(30s) == std::optional<int>(0));
}
