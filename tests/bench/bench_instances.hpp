// The benches' relay instances, wired as the daemon wires them (run_relay_until_stopped):
// lanes leased by a keeper on a thread and session of its own, a store whose marks those
// lanes fence, and, for a running instance, a producer, relay and runner thread of its own.
#pragma once

#include <atomic>
#include <iostream>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include "relay/core/ownership.hpp"
#include "relay/core/relay.hpp"
#include "relay/core/runner.hpp"
#include "relay/kafka/kafka_publisher.hpp"
#include "relay/pg/pg_conninfo.hpp"
#include "relay/pg/pg_lease_store.hpp"
#include "relay/pg/pg_outbox_store.hpp"
#include "relay/pg/pg_wakeup.hpp"

namespace outbox::bench {

using namespace outbox::relay;
using namespace std::chrono_literals;

// Leases as the daemon takes them by default (ownership.lease_ttl_ms, renew_interval_ms; its
// local deadline a tenth of the ttl short of the database's).
inline constexpr std::chrono::milliseconds kLeaseTtl = 10s;
[[nodiscard]] LeaseOptions lease_options();

[[nodiscard]] std::string bench_conninfo(const std::string& url);
[[nodiscard]] RelayOptions relay_options(std::size_t batch);
// Topic metadata, producer id and connections, before anything is timed.
void warm_up(Publisher& publisher);

// One relay instance's hold on the lanes, wired as the daemon wires it
// (run_relay_until_stopped): the lanes it holds, a lease keeper on a thread and session of
// its own, and an outbox store whose marks are fenced by those lanes. Made by join_lanes.
class Member {
 public:
  Member(const std::string& url, pg::MarkMode mode, std::string id)
      : id_(std::move(id)),
        ownership_(id_, pg::kLaneCount),
        leases_({pg::harden_conninfo(url, "outbox-relay-bench-lease", static_cast<int>(kLeaseTtl.count() / 3)),
                 "public", id_, "bench", static_cast<int>(::getpid())}),
        keeper_(ownership_, leases_, clock_, log_, lease_options(), lease_stats_),
        store_(store_options(url, mode, id_)) {
    // Live before any keeper ticks (see join_lanes). This first round trip, on the caller's
    // thread, also makes a database without lanes an exception here, not in the keeper's thread.
    (void)leases_.renew({}, kLeaseTtl);
  }

  // Hands the lanes back, as the daemon does once its relay has stopped.
  ~Member() {
    keeper_thread_.request_stop();
    if (keeper_thread_.joinable()) keeper_thread_.join();
    keeper_.leave();
    // Lanes moved during a measurement: it timed something else than a steady share.
    if (lease_stats_.lost_total > 0 || store_.marks_unmatched() > 0)
      std::cerr << "warning: " << id_ << " lost " << lease_stats_.lost_total << " lanes; "
                << store_.marks_unmatched() << " marks matched no row\n";
  }

  void start_keeper() {
    keeper_thread_ = std::jthread([this](std::stop_token halt) { keeper_.run(halt); });
  }
  // Holds its fair share among `live` and hands nothing back.
  [[nodiscard]] bool settled(const std::vector<std::string>& live) const {
    auto view = ownership_.view(clock_.now());
    return view.handing_back.empty() && static_cast<int>(view.lanes.size()) == fair_share(pg::kLaneCount, live, id_);
  }

  [[nodiscard]] const std::string& id() const { return id_; }
  [[nodiscard]] std::size_t lanes_held() const { return ownership_.held_count(clock_.now()); }
  [[nodiscard]] Ownership& ownership() { return ownership_; }
  [[nodiscard]] pg::PgOutboxStore& store() { return store_; }

 private:
  static pg::PgStoreOptions store_options(const std::string& url, pg::MarkMode mode, const std::string& owner);

  const std::string id_;
  SteadyClock clock_;
  NullLogger log_;
  LeaseStats lease_stats_;
  Ownership ownership_;
  pg::PgLeaseStore leases_;
  LeaseKeeper keeper_;
  pg::PgOutboxStore store_;
  std::jthread keeper_thread_;
};

// `n` instances started together, returned once each holds its fair share of the lanes.
// Every one is registered live before any keeper ticks, so each first renewal already
// computes the final share: otherwise the first keeper would take every lane, and could hand
// lanes back only through a running relay that reports them drained.
[[nodiscard]] std::vector<std::unique_ptr<Member>> join_lanes(const std::string& url, pg::MarkMode mode, int n);

// One in-process relay instance as the daemon runs one: its lanes (a Member), and a
// producer, relay, wake-up session and runner thread of its own.
class Instance {
 public:
  Instance(Member& member, const std::string& url, const kafka::KafkaOptions& kafka, std::size_t batch)
      : member_(member),
        publisher_(kafka, log_),
        wakeup_(bench_conninfo(url), "public"),
        relay_(member.store(), publisher_, clock_, MessageBuilder({}), relay_options(batch), stats_, &member.ownership()),
        runner_(relay_, wakeup_, clock_, log_, {}) {
    warm_up(publisher_);
  }

  ~Instance() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    publisher_.close();
  }

  void start() {
    thread_ = std::thread([this] { runner_.run(stop_); });
  }
  // Does not wait: the destructor does, so several instances stop at once.
  void request_stop() { stop_ = true; }

  [[nodiscard]] std::uint64_t published() const { return stats_.published_total; }
  [[nodiscard]] const Member& member() const { return member_; }

 private:
  Member& member_;
  SteadyClock clock_;
  NullLogger log_;
  RelayStats stats_;
  kafka::KafkaPublisher publisher_;
  pg::PgWakeup wakeup_;
  Relay relay_;
  Runner runner_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace outbox::bench
