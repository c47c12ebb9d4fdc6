// Domain types of the relay: a row read from the outbox and the message built from it.
#pragma once

#include <chrono>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace outbox::relay {

// A header's value may be null (Kafka allows it; a row's JSON null becomes one).
using Header = std::pair<std::string, std::optional<std::string>>;

// One unpublished row of outbox_events, as the store hands it to the core.
struct OutboxEvent {
  std::int64_t seq = 0;         // insertion order; per-aggregate order follows it
  std::string id;               // event id (uuid text), becomes the `id` header
  std::string aggregate_type;
  std::string aggregate_id;
  std::string event_type;
  std::optional<std::string> payload;  // bytes, passed through unchanged; nullopt: NULL (a tombstone)
  std::vector<Header> headers;  // the row's own headers
  std::optional<std::string> topic;  // per-row topic override
  int attempts = 0;             // permanent failures recorded so far
  // Time until a row in retry backoff is due again, measured by the database clock;
  // zero when the row may be published now.
  std::chrono::milliseconds retry_in{0};
  // How old the row was when fetched (database clock: now() - created_at); feeds the
  // commit-to-acknowledgement latency.
  std::chrono::microseconds age{0};
  // Set when the store could not decode the row (e.g. malformed headers): the row can never
  // become a message and is failed permanently with this reason.
  std::optional<std::string> defect;
  // The store could not read the row at all (the statement failed on its content): no retry
  // can change that, so it is dead-lettered at its first failure.
  bool unreadable = false;
  // The aggregate's lane (see ownership.hpp), computed by the store; -1: unknown.
  int lane = -1;
  // Read-ahead fetches only (FetchRequest::after_seq set): how many unpublished, not
  // dead-lettered rows of this row's aggregate have pending_counted_after < seq <= after_seq. The relay compares it
  // with the rows of that aggregate it has in flight: any more is an earlier row it has not
  // seen (one that committed late, behind the cursor), and this row must wait for it.
  std::int64_t pending_before = 0;
  // The rows pending_before counts have seq > this (and <= after_seq): a store may leave out
  // a prefix it knows is settled (no row there can commit late any more).
  std::int64_t pending_counted_after = std::numeric_limits<std::int64_t>::min();
};

// Aggregates are ordered within (aggregate_type, aggregate_id).
struct AggregateKey {
  std::string type;
  std::string id;
  friend bool operator==(const AggregateKey&, const AggregateKey&) = default;
};

struct AggregateKeyHash {
  std::size_t operator()(const AggregateKey& k) const noexcept;
};

inline AggregateKey aggregate_of(const OutboxEvent& e) { return {e.aggregate_type, e.aggregate_id}; }

// What goes on the wire.
struct Message {
  std::string topic;
  std::string key;
  std::optional<std::string> value;  // nullopt: a null value (tombstone)
  std::vector<Header> headers;
};

}  // namespace outbox::relay
