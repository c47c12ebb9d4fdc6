#include "relay/pg/pg_session.hpp"

#include <pqxx/notification>

namespace outbox::relay::pg {
namespace {

struct Receiver final : pqxx::notification_receiver {
  Receiver(pqxx::connection_base& c, const std::string& channel, PgSession::OnNotify on_notify)
      : pqxx::notification_receiver(c, channel), on_notify_(std::move(on_notify)) {}
  void operator()(const std::string& payload, int) override { on_notify_(payload); }
  PgSession::OnNotify on_notify_;
};

}  // namespace

// The receivers go before the connection they are registered with (declared after it).
struct PgSession::Open {
  explicit Open(const std::string& conninfo) : conn(conninfo) {}
  pqxx::connection conn;
  std::vector<std::unique_ptr<Receiver>> receivers;
};

PgSession::PgSession(std::string conninfo, std::string role, Setup setup)
    : conninfo_(std::move(conninfo)), role_(std::move(role)), setup_(std::move(setup)) {}

PgSession::~PgSession() = default;

void PgSession::close() { open_.reset(); }

pqxx::connection& PgSession::connection() {
  if (open_ && open_->conn.is_open()) return open_->conn;
  open_.reset();
  try {
    auto fresh = std::make_unique<Open>(conninfo_);
    if (setup_) setup_(fresh->conn);
    for (const auto& [channel, on_notify] : channels_)
      fresh->receivers.push_back(std::make_unique<Receiver>(fresh->conn, channel, on_notify));
    open_ = std::move(fresh);
  } catch (const pqxx::pqxx_exception&) {
    rethrow_translated("connecting " + role_);
  }
  ++opened_;
  return open_->conn;
}

void PgSession::fail(const std::string& what) {
  close();
  rethrow_translated(what);
}

void PgSession::listen(std::string channel, OnNotify on_notify) {
  channels_.emplace_back(std::move(channel), std::move(on_notify));
  if (!open_) return;
  const auto& [name, callback] = channels_.back();
  run("listening on " + name,
      [&](pqxx::connection& c) { open_->receivers.push_back(std::make_unique<Receiver>(c, name, callback)); });
}

int PgSession::await_notifications(const std::string& what, std::chrono::microseconds timeout) {
  const auto s = static_cast<long>(timeout.count() / 1'000'000);
  const auto us = static_cast<long>(timeout.count() % 1'000'000);
  return run(what, [s, us](pqxx::connection& c) {
    const int n = c.get_notifs();
    return n > 0 ? n : c.await_notification(s, us);
  });
}

}  // namespace outbox::relay::pg
