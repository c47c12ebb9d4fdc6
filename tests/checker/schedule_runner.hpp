// Runs schedules against real PostgreSQL, the real outbox-relay binary and librdkafka's mock
// Kafka cluster, and checks each history from outside (topic contents and table rows).
#pragma once

#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "tests/checker/history.hpp"
#include "tests/checker/schedule.hpp"
#include "tests/support/pg_cluster.hpp"

namespace outbox::test::checker {

struct RunResult {
  std::vector<Violation> violations;
  std::size_t written = 0;      // events producers wrote (committed, rolled back, unknown)
  std::size_t committed = 0;    // of those, committed (or unknown and found in the table)
  std::size_t deliveries = 0;   // messages read back
  std::size_t duplicates = 0;   // deliveries beyond an event's first
  double seconds = 0;
  std::string report;  // on violations: the schedule, the violations, minimal histories, log tails
};

class ScheduleRunner {
 public:
  // `cluster` hosts one fresh database per schedule, made from a migrated template.
  ScheduleRunner(PgCluster& cluster, std::string relay_binary);
  ~ScheduleRunner();
  ScheduleRunner(const ScheduleRunner&) = delete;
  ScheduleRunner& operator=(const ScheduleRunner&) = delete;
  [[nodiscard]] RunResult run(const Schedule& schedule);

 private:
  PgCluster& cluster_;
  std::string relay_binary_;
  std::string template_;
  int runs_ = 0;
  std::thread reaper_;  // destroys the last run's broker side
};

struct KafkaSide;

}  // namespace outbox::test::checker
