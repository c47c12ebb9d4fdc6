// Wakeup without hints (relay.wakeup: poll): every wait lasts its whole timeout.
#pragma once

#include <thread>

#include "relay/core/wakeup.hpp"

namespace outbox::relay::app {

class PollingWakeup final : public Wakeup {
 public:
  void set_listening(bool) override {}
  bool wait(std::chrono::milliseconds timeout) override {
    std::this_thread::sleep_for(timeout);
    return false;
  }
};

}  // namespace outbox::relay::app
