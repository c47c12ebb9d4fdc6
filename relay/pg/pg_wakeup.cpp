#include "relay/pg/pg_wakeup.hpp"

#include <pqxx/pqxx>

#include <thread>

#include "relay/core/errors.hpp"
#include "relay/pg/pg_errors.hpp"
#include "relay/pg/pg_outbox_store.hpp"

namespace outbox::relay::pg {

struct PgWakeup::Listener final : pqxx::notification_receiver {
  Listener(pqxx::connection_base& c, bool& flag) : pqxx::notification_receiver(c, "outbox_events"), flag_(flag) {}
  void operator()(const std::string&, int) override { flag_ = true; }
  bool& flag_;
};

PgWakeup::PgWakeup(std::string conninfo, std::string schema)
    : conninfo_(std::move(conninfo)), table_(quoted_identifier(schema, "database.schema") + ".outbox_relay_wakeup") {}

PgWakeup::~PgWakeup() { reset(); }

void PgWakeup::reset() {
  listener_.reset();
  conn_.reset();
}

struct PgWakeup::Session {
  explicit Session(const std::string& conninfo) : conn(conninfo) {}
  pqxx::connection conn;
};

PgWakeup::Session& PgWakeup::session() {
  if (conn_ && conn_->conn.is_open()) return *conn_;
  reset();
  try {
    conn_ = std::make_unique<Session>(conninfo_);
    // A fresh LISTEN after every reconnect: hints sent meanwhile are lost, which is why the
    // runner also polls.
    listener_ = std::make_unique<Listener>(conn_->conn, notified_);
  } catch (...) {
    reset();
    rethrow_translated("connecting the wake-up listener");
  }
  return *conn_;
}

void PgWakeup::set_listening(bool listening) {
  auto& c = session().conn;
  try {
    pqxx::nontransaction tx(c);
    tx.exec_params("UPDATE " + table_ +
                       " SET listening = $1, changed_at = now() WHERE listening IS DISTINCT FROM $1",
                   listening);
  } catch (...) {
    reset();
    rethrow_translated("setting the wake-up flag");
  }
}

bool PgWakeup::wait(std::chrono::milliseconds timeout) {
  try {
    auto& c = session().conn;
    notified_ = false;
    c.get_notifs();  // hints that arrived while we were busy
    if (!notified_) {
      auto us = std::chrono::duration_cast<std::chrono::microseconds>(timeout).count();
      c.await_notification(static_cast<long>(us / 1'000'000), static_cast<long>(us % 1'000'000));
    }
    bool hit = notified_;
    notified_ = false;
    return hit;
  } catch (...) {
    reset();
    // Database away: behave like a poll interval elapsing; the relay's own calls report it.
    std::this_thread::sleep_for(timeout);
    return false;
  }
}

}  // namespace outbox::relay::pg
