#include <catch2/catch.hpp>

#include "relay/core/errors.hpp"
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
