// Kafka consumer runner: a poll batch goes through the inbox in one database transaction (its
// events claimed in one statement), each message's handler in a savepoint of its own; offsets
// are stored for commit only after that transaction committed. A claim whose effect did not
// happen is taken back before the commit. A handler that fails rolls back only its savepoint:
// the messages before it commit, it is retried (with backoff, up to max_attempts) before any
// later message, then dead-lettered. Database trouble (lost connection, deadlock,
// serialization) retries the whole batch without counting attempts; permanent failures are
// dead-lettered with their origin, then the offset moves on.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <pqxx/transaction>

namespace outbox {

struct ConsumedEvent {
  std::string topic;
  std::int32_t partition = 0;
  std::int64_t offset = 0;
  std::string key;
  std::string value;
  bool null_value = false;  // a tombstone (no value at all), as opposed to an empty value
  std::vector<std::pair<std::string, std::string>> headers;  // in wire order; a null value reads as ""
  std::string event_id;
  // How many headers named event_id_header the message had: exactly one is an event id; more
  // is ambiguous and the message is dead-lettered (never deduplicated on a guess).
  int event_id_headers = 0;
};

// Thrown by a handler for an event that can never succeed: dead-lettered without retries.
class PermanentError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class MissingIdPolicy {
  dead_letter,           // a message without a usable event id header is dead-lettered
  derive_from_position,  // use a UUID derived from topic/partition/offset (redeliveries of the
                         // same message dedupe; a re-publication of the same event does not)
};

struct ConsumerOptions {
  std::string brokers;
  std::string group_id;
  std::vector<std::string> topics;
  std::string database_url;
  std::string consumer_name;  // inbox consumer name; empty: group_id
  std::string schema = "public";
  std::string event_id_header = "id";
  MissingIdPolicy missing_id = MissingIdPolicy::dead_letter;
  std::string dead_letter_topic;  // empty: "<source topic>.dlq"
  int max_attempts = 5;           // handler failures before a message is dead-lettered
  std::chrono::milliseconds retry_initial{100};
  std::chrono::milliseconds retry_max{10'000};
  std::chrono::milliseconds commit_interval{1000};  // how often stored offsets are committed
  std::size_t batch_size = 500;                     // messages per transaction (1: one each)
  std::chrono::milliseconds batch_linger{5};        // how long a started batch waits to fill
  std::map<std::string, std::string> kafka_properties;  // raw librdkafka consumer properties
  std::function<void(const std::string&)> log;          // optional: one line per notable event
};

struct ConsumerStats {
  std::atomic<std::uint64_t> processed{0};         // handler ran and committed
  std::atomic<std::uint64_t> duplicates{0};        // skipped by the inbox
  std::atomic<std::uint64_t> dead_lettered{0};
  std::atomic<std::uint64_t> transient_retries{0};  // database away, deadlock, serialization
  std::atomic<std::uint64_t> handler_failures{0};   // counted attempts
};

class ConsumerRunner {
 public:
  using Handler = std::function<void(pqxx::work&, const ConsumedEvent&)>;

  // Throws std::invalid_argument naming the option when the options are unusable.
  ConsumerRunner(ConsumerOptions options, Handler handler);
  ~ConsumerRunner();
  ConsumerRunner(const ConsumerRunner&) = delete;
  ConsumerRunner& operator=(const ConsumerRunner&) = delete;

  // Consumes until `stop` is true; then commits the offsets of what was settled and leaves
  // the group. A message being retried when stop arrives is left uncommitted (redelivered).
  void run(const std::atomic<bool>& stop);

  [[nodiscard]] const ConsumerStats& stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A UUID derived from a message's position (name-based, stable for the same position).
[[nodiscard]] std::string uuid_from_position(const std::string& topic, std::int32_t partition, std::int64_t offset);
[[nodiscard]] bool looks_like_uuid(const std::string& s);

}  // namespace outbox
