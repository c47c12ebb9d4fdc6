// The relay on its worst day, end to end with the real binary: restarts without a stall, an
// instance id two live processes never share, probes the database cannot hold up, and a
// SIGTERM that keeps relay.shutdown_timeout_ms with the broker away.
#include <catch2/catch.hpp>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <map>
#include <thread>

#include <pqxx/pqxx>

#include "tests/e2e/child_process.hpp"
#include "tests/e2e/delivery_check.hpp"
#include "tests/e2e/http_get.hpp"
#include "tests/integration/pg_fixture.hpp"
#include "tests/support/mock_kafka.hpp"

#include <librdkafka/rdkafka_mock.h>

using namespace outbox;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

const std::string kRelay = OUTBOX_RELAY_BINARY;

std::string temp_log(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("outbox-ops-" + std::to_string(::getpid()) + "-" + name + ".log"))
      .string();
}

// The default configuration but for where the database and broker are: no instance id.
std::map<std::string, std::string> relay_env(const std::string& url, const std::string& brokers, int http_port = 0) {
  return {{"OUTBOX_RELAY_DATABASE_URL", url},
          {"OUTBOX_RELAY_KAFKA_BROKERS", brokers},
          {"OUTBOX_RELAY_LOG_FORMAT", "text"},
          {"OUTBOX_RELAY_HTTP_LISTEN", http_port ? "127.0.0.1:" + std::to_string(http_port) : ""}};
}

std::int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())))];
}

// Milliseconds per GET of `path`, `n` times in a row.
std::vector<double> probe_latencies(int port, const std::string& path, int n, int* failures) {
  std::vector<double> out;
  for (int i = 0; i < n; ++i) {
    auto t0 = Clock::now();
    auto r = test::http_get(port, path);
    out.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    if (r.status != 200) ++*failures;
  }
  return out;
}

}  // namespace

TEST_CASE("a SIGKILLed relay restarted with the default config publishes again within 1 s, 20 times over",
          "[e2e][restart]") {
  auto url = test::fresh_database();
  test::MockKafka kafka(1);
  test::TopicReader reader(kafka.bootstrap(), "outbox.event.order");
  // A backlog big enough that there is always something to publish right after each kill.
  test::insert_events(url, 60'000, 200);
  auto env = relay_env(url, kafka.bootstrap());
  env["OUTBOX_RELAY_RELAY_BATCH_SIZE"] = "50";
  rd_kafka_mock_broker_set_rtt(kafka.cluster(), 1, 20);
  auto relay = std::make_unique<test::ChildProcess>(kRelay, std::vector<std::string>{"run"}, env, temp_log("restart-0"));
  REQUIRE(reader.read_until([](const auto& all) { return !all.empty(); }, 30s));

  std::vector<double> gaps_ms;
  for (int kill = 1; kill <= 20; ++kill) {
    relay->signal(SIGKILL);
    REQUIRE(relay->wait(10s).has_value());
    const auto killed_at = wall_ms();
    relay = std::make_unique<test::ChildProcess>(kRelay, std::vector<std::string>{"run"}, env,
                                                 temp_log("restart-" + std::to_string(kill)));
    // The new process's first message: the earliest one created after the kill.
    auto after_kill = [&](const auto& m) { return m.timestamp_ms >= killed_at; };
    REQUIRE(reader.read_until([&](const auto& all) { return std::any_of(all.begin(), all.end(), after_kill); }, 20s));
    std::int64_t first = INT64_MAX;
    for (const auto& m : reader.messages())
      if (after_kill(m)) first = std::min(first, m.timestamp_ms);
    gaps_ms.push_back(static_cast<double>(first - killed_at));
  }
  const double worst = *std::max_element(gaps_ms.begin(), gaps_ms.end());
  UNSCOPED_INFO("kill -> first publication over 20 kills: p50 " << percentile(gaps_ms, 0.5) << " ms, max " << worst
                                                                 << " ms");
  CHECK(worst < 1000);
  // One id throughout (the host's): the restarts took their own lanes back, not new ones.
  CHECK(test::scalar(url, "SELECT count(DISTINCT owner) FROM outbox_relay_lanes WHERE owner IS NOT NULL") == 1);
  relay->signal(SIGTERM);
  REQUIRE(relay->wait(30s).has_value());
  relay = std::make_unique<test::ChildProcess>(kRelay, std::vector<std::string>{"run"}, env, temp_log("restart-drain"));
  REQUIRE(test::poll_reading(
      reader, [&] { return test::scalar(url, "SELECT count(*) FROM outbox_events WHERE published_at IS NULL") == 0; },
      180s));
  // Everything is marked; the last acknowledged messages may still be on their way to the reader.
  CHECK(test::eventually(
      [&] {
        (void)reader.read_until([](const auto&) { return false; }, 200ms);
        return test::check_deliveries(url, reader.messages()).missing == 0;
      },
      30s, 10ms));
  auto v = test::check_deliveries(url, reader.messages());
  CHECK(v.missing == 0);
  CHECK(v.ordered());
}

TEST_CASE("two live relays given one instance id never both hold it: the second waits and takes over when the first dies",
          "[e2e][restart]") {
  auto url = test::fresh_database();
  test::MockKafka kafka(1);
  const int port_a = test::free_loopback_port(), port_b = test::free_loopback_port();
  auto env_a = relay_env(url, kafka.bootstrap(), port_a);
  env_a["OUTBOX_RELAY_OWNERSHIP_INSTANCE_ID"] = "orders-relay";
  auto env_b = relay_env(url, kafka.bootstrap(), port_b);
  env_b["OUTBOX_RELAY_OWNERSHIP_INSTANCE_ID"] = "orders-relay";
  test::ChildProcess a(kRelay, {"run"}, env_a, temp_log("same-id-a"));
  REQUIRE(test::eventually([&] { return test::metric_value(port_a, "outbox_relay_lanes_held") == 64; }, 20s));
  const long epochs_before = test::scalar(url, "SELECT sum(epoch) FROM outbox_relay_lanes");

  test::ChildProcess b(kRelay, {"run"}, env_b, temp_log("same-id-b"));
  REQUIRE(test::eventually([&] { return test::http_get(port_b, "/healthz").status == 200; }, 20s));
  // For three seconds: b holds nothing, a keeps every lane, nobody took a lane over.
  for (auto until = Clock::now() + 3s; Clock::now() < until; std::this_thread::sleep_for(100ms)) {
    REQUIRE(test::metric_value(port_b, "outbox_relay_lanes_held") <= 0);
    REQUIRE(test::metric_value(port_a, "outbox_relay_lanes_held") == 64);
  }
  CHECK(test::http_get(port_b, "/readyz").status == 503);
  CHECK(test::scalar(url, "SELECT sum(epoch) FROM outbox_relay_lanes") == epochs_before);

  a.signal(SIGKILL);
  REQUIRE(a.wait(10s).has_value());
  REQUIRE(test::eventually([&] { return test::metric_value(port_b, "outbox_relay_lanes_held") == 64; }, 30s));
  test::TopicReader reader(kafka.bootstrap(), "outbox.event.order");
  test::insert_events(url, 100, 10);
  REQUIRE(test::poll_reading(
      reader, [&] { return test::scalar(url, "SELECT count(*) FROM outbox_events WHERE published_at IS NULL") == 0; },
      30s));
}

TEST_CASE("two relays with the default config on one host take different ids and share the lanes", "[e2e][restart]") {
  auto url = test::fresh_database();
  test::MockKafka kafka(1);
  const int port_a = test::free_loopback_port(), port_b = test::free_loopback_port();
  test::ChildProcess a(kRelay, {"run"}, relay_env(url, kafka.bootstrap(), port_a), temp_log("default-a"));
  REQUIRE(test::eventually([&] { return test::metric_value(port_a, "outbox_relay_lanes_held") == 64; }, 20s));
  test::ChildProcess b(kRelay, {"run"}, relay_env(url, kafka.bootstrap(), port_b), temp_log("default-b"));
  REQUIRE(test::eventually(
      [&] {
        return test::metric_value(port_a, "outbox_relay_lanes_held") == 32 &&
               test::metric_value(port_b, "outbox_relay_lanes_held") == 32;
      },
      30s));
  CHECK(test::scalar(url, "SELECT count(DISTINCT owner) FROM outbox_relay_lanes") == 2);
  CHECK(test::scalar(url, "SELECT count(*) FROM outbox_relay_instances WHERE expires_at > now()") == 2);
}

TEST_CASE("/healthz answers within 10 ms (p99) while /metrics scrapes meet a locked table or a hung database",
          "[e2e][http]") {
  auto url = test::fresh_database();
  test::MockKafka kafka(1);
  const int port = test::free_loopback_port();
  test::insert_events(url, 100, 10);
  test::ChildProcess relay(kRelay, {"run"}, relay_env(url, kafka.bootstrap(), port), temp_log("probes"));
  REQUIRE(test::eventually([&] { return test::http_get(port, "/readyz").status == 200; }, 30s));

  auto scrape_while = [&](const std::string& what) {
    std::atomic<bool> done{false};
    std::vector<std::jthread> scrapers;
    for (int i = 0; i < 3; ++i)
      scrapers.emplace_back([&] {
        while (!done) (void)test::http_get(port, "/metrics");
      });
    std::this_thread::sleep_for(200ms);  // let the scrapes queue up first
    int failures = 0;
    auto ms = probe_latencies(port, "/healthz", 300, &failures);
    done = true;
    UNSCOPED_INFO(what << ": /healthz p50 " << percentile(ms, 0.5) << " ms, p99 " << percentile(ms, 0.99)
                       << " ms, max " << percentile(ms, 1.0) << " ms");
    CHECK(failures == 0);
    CHECK(percentile(ms, 0.99) < 10.0);
  };

  {
    // An ACCESS EXCLUSIVE lock on the outbox: every query of it waits.
    pqxx::connection locker(url);
    pqxx::work tx(locker);
    tx.exec("LOCK TABLE outbox_events IN ACCESS EXCLUSIVE MODE");
    scrape_while("outbox locked");
    // The gauges still come, from the last snapshot, with its age.
    auto body = test::http_get(port, "/metrics").body;
    CHECK(body.find("outbox_relay_status_age_seconds ") != std::string::npos);
    tx.abort();
  }
  {
    // A hung database: every backend serving the relay stopped.
    std::vector<int> pids;
    pqxx::connection admin(url);
    pqxx::nontransaction q(admin);
    for (const auto& row : q.exec("SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'outbox-relay%'"))
      pids.push_back(row[0].as<int>());
    REQUIRE_FALSE(pids.empty());
    for (int pid : pids) ::kill(pid, SIGSTOP);
    scrape_while("database backends stopped");
    for (int pid : pids) ::kill(pid, SIGCONT);
  }
  CHECK(test::eventually([&] { return test::http_get(port, "/readyz").status == 200; }, 30s));
}

TEST_CASE("900 idle connections to the HTTP endpoint hold no more than the cap, and probes still answer", "[e2e][http]") {
  auto url = test::fresh_database();
  test::MockKafka kafka(1);
  const int port = test::free_loopback_port();
  test::ChildProcess relay(kRelay, {"run"}, relay_env(url, kafka.bootstrap(), port), temp_log("fds"));
  REQUIRE(test::eventually([&] { return test::http_get(port, "/healthz").status == 200; }, 30s));
  auto fds = [&] {
    long n = 0;
    for (auto it = std::filesystem::directory_iterator("/proc/" + std::to_string(relay.pid()) + "/fd");
         it != std::filesystem::directory_iterator(); ++it)
      ++n;
    return n;
  };
  const long before = fds();
  std::vector<int> idle;
  for (int i = 0; i < 900; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
      (void)::send(fd, "GET /metr", 9, 0);  // half a request, never finished
      idle.push_back(fd);
    } else {
      ::close(fd);
    }
  }
  int failures = 0;
  auto ms = probe_latencies(port, "/healthz", 50, &failures);
  UNSCOPED_INFO("fds before " << before << ", with 900 idle connections " << fds() << "; /healthz p99 "
                              << percentile(ms, 0.99) << " ms");
  CHECK(failures == 0);
  CHECK(fds() < before + 64 + 8);
  CHECK(test::metric_value(port, "outbox_relay_http_connections_refused_total") >= 900 - 64);
  for (int fd : idle) ::close(fd);
}

TEST_CASE("SIGTERM with the broker away exits within relay.shutdown_timeout_ms, leaving the rows to be sent again",
          "[e2e][shutdown]") {
  auto url = test::fresh_database();
  test::MockKafka kafka(1);
  test::TopicReader reader(kafka.bootstrap(), "outbox.event.order");
  const int port = test::free_loopback_port();
  auto env = relay_env(url, kafka.bootstrap(), port);
  env["OUTBOX_RELAY_RELAY_SHUTDOWN_TIMEOUT_MS"] = "1000";
  env["OUTBOX_RELAY_KAFKA_DELIVERY_TIMEOUT_MS"] = "30000";
  test::insert_events(url, 10, 10);
  test::ChildProcess relay(kRelay, {"run"}, env, temp_log("shutdown"));
  REQUIRE(reader.read_until([](const auto& all) { return all.size() >= 10; }, 30s));
  // The broker goes away; the next rows are sent and wait for an acknowledgement that never comes.
  rd_kafka_mock_broker_set_down(kafka.cluster(), 1);
  const double batches = test::metric_value(port, "outbox_relay_batches_total");
  test::insert_events(url, 10, 10);
  REQUIRE(test::eventually([&] { return test::metric_value(port, "outbox_relay_batches_total") > batches; }, 10s));
  const auto t0 = Clock::now();
  relay.signal(SIGTERM);
  auto code = relay.wait(40s);
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0);
  UNSCOPED_INFO("SIGTERM to exit: " << took.count() << " ms");
  REQUIRE(code.has_value());
  CHECK(took < 1500ms);
  CHECK(test::scalar(url, "SELECT count(*) FROM outbox_events WHERE published_at IS NULL") == 10);

  rd_kafka_mock_broker_set_up(kafka.cluster(), 1);
  test::ChildProcess again(kRelay, {"run"}, relay_env(url, kafka.bootstrap()), temp_log("shutdown-again"));
  REQUIRE(test::poll_reading(
      reader, [&] { return test::scalar(url, "SELECT count(*) FROM outbox_events WHERE published_at IS NULL") == 0; },
      60s));
  REQUIRE(reader.read_until([](const auto& all) { return all.size() >= 20; }, 30s));
  CHECK(test::check_deliveries(url, reader.messages()).missing == 0);
}

namespace {

// A login role with the grants of schema/roles/relay_role.sql, UPDATE on the outbox only if asked.
std::string role_with_grants(const std::string& url, const std::string& role, const std::string& password,
                             bool update_on_outbox) {
  test::exec(url, "DROP ROLE IF EXISTS " + role);
  test::exec(url, "CREATE ROLE " + role + " LOGIN PASSWORD '" + password + "'");
  std::string grants =
      "GRANT USAGE ON SCHEMA public TO " + role + "; GRANT SELECT ON outbox_events TO " + role +
      "; GRANT SELECT, UPDATE (listening, changed_at) ON outbox_relay_wakeup TO " + role +
      "; GRANT SELECT ON SEQUENCE outbox_events_seq_seq TO " + role +
      "; GRANT SELECT, UPDATE (owner, epoch, lease_until, acquired_at, renewed_at) ON outbox_relay_lanes TO " + role +
      "; GRANT SELECT, INSERT, UPDATE, DELETE ON outbox_relay_instances TO " + role + ";";
  if (update_on_outbox)
    grants += "GRANT UPDATE (published_at, attempts, next_attempt_at, last_error, dead_lettered_at) ON outbox_events TO " +
              role + ";";
  test::exec(url, grants);
  return url + " user=" + role + " password=" + password;
}

// Puts `line` first in the cluster's pg_hba.conf (the shared cluster trusts everyone else).
void require_password_for(const std::string& url, const std::string& role) {
  const auto hba = [&] {
    pqxx::connection c(url);
    pqxx::nontransaction q(c);
    return q.exec("SHOW hba_file")[0][0].as<std::string>();
  }();
  std::ifstream in(hba);
  std::stringstream rest;
  rest << in.rdbuf();
  std::ofstream out(hba, std::ios::trunc);
  out << "host all " << role << " 127.0.0.1/32 scram-sha-256\nlocal all " << role << " scram-sha-256\n" << rest.str();
  out.close();
  test::exec(url, "SELECT pg_reload_conf()");
}

}  // namespace

TEST_CASE("a role without UPDATE on the outbox exits 77 naming the role and the grant, each row sent once",
          "[e2e][access]") {
  auto url = test::fresh_database();
  test::MockKafka kafka(1);
  test::TopicReader reader(kafka.bootstrap(), "outbox.event.order");
  const std::string role = "relay_no_update_" + std::to_string(::getpid());
  auto role_url = role_with_grants(url, role, "pw", false);
  test::insert_events(url, 50, 5);
  test::ChildProcess relay(kRelay, {"run"}, relay_env(role_url, kafka.bootstrap()), temp_log("no-update"));
  auto code = relay.wait(30s);
  REQUIRE(code.has_value());
  CHECK(*code == 77);
  CHECK_THAT(relay.output(), Catch::Contains(role));
  CHECK_THAT(relay.output(), Catch::Contains("UPDATE (published_at)"));
  CHECK(test::scalar(url, "SELECT count(*) FROM outbox_events WHERE published_at IS NULL") == 50);
  reader.read_until([](const auto& all) { return all.size() >= 50; }, 10s);
  CHECK(reader.messages().size() <= 50);
  test::exec(url, "DROP OWNED BY " + role + "; DROP ROLE " + role);
}

TEST_CASE("a wrong password exits 77 and a missing database 78, at once, neither echoing the password",
          "[e2e][access]") {
  auto url = test::fresh_database();
  test::MockKafka kafka(1);
  const std::string role = "relay_pw_" + std::to_string(::getpid());
  auto role_url = role_with_grants(url, role, "right-Secret-1", true);
  require_password_for(url, role);
  // The right password works (the pg_hba line took effect) ...
  CHECK(test::scalar(role_url, "SELECT 1") == 1);
  // ... a wrong one is refused for good.
  auto wrong = url + " user=" + role + " password=wrong-Secret-2";
  const auto t0 = Clock::now();
  test::ChildProcess relay(kRelay, {"run"}, relay_env(wrong, kafka.bootstrap()), temp_log("wrong-password"));
  auto code = relay.wait(30s);
  REQUIRE(code.has_value());
  CHECK(*code == 77);
  CHECK(Clock::now() - t0 < 10s);
  CHECK_THAT(relay.output(), Catch::Contains("password authentication failed"));
  CHECK_THAT(relay.output(), !Catch::Contains("wrong-Secret-2"));

  auto missing = url + " dbname=no_such_database_" + std::to_string(::getpid());
  test::ChildProcess nodb(kRelay, {"run"}, relay_env(missing, kafka.bootstrap()), temp_log("no-database"));
  code = nodb.wait(30s);
  REQUIRE(code.has_value());
  CHECK(*code == 78);
  CHECK_THAT(nodb.output(), Catch::Contains("database.url"));
  test::exec(url, "DROP OWNED BY " + role + "; DROP ROLE " + role);
}

// A crash leaves its stack in the log stream and keeps the status (and core dump) it had: the
// report names the signal and the thread, then the frames (resolved later with addr2line).
TEST_CASE("relay: a fatal signal writes a backtrace to stderr and still dies of that signal", "[e2e][ops]") {
  for (const int sig : {SIGSEGV, SIGABRT}) {
    const int port = test::free_loopback_port();
    test::ChildProcess relay(kRelay, {"run"}, relay_env("postgresql://127.0.0.1:1/unreachable", "127.0.0.1:1", port),
                       temp_log("crash-" + std::to_string(sig)));
    // Up (and retrying the database) once it answers its liveness probe.
    REQUIRE(test::eventually([&] { return test::http_get(port, "/healthz").status == 200; }, 20s));
    relay.signal(sig);
    const auto code = relay.wait(20s);
    INFO(relay.output());
    CHECK(code == std::optional<int>(128 + sig));
    const auto out = relay.output();
    CHECK(out.find(std::string("fatal signal ") + sigabbrev_np(sig) + " in thread outbox-relay; backtrace:\n") !=
          std::string::npos);
    CHECK(out.find("outbox-relay(+0x") != std::string::npos);  // frames of the binary itself
  }
}
