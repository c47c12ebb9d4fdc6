// PgSession, the one owner of a libpqxx connection under every store: what a lost backend, a
// failed statement, the adapter's own verdicts and a failing set-up do to the session, and
// that LISTEN outlives a reconnect. Against a real PostgreSQL cluster.
#include <catch2/catch.hpp>

#include <pqxx/pqxx>

#include <chrono>
#include <stdexcept>

#include "relay/core/errors.hpp"
#include "relay/pg/pg_lease_store.hpp"
#include "relay/pg/pg_session.hpp"
#include "tests/integration/pg_fixture.hpp"
#include "tests/support/eventually.hpp"

using namespace outbox;
using namespace outbox::relay;
using namespace outbox::relay::pg;
using namespace outbox::test;
using namespace std::chrono_literals;

namespace {

long backend_pid(PgSession& s) {
  return s.run("reading the backend pid", [](pqxx::connection& c) {
    return pqxx::nontransaction(c).exec("SELECT pg_backend_pid()")[0][0].as<long>();
  });
}

// Terminates the backend and waits until it is gone, so the session's next call meets a
// closed connection whatever the machine's load.
void terminate(const std::string& url, long pid) {
  const auto p = std::to_string(pid);
  REQUIRE(scalar(url, "SELECT count(pg_terminate_backend(" + p + "))") == 1);
  REQUIRE(eventually([&] { return scalar(url, "SELECT count(*) FROM pg_stat_activity WHERE pid = " + p) == 0; }, 10s));
}

}  // namespace

TEST_CASE("a terminated backend fails one call as transient, naming it, and the next connects and sets up again",
          "[pg][session]") {
  const auto url = fresh_database();
  int set_ups = 0;
  PgSession s(url, "the test session", [&](pqxx::connection&) { ++set_ups; });
  const long first = backend_pid(s);
  CHECK(set_ups == 1);
  CHECK(s.reconnects() == 0);

  terminate(url, first);
  try {
    (void)backend_pid(s);
    FAIL("a call on a terminated backend succeeded");
  } catch (const TransientError& e) {
    CHECK_THAT(e.what(), Catch::Contains("reading the backend pid"));
  }
  const long second = backend_pid(s);
  CHECK(second != first);
  CHECK(set_ups == 2);
  CHECK(s.reconnects() == 1);
}

TEST_CASE("a failed statement closes the session, the adapter's own exceptions pass unchanged and keep it",
          "[pg][session]") {
  const auto url = fresh_database();
  PgSession s(url, "the test session");
  const long first = backend_pid(s);

  CHECK_THROWS_AS(s.run("judging a row", [](pqxx::connection&) -> int { throw FatalError("a verdict of our own"); }),
                  FatalError);
  CHECK_THROWS_AS(s.run("parsing", [](pqxx::connection&) -> int { throw std::invalid_argument("not a number"); }),
                  std::invalid_argument);
  CHECK(backend_pid(s) == first);

  try {
    s.run("dividing", [](pqxx::connection& c) { pqxx::nontransaction(c).exec("SELECT 1/0"); });
    FAIL("division by zero succeeded");
  } catch (const TransientError& e) {
    CHECK_THAT(e.what(), Catch::Contains("dividing") && Catch::Contains("22012"));
  }
  CHECK(backend_pid(s) != first);
  CHECK(s.reconnects() == 1);
}

TEST_CASE("a set-up that throws leaves no connection behind, and the next call connects and sets up afresh",
          "[pg][session]") {
  const auto url = fresh_database();
  int set_ups = 0;
  PgSession s(url, "the test session", [&](pqxx::connection& c) {
    if (++set_ups == 1) throw InstanceIdHeld("the id is taken");
    pqxx::nontransaction(c).exec("SET application_name = 'set-up-ran'");
  });
  CHECK_THROWS_AS(backend_pid(s), InstanceIdHeld);
  CHECK(scalar(url, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid()") == 0);
  (void)backend_pid(s);
  CHECK(set_ups == 2);
  CHECK(s.run("reading", [](pqxx::connection& c) {
    return pqxx::nontransaction(c).exec("SHOW application_name")[0][0].as<std::string>();
  }) == "set-up-ran");
}

TEST_CASE("LISTEN is taken again on every new connection: a hint after a reconnect arrives", "[pg][session]") {
  const auto url = fresh_database();
  PgSession s(url, "the test session");
  std::vector<std::string> payloads;
  s.listen("session_test", [&](const std::string& p) { payloads.push_back(p); });
  exec(url, "SELECT pg_notify('session_test', 'before')");
  CHECK(s.await_notifications("waiting", 2s) >= 0);  // connects; the hint before LISTEN is gone
  exec(url, "SELECT pg_notify('session_test', 'one')");
  REQUIRE(s.await_notifications("waiting", 5s) == 1);
  CHECK(payloads == std::vector<std::string>{"one"});

  terminate(url, backend_pid(s));
  CHECK_THROWS_AS(s.await_notifications("waiting", 100ms), TransientError);
  CHECK(s.await_notifications("waiting", 10ms) == 0);  // connects and listens again
  exec(url, "SELECT pg_notify('session_test', 'two')");
  REQUIRE(s.await_notifications("waiting", 5s) == 1);
  CHECK(payloads == std::vector<std::string>{"one", "two"});
}

TEST_CASE("connecting to a database that does not exist is a configuration error naming database.url",
          "[pg][session]") {
  const auto url = fresh_database();
  PgSession s(PgCluster::shared().conninfo("no_such_database_here"), "the test session");
  try {
    (void)backend_pid(s);
    FAIL("connected to a missing database");
  } catch (const ConfigError& e) {
    CHECK_THAT(e.what(), Catch::Contains("database.url") && Catch::Contains("no_such_database_here"));
  }
}
