#include "relay/pg/pg_wakeup.hpp"

#include <pqxx/pqxx>

#include <thread>

#include "relay/pg/pg_session.hpp"
#include "relay/pg/sql_text.hpp"

namespace outbox::relay::pg {

PgWakeup::PgWakeup(std::string conninfo, std::string schema)
    : table_(quoted_identifier(schema, "database.schema") + ".outbox_relay_wakeup"),
      session_(std::make_unique<PgSession>(std::move(conninfo), "the wake-up listener")) {
  // A hint only says "look now": the runner reads what there is whatever the payload.
  session_->listen("outbox_events", [](const std::string&) {});
}

PgWakeup::~PgWakeup() = default;

void PgWakeup::set_listening(bool listening) {
  session_->run("setting the wake-up flag", [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    tx.exec_params("UPDATE " + table_ + " SET listening = $1, changed_at = now() WHERE listening IS DISTINCT FROM $1",
                   listening);
  });
}

bool PgWakeup::wait(std::chrono::milliseconds timeout) {
  try {
    return session_->await_notifications("waiting for outbox hints", timeout) > 0;
  } catch (const std::exception&) {
    // Database away or refusing: behave like a poll interval elapsing; the relay's own calls
    // report and classify it.
    std::this_thread::sleep_for(timeout);
    return false;
  }
}

}  // namespace outbox::relay::pg
