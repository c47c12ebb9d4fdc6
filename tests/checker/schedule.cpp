#include "tests/checker/schedule.hpp"

#include <algorithm>
#include <cstdio>
#include <random>

namespace outbox::test::checker {

const char* to_string(FaultKind kind) {
  switch (kind) {
    case FaultKind::kill_relay: return "SIGKILL a relay";
    case FaultKind::stop_relay: return "SIGSTOP a relay past its lease";
    case FaultKind::join: return "an instance joins";
    case FaultKind::leave: return "an instance leaves (SIGTERM)";
    case FaultKind::terminate_sessions: return "pg_terminate_backend the relay sessions";
    case FaultKind::restart_postgres: return "PostgreSQL immediate restart";
    case FaultKind::produce_errors: return "retriable Produce errors";
    case FaultKind::move_leaders: return "partition leaders move";
    case FaultKind::refused_property: return "a relay started with a refused property";
    case FaultKind::kill_sidecar: return "SIGKILL an inbox sidecar";
    case FaultKind::join_sidecar: return "an inbox sidecar joins the group";
    case FaultKind::stall_kill_sidecar: return "inbox_events locked, an inbox sidecar SIGKILLed while it waits";
  }
  return "?";
}

const std::vector<std::pair<std::string, std::string>>& refused_properties() {
  static const std::vector<std::pair<std::string, std::string>> all{
      {"partitioner", "random"},
      {"partitioner", "consistent_random"},
      {"enable.gapless.guarantee", "false"},
      {"enable.idempotence", "false"},
      {"acks", "1"},
      {"max.in.flight.requests.per.connection", "20"},
      {"queuing.strategy", "lifo"},
      {"delivery.report.only.error", "true"},
  };
  return all;
}

double Schedule::latency_bound_s() const {
  const double lease = lease_ttl_ms / 1000.0;
  double bound = 4.0 + rescan_ms / 1000.0;
  for (const auto& f : faults) {
    switch (f.kind) {
      case FaultKind::kill_relay: bound += lease + 2; break;
      case FaultKind::stop_relay: bound += f.arg / 1000.0 + lease + 2; break;
      case FaultKind::join:
      case FaultKind::leave: bound += lease; break;
      case FaultKind::terminate_sessions: bound += 2; break;
      case FaultKind::restart_postgres: bound += 14; break;  // the relay's backoff reaches 10 s
      case FaultKind::produce_errors: bound += 4; break;
      case FaultKind::move_leaders: bound += 3; break;
      case FaultKind::refused_property: bound += 1; break;
      case FaultKind::kill_sidecar:
      case FaultKind::join_sidecar:
      case FaultKind::stall_kill_sidecar: break;  // the inbox's own bound
    }
  }
  return bound;
}

// A killed sidecar's partitions wait out its session (3 s here) before another one gets them.
double Schedule::inbox_bound_s() const {
  double bound = 10.0;
  for (const auto& f : sidecar_faults)
    bound += f.kind == FaultKind::join_sidecar ? 2 : 3.0 + f.arg / 1000.0 + 2;
  for (const auto& f : faults) bound += f.kind == FaultKind::restart_postgres ? 14 : 0;
  return bound;
}

std::string Schedule::describe() const {
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "seed %llu: %d relay(s), batch %d, rescan %d ms, wakeup %s, mark %s%s, %d broker(s); %d producers "
                "over %d aggregates (%s), late-commit weight %d, %.1f s, %d hostile rows",
                static_cast<unsigned long long>(seed), relays, batch_size, rescan_ms, wakeup.c_str(), mark_mode.c_str(),
                one_in_flight ? ", max.in.flight 1" : "", brokers, producers, aggregates,
                row_locks ? "row locks, concurrent writers" : "one transaction at a time", late_commit_weight,
                workload_s, hostile);
  std::string out = buf;
  for (const auto& f : faults) {
    std::snprintf(buf, sizeof buf, "; at %.2f s %s (%d)", f.at_s, to_string(f.kind), f.arg);
    out += buf;
  }
  if (sidecars > 0) {
    std::snprintf(buf, sizeof buf, "; inbox: %d sidecar(s), batch %d, commit every %d ms", sidecars, sidecar_batch,
                  sidecar_commit_ms);
    out += buf;
  }
  for (const auto& f : sidecar_faults) {
    std::snprintf(buf, sizeof buf, "; at %.2f s %s (%d)", f.at_s, to_string(f.kind), f.arg);
    out += buf;
  }
  return out;
}

Schedule make_schedule(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto pick = [&](int lo, int hi) { return lo + static_cast<int>(rng() % static_cast<std::uint64_t>(hi - lo + 1)); };
  auto chance = [&](int percent) { return pick(1, 100) <= percent; };
  Schedule s;
  s.seed = seed;
  s.relays = pick(1, 3) == 3 ? 2 : 1;
  static const int batches[] = {10, 20, 100, 500};
  s.batch_size = batches[pick(0, 3)];
  static const int rescans[] = {200, 1000, 3000};
  s.rescan_ms = rescans[pick(0, 2)];
  s.wakeup = chance(70) ? "notify" : "poll";
  s.mark_mode = chance(80) ? "update" : "delete";
  s.producers = pick(2, 4);
  s.aggregates = pick(3, 16);
  s.row_locks = chance(40);
  s.late_commit_weight = chance(50) ? 30 : 8;
  s.workload_s = 0.6 + pick(0, 6) / 10.0;
  s.hostile = chance(60) ? pick(2, 8) : 0;
  const int faults = pick(0, 4) == 0 ? 0 : pick(1, 2);
  for (int i = 0; i < faults; ++i) {
    Fault f;
    f.at_s = pick(5, static_cast<int>(s.workload_s * 100) - 5) / 100.0;
    // PostgreSQL restarts cost seconds: drawn less often.
    const int k = pick(0, 16);
    f.kind = k <= 2   ? FaultKind::kill_relay
             : k <= 4 ? FaultKind::stop_relay
             : k <= 6 ? FaultKind::join
             : k <= 7 ? FaultKind::leave
             : k <= 9 ? FaultKind::terminate_sessions
             : k <= 10 ? FaultKind::restart_postgres
             : k <= 12 ? FaultKind::produce_errors
             : k <= 14 ? FaultKind::move_leaders
                       : FaultKind::refused_property;
    switch (f.kind) {
      case FaultKind::stop_relay: f.arg = s.lease_ttl_ms + pick(200, 800); break;  // ms stopped
      case FaultKind::produce_errors: s.one_in_flight = true; f.arg = pick(3, 12); break;  // errors pushed
      case FaultKind::move_leaders: s.brokers = 3; break;
      case FaultKind::refused_property: f.arg = pick(0, static_cast<int>(refused_properties().size()) - 1); break;
      case FaultKind::kill_relay: f.arg = pick(0, 300); break;  // ms until the new process starts
      default: break;
    }
    s.faults.push_back(f);
  }
  std::sort(s.faults.begin(), s.faults.end(), [](const Fault& a, const Fault& b) { return a.at_s < b.at_s; });

  // The inbox stage, from a stream of its own.
  std::mt19937_64 inbox_rng(seed ^ 0x1b873593cc9e2d51ULL);
  auto ipick = [&](int lo, int hi) { return lo + static_cast<int>(inbox_rng() % static_cast<std::uint64_t>(hi - lo + 1)); };
  const int shape = ipick(0, 9);
  s.sidecars = shape <= 2 ? 0 : shape <= 6 ? 1 : 2;
  if (s.sidecars > 0) {
    static const int sidecar_batches[] = {1, 10, 100, 1000};
    s.sidecar_batch = sidecar_batches[ipick(0, 3)];
    static const int commits[] = {100, 1000, 600000};
    s.sidecar_commit_ms = commits[ipick(0, 2)];
    const int n = ipick(0, 2);
    for (int i = 0; i < n; ++i) {
      Fault f;
      f.at_s = ipick(5, static_cast<int>(s.workload_s * 100) - 5) / 100.0;
      const int kind = ipick(0, 3);
      f.kind = kind <= 1 ? FaultKind::kill_sidecar : kind == 2 ? FaultKind::join_sidecar : FaultKind::stall_kill_sidecar;
      if (f.kind == FaultKind::kill_sidecar) f.arg = ipick(0, 300);
      // Longer than the shorter commit intervals: an offset commit falls inside it.
      if (f.kind == FaultKind::stall_kill_sidecar) f.arg = ipick(1200, 2500);
      s.sidecar_faults.push_back(f);
    }
    std::sort(s.sidecar_faults.begin(), s.sidecar_faults.end(),
              [](const Fault& a, const Fault& b) { return a.at_s < b.at_s; });
  }
  return s;
}

}  // namespace outbox::test::checker
