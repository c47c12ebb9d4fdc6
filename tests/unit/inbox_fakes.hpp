// Fakes of the inbox sidecar's ports: a topic log with a consumer group's committed offsets
// (positions go back to the last commit on a revoke or a crash, as a real group's do), an
// inbox keyed by (event id) that remembers its landing order, and a dead-letter topic. Each
// can be told to fail.
#pragma once

#include <atomic>
#include <deque>
#include <exception>
#include <utility>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "relay/core/errors.hpp"
#include "relay/core/inbox_ports.hpp"
#include "tests/unit/fakes.hpp"

namespace outbox::relay::test {

class ClockPause final : public Pause {
 public:
  explicit ClockPause(ManualClock& clock) : clock_(clock) {}
  void pause(std::chrono::milliseconds d) override { clock_.advance(d); }

 private:
  ManualClock& clock_;
};

class FakeTopicLog final : public InboxSource {
 public:
  explicit FakeTopicLog(ManualClock& clock) : clock_(clock) {}

  void append(InboxMessage m) {
    auto& log = partitions_[TopicPartition{m.topic, m.partition}];
    m.offset = static_cast<std::int64_t>(log.size());
    log.push_back(std::move(m));
  }
  // The next poll calls the revoke listener for every partition first, then starts them again
  // from the committed offsets (the same member gets them back).
  void revoke_at_next_poll() { revoke_ = true; }
  // A crash: stored offsets are lost, positions go back to the committed ones.
  void crash() {
    stored_.clear();
    positions_ = committed_;
  }

  void on_revoke(RevokeListener l) override { listener_ = std::move(l); }
  std::optional<InboxMessage> poll(std::chrono::milliseconds timeout) override {
    ++polls;
    if (revoke_) {
      revoke_ = false;
      std::vector<TopicPartition> all;
      for (const auto& [tp, log] : partitions_) all.push_back(tp);
      if (listener_) listener_(all);
      (void)commit();
      positions_ = committed_;
      stored_.clear();
    }
    for (auto& [tp, log] : partitions_) {
      auto& pos = positions_[tp];
      if (pos < static_cast<std::int64_t>(log.size())) return log[static_cast<std::size_t>(pos++)];
    }
    clock_.advance(timeout);
    if (stop_when_drained != nullptr && ++idle_polls >= 3) *stop_when_drained = true;
    return std::nullopt;
  }
  void store_offsets(const std::vector<std::pair<TopicPartition, std::int64_t>>& next) override {
    for (const auto& [tp, o] : next) stored_[tp] = o;
    store_calls.push_back(next);
  }
  bool commit() override {
    if (fail_commits) return false;
    for (const auto& [tp, o] : stored_) committed_[tp] = o;
    ++commits;
    return true;
  }
  bool ping() override { return !brokers_down; }

  [[nodiscard]] const std::map<TopicPartition, std::vector<InboxMessage>>& partitions() const { return partitions_; }
  [[nodiscard]] std::int64_t committed(const TopicPartition& tp) const {
    auto it = committed_.find(tp);
    return it == committed_.end() ? 0 : it->second;
  }
  [[nodiscard]] std::int64_t stored(const TopicPartition& tp) const {
    auto it = stored_.find(tp);
    return it == stored_.end() ? -1 : it->second;
  }
  [[nodiscard]] bool drained() const {
    for (const auto& [tp, log] : partitions_) {
      auto it = positions_.find(tp);
      if ((it == positions_.end() ? 0 : it->second) < static_cast<std::int64_t>(log.size())) return false;
    }
    return true;
  }

  int polls = 0;
  int idle_polls = 0;
  std::atomic<bool>* stop_when_drained = nullptr;  // set after a few polls that found nothing
  int commits = 0;
  bool fail_commits = false;
  bool brokers_down = false;
  std::vector<std::vector<std::pair<TopicPartition, std::int64_t>>> store_calls;

 private:
  ManualClock& clock_;
  std::map<TopicPartition, std::vector<InboxMessage>> partitions_;
  std::map<TopicPartition, std::int64_t> positions_, committed_, stored_;
  RevokeListener listener_;
  bool revoke_ = false;
};

class FakeInbox final : public InboxStore {
 public:
  LandOutcome land(const std::vector<InboxRow>& rows) override {
    ++land_calls;
    if (on_land) on_land();
    if (fail_next > 0) {
      --fail_next;
      throw TransientError("database away (fake)");
    }
    LandOutcome o;
    for (std::size_t i = 0; i < rows.size(); ++i) {
      if (refuse_ids.contains(rows[i].event_id)) {
        o.refused.emplace_back(i, "invalid input (fake)");
        continue;
      }
      if (by_id.contains(rows[i].event_id)) {
        ++o.duplicates;
        continue;
      }
      by_id.emplace(rows[i].event_id, landed.size());
      landed.push_back(rows[i]);
      ++o.inserted;
    }
    return o;
  }
  void ping() override {
    if (down) throw TransientError("database away (fake)");
  }
  // eager: the landing happens at start_landing (as a store with a worker thread may finish it
  // while the caller still consumes); otherwise at finish_landing.
  void start_landing(const std::vector<InboxRow>* rows) override {
    if (!eager) return InboxStore::start_landing(rows);
    try {
      outcome_ = land(*rows);
      failure_ = nullptr;
    } catch (...) {
      failure_ = std::current_exception();
    }
  }
  LandOutcome finish_landing() override {
    if (!eager) return InboxStore::finish_landing();
    if (failure_) std::rethrow_exception(std::exchange(failure_, nullptr));
    return outcome_;
  }

  bool eager = false;
  std::vector<InboxRow> landed;  // in seq order
  std::map<std::string, std::size_t> by_id;
  std::set<std::string> refuse_ids;
  int fail_next = 0;
  int land_calls = 0;
  bool down = false;
  std::function<void()> on_land;

 private:
  LandOutcome outcome_;
  std::exception_ptr failure_;
};

class FakeDeadLetterTopic final : public DeadLetterSink {
 public:
  std::vector<bool> send(const std::vector<DeadLetter>& letters, std::chrono::steady_clock::time_point) override {
    std::vector<bool> out;
    ++send_calls;
    if (on_send) on_send();
    for (const auto& l : letters) {
      if (fail_next > 0) {
        --fail_next;
        out.push_back(false);
        continue;
      }
      sent.push_back(l);
      out.push_back(true);
    }
    return out;
  }
  std::vector<DeadLetter> sent;
  int fail_next = 0;
  int send_calls = 0;
  std::function<void()> on_send;
};

}  // namespace outbox::relay::test
