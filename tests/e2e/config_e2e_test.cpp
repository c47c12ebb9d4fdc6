// Configuration as the real binary takes it: hostile passwords through every path never reach
// any output, and `check-config` refuses exactly what `run` would refuse.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <thread>

#include "tests/e2e/cli_harness.hpp"

using namespace outbox::test;
using namespace outbox::test::cli;

namespace {

struct TempFile {
  std::filesystem::path path;
  explicit TempFile(const std::string& text, const std::string& ext = ".yaml") {
    static int n = 0;
    path = std::filesystem::temp_directory_path() /
           ("outbox-config-e2e-" + std::to_string(::getpid()) + "-" + std::to_string(n++) + ext);
    std::ofstream(path) << text;
  }
  ~TempFile() { std::filesystem::remove(path); }
};

std::string yaml_quoted(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

// `run` against an unreachable database: to its exit if it exits at once, else until it has
// said why it waits (or 3 s), then SIGTERM.
std::string run_output(const std::vector<std::string>& args, const std::map<std::string, std::string>& env) {
  ChildProcess p(kRelay, args, env, temp_log("hostile-run"));
  for (auto until = std::chrono::steady_clock::now() + 3s;
       p.running() && std::chrono::steady_clock::now() < until &&
       p.output().find("waiting_to_start") == std::string::npos;)
    std::this_thread::sleep_for(50ms);  // polling the child's output file
  if (p.running()) p.signal(SIGTERM);
  REQUIRE(p.wait(20s).has_value());
  return p.output();
}

}  // namespace

TEST_CASE("hostile passwords through flags, environment, YAML and a password file never reach any output",
          "[e2e][config][secrets]") {
  // Each: the password, and the pieces of it an error could quote.
  const std::vector<std::pair<std::string, std::vector<std::string>>> passwords{
      {"50%offSummer", {"50%offSummer", "offSummer"}},
      {"my secret", {"my secret", "secret"}},
      {"p@ss@word", {"p@ss@word", "ss@word"}},
      {"it's\"quoted\\", {"it's", "quoted"}},
  };
  const std::map<std::string, std::string> base{{"OUTBOX_RELAY_KAFKA_BROKERS", "127.0.0.1:1"},
                                                {"OUTBOX_RELAY_HTTP_LISTEN", ""},
                                                {"OUTBOX_RELAY_LOG_FORMAT", "json"}};
  for (const auto& [password, parts] : passwords) {
    CAPTURE(password);
    const std::string uri = "postgresql://relay:" + password + "@127.0.0.1:1/app";
    const std::string kv = "host=127.0.0.1 port=1 user=relay password=" + password + " dbname=app";
    TempFile yaml_uri("database:\n  url: " + yaml_quoted(uri) + "\n");
    TempFile yaml_kv("database:\n  url: " + yaml_quoted(kv) + "\n");
    TempFile password_file(password + "\n", ".pw");
    std::vector<std::pair<std::string, std::function<std::string(const std::vector<std::string>&)>>> paths{
        {"flag (URI)", [&](auto cmd) { cmd.push_back("--database-url=" + uri); return run_output(cmd, base); }},
        {"flag (key=value)", [&](auto cmd) { cmd.push_back("--database-url=" + kv); return run_output(cmd, base); }},
        {"environment (URI)",
         [&](auto cmd) {
           auto env = base;
           env["OUTBOX_RELAY_DATABASE_URL"] = uri;
           return run_output(cmd, env);
         }},
        {"environment (key=value)",
         [&](auto cmd) {
           auto env = base;
           env["OUTBOX_RELAY_DATABASE_URL"] = kv;
           return run_output(cmd, env);
         }},
        {"YAML (URI)", [&](auto cmd) { cmd.push_back("--config=" + yaml_uri.path.string()); return run_output(cmd, base); }},
        {"YAML (key=value)", [&](auto cmd) { cmd.push_back("--config=" + yaml_kv.path.string()); return run_output(cmd, base); }},
        {"password file",
         [&](auto cmd) {
           auto env = base;
           env["OUTBOX_RELAY_DATABASE_URL"] = "postgresql://relay@127.0.0.1:1/app";
           env["OUTBOX_RELAY_DATABASE_PASSWORD_FILE"] = password_file.path.string();
           return run_output(cmd, env);
         }},
    };
    for (const auto& [path, run] : paths) {
      for (const std::vector<std::string>& cmd : {std::vector<std::string>{"run"}, {"check-config"}, {"check-config", "--json"},
                                                  {"migrate"}, {"status"}}) {
        CAPTURE(path, cmd);
        const auto out = run(cmd);
        CHECK_FALSE(out.empty());
        for (const auto& part : parts) CHECK_THAT(out, !Catch::Contains(part));
      }
    }
  }
}

TEST_CASE("check-config refuses with exit 78 whatever run refuses, naming the same key", "[e2e][config]") {
  const std::map<std::string, std::string> base{{"OUTBOX_RELAY_DATABASE_URL", "postgresql://relay@127.0.0.1:1/app"},
                                                {"OUTBOX_RELAY_KAFKA_BROKERS", "127.0.0.1:1"},
                                                {"OUTBOX_RELAY_HTTP_LISTEN", ""}};
  const std::vector<std::pair<std::string, std::string>> bad{
      {"kafka.properties.no.such.property", "1"},
      {"kafka.properties.linger.ms", "not-a-number"},
      {"kafka.properties.max.in.flight", "10"},
      {"http.listen", "127.0.0.1:99999"},
      {"http.listen", "example.com:9464"},
      {"kafka.brokers", ","},
      {"kafka.brokers", "not a host list!!"},
      {"ownership.renew_interval_ms", "9000"},
  };
  for (const auto& [key, value] : bad) {
    CAPTURE(key, value);
    auto check = outbox::test::cli::cli("", {"check-config", "--set", key + "=" + value}, base);
    CHECK(check.code == 78);
    CHECK_THAT(check.output, Catch::Contains(key));
    auto run = outbox::test::cli::cli("", {"run", "--set", key + "=" + value}, base);
    CHECK(run.code == 78);
    CHECK_THAT(run.output, Catch::Contains(key));
  }
  // And what both accept.
  for (const std::string listen : {"localhost:0", ":0", "127.0.0.1:0", "[::1]:0"}) {
    CAPTURE(listen);
    CHECK(outbox::test::cli::cli("", {"check-config", "--set", "http.listen=" + listen}, base).code == 0);
  }
  TempFile duplicated("relay:\n  batch_size: 10\n  batch_size: 20\n");
  auto dup = outbox::test::cli::cli("", {"check-config", "--config", duplicated.path.string()}, base);
  CHECK(dup.code == 78);
  CHECK_THAT(dup.output, Catch::Contains("relay.batch_size: given twice"));
  auto dir = outbox::test::cli::cli("", {"check-config", "--config", std::filesystem::temp_directory_path().string()}, base);
  CHECK(dir.code == 78);
  CHECK_THAT(dir.output, Catch::Contains("is a directory"));
}

namespace {
// Each key=value refused by check-config and by run alike: exit 78, the key named.
void expect_refused(const std::vector<std::pair<std::string, std::string>>& bad,
                    const std::map<std::string, std::string>& base) {
  for (const auto& [key, value] : bad) {
    CAPTURE(key, value);
    for (const std::string command : {"check-config", "run"}) {
      auto r = outbox::test::cli::cli("", {command, "--set", key + "=" + value}, base);
      CHECK(r.code == 78);
      CHECK_THAT(r.output, Catch::Contains(key));
    }
  }
}
}  // namespace

TEST_CASE("sink.type nats: no kafka.brokers needed, nats.url and the NATS headers checked by check-config and run",
          "[e2e][config]") {
  const std::map<std::string, std::string> base{{"OUTBOX_RELAY_DATABASE_URL", "postgresql://relay@127.0.0.1:1/app"},
                                                {"OUTBOX_RELAY_SINK_TYPE", "nats"},
                                                {"OUTBOX_RELAY_HTTP_LISTEN", ""}};
  CHECK(outbox::test::cli::cli("", {"check-config"}, base).code == 0);
  CHECK(outbox::test::cli::cli("", {"check-config", "--set", "nats.url=nats://a:4222, tls://b:4223"}, base).code == 0);
  const std::vector<std::pair<std::string, std::string>> bad{
      {"nats.url", ""},
      {"nats.url", "http://127.0.0.1:4222"},
      {"nats.url", "nats://127.0.0.1:4222,"},
      {"nats.url", "127.0.0.1:4222"},
      {"nats.key_header", "id"},          // the event id's header
      {"nats.key_header", "eventType"},   // the event type's
      {"nats.subject_template", "outbox.${nope}"},
      {"nats.key_header", "Nats-Msg-Id"},  // would overwrite the event id: later events dropped as duplicates
      {"nats.key_header", "x-nats-expected-stream"},
      {"nats.key_header", "Status"},      // libnats consumers read it as a server status
      {"nats.key_header", "two words"},
      {"message.id_header", "Nats-Msg-Id"},
      {"message.publisher_header", "Description"},
      {"sink.type", "rabbitmq"},
  };
  expect_refused(bad, base);
}

TEST_CASE("message.format cloudevents: Debezium's header settings, a source that is no URI-reference and a bare content type "
          "are refused by check-config and run",
          "[e2e][config][cloudevents]") {
  for (const std::string sink : {"kafka", "nats"}) {
    CAPTURE(sink);
    const std::map<std::string, std::string> base{{"OUTBOX_RELAY_DATABASE_URL", "postgresql://relay@127.0.0.1:1/app"},
                                                  {"OUTBOX_RELAY_KAFKA_BROKERS", "127.0.0.1:1"},
                                                  {"OUTBOX_RELAY_SINK_TYPE", sink},
                                                  {"OUTBOX_RELAY_MESSAGE_FORMAT", "cloudevents"},
                                                  {"OUTBOX_RELAY_HTTP_LISTEN", ""}};
    CHECK(outbox::test::cli::cli("", {"check-config"}, base).code == 0);
    CHECK(outbox::test::cli::cli("", {"check-config", "--set", "message.cloudevents_source=urn:svc:${event_type}"}, base)
              .code == 0);
    const std::vector<std::pair<std::string, std::string>> bad{
        {"message.id_header", "eventId"},
        {"message.event_type_header", ""},
        {"message.cloudevents_source", "/a b"},
        {"message.cloudevents_source", "/x/${nope}"},
        {"message.content_type", "json"},
        {"message.format", "structured"},
    };
    expect_refused(bad, base);
  }
}
