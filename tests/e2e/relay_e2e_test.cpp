// End to end with the real outbox-relay binary, a throwaway PostgreSQL cluster and the mock
// Kafka cluster: every event arrives, in seq order per aggregate, through SIGTERM and SIGKILL.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>

#include <filesystem>
#include <map>

#include "tests/e2e/child_process.hpp"
#include "tests/e2e/delivery_check.hpp"
#include "tests/e2e/http_get.hpp"
#include "tests/integration/pg_fixture.hpp"
#include "tests/support/mock_kafka.hpp"

#include <librdkafka/rdkafka_mock.h>

using namespace outbox;
using namespace std::chrono_literals;

namespace {

const std::string kRelay = OUTBOX_RELAY_BINARY;

std::string temp_log(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("outbox-e2e-" + std::to_string(::getpid()) + "-" + name + ".log"))
      .string();
}

std::map<std::string, std::string> relay_env(const std::string& url, const std::string& brokers) {
  return {{"OUTBOX_RELAY_DATABASE_URL", url},
          {"OUTBOX_RELAY_KAFKA_BROKERS", brokers},
          {"OUTBOX_RELAY_RELAY_BATCH_SIZE", "500"},
          {"OUTBOX_RELAY_LOG_FORMAT", "text"},
          // No HTTP unless a test asks: tests run in parallel and the default port is one.
          {"OUTBOX_RELAY_HTTP_LISTEN", ""}};
}

long unpublished(const std::string& url) {
  return test::scalar(url, "SELECT count(*) FROM outbox_events WHERE published_at IS NULL");
}

}  // namespace

TEST_CASE("10,000 events over 100 aggregates all arrive in order per aggregate and SIGTERM exits 0", "[e2e]") {
  auto url = test::fresh_database();
  test::MockKafka kafka(1);
  test::TopicReader reader(kafka.bootstrap(), "outbox.event.order");
  test::insert_events(url, 5000, 100);
  test::ChildProcess relay(kRelay, {"run"}, relay_env(url, kafka.bootstrap()), temp_log("drain"));
  test::insert_events(url, 5000, 100);  // more arrive while it runs
  REQUIRE(test::poll_reading(reader, [&] { return unpublished(url) == 0; }, 120s));
  REQUIRE(reader.read_until([](const auto& all) { return all.size() >= 10000; }, 60s));

  relay.signal(SIGTERM);
  auto code = relay.wait(30s);
  REQUIRE(code.has_value());
  CHECK(*code == 0);

  auto v = test::check_deliveries(url, reader.messages());
  CHECK(v.distinct == 10000);
  CHECK(v.missing == 0);
  CHECK(v.ordered());
}

TEST_CASE("SIGKILL in the middle of a drain, then a restart: no event is missing", "[e2e]") {
  auto url = test::fresh_database();
  test::MockKafka kafka(1);
  test::TopicReader reader(kafka.bootstrap(), "outbox.event.order");
  test::insert_events(url, 10000, 100);
  long killed_with_unpublished = 0;
  {
    auto env = relay_env(url, kafka.bootstrap());
    env["OUTBOX_RELAY_RELAY_BATCH_SIZE"] = "100";  // many batches, so the kill lands mid-drain
    test::ChildProcess relay(kRelay, {"run"}, env, temp_log("kill1"));
    REQUIRE(test::poll_reading(reader, [&] { return unpublished(url) < 8000; }, 60s));
    relay.signal(SIGKILL);
    REQUIRE(relay.wait(10s) == std::optional<int>(128 + SIGKILL));
    killed_with_unpublished = unpublished(url);
  }
  CHECK(killed_with_unpublished > 0);  // the kill really interrupted the drain
  test::ChildProcess restarted(kRelay, {"run"}, relay_env(url, kafka.bootstrap()), temp_log("kill2"));
  REQUIRE(test::poll_reading(reader, [&] { return unpublished(url) == 0; }, 120s));
  REQUIRE(reader.read_until([&](const auto&) { return test::check_deliveries(url, reader.messages()).missing == 0; }, 60s));
  restarted.signal(SIGTERM);
  CHECK(restarted.wait(30s) == std::optional<int>(0));

  auto v = test::check_deliveries(url, reader.messages());
  CHECK(v.missing == 0);
  CHECK(v.distinct == 10000);
  CHECK(v.ordered());
  std::printf("kill test: %ld of 10000 rows unpublished at SIGKILL, %zu duplicates delivered, 0 missing\n",
              killed_with_unpublished, v.duplicates);
}

TEST_CASE("a bad config exits 78 naming the key and the password never reaches the output", "[e2e]") {
  test::ChildProcess bad(kRelay, {"run", "--set", "relay.batch_size=0"},
                         {{"OUTBOX_RELAY_KAFKA_BROKERS", "127.0.0.1:1"},
                          {"OUTBOX_RELAY_DATABASE_URL", "postgresql://relay:hunter2@127.0.0.1:1/x"},
                          {"OUTBOX_RELAY_HTTP_LISTEN", ""}},
                         temp_log("badconfig"));
  CHECK(bad.wait(10s) == std::optional<int>(78));
  CHECK_THAT(bad.output(), Catch::Contains("relay.batch_size"));
  CHECK_THAT(bad.output(), !Catch::Contains("hunter2"));

  // Unreachable database: keeps retrying (logging why, without the password) until SIGTERM.
  test::ChildProcess waiting(kRelay, {"run"},
                             {{"OUTBOX_RELAY_KAFKA_BROKERS", "127.0.0.1:1"},
                              {"OUTBOX_RELAY_DATABASE_URL", "postgresql://relay:hunter2@127.0.0.1:1/x"},
                              {"OUTBOX_RELAY_HTTP_LISTEN", ""}},
                             temp_log("unreachable"));
  auto until = std::chrono::steady_clock::now() + 20s;
  while (waiting.output().find("waiting_to_start") == std::string::npos && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(50ms);
  waiting.signal(SIGTERM);
  CHECK(waiting.wait(10s) == std::optional<int>(0));
  CHECK_THAT(waiting.output(), !Catch::Contains("hunter2"));
}

// Contract 10: a pass-through client property that would break per-key order or at-least-once
// is refused before anything runs (exit 78, the key named), by `check-config` as by `run`.
TEST_CASE("pass-through Kafka properties that break order or at-least-once are refused with exit 78", "[e2e]") {
  const std::vector<std::pair<std::string, std::string>> refused{
      {"partitioner", "random"},
      {"partitioner", "consistent_random"},
      {"enable.gapless.guarantee", "false"},
      {"enable.gapless.guarantee", "0"},
      {"max.in.flight.requests.per.connection", "6"},
      {"max.in.flight", "100"},
      {"enable.idempotence", "false"},
      {"acks", "1"},
      {"request.required.acks", "0"},
      {"queuing.strategy", "lifo"},
      {"delivery.report.only.error", "true"},
      {"transactional.id", "relay-1"},
      {"message.timeout.ms", "0"},
      {"retries", "0"},
      {"no.such.property", "1"},
  };
  for (const auto& [name, value] : refused) {
    for (const char* command : {"check-config", "run"}) {
      INFO(command << " with kafka.properties." << name << "=" << value);
      test::ChildProcess p(kRelay, {command, "--set", "kafka.properties." + name + "=" + value},
                           {{"OUTBOX_RELAY_KAFKA_BROKERS", "127.0.0.1:1"},
                            {"OUTBOX_RELAY_DATABASE_URL", "postgresql://relay@127.0.0.1:1/x"},
                            {"OUTBOX_RELAY_HTTP_LISTEN", ""}},
                           temp_log("refusedprop"));
      CHECK(p.wait(10s) == std::optional<int>(78));
      CHECK_THAT(p.output(), Catch::Contains("kafka.properties." + name));
    }
  }
  // Ones that keep the guarantees pass.
  for (const auto& [name, value] : std::vector<std::pair<std::string, std::string>>{
           {"partitioner", "murmur2_random"}, {"partitioner", "murmur2"}, {"max.in.flight", "1"},
           {"enable.gapless.guarantee", "true"}, {"compression.type", "lz4"}, {"acks", "-1"}}) {
    INFO("kafka.properties." << name << "=" << value);
    test::ChildProcess p(kRelay, {"check-config", "--set", "kafka.properties." + name + "=" + value},
                         {{"OUTBOX_RELAY_KAFKA_BROKERS", "127.0.0.1:1"}, {"OUTBOX_RELAY_HTTP_LISTEN", ""}},
                         temp_log("acceptedprop"));
    CHECK(p.wait(10s) == std::optional<int>(0));
  }
}

TEST_CASE("/healthz, /readyz and /metrics tell an operator what the relay is doing", "[e2e][http]") {
  auto url = test::fresh_database();
  test::MockKafka kafka(1);
  const int port = test::free_loopback_port();
  auto env = relay_env(url, kafka.bootstrap());
  env["OUTBOX_RELAY_HTTP_LISTEN"] = "127.0.0.1:" + std::to_string(port);
  env["OUTBOX_RELAY_KAFKA_DELIVERY_TIMEOUT_MS"] = "2000";
  env["OUTBOX_RELAY_RETENTION_PUBLISHED_HOURS"] = "1";
  env["OUTBOX_RELAY_RETENTION_INTERVAL_S"] = "1";
  test::insert_events(url, 500, 10);
  test::ChildProcess relay(kRelay, {"run"}, env, temp_log("http"));
  auto metric = [&](const std::string& name) { return test::metric_value(port, name); };

  REQUIRE(test::eventually([&] { return unpublished(url) == 0; }, 60s));
  CHECK(test::http_get(port, "/healthz").status == 200);
  CHECK(test::eventually([&] { return test::http_get(port, "/readyz").status == 200; }, 20s));
  CHECK(metric("outbox_relay_published_total") == 500);
  // The database's gauges come from a snapshot refreshed every 5 s, its age beside them.
  CHECK(test::eventually([&] { return metric("outbox_relay_backlog_events") == 0; }, 15s));
  CHECK(metric("outbox_relay_oldest_unpublished_age_seconds") == 0);
  CHECK(metric("outbox_relay_database_up") == 1);
  CHECK(metric("outbox_relay_status_age_seconds") >= 0);
  CHECK(metric("outbox_relay_status_age_seconds") < 10);
  CHECK(test::http_get(port, "/nope").status == 404);

  // The broker goes away: nothing is marked, the relay says it is not ready, lag grows.
  rd_kafka_mock_broker_set_down(kafka.cluster(), 1);
  test::insert_events(url, 10, 2);
  CHECK(test::eventually([&] { return test::http_get(port, "/readyz").status == 503; }, 30s));
  CHECK(test::http_get(port, "/healthz").status == 200);
  CHECK(test::eventually([&] { return metric("outbox_relay_backlog_events") == 10; }, 15s));
  CHECK(test::eventually([&] { return metric("outbox_relay_oldest_unpublished_age_seconds") > 0; }, 10s));
  // Not ready because steps fail, or because none completed within the window (a step waits
  // up to the delivery timeout): the failures show once the timeout has passed.
  CHECK(test::eventually([&] { return metric("outbox_relay_transient_errors_total") >= 1; }, 10s));

  // It comes back: the relay catches up and is ready again.
  rd_kafka_mock_broker_set_up(kafka.cluster(), 1);
  CHECK(test::eventually([&] { return unpublished(url) == 0 && test::http_get(port, "/readyz").status == 200; }, 60s));
  CHECK(test::eventually([&] { return metric("outbox_relay_backlog_events") == 0; }, 15s));
  CHECK(metric("outbox_relay_published_total") == 510);
  CHECK(metric("outbox_relay_commit_to_ack_seconds_count") == 510);
  CHECK(metric("outbox_relay_commit_to_ack_seconds_sum") > 0);
  CHECK(metric("outbox_relay_batch_duration_seconds_count") >= 2);
  CHECK(metric("outbox_relay_is_publisher") == 1);

  // Its database sessions are terminated: it reconnects, counts it, and carries on.
  CHECK(test::scalar(url, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                          "WHERE application_name = 'outbox-relay'") >= 1);
  test::insert_events(url, 10, 2);
  CHECK(test::eventually([&] { return unpublished(url) == 0; }, 60s));
  CHECK(test::eventually([&] { return metric("outbox_relay_database_reconnects_total") >= 1; }, 10s));
  CHECK(metric("outbox_relay_published_total") == 520);

  // Retention: rows published more than an hour ago go; the rest stay.
  CHECK(test::scalar(url, "SELECT count(*) FROM outbox_events") == 520);
  test::exec(url, "UPDATE outbox_events SET created_at = now() - interval '3 hours', "
                  "published_at = now() - interval '2 hours' WHERE seq <= 100");
  CHECK(test::eventually([&] { return test::scalar(url, "SELECT count(*) FROM outbox_events") == 420; }, 30s));
  CHECK(test::eventually([&] { return metric("outbox_relay_retention_deleted_total") == 100; }, 10s));
  CHECK(test::scalar(url, "SELECT min(seq) FROM outbox_events") == 101);
  relay.signal(SIGTERM);
  CHECK(relay.wait(30s) == std::optional<int>(0));

  test::ChildProcess bad(kRelay, {"run", "--set", "http.listen=localhost:http"}, relay_env(url, kafka.bootstrap()),
                         temp_log("badhttp"));
  CHECK(bad.wait(10s) == std::optional<int>(78));
}

TEST_CASE("under systemd the relay says READY, pings the watchdog and says STOPPING on SIGTERM", "[e2e][systemd]") {
  auto url = test::fresh_database();
  test::MockKafka kafka(1);
  // Plays systemd's part: a datagram socket named by NOTIFY_SOCKET.
  auto path = std::filesystem::temp_directory_path() / ("outbox-notify-" + std::to_string(::getpid()) + ".sock");
  std::filesystem::remove(path);
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  timeval tv{0, 200'000};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::vector<std::string> received;
  auto receive_until = [&](const std::string& wanted, std::size_t times, std::chrono::seconds deadline) {
    for (auto until = std::chrono::steady_clock::now() + deadline; std::chrono::steady_clock::now() < until;) {
      std::size_t seen = 0;
      for (const auto& m : received) seen += m.find(wanted) != std::string::npos ? 1 : 0;
      if (seen >= times) return true;
      char buf[512];
      auto n = ::recv(fd, buf, sizeof buf, 0);  // bounded by SO_RCVTIMEO
      if (n > 0) received.emplace_back(buf, static_cast<std::size_t>(n));
    }
    return false;
  };

  auto env = relay_env(url, kafka.bootstrap());
  env["NOTIFY_SOCKET"] = path.string();
  env["WATCHDOG_USEC"] = "1000000";  // pings every 0.5 s expected
  test::insert_events(url, 100, 5);
  test::ChildProcess relay(kRelay, {"run"}, env, temp_log("systemd"));
  CHECK(receive_until("READY=1", 1, 30s));
  CHECK(receive_until("STATUS=publishing", 1, 30s));
  CHECK(receive_until("WATCHDOG=1", 4, 10s));
  CHECK(test::eventually([&] { return unpublished(url) == 0; }, 60s));
  relay.signal(SIGTERM);
  CHECK(receive_until("STOPPING=1", 1, 10s));
  CHECK(relay.wait(30s) == std::optional<int>(0));
  ::close(fd);
  std::filesystem::remove(path);
}
