// Ownership of lanes when several relay instances share one outbox (contract 4: one
// publisher per aggregate at a time). Aggregates hash into a fixed number of lanes (the store
// computes the lane); each lane is leased to one instance at a time, with an expiry the
// lease store measures by its own clock. The lease keeper renews this instance's leases,
// takes free or expired lanes up to a fair share of the live instances, and hands lanes back
// when others need them. The relay publishes a lane's events only while it holds the lane
// and its lease is still valid by the local monotonic clock (a deadline that ends before the
// store's expiry), so a paused or partitioned instance stops on its own; the store fences
// its marks as well.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <span>
#include <stop_token>
#include <string>
#include <vector>

#include "relay/core/clock.hpp"
#include "relay/core/logger.hpp"

namespace outbox::relay {

struct LaneLease {
  int lane = 0;
  std::int64_t epoch = 0;  // increases at every acquisition of the lane: a fencing token
  friend bool operator==(const LaneLease&, const LaneLease&) = default;
};

// The share of `lane_count` lanes that instance `me` should hold when `live` (every live
// instance, `me` included, in any order) share them: lane_count / n, one more for the first
// lane_count % n instances by id. Every instance computes the same split from the same list.
[[nodiscard]] int fair_share(int lane_count, std::vector<std::string> live, const std::string& me);

// The lanes this instance holds, shared between the lease keeper (writer) and the relay
// thread (reader). Thread-safe.
class Ownership {
 public:
  Ownership(std::string instance, int lane_count);

  [[nodiscard]] const std::string& instance() const { return instance_; }
  [[nodiscard]] int lane_count() const { return lane_count_; }

  // Keeper: the leases held after a renewal, valid until `valid_until` (local clock), and
  // the lanes among them to hand back (the relay stops taking them and reports them drained).
  void update(std::vector<LaneLease> held, Clock::time_point valid_until, std::vector<int> hand_back);
  // Keeper: lanes the relay reported drained since the last call (to be released).
  [[nodiscard]] std::vector<int> take_drained();
  [[nodiscard]] bool has_drained() const;
  // Keeper, when it stops: nothing is held any more.
  void clear();

  // What the relay may publish at `now`: held lanes not being handed back, while valid.
  struct View {
    std::vector<int> lanes;       // sorted
    std::vector<int> handing_back;
    bool all = false;             // every lane: the store need not filter
  };
  [[nodiscard]] View view(Clock::time_point now) const;
  // The epoch under which `lane` may be published at `now`; nullopt: not ours (any more).
  [[nodiscard]] std::optional<std::int64_t> publishable(int lane, Clock::time_point now) const;
  // Relay: nothing of these lanes is in flight or unmarked any more.
  void report_drained(std::span<const int> lanes);
  // Changes whenever the held set changes, so a waiting relay can look again at once.
  [[nodiscard]] std::uint64_t version() const { return version_; }

  // For operators.
  [[nodiscard]] std::size_t held_count(Clock::time_point now) const;

 private:
  const std::string instance_;
  const int lane_count_;
  mutable std::mutex mutex_;
  std::vector<std::int64_t> epoch_;  // per lane; -1: not held
  std::vector<bool> handing_back_;
  Clock::time_point valid_until_{};
  std::vector<int> drained_;
  std::atomic<std::uint64_t> version_{0};
};

// Port: where leases live.
class LeaseStore {
 public:
  virtual ~LeaseStore() = default;

  struct Renewal {
    std::vector<std::string> live;  // live instances, this one included
    std::vector<LaneLease> held;    // this instance's leases, renewed
    int lane_count = 0;
  };
  // One round trip: records this instance as live until store-now + ttl, releases `release`,
  // renews every lease this instance still holds (an expired one is not renewed: it may have
  // been taken). Throws TransientError when the store is away. After any failure of any call
  // the instance may no longer hold its id (another process of the same id may take it over
  // at once), so the keeper gives up every lane until a renewal succeeds again.
  [[nodiscard]] virtual Renewal renew(std::span<const int> release, std::chrono::milliseconds ttl) = 0;
  // Takes up to `max_lanes` free or expired lanes for store-now + ttl; returns them.
  [[nodiscard]] virtual std::vector<LaneLease> acquire(int max_lanes, std::chrono::milliseconds ttl) = 0;
  // Releases every lease of this instance and removes it from the live list.
  virtual void leave() = 0;
  // Waits up to `timeout` for a hint that another instance joined, left or released lanes.
  // Throws TransientError (after waiting out `timeout`) when the store's session was lost.
  virtual bool await_change(std::chrono::milliseconds timeout) = 0;
};

struct LeaseOptions {
  std::chrono::milliseconds ttl{10'000};
  std::chrono::milliseconds renew_interval{3'000};
  // Part of the ttl the local deadline gives away, for clock rate differences and the time
  // a renewal takes to be answered.
  std::chrono::milliseconds safety_margin{1'000};
  // Longest single wait, so a stop or a drained report is noticed.
  std::chrono::milliseconds slice{50};
};

// Throws ConfigError naming the key when the timings cannot keep a lease through one missed
// renewal.
void check_lease_options(const LeaseOptions& options);

// Counters and gauges of the keeper, read by metrics.
struct LeaseStats {
  std::atomic<std::uint64_t> acquired_total{0};
  std::atomic<std::uint64_t> released_total{0};
  std::atomic<std::uint64_t> lost_total{0};   // held, then not renewed (expired or taken)
  std::atomic<std::uint64_t> renew_failures_total{0};
  std::atomic<int> live_instances{0};
  std::atomic<int> fair_share{0};
  std::atomic<std::int64_t> last_renewal_ns{0};  // local monotonic clock; 0: never
};

class LeaseKeeper {
 public:
  LeaseKeeper(Ownership& ownership, LeaseStore& store, const Clock& clock, Logger& logger, LeaseOptions options,
              LeaseStats& stats);

  // One renewal round: release drained lanes, renew, take lanes up to the fair share, pick
  // lanes to hand back above it. Returns false (and logs once) when the store is away; the
  // leases then lapse by their local deadline.
  bool tick();
  // Ticks every renew_interval, at once when the store hints at a change or the relay reports
  // drained lanes, until `stop`. Leaving is the caller's call (after the relay has drained).
  void run(std::stop_token stop);
  // Releases every lease and leaves the live list (best effort: on failure the leases expire).
  void leave();

  // Whether a renewal succeeded within `within`.
  [[nodiscard]] bool renewed_within(std::chrono::nanoseconds within) const;
  // Whether the last round reached the store (readiness: the database answers). False from a
  // failed round until one succeeds: the lanes were dropped at once, whatever their deadline.
  [[nodiscard]] bool last_round_ok() const { return !failing_; }

 private:
  Ownership& ownership_;
  LeaseStore& store_;
  const Clock& clock_;
  Logger& logger_;
  LeaseOptions options_;
  LeaseStats& stats_;
  std::vector<LaneLease> held_;
  std::atomic<bool> failing_{false};  // read by readiness on another thread
};

}  // namespace outbox::relay
