#include "relay/pg/pg_conninfo.hpp"

#include <libpq-fe.h>

#include <memory>
#include <regex>

#include "relay/core/errors.hpp"

namespace outbox::relay::pg {

ConninfoParams parse_conninfo(const std::string& conninfo, const std::string& key) {
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(conninfo.c_str(), &err);
  if (opts == nullptr) {
    std::string why = err != nullptr ? err : "out of memory";
    if (err != nullptr) PQfreemem(err);
    while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
    throw ConfigError(key + ": not a valid PostgreSQL connection string (" + why + ")");
  }
  std::unique_ptr<PQconninfoOption, decltype(&PQconninfoFree)> guard(opts, PQconninfoFree);
  ConninfoParams params;
  for (auto* o = opts; o->keyword != nullptr; ++o)
    if (o->val != nullptr) params[o->keyword] = o->val;
  return params;
}

std::string render_conninfo(const ConninfoParams& params) {
  std::string out;
  for (const auto& [k, v] : params) {
    if (!out.empty()) out += ' ';
    out += k;
    out += "='";
    for (char c : v) {
      if (c == '\'' || c == '\\') out += '\\';
      out += c;
    }
    out += '\'';
  }
  return out;
}

std::string harden_conninfo(const std::string& conninfo, const std::string& application_name,
                            int statement_timeout_ms) {
  auto p = parse_conninfo(conninfo, "database.url");
  p.try_emplace("application_name", application_name);
  p.try_emplace("connect_timeout", "10");
  p.try_emplace("keepalives", "1");
  p.try_emplace("keepalives_idle", "10");
  p.try_emplace("keepalives_interval", "5");
  p.try_emplace("keepalives_count", "3");
  p.try_emplace("tcp_user_timeout", "30000");
  // jit=off: the relay's statements are short and run thousands of times a minute; JIT
  // compiling one whose estimate crosses jit_above_cost (a fetch on a large outbox) cost
  // ~15 ms per execution, several times the statement itself.
  std::string session = "-c statement_timeout=" + std::to_string(statement_timeout_ms) +
                        " -c idle_in_transaction_session_timeout=" +
                        std::to_string(std::max(statement_timeout_ms * 2, 10'000)) + " -c jit=off";
  auto [it, inserted] = p.try_emplace("options", session);
  if (!inserted) it->second = session + " " + it->second;  // the user's own options win
  return render_conninfo(p);
}

std::string redact_conninfo(const std::string& conninfo) {
  try {
    auto p = parse_conninfo(conninfo, "database.url");
    if (p.contains("password")) p["password"] = "********";
    return render_conninfo(p);
  } catch (...) {
    // Unparseable: blank anything that looks like a password rather than echo it.
    static const std::regex uri_pw(R"((://[^:/@]*:)[^@]*@)");
    static const std::regex kv_pw(R"((password\s*=\s*)('[^']*'|\S+))", std::regex::icase);
    auto s = std::regex_replace(conninfo, uri_pw, "$1********@");
    return std::regex_replace(s, kv_pw, "$1********");
  }
}

}  // namespace outbox::relay::pg
