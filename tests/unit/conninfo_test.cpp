#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "relay/core/errors.hpp"
#include "relay/pg/connection_settings.hpp"
#include "relay/pg/pg_conninfo.hpp"
#include "relay/pg/pg_outbox_store.hpp"

using namespace outbox::relay;
using namespace outbox::relay::pg;

TEST_CASE("passwords never survive redaction, in URI or key=value form", "[conninfo]") {
  CHECK_THAT(redact_conninfo("postgresql://u:hunter2@h:5432/d"), !Catch::Contains("hunter2"));
  CHECK_THAT(redact_conninfo("host=h password='hun ter2' user=u"), !Catch::Contains("hun ter2"));
  CHECK_THAT(redact_conninfo("not a conninfo postgresql://u:hunter2@h/d"), !Catch::Contains("hunter2"));
  CHECK_THAT(redact_conninfo("host=h user=u"), Catch::Contains("user='u'"));
}

TEST_CASE("hardening adds client-side deadlines but keeps what the user set", "[conninfo]") {
  auto p = parse_conninfo(harden_conninfo("postgresql://u@h/d?connect_timeout=3", "relay-a", 5000), "x");
  CHECK(p.at("connect_timeout") == "3");
  CHECK(p.at("application_name") == "relay-a");
  CHECK(p.at("tcp_user_timeout") == "30000");
  CHECK(p.at("keepalives") == "1");
  CHECK_THAT(p.at("options"), Catch::Contains("statement_timeout=5000"));
  CHECK_THAT(p.at("options"), Catch::Contains("idle_in_transaction_session_timeout="));
  CHECK_THAT(p.at("options"), Catch::Contains("jit=off"));
}

TEST_CASE("schema names are checked as identifiers and quoted", "[conninfo]") {
  CHECK(quoted_identifier("public", "database.schema") == "\"public\"");
  CHECK_THROWS_WITH(quoted_identifier("x; drop table y", "database.schema"),
                    Catch::Contains("database.schema"));
  CHECK_THROWS_AS(quoted_identifier("", "database.schema"), ConfigError);
}

TEST_CASE("array literals quote text safely", "[conninfo]") {
  CHECK(text_array_literal({"a", "b\"c", "d\\e"}) == R"({"a","b\"c","d\\e"})");
  std::vector<std::int64_t> v{1, 2, 3};
  CHECK(bigint_array_literal(v) == "{1,2,3}");
}

TEST_CASE("a hostile password is never echoed by a parse error nor by redaction", "[conninfo][secrets]") {
  struct Case {
    std::string conninfo;
    std::vector<std::string> secret_parts;
  };
  const std::vector<Case> cases{
      {"postgresql://relay:50%offSummer@127.0.0.1:5432/app", {"50%offSummer", "offSummer"}},
      {"host=127.0.0.1 user=relay password=my secret dbname=app", {"my secret", "secret"}},
      {"host=127.0.0.1 user=relay password=my secret", {"my secret", "secret"}},
      {"postgresql://relay:p@ss@word@127.0.0.1:5432/app", {"p@ss@word", "ss@word", "word@"}},
      {"host=127.0.0.1 password='unterminated secret", {"unterminated secret", "secret"}},
      {"postgresql://relay:hunter2@127.0.0.1/app?sslmode=bad%zz", {"hunter2"}},
  };
  for (const auto& c : cases) {
    CAPTURE(c.conninfo);
    std::string error;
    try {
      (void)parse_conninfo(c.conninfo, "database.url");
    } catch (const ConfigError& e) {
      error = e.what();
    }
    CHECK_THAT(error, Catch::Contains("database.url"));
    const auto redacted = redact_conninfo(c.conninfo);
    for (const auto& part : c.secret_parts) {
      CHECK_THAT(error, !Catch::Contains(part));
      CHECK_THAT(redacted, !Catch::Contains(part));
      // As an error message quoting the string would carry it.
      CHECK_THAT(redact_conninfo("connecting failed: " + c.conninfo + " (timeout)"), !Catch::Contains(part));
    }
  }
}

TEST_CASE("an '@' in a URI's password is refused with how to encode it", "[conninfo][secrets]") {
  CHECK_THROWS_WITH(parse_conninfo("postgresql://relay:p@ss@127.0.0.1/app", "database.url"),
                    Catch::Contains("%40") && !Catch::Contains("ss@127"));
  CHECK(parse_conninfo("postgresql://relay:p%40ss@127.0.0.1/app", "database.url").at("password") == "p@ss");
}

TEST_CASE("every session keeps the safety options and the user's own, named apart", "[conninfo]") {
  // The status, lease and retention sessions used to be rendered with `options` replaced by a
  // bare statement_timeout: they lost idle_in_transaction_session_timeout, jit=off and the
  // user's options.
  auto db = ConnectionSettings::from("host=db user=relay options='-c search_path=orders -c work_mem=8MB'", "",
                                     "outbox-relay", 30'000);
  for (const auto& [purpose, timeout] : std::vector<std::pair<std::string, int>>{{"", 30'000}, {"lease", 3'333},
                                                                                   {"status", 5'000}, {"retention", 60'000}}) {
    CAPTURE(purpose);
    auto p = parse_conninfo(purpose.empty() ? db.conninfo() : db.conninfo(purpose, timeout), "test");
    CHECK(p.at("application_name") == (purpose.empty() ? "outbox-relay" : "outbox-relay-" + purpose));
    const auto& o = p.at("options");
    CHECK_THAT(o, Catch::Contains("-c statement_timeout=" + std::to_string(timeout)));
    CHECK_THAT(o, Catch::Contains("-c idle_in_transaction_session_timeout="));
    CHECK_THAT(o, Catch::Contains("-c jit=off"));
    CHECK_THAT(o, Catch::EndsWith("-c search_path=orders -c work_mem=8MB"));  // last: the user's win
    CHECK(p.at("tcp_user_timeout") == "30000");
  }
  CHECK_THAT(db.redacted(), Catch::Contains("work_mem=8MB"));
}

TEST_CASE("the password file supplies the password, which redaction hides", "[conninfo][secrets]") {
  const auto path = std::filesystem::temp_directory_path() / ("outbox-pw-" + std::to_string(::getpid()));
  std::ofstream(path) << "it's a \"secret\"\n";
  auto db = ConnectionSettings::from("postgresql://relay@db/app", path.string(), "outbox-relay", 1000);
  CHECK(parse_conninfo(db.conninfo(), "t").at("password") == "it's a \"secret\"");
  CHECK_THAT(db.redacted(), !Catch::Contains("secret"));
  CHECK(db.role() == "relay");
  std::filesystem::remove(path);
  CHECK_THROWS_WITH(ConnectionSettings::from("host=db", path.string(), "x", 1), Catch::Contains("database.password_file"));
}
