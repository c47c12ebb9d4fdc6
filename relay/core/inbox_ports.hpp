// Ports of the inbox sidecar's core: where messages come from (a consumer group), where they
// land (the service's inbox_events table) and where those that cannot land go (a dead-letter
// topic). The adapters behind them are relay/kafka and relay/pg; the core knows neither.
#pragma once

#include <chrono>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace outbox::relay {

struct TopicPartition {
  std::string topic;
  std::int32_t partition = 0;
  auto operator<=>(const TopicPartition&) const = default;
};

// One consumed message, as the broker gave it.
struct InboxMessage {
  std::string topic;
  std::int32_t partition = 0;
  std::int64_t offset = 0;
  std::optional<std::string> key;    // nullopt: no key
  std::optional<std::string> value;  // nullopt: a tombstone
  std::vector<std::pair<std::string, std::optional<std::string>>> headers;  // wire order; nullopt: null value

  [[nodiscard]] std::size_t bytes() const {
    std::size_t n = (key ? key->size() : 0) + (value ? value->size() : 0);
    for (const auto& [k, v] : headers) n += k.size() + (v ? v->size() : 0);
    return n;
  }
};

// A message the core decided to land: its event id and type taken from their headers, every
// header rendered as the JSON array inbox_events.headers holds.
struct InboxRow {
  std::string event_id;
  std::optional<std::string> event_type;
  std::string headers_json;
  InboxMessage message;
};

struct LandOutcome {
  std::size_t inserted = 0;    // new rows
  std::size_t duplicates = 0;  // an (inbox, event id) already there: a redelivery
  // Rows the database refused for their content (index into the batch, the reason): they are
  // dead-lettered; the statement's other rows landed.
  std::vector<std::pair<std::size_t, std::string>> refused;
};

class InboxStore {
 public:
  virtual ~InboxStore() = default;
  // Lands the rows in one transaction, in their order (the inbox's seq follows it); a row whose
  // (inbox, event id) exists is a duplicate. Throws TransientError when the database is away
  // (nothing landed, or all of it: the caller retries the same rows), FatalError/SchemaError
  // when retrying cannot help.
  virtual LandOutcome land(const std::vector<InboxRow>& rows) = 0;
  // Reaches the database (readiness while idle). Throws as land.
  virtual void ping() = 0;

  // The same landing in two halves, so the caller can consume the next batch meanwhile:
  // start_landing returns at once (`rows` must stay alive and unchanged until finish_landing
  // returns), finish_landing waits for the outcome or throws what land would. At most one
  // landing at a time; no other call in between. By default the work happens in finish_landing.
  virtual void start_landing(const std::vector<InboxRow>* rows) { started_ = rows; }
  virtual LandOutcome finish_landing() {
    const auto* rows = started_;
    started_ = nullptr;
    return land(*rows);
  }

 private:
  const std::vector<InboxRow>* started_ = nullptr;
};

// The message as it reached the inbox, with why it was not stored: published to the
// dead-letter topic with its origin in headers.
struct DeadLetter {
  InboxMessage message;
  std::string reason;
};

class DeadLetterSink {
 public:
  virtual ~DeadLetterSink() = default;
  // Publishes each letter and waits until `deadline` for the broker's acknowledgements.
  // Returns, per letter, whether it was acknowledged; a false one is sent again later.
  virtual std::vector<bool> send(const std::vector<DeadLetter>& letters, std::chrono::steady_clock::time_point deadline) = 0;
};

class InboxSource {
 public:
  // Called from inside poll() when partitions are taken away (a rebalance, the group lost):
  // the core settles what it holds of them before the source commits and lets them go.
  using RevokeListener = std::function<void(const std::vector<TopicPartition>&)>;

  virtual ~InboxSource() = default;
  virtual void on_revoke(RevokeListener listener) = 0;
  // The next message, waiting up to `timeout`; nullopt when none came.
  virtual std::optional<InboxMessage> poll(std::chrono::milliseconds timeout) = 0;
  // Everything of these partitions below each offset is settled (landed or dead-lettered):
  // commit it with the next commit. Never called for what is not settled.
  virtual void store_offsets(const std::vector<std::pair<TopicPartition, std::int64_t>>& next_offsets) = 0;
  // Commits what is stored now, synchronously (shutdown). False when the broker refused or
  // could not be reached (the next owner then starts from the last commit: duplicates only).
  virtual bool commit() = 0;
  // Reaches the brokers (readiness while idle): false when none answered.
  virtual bool ping() = 0;
};

// The core's only way to wait (retry backoff): real time in the daemon, a fake clock in tests.
class Pause {
 public:
  virtual ~Pause() = default;
  virtual void pause(std::chrono::milliseconds d) = 0;
};

}  // namespace outbox::relay
