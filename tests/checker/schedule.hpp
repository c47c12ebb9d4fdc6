// A schedule: everything about one checker run that a seed decides. The relay's settings,
// the producers' shape (how many, how they keep an aggregate's events in order, how many
// hostile rows), and the faults with their times. The interleaving itself comes from real
// threads, processes and a real database, so a seed names a schedule, not a timing.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace outbox::test::checker {

enum class FaultKind {
  kill_relay,          // SIGKILL one relay, start a new one shortly after
  stop_relay,          // SIGSTOP one relay past its lease, then SIGCONT
  join,                // one more relay instance (lanes move to it)
  leave,               // SIGTERM one relay (it hands its lanes back)
  terminate_sessions,  // pg_terminate_backend on every relay session
  restart_postgres,    // pg_ctl stop -m immediate, then start
  produce_errors,      // retriable Produce errors injected in the mock cluster
  move_leaders,        // every partition's leader moves to another broker
  refused_property,    // a relay started with a pass-through property that breaks a guarantee
  kill_sidecar,        // SIGKILL one inbox sidecar, start a new one after arg ms
  join_sidecar,        // one more inbox sidecar in the group (a rebalance)
  stall_kill_sidecar,  // inbox_events locked against writes for arg ms; a sidecar SIGKILLed in
                       // the last quarter of it (its landing blocked, its offset commits not),
                       // started again once the lock is gone
};

[[nodiscard]] const char* to_string(FaultKind kind);

struct Fault {
  double at_s = 0;
  FaultKind kind = FaultKind::kill_relay;
  int arg = 0;  // which relay (an index among the running ones), how long, which property
};

// The pass-through properties a relay must refuse at start (exit 78), as (name, value).
[[nodiscard]] const std::vector<std::pair<std::string, std::string>>& refused_properties();

struct Schedule {
  std::uint64_t seed = 0;
  // The relay's settings.
  int relays = 1;  // at the start
  int batch_size = 100;
  int rescan_ms = 1000;
  std::string wakeup = "notify";
  std::string mark_mode = "update";
  bool one_in_flight = false;  // max.in.flight=1 (with injected Produce errors, see DESIGN.md)
  int brokers = 1;
  int lease_ttl_ms = 2000;
  int renew_ms = 500;
  // The producers.
  int producers = 2;
  int aggregates = 8;           // healthy aggregates agg-0..n-1
  bool row_locks = false;       // concurrent writers of an aggregate under a row lock; else one at a time
  int late_commit_weight = 10;  // how often the late-commit pattern is drawn (of 100)
  double workload_s = 1.0;
  int hostile = 0;              // hostile rows, each in an aggregate of its own
  std::vector<Fault> faults;
  // The inbox stage: sidecars (`inbox run`) landing the topics in inbox_events, with faults of
  // their own. Drawn from a stream of its own, so the rest of a seed's schedule is unchanged.
  int sidecars = 0;  // at the start; 0: no inbox stage
  int sidecar_batch = 100;
  int sidecar_commit_ms = 1000;  // 600000: offsets committed only on a revoke or at SIGTERM
  std::vector<Fault> sidecar_faults;

  // How long a healthy event may wait from its commit to its first delivery in this schedule:
  // a base, the rescan interval, and an allowance per fault (restart, lease expiry, backoff).
  [[nodiscard]] double latency_bound_s() const;
  // How long after the relays drained the inbox may take to hold every delivered event.
  [[nodiscard]] double inbox_bound_s() const;
  [[nodiscard]] std::string describe() const;
};

// The schedule a seed names.
[[nodiscard]] Schedule make_schedule(std::uint64_t seed);

}  // namespace outbox::test::checker
