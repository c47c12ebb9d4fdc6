#include "relay/core/relay.hpp"

#include <algorithm>
#include <random>
#include <functional>
#include <stdexcept>
#include <unordered_set>
#include <variant>

#include "relay/core/errors.hpp"

namespace outbox::relay {

std::size_t AggregateKeyHash::operator()(const AggregateKey& k) const noexcept {
  std::size_t h = std::hash<std::string>{}(k.type);
  return h ^ (std::hash<std::string>{}(k.id) + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2));
}

const char* to_string(DeliveryStatus s) {
  switch (s) {
    case DeliveryStatus::delivered: return "delivered";
    case DeliveryStatus::transient_failure: return "transient_failure";
    case DeliveryStatus::permanent_failure: return "permanent_failure";
  }
  return "unknown";
}

Relay::Relay(OutboxStore& store, Publisher& publisher, const Clock& clock, MessageBuilder builder,
             RelayOptions options, RelayStats& stats, Ownership* ownership)
    : store_(store),
      publisher_(publisher),
      clock_(clock),
      builder_(std::move(builder)),
      options_(std::move(options)),
      stats_(stats),
      ownership_(ownership) {
  if (options_.batch_size == 0) throw ConfigError("relay.batch_size: must be at least 1");
  if (options_.max_attempts < 1) throw ConfigError("relay.max_attempts: must be at least 1");
  if (!options_.publisher_header.empty()) builder_.reserve(options_.publisher_header, "message.publisher_header");
}

std::size_t Relay::unmarked() const { return pending_ ? pending_->marks.size() : 0; }

bool Relay::blocked(const AggregateKey& key) const { return blocked_until_.contains(key); }

void Relay::block(const AggregateKey& key, Clock::time_point until) {
  auto [it, inserted] = blocked_until_.try_emplace(key, until);
  if (!inserted) it->second = std::max(it->second, until);
}

std::vector<AggregateKey> Relay::excluded_aggregates() {
  std::vector<AggregateKey> keys;
  keys.reserve(std::min(blocked_until_.size(), options_.max_excluded_aggregates));
  for (const auto& [key, until] : blocked_until_) {
    if (keys.size() >= options_.max_excluded_aggregates) break;
    keys.push_back(key);
  }
  return keys;
}

void Relay::beat() {
  stats_.heartbeat_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(clock_.now().time_since_epoch()).count();
}

StepResult Relay::step() {
  const auto now = clock_.now();
  beat();
  StepResult result;
  try {
    // A pipelined step publishes the batch read behind the one whose marks are still pending
    // (prefetched while that one was on the wire). Any failure, a stop, or the rescan deadline
    // turns the step into a head scan: write what is pending, lift expired blocks, and read
    // from the oldest unpublished row.
    const bool pipelined = options_.pipeline && pending_ && !pending_->failed && prefetched_ &&
                           now < next_rescan_ && !stop_requested_;
    if (!pipelined) {
      result.published += write_settlement();
      if (stop_requested_) {
        result.kind = StepKind::stopped;
        return result;
      }
      prefetched_.reset();
      std::erase_if(blocked_until_, [now](const auto& kv) { return kv.second <= now; });
      next_rescan_ = now + options_.rescan_interval;
      if (!refresh_lanes(now)) {  // nothing held: another instance publishes everything
        stats_.last_step_ok = true;
        stats_.last_ok_steady_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch()).count();
        result.kind = StepKind::idle;
        result.holds_no_lane = true;
        return result;
      }
    }

    std::vector<OutboxEvent> events;
    Clock::time_point fetched_at;
    AggregateCounts behind;
    if (pipelined) {
      events = std::move(*prefetched_);
      behind = std::move(prefetched_behind_);
      fetched_at = prefetched_at_;
    } else {
      fetched_at = clock_.now();
      events = store_.fetch({options_.batch_size, std::nullopt, excluded_aggregates(), lanes_});
    }
    prefetched_.reset();
    prefetched_behind_.clear();
    ++stats_.batches_total;
    result.fetched = events.size();
    const bool full = events.size() >= options_.batch_size;
    std::int64_t max_seq = 0;
    for (const auto& e : events) max_seq = std::max(max_seq, e.seq);

    InFlight flight = dispatch(std::move(events), pipelined ? &behind : nullptr);
    flight.fetched_at = fetched_at;

    // While this batch is on the wire: write the previous batch's marks, and read the next
    // batch behind this one. A database error here must not abandon the messages just sent:
    // their outcomes are collected first.
    std::optional<std::string> write_error;
    try {
      if (pending_) result.published += write_settlement();
      // Read ahead only once every earlier batch is marked: then the rows of this batch the
      // publisher took are all the unpublished rows behind the cursor that the relay knows
      // of, and any other one (pending_before counts them all) committed late.
      if (full && options_.pipeline && !stop_requested_ && now < next_rescan_) {
        prefetched_at_ = clock_.now();
        prefetched_ = store_.fetch({options_.batch_size, max_seq, excluded_aggregates(), lanes_});
        // Only a row with unpublished predecessors behind the cursor needs to know what is in
        // flight (none at all while the store finds the prefix settled).
        if (std::any_of(prefetched_->begin(), prefetched_->end(), [](const OutboxEvent& e) { return e.pending_before > 0; }))
          prefetched_behind_ = sent_per_aggregate(flight);
      }
    } catch (const TransientError& e) {
      write_error = e.what();
      prefetched_.reset();
      prefetched_behind_.clear();
    }

    auto sent = collect(std::move(flight));
    auto settlement = settle_outcomes(sent);
    if (pending_) {
      pending_->marks.insert(pending_->marks.end(), settlement.marks.begin(), settlement.marks.end());
      pending_->failures.insert(pending_->failures.end(), settlement.failures.begin(),
                                settlement.failures.end());
      pending_->max_seq = std::max(pending_->max_seq, settlement.max_seq);
      pending_->failed = pending_->failed || settlement.failed;
      pending_->transient = pending_->transient || settlement.transient;
    } else {
      pending_ = std::move(settlement);
    }
    if (write_error) return transient_failure(*write_error);

    const bool failed = pending_->failed;
    const bool transient = pending_->transient;
    if (failed || !full || !options_.pipeline) result.published += write_settlement();
    if (transient) return transient_failure("broker did not acknowledge some events; retrying");
    consecutive_transient_ = 0;
    stats_.last_step_ok = true;
    stats_.last_ok_steady_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch()).count();
    result.kind = full ? StepKind::busy : StepKind::idle;
    return result;
  } catch (const TransientError& e) {
    return transient_failure(e.what());
  }
}

Relay::AggregateCounts Relay::sent_per_aggregate(const InFlight& flight) {
  AggregateCounts counts;
  for (auto i : flight.accepted) counts[aggregate_of(flight.sent[i].event)].push_back(flight.sent[i].event.seq);
  return counts;
}

Relay::InFlight Relay::dispatch(std::vector<OutboxEvent> events, const AggregateCounts* ahead) {
  const auto now = clock_.now();
  InFlight flight;
  auto& sent = flight.sent;
  auto& accepted = flight.accepted;
  sent.reserve(events.size());
  accepted.reserve(events.size());
  for (auto& event : events) {
    auto key = aggregate_of(event);
    Sent& s = sent.emplace_back(Sent{std::move(event), std::nullopt});
    // Checked per message, just before it is handed over: a lease that lapsed while this
    // batch was read (or the process was paused) stops the sends at once.
    std::optional<std::int64_t> epoch;
    // Not sent: its aggregate's later rows in this batch are not sent either, even if the
    // lease is renewed on the keeper's thread before the check reaches them.
    if (ownership_ && !(epoch = ownership_->publishable(s.event.lane, clock_.now()))) {
      ++stats_.not_owned_total;
      block(key, now);
      continue;
    }
    if (blocked(key)) {
      ++stats_.held_back_total;
      continue;
    }
    // Read ahead of a batch in flight: an unpublished row of this aggregate behind the cursor
    // that is not one of the batch's own committed late and was never read. This row (and its
    // aggregate's later ones) waits for the head scan that finds it, which comes next.
    if (ahead != nullptr) {
      std::int64_t known = 0;  // of the rows the store counted
      if (auto it = ahead->find(key); it != ahead->end())
        known = std::count_if(it->second.begin(), it->second.end(),
                              [&](std::int64_t seq) { return seq > s.event.pending_counted_after; });
      if (s.event.pending_before > known) {
        ++stats_.held_behind_late_total;
        block(key, now);
        next_rescan_ = now;
        continue;
      }
    }
    // A next attempt later than the retry policy's longest delay was not scheduled by the
    // relay (a producer wrote it, or 'infinity'): the row is due now.
    if (s.event.retry_in > options_.row_retry.max) s.event.retry_in = std::chrono::milliseconds{0};
    if (s.event.retry_in.count() > 0) {  // in retry backoff: it and its successors wait
      block(key, now + s.event.retry_in);
      ++stats_.held_back_total;
      continue;
    }
    if (s.event.defect) {
      s.result = DeliveryResult{DeliveryStatus::permanent_failure, "bad row: " + *s.event.defect};
      block(key, now);
      continue;
    }
    auto built = builder_.build(s.event);
    if (auto* bad = std::get_if<BadRow>(&built)) {
      s.result = DeliveryResult{DeliveryStatus::permanent_failure, "bad row: " + bad->reason};
      block(key, now);
      continue;
    }
    auto& message = std::get<Message>(built);
    if (!options_.publisher_header.empty())
      message.headers.emplace_back(options_.publisher_header,
                                   (ownership_ ? ownership_->instance() : std::string("outbox-relay")) +
                                       " lane=" + std::to_string(s.event.lane) +
                                       " epoch=" + std::to_string(epoch.value_or(0)));
    if (auto refused = publisher_.send(message)) {
      s.result = std::move(refused);
      block(key, now);
      continue;
    }
    accepted.push_back(sent.size() - 1);
  }
  return flight;
}

std::vector<Relay::Sent> Relay::collect(InFlight flight) {
  if (!flight.accepted.empty()) {
    auto results = publisher_.await();
    if (results.size() != flight.accepted.size())
      throw std::logic_error("publisher returned " + std::to_string(results.size()) + " outcomes for " +
                             std::to_string(flight.accepted.size()) + " messages");
    for (std::size_t i = 0; i < flight.accepted.size(); ++i)
      flight.sent[flight.accepted[i]].result = std::move(results[i]);
    const auto since_fetch = clock_.now() - flight.fetched_at;
    stats_.batch_duration.observe(since_fetch);
    for (auto i : flight.accepted)
      if (flight.sent[i].result->delivered()) stats_.commit_to_ack.observe(flight.sent[i].event.age + since_fetch);
  }
  return std::move(flight.sent);
}

Relay::Settlement Relay::settle_outcomes(std::vector<Sent>& sent) {
  const auto now = clock_.now();
  Settlement out;
  // An event is marked only if every earlier event of its aggregate in this batch was
  // delivered: after a failure, later acknowledged events stay unpublished and go out again
  // behind the failed one (duplicates, never a gap in the published prefix).
  std::unordered_set<AggregateKey, AggregateKeyHash> stopped;
  for (auto& s : sent) {
    out.max_seq = std::max(out.max_seq, s.event.seq);
    auto key = aggregate_of(s.event);
    if (stopped.contains(key)) {
      if (s.result && s.result->delivered()) ++stats_.unmarked_after_failure_total;
      continue;
    }
    if (!s.result) {  // held back
      stopped.insert(std::move(key));
      continue;
    }
    switch (s.result->status) {
      case DeliveryStatus::delivered:
        out.marks.push_back(s.event.seq);
        break;
      case DeliveryStatus::transient_failure:
        ++stats_.failed_transient_total;
        out.failed = true;
        out.transient = true;
        block(key, now);
        stopped.insert(std::move(key));
        break;
      case DeliveryStatus::permanent_failure: {
        ++stats_.failed_permanent_total;
        out.failed = true;
        FailedAttempt f;
        f.seq = s.event.seq;
        f.error = s.result->detail;
        // attempts is a column a producer can write: clamp before counting on it.
        f.attempts = std::clamp(s.event.attempts, 0, options_.max_attempts) + 1;
        f.dead_letter = f.attempts >= options_.max_attempts || s.event.unreadable;
        f.retry_after = f.dead_letter ? std::chrono::milliseconds{0} : options_.row_retry.delay(f.attempts);
        if (f.dead_letter) ++stats_.dead_lettered_total;
        block(key, now + f.retry_after);
        out.failures.push_back(std::move(f));
        stopped.insert(std::move(key));
        break;
      }
    }
  }
  return out;
}

std::size_t Relay::write_settlement() {
  if (!pending_) return 0;
  if (!pending_->failures.empty()) {
    store_.record_failures(pending_->failures);
    pending_->failures.clear();
  }
  std::size_t n = pending_->marks.size();
  if (n > 0) {
    store_.mark_published(pending_->marks);
    stats_.published_total += n;
  }
  pending_.reset();
  return n;
}

bool Relay::refresh_lanes(Clock::time_point now) {
  if (!ownership_) return true;
  auto view = ownership_->view(now);
  ownership_->report_drained(view.handing_back);
  if (view.all)
    lanes_.reset();
  else
    lanes_ = std::move(view.lanes);
  return !lanes_ || !lanes_->empty();
}

StepResult Relay::transient_failure(const std::string& what) {
  ++stats_.transient_errors_total;
  stats_.last_step_ok = false;
  ++consecutive_transient_;
  next_rescan_ = clock_.now();  // the next step starts from the head
  StepResult r;
  r.kind = StepKind::backoff;
  r.wait = options_.transient_retry.delay(consecutive_transient_, std::uniform_real_distribution<double>(0, 1)(jitter_));
  r.error = what;
  return r;
}

}  // namespace outbox::relay
