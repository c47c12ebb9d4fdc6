#include "relay/core/runner.hpp"

#include <algorithm>

#include "relay/core/errors.hpp"

namespace outbox::relay {

Runner::Runner(Relay& relay, Wakeup& wakeup, const Clock& clock, Logger& logger, RunnerOptions options)
    : relay_(relay), wakeup_(wakeup), clock_(clock), logger_(logger), options_(options) {}

void Runner::set_listening(bool listening) {
  if (listening_known_ && listening_ == listening) return;
  wakeup_.set_listening(listening);
  listening_ = listening;
  listening_known_ = true;
}

void Runner::wait_until(Clock::time_point deadline, bool wake_on_hint, const std::atomic<bool>& stop) {
  const auto lanes_version = relay_.ownership_version();
  while (stopping_ || !stop.load()) {
    relay_.beat();
    if (wake_on_hint && relay_.ownership_version() != lanes_version) return;  // lanes gained or to hand back
    auto now = clock_.now();
    if (now >= deadline) return;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
    auto slice = std::clamp(left, std::chrono::milliseconds{1}, options_.stop_check);
    if (wakeup_.wait(slice) && wake_on_hint) return;
  }
}

RunnerExit Runner::run(const std::atomic<bool>& stop) {
  bool stop_forwarded = false;
  Clock::time_point stop_deadline{};
  for (;;) {
    if (stop.load() && !stop_forwarded) {
      logger_.log(LogLevel::info, "stopping", {{"unmarked", std::to_string(relay_.unmarked())}});
      relay_.request_stop();
      stop_forwarded = true;
      stopping_ = true;
      stop_deadline = clock_.now() + options_.shutdown_timeout;
    }
    if (stop_forwarded && clock_.now() >= stop_deadline) {
      logger_.log(LogLevel::error, "shutdown_timeout",
                  {{"unmarked", std::to_string(relay_.unmarked())},
                   {"note", "acknowledged rows left unmarked will be published again"}});
      return RunnerExit::shutdown_timeout;
    }
    StepResult r = relay_.step();
    try {
      switch (r.kind) {
        case StepKind::stopped:
          return RunnerExit::stopped;
        case StepKind::busy:
          set_listening(false);
          break;
        case StepKind::idle:
          if (r.holds_no_lane) {
            // A spare asks producers for no hints (the flag is shared by every instance and
            // a hint per insert serialises their commits); it waits for lanes or a poll.
            wait_until(clock_.now() + options_.poll_interval, true, stop);
          } else if (r.fetched > 0) {
            set_listening(false);
            wait_until(clock_.now() + options_.linger, false, stop);
          } else if (!listening_known_ || !listening_) {
            // Ask for hints, then look once more: a row that committed before the flag was
            // visible would otherwise wait for the poll interval.
            set_listening(true);
          } else {
            wait_until(clock_.now() + options_.poll_interval, true, stop);
          }
          break;
        case StepKind::backoff:
          if (!degraded_)
            logger_.log(LogLevel::warn, "relay_retrying",
                        {{"error", r.error}, {"backoff_ms", std::to_string(r.wait.count())}});
          degraded_ = true;
          wait_until(clock_.now() + r.wait, false, stop);
          continue;
      }
    } catch (const TransientError& e) {
      listening_known_ = false;
      logger_.log(LogLevel::warn, "wakeup_unavailable", {{"error", e.what()}});
      wait_until(clock_.now() + options_.poll_interval, false, stop);
    }
    if (degraded_) {
      logger_.log(LogLevel::info, "relay_recovered");
      degraded_ = false;
    }
  }
}

}  // namespace outbox::relay
