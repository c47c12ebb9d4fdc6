// The randomized schedule checker against PostgreSQL and the real binary: runs seeded
// schedules of producer transactions, hostile rows and faults, checks each history from
// outside, prints the seed and a minimal history of any violation. ctest runs a bounded
// number of schedules; `--seed S` replays one.
//
//   schedule_check [--schedules N] [--first-seed S] [--seed S] [--stop-on-violation]
//
// The first seed is random unless given (or OUTBOX_CHECK_SEED is set), and is printed.
// OUTBOX_CHECK_RELAY_BINARY runs another build of outbox-relay.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>

#include "tests/checker/schedule_runner.hpp"
#include "tests/support/pg_cluster.hpp"

using namespace outbox::test;
using namespace outbox::test::checker;

int main(int argc, char** argv) {
  long schedules = 50;
  std::uint64_t first = 0;
  bool seeded = false;
  bool stop_on_violation = false;
  bool describe_only = false;
  if (const char* e = std::getenv("OUTBOX_CHECK_SEED"); e != nullptr && *e != '\0') {
    first = std::strtoull(e, nullptr, 10);
    seeded = true;
  }
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "schedule_check: %s needs a value\n", a.c_str());
        std::exit(64);
      }
      return argv[++i];
    };
    if (a == "--schedules") schedules = std::strtol(next(), nullptr, 10);
    else if (a == "--first-seed") first = std::strtoull(next(), nullptr, 10), seeded = true;
    else if (a == "--seed") first = std::strtoull(next(), nullptr, 10), seeded = true, schedules = 1;
    else if (a == "--stop-on-violation") stop_on_violation = true;
    else if (a == "--describe") describe_only = true;
    else {
      std::fprintf(stderr,
                   "usage: schedule_check [--schedules N] [--first-seed S] [--seed S] [--stop-on-violation] "
                   "[--describe]\n");
      return 64;
    }
  }
  if (!seeded) first = std::random_device{}() % 1'000'000'000;
  if (describe_only) {  // what the seeds name, without running them
    for (long n = 0; n < schedules; ++n) {
      const auto schedule = make_schedule(first + static_cast<std::uint64_t>(n));
      std::printf("seed %llu: %s\n", static_cast<unsigned long long>(schedule.seed), schedule.describe().c_str());
    }
    return 0;
  }
  std::printf("schedule_check: %ld schedules from seed %llu (replay one: --seed S)\n", schedules,
              static_cast<unsigned long long>(first));
  std::fflush(stdout);
  PgCluster cluster({{"max_connections=300"}});
  // OUTBOX_CHECK_RELAY_BINARY: check another build of the relay (a bisect, a fix reverted).
  const char* binary = std::getenv("OUTBOX_CHECK_RELAY_BINARY");
  ScheduleRunner runner(cluster, binary != nullptr && *binary != '\0' ? binary : OUTBOX_RELAY_BINARY);
  const auto t0 = std::chrono::steady_clock::now();
  long failed = 0, violations = 0;
  std::size_t events = 0, deliveries = 0;
  long ran = 0;
  for (long n = 0; n < schedules && !(stop_on_violation && failed > 0); ++n, ++ran) {
    const auto schedule = make_schedule(first + static_cast<std::uint64_t>(n));
    auto r = runner.run(schedule);
    events += r.committed;
    deliveries += r.deliveries;
    std::printf("schedule %3ld seed %-10llu %6zu events written, %6zu committed, %6zu deliveries (%zu duplicates), "
                "%4.1f s: %s\n",
                n + 1, static_cast<unsigned long long>(schedule.seed), r.written, r.committed, r.deliveries,
                r.duplicates, r.seconds, r.violations.empty() ? "ok" : (std::to_string(r.violations.size()) + " violations").c_str());
    if (!r.violations.empty()) {
      ++failed;
      violations += static_cast<long>(r.violations.size());
      std::printf("%s\n", r.report.c_str());
    }
    std::fflush(stdout);
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("schedule_check: %ld schedules in %.1f s (%.2f schedules/s), %zu events committed, %zu deliveries, "
              "%ld schedules with violations (%ld violations)\n",
              ran, secs, static_cast<double>(ran) / secs, events, deliveries, failed, violations);
  return failed == 0 ? 0 : 1;
}
