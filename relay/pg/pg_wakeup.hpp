// Wakeup on LISTEN/NOTIFY: a dedicated connection listens on channel `outbox_events` and
// flips outbox_relay_wakeup.listening, which producers' insert trigger reads.
#pragma once

#include <memory>
#include <string>

#include "relay/core/wakeup.hpp"

namespace pqxx {
class connection_base;
}

namespace outbox::relay::pg {

class PgWakeup final : public Wakeup {
 public:
  PgWakeup(std::string conninfo, std::string schema);
  ~PgWakeup() override;

  void set_listening(bool listening) override;
  bool wait(std::chrono::milliseconds timeout) override;

 private:
  struct Listener;
  pqxx::connection_base& connection();
  void reset();

  std::string conninfo_;
  std::string table_;
  std::unique_ptr<pqxx::connection_base> conn_;
  std::unique_ptr<Listener> listener_;
  bool notified_ = false;
};

}  // namespace outbox::relay::pg
