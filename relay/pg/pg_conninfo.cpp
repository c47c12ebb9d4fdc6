#include "relay/pg/pg_conninfo.hpp"

#include <libpq-fe.h>

#include <pwd.h>
#include <unistd.h>

#include <cstdlib>
#include <algorithm>
#include <memory>
#include <regex>

#include "relay/core/errors.hpp"
#include "relay/pg/connection_settings.hpp"

namespace outbox::relay::pg {

namespace {

// libpq quotes the offending piece of the string in its messages ("invalid percent-encoded
// token: \"50%offSummer\"", "missing \"=\" after \"secret\""): that piece may be a password.
std::string without_quoted_parts(const std::string& message) {
  static const std::regex quoted(R"("[^"]*")");
  return std::regex_replace(message, quoted, "<hidden>");
}

// In a URI, user info ends at the last '@' before the host, but libpq takes the first: the rest
// of a password holding a bare '@' would become the host name, and be echoed by every error.
void refuse_ambiguous_user_info(const std::string& conninfo, const std::string& key) {
  for (const char* scheme : {"postgresql://", "postgres://"}) {
    if (!conninfo.starts_with(scheme)) continue;
    const auto start = std::string_view(scheme).size();
    const auto end = conninfo.find_first_of("/?", start);
    const auto authority = conninfo.substr(start, end == std::string::npos ? std::string::npos : end - start);
    if (std::count(authority.begin(), authority.end(), '@') > 1)
      throw ConfigError(key + ": not a valid PostgreSQL connection URI (the user name or password holds an unencoded "
                              "'@'; percent-encode it as %40, and '%' as %25)");
  }
}

}  // namespace

ConninfoParams parse_conninfo(const std::string& conninfo, const std::string& key) {
  refuse_ambiguous_user_info(conninfo, key);
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(conninfo.c_str(), &err);
  if (opts == nullptr) {
    std::string why = err != nullptr ? err : "out of memory";
    if (err != nullptr) PQfreemem(err);
    while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
    throw ConfigError(key + ": not a valid PostgreSQL connection string (" + without_quoted_parts(why) +
                      "; in a URI percent-encode '%' as %25 and '@' as %40, in key=value form single-quote a "
                      "value with spaces)");
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
  return ConnectionSettings::from(conninfo, "", application_name, statement_timeout_ms).conninfo();
}

std::string role_of(const std::string& conninfo) {
  try {
    auto p = parse_conninfo(conninfo, "database.url");
    if (auto it = p.find("user"); it != p.end() && !it->second.empty()) return it->second;
  } catch (const ConfigError&) {
  }
  if (const char* u = std::getenv("PGUSER"); u != nullptr && *u != '\0') return u;
  if (const passwd* pw = ::getpwuid(::geteuid()); pw != nullptr) return pw->pw_name;
  return "";
}

std::string redact_conninfo(const std::string& conninfo) {
  try {
    auto p = parse_conninfo(conninfo, "database.url");
    if (p.contains("password")) p["password"] = "********";
    return render_conninfo(p);
  } catch (...) {
    // Unparseable: blank anything that looks like a password rather than echo it.
    // A URI's password runs to the last '@' of its authority; a key=value one, unquoted,
    // to the next keyword (an unquoted space is what made it unparseable).
    static const std::regex uri_pw(R"((://[^:/@\s]*:)[^/?#\s]*@)");
    static const std::regex kv_pw(R"((password\s*=\s*)('(?:[^'\\]|\\.)*'?|.*?(?=\s+[A-Za-z_]+\s*=|\)|$)))",
                                  std::regex::icase);
    auto s = std::regex_replace(conninfo, uri_pw, "$1********@");
    return std::regex_replace(s, kv_pw, "$1********");
  }
}

}  // namespace outbox::relay::pg
