// Failure drills: the real outbox-relay (and outbox-demo-consumer) under a steady stream of
// events while brokers, the database, rows or processes fail, checked from the outside (topic
// contents, outbox rows, consumer effects) and reported in one line per drill.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tests/e2e/child_process.hpp"
#include "tests/e2e/delivery_check.hpp"
#include "tests/e2e/http_get.hpp"
#include "tests/support/mock_kafka.hpp"
#include "tests/support/pg_cluster.hpp"

namespace outbox::test::drill {

using Millis = std::chrono::milliseconds;

extern const std::string kRelayBinary;
extern const std::string kConsumerBinary;
constexpr const char* kTopic = "outbox.event.order";

// One seed per drill process: OUTBOX_DRILL_SEED if set, else random; printed in the report.
std::uint32_t drill_seed();

// A service writing OrderAmountAdded events ({"amount": n}, aggregate "order-<k>") at a fixed
// rate from a thread of its own, each in its own transaction under the aggregate's advisory
// lock (hashtext of its id). Open loop: arrivals follow the clock, not commits. While the
// database is away inserts fail and are counted; the thread reconnects and goes on (slots
// missed by more than a second are skipped, not burst).
class EventStream {
 public:
  EventStream(std::string url, int rate_per_second, int aggregates, std::uint32_t seed);
  ~EventStream();
  EventStream(const EventStream&) = delete;
  EventStream& operator=(const EventStream&) = delete;

  void stop();  // joins the thread
  [[nodiscard]] long failed() const { return failed_; }

 private:
  void run(const std::stop_token& halt);

  std::string url_;
  std::chrono::microseconds period_;
  int aggregates_;
  std::uint32_t seed_;
  std::atomic<long> failed_{0};
  std::jthread thread_;
};

// What a drill may change before it starts the stream and the relay.
struct DrillSetup {
  int rate = 300;  // events per second
  int aggregates = 30;
  std::map<std::string, std::string> relay_env;  // extra OUTBOX_RELAY_* variables
};

// One line per drill: to stdout and appended to the results file (OUTBOX_DRILL_RESULTS).
struct DrillResult {
  std::string scenario;
  long sent = 0;
  std::size_t lost = 0;
  std::size_t duplicates = 0;
  std::optional<long> applied_twice;  // nullopt: no consumer in this drill
  std::optional<Millis> recovery;     // nullopt: did not recover within the deadline
  std::string detail;
};
void report(const DrillResult& result);

// Effects of outbox-demo-consumer (demo_balances) against the outbox rows' own amounts.
struct EffectsVerdict {
  long applied_twice = 0;  // events counted in a balance beyond the number of rows
  long not_applied = 0;    // rows whose effect is missing
  long wrong_totals = 0;   // orders whose balance differs from the sum of their amounts
};

// Owns what a drill runs: a fresh database, a mock cluster with the topic, a reader of the
// topic, the producer thread, the relay and consumer processes.
class Drill {
 public:
  // A fresh, migrated database in `cluster` (default: the process's shared one) and a mock
  // cluster of `brokers` brokers with the topic created (4 partitions, replicated on all).
  explicit Drill(std::string scenario, int brokers = 1, PgCluster* cluster = nullptr);
  ~Drill();
  Drill(const Drill&) = delete;
  Drill& operator=(const Drill&) = delete;

  // Starts the stream and the relay and waits until `published` rows went through.
  void warm_up(long published = 300);
  void start_stream();
  // Inserts a backlog of `count` events like the stream's, in one transaction.
  void prefill(long count);
  void start_relay();
  void kill_relay();  // SIGKILL, reaped
  // commit_ms: the consumer's offset commit interval; a long one leaves every processed
  // message uncommitted, so a SIGKILL lands between its database commits and its offset commit.
  void start_consumer(long commit_ms = 500);
  void kill_consumer();

  // Reads the topic until `done` or the deadline.
  template <class Pred>
  bool pump(Pred done, Millis deadline) {
    return poll_reading(reader, done, deadline);
  }
  // Reads the topic for `span` (the fault's timed duration).
  void hold(Millis span);
  // Applies fault(round) `rounds` times, `every` apart, reading the topic meanwhile.
  template <class Fault>
  void repeat(int rounds, Millis every, Fault fault) {
    for (int round = 0; round < rounds; ++round) {
      fault(round);
      hold(every);
    }
  }

  // Runs SQL (several statements: one transaction) against the drill's database.
  void sql(const std::string& statements);
  // Runs `outbox-relay <args>` (migrate, dead-letters ..., or a run expected to exit) against
  // `database_url` (default: the drill's database) and the drill's broker, to its exit.
  struct CommandOutcome {
    std::optional<int> code;  // nullopt: still running after 20 s
    std::string output;
  };
  [[nodiscard]] CommandOutcome run_command(const std::vector<std::string>& args, const std::string& database_url = "");
  // Database state; -1 when the database does not answer.
  [[nodiscard]] long count(const std::string& where_sql);
  [[nodiscard]] std::int64_t max_seq();
  // Rows with a counted failure (attempts, or dead-lettered). last_error is left out: an
  // operator's requeue keeps it as history.
  [[nodiscard]] long burnt_attempts() { return count("attempts > 0 OR dead_lettered_at IS NOT NULL"); }
  // Rows up to `seq` not yet published (dead-lettered rows excluded).
  [[nodiscard]] long pending_through(std::int64_t seq);
  // The fault is over: how long until every publishable row committed so far is published
  // (reading meanwhile); nullopt if not within the deadline. Then the stream runs a second
  // more, so the relay is seen publishing fresh events too.
  [[nodiscard]] std::optional<Millis> recover(Millis deadline = std::chrono::seconds(60));
  [[nodiscard]] double metric(const std::string& name) const { return metric_value(http_port, name); }
  [[nodiscard]] int readyz() const;

  // Stops the stream, waits until everything is published and read back (and applied by the
  // consumer, if any), stops the processes with SIGTERM, reports, and checks: recovered, no
  // row lost, first deliveries in order, no attempt left on any row, every effect once.
  void finish(std::optional<Millis> recovery, const std::string& detail = "");

  // For failure messages: the relay's last log lines and the rows whose failures were counted.
  [[nodiscard]] std::string diagnosis();
  [[nodiscard]] std::string relay_log() const;

  std::string scenario;
  DrillSetup setup;
  std::uint32_t seed;
  std::mt19937 rng;
  std::string url;
  MockKafka kafka;
  TopicReader reader;
  int http_port;
  std::unique_ptr<EventStream> stream;
  std::unique_ptr<ChildProcess> relay;
  std::unique_ptr<ChildProcess> consumer;
  int relay_starts = 0;
  int consumer_starts = 0;
  long consumer_absorbed = 0;  // duplicates_absorbed summed over consumer runs that printed it

 private:
  std::string log_path(const std::string& what, int n) const;
  int commands_run_ = 0;
  EffectsVerdict check_effects();
};

}  // namespace outbox::test::drill
