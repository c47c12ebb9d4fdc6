// Every counter the relay core keeps, declared in one list. Written by the relay thread,
// read by whoever reports (logs, metrics): plain atomics, no lock.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstddef>

#include "relay/core/histogram.hpp"

namespace outbox::relay {

#define OUTBOX_RELAY_CORE_STATS(X)                                                          \
  X(published_total, "events the broker acknowledged and the relay marked published")     \
  X(failed_transient_total, "deliveries that failed for a reason a retry can fix")        \
  X(failed_permanent_total, "deliveries or rows that failed for a reason of their own")   \
  X(dead_lettered_total, "rows parked after exhausting their attempts")                   \
  X(held_back_total, "events not sent because an earlier event of their aggregate waits")  \
  X(unmarked_after_failure_total, "acknowledged events left unmarked (will be re-sent) "  \
                                  "because an earlier event of their aggregate failed")   \
  X(held_behind_late_total, "read-ahead events held back because an earlier event of their "  \
                            "aggregate committed late, behind the relay's cursor")            \
  X(not_owned_total, "events not sent because this instance no longer held their lane "   \
                     "(lease lapsed or being handed back); their new owner sends them")   \
  X(batches_total, "batches fetched from the outbox")                                     \
  X(transient_errors_total, "steps that failed because the database or broker was away")

struct RelayStats {
#define OUTBOX_RELAY_DECLARE(name, help) std::atomic<std::uint64_t> name{0};
  OUTBOX_RELAY_CORE_STATS(OUTBOX_RELAY_DECLARE)
#undef OUTBOX_RELAY_DECLARE

  // Readiness: whether the last step reached both the database and the broker, and when
  // (the relay's monotonic clock, nanoseconds since its epoch) a step last did.
  std::atomic<bool> last_step_ok{false};
  std::atomic<std::int64_t> last_ok_steady_ns{0};
  // Liveness of the relay thread (same clock): touched by every step and every wait slice,
  // so a watchdog can tell a hung thread from one waiting for work or for a dependency.
  std::atomic<std::int64_t> heartbeat_ns{0};

  // A batch from its fetch to the broker's last acknowledgement.
  Histogram batch_duration{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
  // An event from its row's created_at (database clock) to the broker's acknowledgement:
  // what a consumer waits for after the producer's transaction.
  Histogram commit_to_ack{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900};
};

}  // namespace outbox::relay
