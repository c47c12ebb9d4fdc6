// Port: where outbox rows come from and where their fate is written.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "relay/core/outbox_event.hpp"

namespace outbox::relay {

struct FetchRequest {
  std::size_t limit = 1000;
  // Pipelined fetch: only rows with seq > after_seq. nullopt: scan from the oldest
  // unpublished row, which is what guarantees that a row committing late is never skipped.
  std::optional<std::int64_t> after_seq;
  // Aggregates whose rows must not be returned (they wait behind a failed event).
  std::vector<AggregateKey> exclude;
  // Only rows of these lanes (the ones this instance holds); nullopt: every lane.
  std::optional<std::vector<int>> lanes = std::nullopt;
};

struct FailedAttempt {
  std::int64_t seq = 0;
  std::string error;
  int attempts = 0;                           // the row's attempt count including this one
  std::chrono::milliseconds retry_after{0};  // next attempt no earlier than db now() + this
  bool dead_letter = false;                  // attempts exhausted: park the row for an operator
};

class OutboxStore {
 public:
  virtual ~OutboxStore() = default;

  // Unpublished, not dead-lettered rows in seq order. Throws TransientError when the
  // database is away.
  [[nodiscard]] virtual std::vector<OutboxEvent> fetch(const FetchRequest& request) = 0;

  // Marks rows published (or deletes them, per the store's mark mode). Must be idempotent:
  // after a lost commit outcome the core calls it again with the same rows.
  virtual void mark_published(std::span<const std::int64_t> seqs) = 0;

  // Counts a permanent failure against each row and schedules its retry or dead-letters it.
  virtual void record_failures(std::span<const FailedAttempt> failures) = 0;
};

}  // namespace outbox::relay
