// The schedule checker as a soak: as many schedules as asked (or for as long as asked) against
// PostgreSQL and the real binary, going on past violations; prints schedules/s and the
// violations found every ten schedules, and each failing schedule's report (seed, history).
//
//   schedule_soak [--schedules N] [--minutes M] [--first-seed S]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <string>

#include "tests/checker/schedule_runner.hpp"
#include "tests/support/pg_cluster.hpp"

using namespace outbox::test;
using namespace outbox::test::checker;

int main(int argc, char** argv) {
  long schedules = 0;  // 0: until the time is up
  double minutes = 10;
  std::uint64_t first = std::random_device{}() % 1'000'000'000;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--schedules") schedules = std::strtol(argv[i + 1], nullptr, 10), minutes = 1e9;
    else if (a == "--minutes") minutes = std::strtod(argv[i + 1], nullptr);
    else if (a == "--first-seed") first = std::strtoull(argv[i + 1], nullptr, 10);
    else {
      std::fprintf(stderr, "usage: schedule_soak [--schedules N] [--minutes M] [--first-seed S]\n");
      return 64;
    }
  }
  PgCluster cluster({{"max_connections=300"}});
  const char* binary = std::getenv("OUTBOX_CHECK_RELAY_BINARY");  // another build of the relay
  ScheduleRunner runner(cluster, binary != nullptr && *binary != '\0' ? binary : OUTBOX_RELAY_BINARY);
  std::printf("schedule_soak: from seed %llu, %s\n", static_cast<unsigned long long>(first),
              schedules > 0 ? (std::to_string(schedules) + " schedules").c_str()
                            : (std::to_string(minutes) + " minutes").c_str());
  const auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  long ran = 0, failed = 0;
  std::size_t events = 0;
  std::map<std::string, long> by_rule;
  while ((schedules == 0 || ran < schedules) && elapsed() < minutes * 60) {
    auto r = runner.run(make_schedule(first + static_cast<std::uint64_t>(ran)));
    ++ran;
    events += r.committed;
    if (!r.violations.empty()) {
      ++failed;
      for (const auto& v : r.violations) ++by_rule[v.rule];
      std::printf("%s\n", r.report.c_str());
    }
    if (ran % 10 == 0 || !r.violations.empty()) {
      std::printf("soak: %ld schedules, %.1f s, %.2f schedules/s, %zu events committed, %ld with violations\n", ran,
                  elapsed(), ran / elapsed(), events, failed);
      std::fflush(stdout);
    }
  }
  std::printf("schedule_soak: %ld schedules in %.1f s (%.2f schedules/s), %zu events committed, %ld with violations",
              ran, elapsed(), ran / elapsed(), events, failed);
  for (const auto& [rule, n] : by_rule) std::printf("; %s %ld", rule.c_str(), n);
  std::printf("\n");
  return failed == 0 ? 0 : 1;
}
