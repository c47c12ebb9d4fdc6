// The randomized schedule checker against PostgreSQL and the real binary: runs seeded
// schedules of producer transactions, hostile rows and faults, checks each history from
// outside, prints the seed and a minimal history of any violation. ctest runs a bounded
// number of schedules; `--seed S` replays one.
//
//   schedule_check [--schedules N] [--first-seed S] [--seed S] [--stop-on-violation] [--verbose]
//
// A schedule that passes prints one line with --verbose (or when replaying one seed) and
// otherwise only counts in a progress line every 10 schedules, so a failure's report is near
// the top of the output (CI shows a failed test's output from its start). A schedule whose
// harness throws is a failure too, reported with its seed.
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
  bool verbose = false;
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
    else if (a == "--verbose") verbose = true;
    else {
      std::fprintf(stderr,
                   "usage: schedule_check [--schedules N] [--first-seed S] [--seed S] [--stop-on-violation] "
                   "[--describe] [--verbose]\n");
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
    RunResult r;
    std::string harness_error;
    try {
      r = runner.run(schedule);
    } catch (const std::exception& e) {
      harness_error = e.what();
    }
    if (!harness_error.empty()) {
      ++failed;
      std::printf("schedule %3ld seed %-10llu: the harness failed: %s\nreplay: schedule_check --seed %llu\n", n + 1,
                  static_cast<unsigned long long>(schedule.seed), harness_error.c_str(),
                  static_cast<unsigned long long>(schedule.seed));
      std::fflush(stdout);
      continue;
    }
    events += r.committed;
    deliveries += r.deliveries;
    if (verbose || schedules == 1 || !r.violations.empty())
      std::printf("schedule %3ld seed %-10llu %6zu events written, %6zu committed, %6zu deliveries (%zu duplicates), "
                  "%4.1f s: %s\n",
                  n + 1, static_cast<unsigned long long>(schedule.seed), r.written, r.committed, r.deliveries,
                  r.duplicates, r.seconds,
                  r.violations.empty() ? "ok" : (std::to_string(r.violations.size()) + " violations").c_str());
    if (!r.violations.empty()) {
      ++failed;
      violations += static_cast<long>(r.violations.size());
      std::printf("%s\n", r.report.c_str());
    }
    if (!verbose && (n + 1) % 10 == 0)
      std::printf("schedule_check: %ld of %ld schedules run, %ld with violations\n", n + 1, schedules, failed);
    std::fflush(stdout);
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("schedule_check: %ld schedules in %.1f s (%.2f schedules/s), %zu events committed, %zu deliveries, "
              "%ld schedules with violations (%ld violations)\n",
              ran, secs, static_cast<double>(ran) / secs, events, deliveries, failed, violations);
  return failed == 0 ? 0 : 1;
}
