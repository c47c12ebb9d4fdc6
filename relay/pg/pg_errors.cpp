#include "relay/pg/pg_errors.hpp"

#include <pqxx/except>

#include <array>
#include <utility>

#include "outbox/common/sqlstate.hpp"
#include "relay/core/errors.hpp"

namespace outbox::relay::pg {
namespace {

std::string trimmed(std::string msg) {
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
  return msg;
}

bool contains(const std::string& text, const char* part) { return text.find(part) != std::string::npos; }

// What each operation needs of schema/roles/relay_role.sql, for a permission error's message.
std::string grant_for(const std::string& what) {
  static const std::array<std::pair<const char*, const char*>, 9> kNeeds{{
      {"marking", "UPDATE (published_at) ON outbox_events (DELETE in mark_mode delete)"},
      {"recording failed", "UPDATE (attempts, next_attempt_at, last_error, dead_lettered_at) ON outbox_events"},
      {"fetching", "SELECT ON outbox_events and on its seq sequence"},
      {"checking the outbox", "SELECT ON outbox_events and on its seq sequence"},
      {"lane", "SELECT, UPDATE (owner, epoch, lease_until, acquired_at, renewed_at) ON outbox_relay_lanes and "
               "SELECT, INSERT, UPDATE, DELETE ON outbox_relay_instances"},
      {"instance id", "SELECT, UPDATE ON outbox_relay_lanes and SELECT ON outbox_relay_instances"},
      {"wake-up", "SELECT, UPDATE (listening, changed_at) ON outbox_relay_wakeup"},
      {"retention", "EXECUTE ON FUNCTION outbox_purge_published"},
      {"status", "SELECT ON outbox_events and outbox_relay_lanes"},
  }};
  for (const auto& [key, grant] : kNeeds)
    if (contains(what, key)) return grant;
  return "what schema/roles/relay_role.sql grants";
}

[[noreturn]] void permission_denied(const std::string& what, const std::string& msg) {
  throw AccessError(what + ": " + msg + "; the relay's role needs " + grant_for(what) +
                    " (schema/roles/relay_role.sql grants everything the relay uses)");
}

// libpq's refusals at connect time arrive as broken_connection, with the server's FATAL text:
// these are not outages and waiting does not help.
void refuse_at_connect(const std::string& what, const std::string& msg) {
  if (contains(msg, "password authentication failed") || contains(msg, "no pg_hba.conf entry") ||
      contains(msg, "authentication failed") || (contains(msg, "role \"") && contains(msg, "does not exist")) ||
      contains(msg, "password is missing") || contains(msg, "no password supplied") ||
      contains(msg, "not permitted to log in") || contains(msg, "permission denied for database"))
    throw AccessError(what + ": the database refused the relay's credentials (" + msg +
                      "); check database.url's user, database.password_file or the passfile, and pg_hba.conf");
  if (contains(msg, "database \"") && contains(msg, "does not exist"))
    throw ConfigError("database.url: " + msg + " (" + what + ")");
}

}  // namespace

void rethrow_translated(const std::string& what) {
  try {
    throw;
  } catch (const pqxx::in_doubt_error& e) {
    // The commit may or may not have happened: never assume it did.
    throw TransientError(what + ": commit outcome unknown (" + e.what() + ")");
  } catch (const pqxx::broken_connection& e) {
    const std::string msg = trimmed(e.what());
    refuse_at_connect(what, msg);
    throw TransientError(what + ": connection lost (" + msg + ")");
  } catch (const pqxx::insufficient_privilege& e) {
    // By type as well as by code: libpqxx 6.4 can deliver this with an empty SQLSTATE.
    permission_denied(what, trimmed(e.what()));
  } catch (const pqxx::sql_error& e) {
    const std::string state = e.sqlstate();
    const std::string msg = trimmed(e.what());
    switch (common::classify_sqlstate(state)) {
      case common::SqlStateKind::schema:
        throw SchemaError(what + ": the outbox schema is missing or has the wrong shape (" + msg +
                          "); run `outbox-relay migrate` or check database.schema");
      case common::SqlStateKind::access:
        if (state.starts_with("28")) throw AccessError(what + ": authentication failed (" + msg + ")");
        permission_denied(what, msg);
      case common::SqlStateKind::missing_database:
        throw ConfigError("database.url: " + msg + " (" + what + ")");
      case common::SqlStateKind::retry:
      case common::SqlStateKind::other:
        break;
    }
    if (state.empty() && contains(msg, "permission denied")) permission_denied(what, msg);
    if (state.empty()) refuse_at_connect(what, msg);
    // The retry classes and everything else are retried with backoff: a statement that fails
    // because of one row's content is isolated by the store (contract 9), not here.
    throw TransientError(what + ": " + msg + (state.empty() ? "" : " (SQLSTATE " + state + ")"));
  } catch (const pqxx::failure& e) {
    const std::string msg = trimmed(e.what());
    refuse_at_connect(what, msg);
    throw TransientError(what + ": " + msg);
  }
}

}  // namespace outbox::relay::pg
