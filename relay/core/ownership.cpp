#include "relay/core/ownership.hpp"

#include <algorithm>
#include <utility>

#include "relay/core/errors.hpp"

namespace outbox::relay {

int fair_share(int lane_count, std::vector<std::string> live, const std::string& me) {
  if (std::find(live.begin(), live.end(), me) == live.end()) live.push_back(me);
  std::sort(live.begin(), live.end());
  live.erase(std::unique(live.begin(), live.end()), live.end());
  const int n = static_cast<int>(live.size());
  const int rank = static_cast<int>(std::find(live.begin(), live.end(), me) - live.begin());
  return lane_count / n + (rank < lane_count % n ? 1 : 0);
}

Ownership::Ownership(std::string instance, int lane_count)
    : instance_(std::move(instance)),
      lane_count_(lane_count),
      epoch_(static_cast<std::size_t>(lane_count), -1),
      handing_back_(static_cast<std::size_t>(lane_count), false) {
  if (lane_count < 1) throw ConfigError("lane count must be at least 1");
}

void Ownership::update(std::vector<LaneLease> held, Clock::time_point valid_until, std::vector<int> hand_back) {
  std::lock_guard lock(mutex_);
  auto old_epoch = epoch_;
  auto old_back = handing_back_;
  std::fill(epoch_.begin(), epoch_.end(), -1);
  std::fill(handing_back_.begin(), handing_back_.end(), false);
  for (const auto& l : held)
    if (l.lane >= 0 && l.lane < lane_count_) epoch_[static_cast<std::size_t>(l.lane)] = l.epoch;
  for (int lane : hand_back)
    if (lane >= 0 && lane < lane_count_) handing_back_[static_cast<std::size_t>(lane)] = true;
  valid_until_ = valid_until;
  if (old_epoch != epoch_ || old_back != handing_back_) ++version_;
}

std::vector<int> Ownership::take_drained() {
  std::lock_guard lock(mutex_);
  return std::exchange(drained_, {});
}

bool Ownership::has_drained() const {
  std::lock_guard lock(mutex_);
  return !drained_.empty();
}

void Ownership::clear() {
  std::lock_guard lock(mutex_);
  std::fill(epoch_.begin(), epoch_.end(), -1);
  std::fill(handing_back_.begin(), handing_back_.end(), false);
  ++version_;
}

Ownership::View Ownership::view(Clock::time_point now) const {
  std::lock_guard lock(mutex_);
  View v;
  if (now >= valid_until_) return v;
  for (int lane = 0; lane < lane_count_; ++lane) {
    const auto i = static_cast<std::size_t>(lane);
    if (epoch_[i] < 0) continue;
    (handing_back_[i] ? v.handing_back : v.lanes).push_back(lane);
  }
  v.all = static_cast<int>(v.lanes.size()) == lane_count_;
  return v;
}

std::optional<std::int64_t> Ownership::publishable(int lane, Clock::time_point now) const {
  std::lock_guard lock(mutex_);
  if (lane < 0 || lane >= lane_count_ || now >= valid_until_) return std::nullopt;
  const auto i = static_cast<std::size_t>(lane);
  if (epoch_[i] < 0 || handing_back_[i]) return std::nullopt;
  return epoch_[i];
}

void Ownership::report_drained(std::span<const int> lanes) {
  if (lanes.empty()) return;
  std::lock_guard lock(mutex_);
  for (int lane : lanes)
    if (std::find(drained_.begin(), drained_.end(), lane) == drained_.end()) drained_.push_back(lane);
}

std::size_t Ownership::held_count(Clock::time_point now) const {
  std::lock_guard lock(mutex_);
  if (now >= valid_until_) return 0;
  return static_cast<std::size_t>(std::count_if(epoch_.begin(), epoch_.end(), [](auto e) { return e >= 0; }));
}

LeaseKeeper::LeaseKeeper(Ownership& ownership, LeaseStore& store, const Clock& clock, Logger& logger,
                         LeaseOptions options, LeaseStats& stats)
    : ownership_(ownership), store_(store), clock_(clock), logger_(logger), options_(options), stats_(stats) {
  check_lease_options(options_);
}

void check_lease_options(const LeaseOptions& o) {
  if (o.ttl <= o.safety_margin)
    throw ConfigError("ownership.lease_ttl_ms: must be longer than the safety margin (" +
                      std::to_string(o.safety_margin.count()) + " ms)");
  if (o.renew_interval * 2 > o.ttl - o.safety_margin)
    throw ConfigError("ownership.renew_interval_ms: at most half of ownership.lease_ttl_ms minus " +
                      std::to_string(o.safety_margin.count()) + " ms, so one missed renewal does not lose the leases");
}

namespace {

std::string lane_list(const std::vector<int>& lanes) {
  std::string s;
  for (int l : lanes) s += (s.empty() ? "" : ",") + std::to_string(l);
  return s;
}

}  // namespace

bool LeaseKeeper::tick() {
  // The local deadline starts before the request is sent: the store's expiry (its now() +
  // ttl, taken after it received the request) can only be later.
  const auto started = clock_.now();
  auto drained = ownership_.take_drained();
  try {
    auto renewal = store_.renew(drained, options_.ttl);
    stats_.released_total += drained.size();
    const int share = fair_share(renewal.lane_count, renewal.live, ownership_.instance());
    std::vector<LaneLease> held = std::move(renewal.held);

    std::vector<int> lost;
    for (const auto& before : held_)
      if (std::find(drained.begin(), drained.end(), before.lane) == drained.end() &&
          std::find(held.begin(), held.end(), before) == held.end())
        lost.push_back(before.lane);
    std::vector<int> acquired;
    if (static_cast<int>(held.size()) < share) {
      for (auto& l : store_.acquire(share - static_cast<int>(held.size()), options_.ttl)) {
        acquired.push_back(l.lane);
        held.push_back(l);
      }
    }
    std::sort(held.begin(), held.end(), [](const auto& a, const auto& b) { return a.lane < b.lane; });
    // Above the share: hand back the highest lanes; the relay drains them first.
    std::vector<int> hand_back;
    for (int i = static_cast<int>(held.size()) - 1; i >= share; --i) hand_back.push_back(held[static_cast<std::size_t>(i)].lane);

    ownership_.update(held, started + options_.ttl - options_.safety_margin, hand_back);
    stats_.acquired_total += acquired.size();
    stats_.lost_total += lost.size();
    stats_.live_instances = static_cast<int>(renewal.live.size());
    stats_.fair_share = share;
    stats_.last_renewal_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(clock_.now().time_since_epoch()).count();
    if (!acquired.empty() || !lost.empty() || !drained.empty() || failing_)
      logger_.log(LogLevel::info, "lanes_changed",
                  {{"held", std::to_string(held.size())},
                   {"fair_share", std::to_string(share)},
                   {"live_instances", std::to_string(renewal.live.size())},
                   {"acquired", lane_list(acquired)},
                   {"released", lane_list(drained)},
                   {"lost", lane_list(lost)}});
    held_ = std::move(held);
    failing_ = false;
    return true;
  } catch (const TransientError& e) {
    // A failed call may have dropped what backs this instance's id (the store's session and
    // its lock, which a restarted process of the same id may take at once): publish nothing
    // until a renewal succeeds. The drained lanes were not released: report them again.
    ownership_.clear();
    ownership_.report_drained(drained);
    ++stats_.renew_failures_total;
    if (!failing_)
      logger_.log(LogLevel::warn, "lease_renewal_failed",
                  {{"error", e.what()}, {"note", "leases lapse by their deadline unless a renewal succeeds"}});
    failing_ = true;
    return false;
  }
}

void LeaseKeeper::run(std::stop_token stop) {
  while (!stop.stop_requested()) {
    tick();
    const auto next = clock_.now() + options_.renew_interval;
    while (!stop.stop_requested() && clock_.now() < next) {
      try {
        if (store_.await_change(options_.slice)) break;  // another instance joined, left or released
      } catch (const TransientError&) {
        ownership_.clear();  // the session that backs the id is gone: renew (and re-claim) first
        break;
      }
      if (!failing_ && ownership_.has_drained()) break;  // release them now
    }
  }
}

void LeaseKeeper::leave() {
  ownership_.clear();
  try {
    store_.leave();
    stats_.released_total += held_.size();
    logger_.log(LogLevel::info, "lanes_released", {{"lanes", std::to_string(held_.size())}});
    held_.clear();
  } catch (const TransientError& e) {
    logger_.log(LogLevel::warn, "lanes_release_failed",
                {{"error", e.what()}, {"note", "the leases expire by themselves"}});
  }
}

bool LeaseKeeper::renewed_within(std::chrono::nanoseconds within) const {
  const auto last = stats_.last_renewal_ns.load();
  return last != 0 && clock_.now().time_since_epoch() - std::chrono::nanoseconds(last) < within;
}

}  // namespace outbox::relay
