// The inbox sidecar's core: consumes messages in batches, lands each batch in the service's
// inbox in one transaction, dead-letters what cannot be stored, and only then stores the
// batch's offsets for commit. So a committed offset never covers a message that is neither in
// the inbox nor on the dead-letter topic; a crash or a rebalance in between brings duplicates,
// which the inbox's (inbox, event id) key absorbs.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "relay/core/backoff.hpp"
#include "relay/core/clock.hpp"
#include "relay/core/histogram.hpp"
#include "relay/core/inbox_ports.hpp"
#include "relay/core/logger.hpp"

namespace outbox::relay {

// A message without an event id header: dead-lettered, or given an id derived from its
// position ("kafka:<topic>/<partition>/<offset>"), which a redelivery of the same message
// keeps (so it is absorbed) but a second publication of the same event does not.
enum class MissingIdRule { dead_letter, position };

struct InboxOptions {
  std::string inbox = "default";
  std::string id_header = "id";
  std::string event_type_header = "eventType";  // empty: event_type left NULL
  MissingIdRule missing_id = MissingIdRule::dead_letter;
  std::size_t batch_size = 1000;                   // messages per transaction
  std::size_t batch_max_bytes = 32u << 20;         // a batch ends early past this many bytes
  std::size_t max_message_bytes = 8u << 20;        // key + value + headers; larger: dead-lettered
  std::size_t max_event_id_bytes = 200;
  std::chrono::milliseconds linger{5};             // how long a started batch waits to fill
  BackoffPolicy retry{std::chrono::milliseconds(100), std::chrono::milliseconds(10'000), 0.5};
  std::chrono::milliseconds ping_every{2'000};     // idle: reach the database and brokers this often
  std::chrono::milliseconds shutdown_timeout{10'000};  // SIGTERM: longest wait to settle what is held
};

#define OUTBOX_INBOX_STATS(X)                                                                    \
  X(received_total, "messages consumed")                                                         \
  X(landed_total, "events landed in the inbox (new rows)")                                       \
  X(duplicates_total, "redelivered events the inbox already held (no-ops)")                      \
  X(dead_lettered_total, "messages sent to the dead-letter topic instead of the inbox")          \
  X(refused_total, "messages the database refused for their content (then dead-lettered)")       \
  X(batches_total, "batches landed (one transaction each)")                                      \
  X(transient_errors_total, "landing or dead-letter attempts that failed on the database or broker") \
  X(revoked_total, "rebalances that took partitions away")                                       \
  X(dropped_on_revoke_total, "messages let go unsettled on a revoke (the next owner gets them)")

struct InboxStats {
#define OUTBOX_INBOX_DECLARE(name, help) std::atomic<std::uint64_t> name{0};
  OUTBOX_INBOX_STATS(OUTBOX_INBOX_DECLARE)
#undef OUTBOX_INBOX_DECLARE
  std::atomic<bool> last_step_ok{false};
  std::atomic<std::int64_t> last_ok_steady_ns{0};
  std::atomic<std::int64_t> heartbeat_ns{0};
  Histogram batch_duration{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
};

// What one message becomes: a row to land, or a letter with the reason it cannot be stored.
[[nodiscard]] std::variant<InboxRow, DeadLetter> decode_message(InboxMessage message, const InboxOptions& options);

// The headers as inbox_events.headers holds them (see migration 0009); nullopt when a name is
// not storable text.
[[nodiscard]] std::optional<std::string> headers_json(
    const std::vector<std::pair<std::string, std::optional<std::string>>>& headers);

class InboxLander {
 public:
  InboxLander(InboxSource& source, InboxStore& store, DeadLetterSink& dead_letters, Clock& clock, Pause& pause,
              Logger& logger, InboxOptions options, InboxStats& stats);

  // Consumes until `stop`; then settles what it holds (up to shutdown_timeout) and commits.
  // Returns whether the final commit went through. FatalError/SchemaError pass through.
  bool run(const std::atomic<bool>& stop);

 private:
  struct Batch {
    std::vector<InboxRow> rows;
    std::vector<DeadLetter> letters;
    std::map<TopicPartition, std::int64_t> next_offsets;  // each partition's last offset + 1
    std::size_t messages = 0;
    std::size_t bytes = 0;
    Clock::time_point started{};
    bool landing = false;  // its rows are with the store (start_landing), outcome not yet taken
    [[nodiscard]] bool open() const { return !rows.empty() || !letters.empty() || !next_offsets.empty(); }
  };

  void add(InboxMessage message);
  // The filling batch goes to the store to land while the next one fills (one at a time).
  void launch();
  // Lands `b` (taking the outcome of its started landing first) and sends its letters,
  // retrying until done or `give_up`; then stores the offsets of what is settled. Returns
  // false when it gave up with something unsettled (left in `b`).
  bool settle(Batch& b, Clock::time_point give_up, const std::atomic<bool>* stop);
  // Settles the batch in flight, then the filling one.
  bool settle_all(Clock::time_point give_up, const std::atomic<bool>* stop);
  void revoked(const std::vector<TopicPartition>& partitions);
  void idle_ping();
  void beat();
  void ok(bool reached);
  void wait(std::chrono::milliseconds d, Clock::time_point give_up, const std::atomic<bool>* stop);

  InboxSource& source_;
  InboxStore& store_;
  DeadLetterSink& dead_letters_;
  Clock& clock_;
  Pause& pause_;
  Logger& logger_;
  InboxOptions options_;
  InboxStats& stats_;
  Batch batch_;                   // filling
  std::optional<Batch> inflight_;  // landing
  std::optional<Clock::time_point> stopping_since_;
  Clock::time_point last_reached_{};
  Clock::time_point last_ping_{};
  double jitter_ = 0.5;
};

}  // namespace outbox::relay
