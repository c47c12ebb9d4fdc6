// Readiness of a running instance, from what the relay thread and the lease keeper last saw.
#pragma once

#include <chrono>

#include "relay/core/clock.hpp"
#include "relay/core/ownership.hpp"
#include "relay/core/relay_stats.hpp"

namespace outbox::relay {

// Ready while the relay's steps reach the database and the broker, one did within `window`,
// and the keeper's last round reached the lease store, a renewal within `ttl`. An instance holding no
// lane (all taken by others) is ready as the healthy spare it is, so rolling updates and
// disruption budgets count it; one holding none because its renewal failed is not: its steps
// then succeed without touching anything.
[[nodiscard]] inline bool instance_ready(const RelayStats& stats, const LeaseKeeper& keeper, Clock::time_point now,
                                         std::chrono::nanoseconds window, std::chrono::nanoseconds ttl) {
  const auto age = now.time_since_epoch() - std::chrono::nanoseconds(stats.last_ok_steady_ns.load());
  return stats.last_step_ok.load() && age < window && keeper.last_round_ok() && keeper.renewed_within(ttl);
}

}  // namespace outbox::relay
