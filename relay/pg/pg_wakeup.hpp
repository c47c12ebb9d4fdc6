// Wakeup on LISTEN/NOTIFY: a dedicated connection listens on channel `outbox_events` and
// flips outbox_relay_wakeup.listening, which producers' insert trigger reads.
#pragma once

#include <memory>
#include <string>

#include "relay/core/wakeup.hpp"

namespace outbox::relay::pg {

class PgWakeup final : public Wakeup {
 public:
  PgWakeup(std::string conninfo, std::string schema);
  ~PgWakeup() override;

  void set_listening(bool listening) override;
  bool wait(std::chrono::milliseconds timeout) override;

 private:
  struct Listener;
  struct Session;  // owns the pqxx::connection (concrete type: connection_base's destructor is not virtual)
  Session& session();  // connects when needed
  void reset();

  std::string conninfo_;
  std::string table_;
  std::unique_ptr<Session> conn_;
  std::unique_ptr<Listener> listener_;
  bool notified_ = false;
};

}  // namespace outbox::relay::pg
