// Drives the relay: steps it, and between steps waits as its outcome says: not at all while
// busy, `linger` after a partial batch, until a wake-up or `poll_interval` when the outbox
// is empty, the backoff after a transient failure. Stops within `stop_check` of a request.
#pragma once

#include <atomic>
#include <chrono>

#include "relay/core/clock.hpp"
#include "relay/core/logger.hpp"
#include "relay/core/relay.hpp"
#include "relay/core/wakeup.hpp"

namespace outbox::relay {

struct RunnerOptions {
  std::chrono::milliseconds poll_interval{500};  // fallback when no wake-up hint arrives
  std::chrono::milliseconds linger{2};           // after a partial batch, let a few more rows arrive
  std::chrono::milliseconds stop_check{100};     // longest single wait, so a stop is noticed
  // After a stop request, how long to keep trying to mark acknowledged rows before giving up
  // (they are then re-published by the next run: duplicates, never losses).
  std::chrono::milliseconds shutdown_timeout{30'000};
};

enum class RunnerExit { stopped, shutdown_timeout };

class Runner {
 public:
  Runner(Relay& relay, Wakeup& wakeup, const Clock& clock, Logger& logger, RunnerOptions options);

  // Runs until `stop` becomes true and the relay has marked what was acknowledged.
  RunnerExit run(const std::atomic<bool>& stop);

 private:
  // Waits until `deadline` in slices; returns early on a hint or a change of the lanes held
  // when `wake_on_hint`, and on a
  // stop request unless the stop is already being carried out (then backoffs are honoured).
  void wait_until(Clock::time_point deadline, bool wake_on_hint, const std::atomic<bool>& stop);
  bool stopping_ = false;
  void set_listening(bool listening);

  Relay& relay_;
  Wakeup& wakeup_;
  const Clock& clock_;
  Logger& logger_;
  RunnerOptions options_;
  bool listening_ = false;
  bool listening_known_ = false;
  bool degraded_ = false;  // in a run of transient failures (logged once per run)
};

}  // namespace outbox::relay
