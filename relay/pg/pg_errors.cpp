#include "relay/pg/pg_errors.hpp"

#include <pqxx/except>

#include "relay/core/errors.hpp"

namespace outbox::relay::pg {

void rethrow_translated(const std::string& what) {
  try {
    throw;
  } catch (const pqxx::in_doubt_error& e) {
    // The commit may or may not have happened: never assume it did.
    throw TransientError(what + ": commit outcome unknown (" + e.what() + ")");
  } catch (const pqxx::broken_connection& e) {
    throw TransientError(what + ": connection lost (" + std::string(e.what()) + ")");
  } catch (const pqxx::sql_error& e) {
    const std::string state = e.sqlstate();
    std::string msg = e.what();
    while (!msg.empty() && msg.back() == '\n') msg.pop_back();
    if (state == "42P01" || state == "42703" || state == "42883")
      throw SchemaError(what + ": the outbox schema is missing or has the wrong shape (" + msg +
                        "); run `outbox-relay migrate` or check database.schema");
    if (state == "42501")
      throw FatalError(what + ": permission denied (" + msg +
                       "); grant the relay role what schema/roles/relay_role.sql grants");
    if (state.starts_with("28"))
      throw FatalError(what + ": authentication failed (" + msg + ")");
    if (state.starts_with("3D"))
      throw FatalError(what + ": database does not exist (" + msg + ")");
    // Everything else (connection class 08, 40001/40P01, 57Pxx shutdown, 57014 timeout,
    // 53xxx resources, 55P03 lock) is retried with backoff.
    throw TransientError(what + ": " + msg + " (SQLSTATE " + state + ")");
  } catch (const pqxx::failure& e) {
    throw TransientError(what + ": " + e.what());
  }
}

}  // namespace outbox::relay::pg
