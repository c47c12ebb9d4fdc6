// Port: how an idle relay learns that new rows may have arrived (LISTEN/NOTIFY, or nothing).
#pragma once

#include <chrono>

namespace outbox::relay {

class Wakeup {
 public:
  virtual ~Wakeup() = default;

  // Tells producers whether to send a wake-up hint with each insert. Set only while the
  // relay is idle, so busy periods cost producers nothing. May throw TransientError.
  virtual void set_listening(bool listening) = 0;

  // Blocks at most `timeout`; returns true when a hint arrived. May return early either way.
  virtual bool wait(std::chrono::milliseconds timeout) = 0;
};

}  // namespace outbox::relay
