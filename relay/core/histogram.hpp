// A latency histogram with fixed bucket bounds: written by the relay thread, read by whoever
// reports (the /metrics page). Lock-free: one atomic per bucket, sum in nanoseconds.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <vector>

namespace outbox::relay {

class Histogram {
 public:
  // Upper bounds in seconds, ascending; an implicit +Inf bucket follows the last.
  Histogram(std::initializer_list<double> upper_bounds_s)
      : bounds_(upper_bounds_s), counts_(std::make_unique<std::atomic<std::uint64_t>[]>(bounds_.size() + 1)) {}

  void observe(std::chrono::nanoseconds d) {
    const double s = std::chrono::duration<double>(d).count();
    const auto i = static_cast<std::size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), s) - bounds_.begin());
    counts_[i].fetch_add(1, std::memory_order_relaxed);
    sum_ns_.fetch_add(static_cast<std::uint64_t>(std::max<std::int64_t>(0, d.count())), std::memory_order_relaxed);
  }

  struct Snapshot {
    std::vector<double> upper_bounds_s;      // without +Inf
    std::vector<std::uint64_t> cumulative;   // one per bound, then +Inf (= count)
    double sum_s = 0;
  };

  [[nodiscard]] Snapshot snapshot() const {
    Snapshot s;
    s.upper_bounds_s = bounds_;
    std::uint64_t running = 0;
    for (std::size_t i = 0; i <= bounds_.size(); ++i) {
      running += counts_[i].load(std::memory_order_relaxed);
      s.cumulative.push_back(running);
    }
    s.sum_s = static_cast<double>(sum_ns_.load(std::memory_order_relaxed)) / 1e9;
    return s;
  }

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> counts_;
  std::atomic<std::uint64_t> sum_ns_{0};
};

}  // namespace outbox::relay
