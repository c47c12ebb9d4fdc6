// OutboxStore on PostgreSQL (libpqxx): reads unpublished rows in seq order through the
// partial index, marks them published (or deletes them), records failed attempts.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <limits>
#include <memory>
#include <string>

#include "relay/core/outbox_store.hpp"
#include "relay/pg/sql_text.hpp"  // quoted_identifier, array literals: many users reach them here

namespace pqxx {
class connection_base;
class transaction_base;
}

namespace outbox::relay::pg {

class PgSession;

enum class MarkMode { update, remove };

struct PgStoreOptions {
  std::string conninfo;             // already hardened (see harden_conninfo)
  std::string schema = "public";    // validated identifier
  MarkMode mark_mode = MarkMode::update;
  std::size_t max_error_length = 2000;  // bytes of last_error kept (cut at a UTF-8 boundary)
  // This instance's id in outbox_relay_lanes: marks and failures land only on rows of lanes it
  // holds. Empty: unfenced (a store used on its own, by tests and tools).
  std::string owner{};
  // Rows whose payload (or headers, as JSON text) is larger than this are bad rows, and the
  // value never leaves the database: the producer's message.max.bytes, and the message
  // builder's header limits.
  std::size_t max_payload_bytes = 1'000'000;
  std::size_t max_headers_bytes = 1 << 20;
};

class PgOutboxStore final : public OutboxStore {
 public:
  explicit PgOutboxStore(PgStoreOptions options);
  ~PgOutboxStore() override;

  [[nodiscard]] std::vector<OutboxEvent> fetch(const FetchRequest& request) override;
  void mark_published(std::span<const std::int64_t> seqs) override;
  void record_failures(std::span<const FailedAttempt> failures) override;

  // Connects (if needed) and checks the outbox table has every column the relay uses.
  // Throws SchemaError naming what is missing, TransientError when the database is away.
  void verify_schema();

  // For operators (read from any thread): sessions opened again after the first, and marked
  // rows that matched nothing (their lane was no longer held, or they were already marked).
  [[nodiscard]] std::uint64_t reconnects() const;
  [[nodiscard]] std::uint64_t marks_unmatched() const { return marks_unmatched_; }
  // Fetches that failed on a row's content and were read again row by row.
  [[nodiscard]] std::uint64_t isolations() const { return isolations_; }

 private:
  // A new session: statements prepared, nothing known settled.
  void set_up(pqxx::connection_base& c);
  // The rows of `request` read one by one, after a row's content broke the batch statement.
  std::vector<OutboxEvent> fetch_isolating(pqxx::connection_base& c, const FetchRequest& request);
  // A head scan read with this snapshot xmin and reopen count: fix the settled prefix for the
  // read-ahead fetches until the next head scan.
  void start_run(const std::string& snapshot_xmin, std::int64_t reopened);
  // Records what prefix will be settled once the transactions now in use are done.
  void sample(pqxx::transaction_base& tx);
  // A row whose read failed with `why`: what can still be read of it, marked unreadable.
  static OutboxEvent unreadable_row(pqxx::transaction_base& tx, const std::string& schema, std::int64_t seq,
                                    const std::exception& why);

  PgStoreOptions options_;
  std::string schema_;  // quoted
  std::unique_ptr<PgSession> session_;
  std::atomic<std::uint64_t> marks_unmatched_{0};
  std::atomic<std::uint64_t> isolations_{0};
  // The settled prefix (see start_run): samples (M, N) not yet usable, the prefix fixed at the
  // last head scan, and the reopen count then.
  struct Settle {
    std::int64_t seq;        // M: the sequence's last value
    std::int64_t below_xid;  // N: above every transaction id in use when M was read
  };
  std::deque<Settle> samples_;
  std::int64_t settled_ = std::numeric_limits<std::int64_t>::min();
  std::int64_t reopened_ = 0;
  std::string sequence_;  // the seq column's sequence, quoted
  bool sequence_known_ = false;
  std::chrono::steady_clock::time_point sampled_at_{};
};

}  // namespace outbox::relay::pg
