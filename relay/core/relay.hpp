// The relay loop: fetch unpublished rows, publish them in per-aggregate order, mark them
// published only after the broker acknowledged them. Depends only on ports; never sleeps:
// each step() says how long the caller may wait before the next one.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "relay/core/backoff.hpp"
#include "relay/core/clock.hpp"
#include "relay/core/message_builder.hpp"
#include "relay/core/outbox_store.hpp"
#include "relay/core/ownership.hpp"
#include "relay/core/publisher.hpp"
#include "relay/core/relay_stats.hpp"

namespace outbox::relay {

struct RelayOptions {
  std::size_t batch_size = 1000;
  // Attempts (permanent failures) before a row is dead-lettered.
  int max_attempts = 10;
  // Delay before a row that failed permanently is tried again.
  BackoffPolicy row_retry{std::chrono::seconds(1), std::chrono::minutes(5)};
  // Delay of the whole loop after a transient failure (broker or database away); its jitter
  // (set by the daemon) keeps instances that lost the database together from retrying in
  // lockstep, drawn from `jitter_seed` so a test's schedule is reproducible.
  BackoffPolicy transient_retry{std::chrono::milliseconds(100), std::chrono::seconds(10)};
  std::uint64_t jitter_seed = 0;
  // While the outbox is busy, a batch is fetched behind the previous one (seq > its last)
  // and marked while the next one is on the wire. At least this often the relay instead
  // drains and scans from the oldest unpublished row, so rows that committed late are
  // picked up within this bound. (A read-ahead row whose aggregate has such a late row is
  // held back until that scan, and the scan comes at once: contract 2.)
  std::chrono::milliseconds rescan_interval{1000};
  bool pipeline = true;
  // Upper bound of the aggregate list sent to the store as an exclusion (an optimisation;
  // correctness does not depend on it).
  std::size_t max_excluded_aggregates = 1000;
  // Header naming the instance, lane and lease epoch that sent each message
  // ("<instance> lane=<n> epoch=<e>"); empty: none.
  std::string publisher_header;
};

enum class StepKind {
  busy,     // a full batch went out: call step() again at once
  idle,     // the outbox had nothing more: wait for a wake-up or the poll interval
  backoff,  // a transient failure: wait `wait` before the next step
  stopped,  // stop was requested and everything acknowledged was marked
};

struct StepResult {
  StepKind kind = StepKind::idle;
  std::chrono::milliseconds wait{0};
  std::size_t fetched = 0;    // rows the store returned in this step
  std::size_t published = 0;  // rows marked published in this step
  std::string error;          // for backoff: what failed
  bool holds_no_lane = false; // idle because other instances hold every lane
};

class Relay {
 public:
  // `ownership`: the lanes this instance may publish; nullptr: every lane (a sole relay).
  Relay(OutboxStore& store, Publisher& publisher, const Clock& clock, MessageBuilder builder,
        RelayOptions options, RelayStats& stats, Ownership* ownership = nullptr);

  [[nodiscard]] StepResult step();

  // Stop taking new rows; the next step() marks what was acknowledged and returns stopped.
  void request_stop() { stop_requested_ = true; }
  // Records that the relay thread is alive (RelayStats::heartbeat_ns).
  void beat();

  // Rows acknowledged but not yet marked (kept across transient database errors).
  [[nodiscard]] std::size_t unmarked() const;
  // Changes when the lanes held change: a waiting runner steps again at once.
  [[nodiscard]] std::uint64_t ownership_version() const { return ownership_ ? ownership_->version() : 0; }

 private:
  struct Sent {
    OutboxEvent event;
    std::optional<DeliveryResult> result;  // nullopt: held back, not sent
  };
  // Outcome of a published batch, computed as soon as its deliveries are known.
  struct Settlement {
    std::vector<std::int64_t> marks;
    std::vector<FailedAttempt> failures;
    std::int64_t max_seq = 0;
    bool failed = false;     // some event failed: the next step scans from the head
    bool transient = false;  // some failure was transient: back off before the next step
  };

  struct InFlight {
    std::vector<Sent> sent;             // the whole batch, in seq order
    std::vector<std::size_t> accepted;  // indexes of the messages the publisher took
    Clock::time_point fetched_at{};     // when the batch was read (latency figures start here)
  };
  // Per aggregate, the seqs of a dispatched batch's rows the publisher took (sent, not yet marked).
  using AggregateCounts = std::unordered_map<AggregateKey, std::vector<std::int64_t>, AggregateKeyHash>;

  // Sends the batch's messages, holding back events whose aggregate waits; does not wait.
  // `ahead`: for a batch read ahead of the one in flight, that one's sent rows per aggregate;
  // a row whose aggregate has more unpublished rows behind the cursor (pending_before) waits.
  InFlight dispatch(std::vector<OutboxEvent> events, const AggregateCounts* ahead);
  static AggregateCounts sent_per_aggregate(const InFlight& flight);
  // Waits for the delivery outcomes of a dispatched batch.
  std::vector<Sent> collect(InFlight flight);
  Settlement settle_outcomes(std::vector<Sent>& sent);
  std::size_t write_settlement();
  std::vector<AggregateKey> excluded_aggregates();
  void block(const AggregateKey& key, Clock::time_point until);
  [[nodiscard]] bool blocked(const AggregateKey& key) const;
  StepResult transient_failure(const std::string& what);
  // At a head scan (nothing in flight or unmarked): reports lanes being handed back as
  // drained and takes the current lanes; false when none is held.
  bool refresh_lanes(Clock::time_point now);

  OutboxStore& store_;
  Publisher& publisher_;
  const Clock& clock_;
  MessageBuilder builder_;
  RelayOptions options_;
  RelayStats& stats_;
  Ownership* ownership_;
  // The lanes fetched from, taken at each head scan (nullopt: every lane).
  std::optional<std::vector<int>> lanes_;

  std::atomic<bool> stop_requested_{false};
  std::optional<Settlement> pending_;  // delivered batch whose marks are not yet written
  // The batch behind the one in flight, read while it was on the wire, and what that one
  // had sent per aggregate when it was read.
  std::optional<std::vector<OutboxEvent>> prefetched_;
  AggregateCounts prefetched_behind_;
  Clock::time_point prefetched_at_{};
  Clock::time_point next_rescan_{};
  int consecutive_transient_ = 0;
  std::mt19937_64 jitter_{options_.jitter_seed};  // after options_
  // Aggregates that wait behind a failed or not-yet-due event, until the given time.
  std::unordered_map<AggregateKey, Clock::time_point, AggregateKeyHash> blocked_until_;
};

}  // namespace outbox::relay
