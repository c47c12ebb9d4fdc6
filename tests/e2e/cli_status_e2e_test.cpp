// The operator CLI's `status` of the real outbox-relay binary: backlog, lag, dead letters and
// throughput from the rows, and the instances with their lanes from a running relay.
#include <catch2/catch.hpp>

#include "tests/e2e/cli_harness.hpp"
#include "tests/e2e/delivery_check.hpp"
#include "tests/integration/pg_fixture.hpp"
#include "tests/support/mock_kafka.hpp"

using namespace outbox;
using namespace outbox::test::cli;

TEST_CASE("cli: status shows backlog, lag, dead letters and throughput, as a table and as JSON", "[e2e][cli]") {
  auto url = test::fresh_database();
  test::insert_events(url, 3, 1);
  test::exec(url, "UPDATE outbox_events SET published_at = now()");
  test::insert_events(url, 5, 2);
  test::exec(url, "UPDATE outbox_events SET created_at = now() - interval '90 seconds' WHERE published_at IS NULL");
  insert_event(url, "o-dead-1", "'\\x00'::bytea", "message too large");
  insert_event(url, "o-dead-2", "'\\x00'::bytea", "topic rejected");
  insert_event(url, "o-dead-2", "'\\x00'::bytea");  // waits behind the dead letter

  auto text = cli(url, {"status"});
  REQUIRE(text.code == 0);
  CHECK_THAT(text.output, Catch::Contains("6 events waiting, the oldest for 1m3"));
  CHECK_THAT(text.output, Catch::Contains("1 of them held back behind dead letters"));
  CHECK_THAT(text.output, Catch::Contains("dead-lettered   2 events"));
  CHECK_THAT(text.output, Catch::Contains("3 in the last minute, 3 in the last hour"));
  CHECK_THAT(text.output, Catch::Contains("instances       none live: no relay is publishing this outbox; 64 lanes unowned"));

  auto json = cli(url, {"status", "--json"});
  REQUIRE(json.code == 0);
  auto j = json.json();
  CHECK(j["backlog"] == 6);
  CHECK(j["held_back"] == 1);
  CHECK(j["dead_lettered"] == 2);
  CHECK(j["oldest_unpublished_age_seconds"].get<double>() >= 90);
  CHECK(j["published_last_minute"] == 3);
  CHECK(j["published_last_hour"] == 3);
  CHECK(j["last_published_at"].is_string());
  CHECK(j["instances"].empty());
  CHECK(j["unowned_lanes"] == 64);
  CHECK(j["lanes"].size() == 64);
  CHECK(j["schema"] == "public");

  // The least-privileged relay role sees the same.
  auto relay_url = as_relay_role(url);
  auto least = cli(relay_url, {"status", "--json"});
  REQUIRE(least.code == 0);
  CHECK(least.json()["backlog"] == 6);
  CHECK(least.json()["dead_lettered"] == 2);
}

TEST_CASE("cli: status lists the instances, their lanes and lease ages, and none once they stopped", "[e2e][cli]") {
  auto url = test::fresh_database();
  test::MockKafka kafka(1);
  test::insert_events(url, 20, 2);
  auto relay = start_relay(url, kafka.bootstrap());
  Json status;
  REQUIRE(test::eventually([&] {
    auto r = cli(url, {"status", "--json"});
    status = r.code == 0 ? r.json() : Json();
    return r.code == 0 && status["instances"].size() == 1 && status["instances"][0]["lanes"] == 64 &&
           status["backlog"] == 0;
  }, 60s));
  const auto& me = status["instances"][0];
  const std::string instance = me["instance"];
  CHECK(me["live"] == true);
  CHECK(me["pid"] == relay->pid());
  CHECK(me["lease_age_seconds"].get<double>() >= 0);
  CHECK(me["lease_age_seconds"].get<double>() < 10);
  CHECK(me["expires_in_seconds"].get<double>() > 0);
  CHECK(status["unowned_lanes"] == 0);
  for (const auto& lane : status["lanes"]) {
    CHECK(lane["owner"] == instance);
    CHECK(lane["epoch"] == 1);
  }
  CHECK(status["published_last_minute"] == 20);
  bool relay_session = false;
  for (const auto& s : status["sessions"]) relay_session = relay_session || s["application_name"] == "outbox-relay";
  CHECK(relay_session);

  auto text = cli(url, {"status"});
  REQUIRE(text.code == 0);
  CHECK_THAT(text.output, Catch::Contains("instances       1 live, sharing 64 lanes"));
  CHECK_THAT(text.output, Catch::Contains(instance));

  stop_relay(relay);  // SIGTERM hands the lanes back at once
  auto after = cli(url, {"status", "--json"});
  REQUIRE(after.code == 0);
  CHECK(after.json()["unowned_lanes"] == 64);
  CHECK(after.json()["instances"].empty());
  CHECK_THAT(cli(url, {"status"}).output, Catch::Contains("none live: no relay is publishing this outbox"));
}
