// The daemons' start: try `attempt` (check the schema, claim an id) until it no longer meets a
// TransientError or `stop` is set, backing off with jitter (200 ms doubling to 10 s), logging
// each wait, and touching `heartbeat_ns` throughout so the watchdog sees a live thread.
// Returns false when stopped first. Other errors pass through.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <random>
#include <thread>

#include "relay/core/backoff.hpp"
#include "relay/core/clock.hpp"
#include "relay/core/errors.hpp"
#include "relay/core/logger.hpp"
#include "relay/pg/pg_conninfo.hpp"

namespace outbox::relay::app {

inline bool wait_for_database(const std::atomic<bool>& stop, const Clock& clock, std::atomic<std::int64_t>& heartbeat_ns,
                              Logger& logger, const std::function<void()>& attempt) {
  using std::chrono::milliseconds;
  const BackoffPolicy backoff{milliseconds(200), milliseconds(10'000), 0.5};
  std::mt19937_64 jitter(std::random_device{}());
  auto beat = [&] { heartbeat_ns = std::chrono::nanoseconds(clock.now().time_since_epoch()).count(); };
  for (int n = 1; !stop; ++n) {
    try {
      beat();
      attempt();
      return true;
    } catch (const TransientError& e) {
      auto wait = backoff.delay(n, std::uniform_real_distribution<double>(0, 1)(jitter));
      logger.log(LogLevel::warn, "waiting_to_start",
                 {{"error", pg::redact_conninfo(e.what())}, {"retry_in_ms", std::to_string(wait.count())}});
      for (auto until = clock.now() + wait; !stop && clock.now() < until;) {
        beat();
        std::this_thread::sleep_for(milliseconds(50));
      }
    }
  }
  return false;
}

}  // namespace outbox::relay::app
