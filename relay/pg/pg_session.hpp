// One PostgreSQL session of an adapter, the only owner of a libpqxx connection in the relay:
// it connects when first needed and again after any database failure, sets each new
// connection up the adapter's way (prepared statements, LISTEN, locks), and turns libpqxx's
// exceptions into the core's error kinds (pg_errors) at this one place.
#pragma once

#include <pqxx/connection>
#include <pqxx/except>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "relay/pg/pg_errors.hpp"

namespace outbox::relay::pg {

class PgSession {
 public:
  // Runs on every new connection before it is used; what it throws leaves the connection
  // closed (the next call connects again), translated like a failed `run`.
  using Setup = std::function<void(pqxx::connection&)>;
  using OnNotify = std::function<void(const std::string& payload)>;

  // `role` names the session in errors: "connecting " + role.
  PgSession(std::string conninfo, std::string role, Setup setup = {});
  ~PgSession();
  PgSession(const PgSession&) = delete;
  PgSession& operator=(const PgSession&) = delete;

  // Runs `work(connection)`, connecting first when needed. A libpqxx exception closes the
  // session and leaves as TransientError, FatalError or ConfigError naming `what`; any other
  // exception (the adapter's own verdicts) passes unchanged and the session stays open.
  template <class Work>
  decltype(auto) run(const std::string& what, Work&& work) {
    pqxx::connection& c = connection();
    try {
      return std::forward<Work>(work)(c);
    } catch (const pqxx::pqxx_exception&) {
      fail(what);
    }
  }

  // From now on, on this and every later connection (LISTEN again after each reconnect:
  // hints sent in between are lost, which is why every listener also polls).
  void listen(std::string channel, OnNotify on_notify);
  // Delivers the notifications already received, else waits up to `timeout` for one.
  // Returns how many were delivered (any channel). Failures as `run`.
  int await_notifications(const std::string& what, std::chrono::microseconds timeout);

  void close();
  // Connections opened after the first (read from any thread).
  [[nodiscard]] std::uint64_t reconnects() const {
    const auto n = opened_.load();
    return n > 0 ? n - 1 : 0;
  }

 private:
  struct Open;
  pqxx::connection& connection();
  [[noreturn]] void fail(const std::string& what);

  std::string conninfo_;
  std::string role_;
  Setup setup_;
  std::vector<std::pair<std::string, OnNotify>> channels_;
  std::unique_ptr<Open> open_;
  std::atomic<std::uint64_t> opened_{0};
};

}  // namespace outbox::relay::pg
