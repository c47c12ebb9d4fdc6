// The producers of one schedule: services writing their events (late commits, bursts,
// rollbacks, transactions held open) and the fuzzer's hostile rows, each recording what it
// wrote and what became of it.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "tests/checker/history.hpp"
#include "tests/checker/hostile_rows.hpp"
#include "tests/checker/schedule.hpp"

namespace outbox::test::checker {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// What the producers share: the clock, which aggregates have an open transaction (when an
// aggregate is written one transaction at a time), counters, the stop.
struct Shared {
  Shared(const Schedule& s, std::string u) : schedule(s), url(std::move(u)) {}
  const Schedule& schedule;
  std::string url;
  Clock::time_point t0 = Clock::now();
  std::mutex mutex;
  std::set<std::string> busy;
  std::atomic<long> next_n{0};
  std::atomic<std::int64_t> next_tx{1};
  std::atomic<bool> stop{false};
  std::condition_variable stopped;

  void request_stop() {
    {
      std::lock_guard lock(mutex);
      stop = true;
    }
    stopped.notify_all();
  }
  void wait_for_stop() {
    std::unique_lock lock(mutex);
    stopped.wait(lock, [this] { return stop.load(); });
  }
};

// Events written per schedule, about: past it the producers wait for the stop, so every
// schedule drains in seconds whatever its batch size.
inline constexpr long kMaxEvents = 6000;

// One producer session (`index` seeds its choices) until `shared` is stopped.
[[nodiscard]] std::vector<Written> run_producer(Shared& shared, int index);

// The fuzzer's rows, spread over the workload, each in a transaction of its own.
[[nodiscard]] std::vector<Written> insert_hostile(Shared& shared, std::vector<RowSpec> rows);

}  // namespace outbox::test::checker
