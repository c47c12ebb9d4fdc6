// Running the real outbox-relay binary's operator commands from tests: the command with its
// exit code and output, a relay in the background, events in any state, the least-privileged role.
#pragma once

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "relay/pg/pg_conninfo.hpp"
#include "tests/e2e/child_process.hpp"

namespace outbox::test::cli {

using namespace std::chrono_literals;
using Json = nlohmann::json;

inline const std::string kRelay = OUTBOX_RELAY_BINARY;

inline std::string temp_log(const std::string& name) {
  static int n = 0;
  return (std::filesystem::temp_directory_path() /
          ("outbox-cli-e2e-" + std::to_string(::getpid()) + "-" + name + "-" + std::to_string(n++) + ".log"))
      .string();
}

struct CliResult {
  int code = -1;
  std::string output;  // stdout and stderr together
  [[nodiscard]] Json json() const { return Json::parse(output); }  // --json prints nothing else on success
};

// Runs `outbox-relay <args>` against `url` (config from the environment, as `run` takes it).
inline CliResult cli(const std::string& url, const std::vector<std::string>& args,
                     std::map<std::string, std::string> env = {}) {
  env.try_emplace("OUTBOX_RELAY_DATABASE_URL", url);
  test::ChildProcess p(kRelay, args, env, temp_log("cli"));
  auto code = p.wait(60s);
  INFO("outbox-relay " << args.at(0) << " did not exit within 60 s");
  REQUIRE(code.has_value());
  return {*code, p.output()};
}

inline std::unique_ptr<test::ChildProcess> start_relay(const std::string& url, const std::string& brokers) {
  return std::make_unique<test::ChildProcess>(
      kRelay, std::vector<std::string>{"run"},
      std::map<std::string, std::string>{{"OUTBOX_RELAY_DATABASE_URL", url},
                                         {"OUTBOX_RELAY_KAFKA_BROKERS", brokers},
                                         {"OUTBOX_RELAY_HTTP_LISTEN", ""},
                                         {"OUTBOX_RELAY_LOG_FORMAT", "text"}},
      temp_log("relay"));
}

inline void stop_relay(std::unique_ptr<test::ChildProcess>& relay) {
  relay->signal(SIGTERM);
  CHECK(relay->wait(30s) == std::optional<int>(0));
  relay.reset();
}

// Inserts one event and returns its seq; dead-lettered (as the relay leaves it) when `error` is set.
inline std::int64_t insert_event(const std::string& url, const std::string& aggregate_id, const std::string& payload_sql,
                          const std::optional<std::string>& error = std::nullopt) {
  pqxx::connection c(url);
  pqxx::work tx(c);
  auto r = tx.exec_params(
      "INSERT INTO outbox_events (aggregate_type, aggregate_id, event_type, payload, headers, attempts, last_error, "
      "dead_lettered_at) VALUES ('order', $1, 'OrderPaid', " + payload_sql +
          ", '{\"traceparent\": \"00-abc\"}', CASE WHEN $2::text IS NULL THEN 0 ELSE 10 END, $2, "
          "CASE WHEN $2::text IS NULL THEN NULL ELSE now() END) RETURNING seq",
      aggregate_id, error ? error->c_str() : nullptr);
  tx.commit();
  return r[0][0].as<std::int64_t>();
}

// A URL for the same database as the relay role of schema/roles/relay_role.sql (created here).
inline std::string as_relay_role(const std::string& url) {
  // The script uses psql's \if, so it runs through psql, as an operator would run it.
  std::string cmd = "psql -X -q -v ON_ERROR_STOP=1 -d \"" + url + "\" -f " OUTBOX_SOURCE_DIR
                    "/schema/roles/relay_role.sql >/dev/null";
  REQUIRE(std::system(cmd.c_str()) == 0);
  auto params = outbox::relay::pg::parse_conninfo(url, "test");
  params["user"] = "outbox_relay";
  return outbox::relay::pg::render_conninfo(params);
}

}  // namespace outbox::test::cli
