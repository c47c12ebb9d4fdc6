// Hand-written fakes of the relay's ports for unit tests: an in-memory outbox with the same
// selection rules as the SQL, a broker log with Kafka's per-partition failure semantics,
// a manual clock and a scripted wake-up.
#pragma once

#include <algorithm>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "relay/core/clock.hpp"
#include "relay/core/errors.hpp"
#include "relay/core/outbox_store.hpp"
#include "relay/core/publisher.hpp"
#include "relay/core/wakeup.hpp"

namespace outbox::relay::test {

class ManualClock final : public Clock {
 public:
  [[nodiscard]] time_point now() const override {
    if (on_now) on_now();  // e.g. another thread acting between two readings
    return now_;
  }
  void advance(std::chrono::milliseconds d) { now_ += d; }
  std::function<void()> on_now;

 private:
  time_point now_{std::chrono::seconds(1000)};
};

struct FakeRow {
  OutboxEvent event;
  bool visible = true;  // false: its transaction has not committed yet
  bool published = false;
  bool dead = false;
  std::optional<Clock::time_point> next_attempt_at;
  std::string last_error;
  int mark_count = 0;  // how often a mark touched it (idempotence checks)
};

class FakeOutboxStore final : public OutboxStore {
 public:
  explicit FakeOutboxStore(const ManualClock& clock) : clock_(clock) {}

  std::int64_t add(const std::string& agg, const std::string& type = "order", bool visible = true) {
    FakeRow r;
    r.event.seq = next_seq_++;
    r.event.id = "00000000-0000-0000-0000-" + std::to_string(100000000000 + r.event.seq);
    r.event.aggregate_type = type;
    r.event.aggregate_id = agg;
    r.event.event_type = "created";
    r.event.payload = "{\"n\":" + std::to_string(r.event.seq) + "}";
    r.visible = visible;
    r.event.lane = lane_of ? lane_of(r.event) : 0;
    rows_[r.event.seq] = r;
    return r.event.seq;
  }

  FakeRow& row(std::int64_t seq) { return rows_.at(seq); }
  const std::map<std::int64_t, FakeRow>& rows() const { return rows_; }
  std::size_t published_count() const {
    std::size_t n = 0;
    for (const auto& [s, r] : rows_) n += r.published ? 1 : 0;
    return n;
  }

  std::vector<OutboxEvent> fetch(const FetchRequest& req) override {
    ++fetches;
    if (timeline) timeline->push_back(req.after_seq ? "fetch>" + std::to_string(*req.after_seq) : "fetch");
    fetch_requests.push_back(req);
    if (fail_fetches > 0) {
      --fail_fetches;
      throw TransientError("fetch: connection lost");
    }
    std::set<std::pair<std::string, std::string>> dead_aggs, excluded;
    for (const auto& [s, r] : rows_)
      if (r.dead) dead_aggs.insert({r.event.aggregate_type, r.event.aggregate_id});
    for (const auto& k : req.exclude) excluded.insert({k.type, k.id});
    std::vector<OutboxEvent> out;
    for (const auto& [s, r] : rows_) {
      if (out.size() >= req.limit) break;
      if (!r.visible || r.published || r.dead) continue;
      if (req.after_seq && s <= *req.after_seq) continue;
      std::pair<std::string, std::string> key{r.event.aggregate_type, r.event.aggregate_id};
      if (dead_aggs.contains(key) || excluded.contains(key)) continue;
      if (req.lanes && std::find(req.lanes->begin(), req.lanes->end(), r.event.lane) == req.lanes->end()) continue;
      OutboxEvent e = r.event;
      e.pending_before = 0;
      e.pending_counted_after = std::numeric_limits<std::int64_t>::min();  // the fake counts every row
      if (req.after_seq)  // as the SQL counts them: visible, unpublished, not dead, behind the cursor
        for (const auto& [s2, r2] : rows_) {
          if (s2 > *req.after_seq) break;
          if (r2.visible && !r2.published && !r2.dead && r2.event.aggregate_type == r.event.aggregate_type &&
              r2.event.aggregate_id == r.event.aggregate_id)
            ++e.pending_before;
        }
      e.retry_in = std::chrono::milliseconds{0};
      if (r.next_attempt_at && *r.next_attempt_at > clock_.now())
        e.retry_in = std::chrono::duration_cast<std::chrono::milliseconds>(*r.next_attempt_at - clock_.now());
      out.push_back(e);
    }
    return out;
  }

  void mark_published(std::span<const std::int64_t> seqs) override {
    if (timeline) timeline->push_back("mark " + std::to_string(seqs.size()));
    if (fail_marks > 0) {
      --fail_marks;
      if (commit_then_fail) apply_marks(seqs);  // committed, but the client never heard back
      throw TransientError("mark: connection lost");
    }
    apply_marks(seqs);
  }

  void record_failures(std::span<const FailedAttempt> failures) override {
    for (const auto& f : failures) {
      auto& r = rows_.at(f.seq);
      r.event.attempts = f.attempts;
      r.last_error = f.error;
      if (f.dead_letter) {
        r.dead = true;
        r.next_attempt_at.reset();
      } else {
        r.next_attempt_at = clock_.now() + f.retry_after;
      }
    }
  }

  std::vector<std::string>* timeline = nullptr;  // shared with the publisher: call order
  std::function<int(const OutboxEvent&)> lane_of;  // the store's lane of a new row (default 0)
  int fail_fetches = 0;
  int fail_marks = 0;
  bool commit_then_fail = false;
  int fetches = 0;
  std::vector<FetchRequest> fetch_requests;

 private:
  void apply_marks(std::span<const std::int64_t> seqs) {
    for (auto s : seqs) {
      auto& r = rows_.at(s);
      r.published = true;
      ++r.mark_count;
    }
  }

  const ManualClock& clock_;
  std::map<std::int64_t, FakeRow> rows_;
  std::int64_t next_seq_ = 1;
};

// The broker: messages accepted by send() are appended to `log` when await() delivers them.
// Like Kafka's idempotent producer, once a message of a key fails in a round, the later
// messages of the same key in that round fail too (no gaps within a partition).
class FakePublisher final : public Publisher {
 public:
  using Rule = std::function<std::optional<DeliveryResult>(const Message&)>;

  std::optional<DeliveryResult> send(const Message& m) override {
    ++sends;
    if (timeline) timeline->push_back("send");
    if (refuse) {
      if (auto r = refuse(m)) return r;
    }
    queued_.push_back(m);
    return std::nullopt;
  }

  std::vector<DeliveryResult> await() override {
    ++awaits;
    if (timeline) timeline->push_back("await");
    if (on_await) on_await();  // e.g. time passing while the batch is on the wire
    std::vector<DeliveryResult> out;
    std::set<std::string> failed_keys;
    for (const auto& m : queued_) {
      if (failed_keys.contains(m.topic + "/" + m.key)) {
        out.push_back({DeliveryStatus::transient_failure, "earlier message of this partition failed"});
        continue;
      }
      std::optional<DeliveryResult> r = broker ? broker(m) : std::nullopt;
      if (r && !r->delivered()) {
        failed_keys.insert(m.topic + "/" + m.key);
        out.push_back(*r);
        continue;
      }
      log.push_back(m);
      out.push_back({DeliveryStatus::delivered, {}});
    }
    queued_.clear();
    return out;
  }

  // Like the broker away and the outstanding messages purged: every queued one fails.
  void abandon() override {
    abandoned = true;
    broker = [](const Message&) { return DeliveryResult{DeliveryStatus::transient_failure, "abandoned"}; };
  }

  static std::string id_of(const Message& m) {
    for (const auto& [k, v] : m.headers)
      if (k == "id") return v.value_or("");
    return {};
  }

  std::vector<std::string>* timeline = nullptr;
  Rule refuse;  // local refusal at send()
  Rule broker;  // broker-side outcome at await(); nullopt = delivered
  std::function<void()> on_await;
  std::vector<Message> log;
  int sends = 0;
  int awaits = 0;
  bool abandoned = false;

 private:
  std::vector<Message> queued_;
};

class FakeWakeup final : public Wakeup {
 public:
  explicit FakeWakeup(ManualClock& clock) : clock_(clock) {}
  void set_listening(bool l) override {
    listening_changes.push_back(l);
    listening = l;
  }
  bool wait(std::chrono::milliseconds timeout) override {
    waits.push_back(timeout);
    clock_.advance(timeout);
    if (on_wait) on_wait();
    return false;
  }
  bool listening = false;
  std::vector<bool> listening_changes;
  std::vector<std::chrono::milliseconds> waits;
  std::function<void()> on_wait;

 private:
  ManualClock& clock_;
};

}  // namespace outbox::relay::test
