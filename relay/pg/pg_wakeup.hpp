// Wakeup on LISTEN/NOTIFY: a dedicated connection listens on channel `outbox_events` and
// flips outbox_relay_wakeup.listening, which producers' insert trigger reads.
#pragma once

#include <memory>
#include <string>

#include "relay/core/wakeup.hpp"

namespace outbox::relay::pg {

class PgSession;

class PgWakeup final : public Wakeup {
 public:
  PgWakeup(std::string conninfo, std::string schema);
  ~PgWakeup() override;

  void set_listening(bool listening) override;
  bool wait(std::chrono::milliseconds timeout) override;

 private:
  std::string table_;
  std::unique_ptr<PgSession> session_;
};

}  // namespace outbox::relay::pg
