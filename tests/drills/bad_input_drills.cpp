// Bad input to the daemon, with events waiting in the outbox: a broken config file (malformed
// YAML, an unknown key, a wrong type) exits 78 naming the problem and touches nothing; an
// unreachable database makes the relay wait, not exit; a missing outbox table or one with a
// column missing exits 69 naming it. Once the input is fixed every waiting event goes out.
// (Bad values through flags and the environment: relay_e2e_test and config_loader_test.)
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include "relay/app/exit_codes.hpp"
#include "tests/drills/drill_harness.hpp"
#include "tests/integration/pg_fixture.hpp"

using namespace outbox;
using namespace outbox::test;
using namespace outbox::test::drill;
using namespace std::chrono_literals;

namespace {

std::string write_file(const std::string& name, const std::string& text) {
  auto path = std::filesystem::temp_directory_path() / ("outbox-drill-" + std::to_string(::getpid()) + "-" + name);
  std::ofstream(path) << text;
  return path.string();
}

}  // namespace

TEST_CASE("a broken config file exits 78 naming the file, line or key, and no event is touched", "[drill][input]") {
  Drill d("bad config file (3 kinds), then fixed");
  insert_events(d.url, 500, 20);
  struct Case {
    std::string yaml;
    std::vector<std::string> expected;
  };
  const std::vector<Case> cases{
      {"relay:\n  batch_size: 100\n  poll_interval_ms: [1, 2\n", {"malformed YAML", "bad1.yaml:"}},
      {"relay:\n  batchsize: 100\n", {"relay.batchsize: unknown key", "did you mean relay.batch_size?"}},
      {"relay:\n  batch_size: lots\nkafka: localhost:9092\n",
       {"relay.batch_size: expected an integer", "kafka: is a section"}},
  };
  int n = 0;
  for (const auto& c : cases) {
    const auto file = write_file("bad" + std::to_string(++n) + ".yaml", c.yaml);
    auto o = d.run_command({"run", "--config", file});
    INFO(o.output);
    CHECK(o.code == std::optional<int>(relay::app::kExitConfig));
    for (const auto& e : c.expected) CHECK_THAT(o.output, Catch::Contains(e));
    std::filesystem::remove(file);
  }
  CHECK(d.count("published_at IS NOT NULL OR attempts > 0") == 0);

  const auto fixed = write_file("good.yaml", "relay:\n  batch_size: 100\n");
  d.setup.relay_env["OUTBOX_RELAY_CONFIG"] = fixed;
  d.start_relay();
  auto recovery = d.recover();
  d.finish(recovery, "3 config files refused with exit 78");
  std::filesystem::remove(fixed);
}

TEST_CASE("an unreachable database at start-up: the relay waits (alive, not ready), then publishes everything",
          "[drill][input]") {
  PgCluster cluster;
  Drill d("database unreachable at start-up", 1, &cluster);
  insert_events(d.url, 500, 20);
  cluster.stop(false);
  d.start_relay();
  const bool waiting =
      eventually([&] { return d.relay->output().find("waiting_to_start") != std::string::npos; }, 20s);
  INFO(d.relay_log());
  REQUIRE(waiting);
  CHECK(eventually([&] { return d.readyz() == 503; }, 10s));
  CHECK(http_get(d.http_port, "/healthz").status == 200);
  CHECK(d.relay->running());  // waiting, not exiting into a restart loop

  cluster.start();
  auto recovery = d.recover();
  d.finish(recovery, "the relay waited for the database");
}

TEST_CASE("a missing outbox table or a missing column exits 69 naming it, and after the fix nothing is lost",
          "[drill][input]") {
  Drill d("outbox table missing, then a column");
  // A database the migrations never ran in.
  const std::string bare = "bare_" + std::to_string(::getpid());
  PgCluster::shared().create_database(bare);
  const std::string bare_url = PgCluster::shared().conninfo(bare);
  auto missing = d.run_command({"run"}, bare_url);
  INFO(missing.output);
  CHECK(missing.code == std::optional<int>(relay::app::kExitSchemaUnavailable));
  CHECK_THAT(missing.output, Catch::Contains("public.outbox_events does not exist") && Catch::Contains("migrate"));
  // The fix the message names works.
  CHECK(d.run_command({"migrate"}, bare_url).code == std::optional<int>(0));
  CHECK(scalar(bare_url, "SELECT count(*) FROM outbox_events") == 0);

  // A table someone altered by hand: a column the relay writes is gone. Events wait in it.
  insert_events(d.url, 500, 20);
  d.sql("ALTER TABLE outbox_events DROP COLUMN next_attempt_at");
  auto o = d.run_command({"run"});
  INFO(o.output);
  CHECK(o.code == std::optional<int>(relay::app::kExitSchemaUnavailable));
  CHECK_THAT(o.output, Catch::Contains("lacks columns: next_attempt_at"));
  CHECK(d.count("published_at IS NOT NULL OR attempts > 0") == 0);

  d.sql("ALTER TABLE outbox_events ADD COLUMN next_attempt_at timestamptz");
  d.start_relay();
  auto recovery = d.recover();
  d.finish(recovery, "exit 69 twice, then fixed");
}
