// An in-memory lease table with the SQL's rules (expiry by the store's clock, renewal only
// of unexpired leases, acquisition of free or expired lanes, epoch +1 per acquisition), shared
// by several instances' views of it.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "relay/core/errors.hpp"
#include "relay/core/ownership.hpp"
#include "tests/unit/fakes.hpp"

namespace outbox::relay::test {

struct FakeLeaseTable {
  struct Lane {
    std::string owner;  // empty: free
    std::int64_t epoch = 0;
    Clock::time_point until{};
  };
  explicit FakeLeaseTable(const ManualClock& clock, int lanes = 64) : clock(clock), lanes(static_cast<std::size_t>(lanes)) {}
  const ManualClock& clock;
  std::vector<Lane> lanes;
  std::map<std::string, Clock::time_point> instances;  // expiry
  int changes = 0;                                     // hints (NOTIFY) sent

  [[nodiscard]] std::string owner_at_now(int lane) const {
    const auto& l = lanes[static_cast<std::size_t>(lane)];
    return l.until > clock.now() ? l.owner : std::string();
  }
  [[nodiscard]] int held_by(const std::string& instance) const {
    int n = 0;
    for (int i = 0; i < static_cast<int>(lanes.size()); ++i) n += owner_at_now(i) == instance ? 1 : 0;
    return n;
  }
};

class FakeLeaseStore final : public LeaseStore {
 public:
  FakeLeaseStore(FakeLeaseTable& table, std::string me) : table_(table), me_(std::move(me)) {}

  Renewal renew(std::span<const int> release, std::chrono::milliseconds ttl) override {
    if (fail) throw TransientError("lease store: connection refused");
    const auto now = table_.clock.now();
    if (!table_.instances.contains(me_) || table_.instances[me_] <= now) ++table_.changes;
    table_.instances[me_] = now + ttl;
    Renewal r;
    for (int lane : release) {
      auto& l = table_.lanes[static_cast<std::size_t>(lane)];
      if (l.owner == me_) {
        l.owner.clear();
        l.until = now;
        ++table_.changes;
      }
    }
    for (std::size_t i = 0; i < table_.lanes.size(); ++i) {
      auto& l = table_.lanes[i];
      if (l.owner == me_ && l.until > now) {
        l.until = now + ttl;
        r.held.push_back({static_cast<int>(i), l.epoch});
      }
    }
    for (const auto& [name, until] : table_.instances)
      if (until > now) r.live.push_back(name);
    r.lane_count = static_cast<int>(table_.lanes.size());
    return r;
  }

  std::vector<LaneLease> acquire(int max_lanes, std::chrono::milliseconds ttl) override {
    if (fail) throw TransientError("lease store: connection refused");
    const auto now = table_.clock.now();
    std::vector<LaneLease> out;
    for (std::size_t i = 0; i < table_.lanes.size() && static_cast<int>(out.size()) < max_lanes; ++i) {
      auto& l = table_.lanes[i];
      if (!l.owner.empty() && l.until > now) continue;
      l.owner = me_;
      ++l.epoch;
      l.until = now + ttl;
      out.push_back({static_cast<int>(i), l.epoch});
    }
    return out;
  }

  void leave() override {
    if (fail) throw TransientError("lease store: connection refused");
    for (auto& l : table_.lanes)
      if (l.owner == me_) {
        l.owner.clear();
        l.until = table_.clock.now();
      }
    table_.instances.erase(me_);
    ++table_.changes;
  }

  bool await_change(std::chrono::milliseconds) override { return false; }

  bool fail = false;

 private:
  FakeLeaseTable& table_;
  std::string me_;
};

}  // namespace outbox::relay::test
