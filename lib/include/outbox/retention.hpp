// Bounded tables (contract 6): deletes old consumer_inbox rows and expired idempotency keys
// in small batches, each batch its own short transaction, so no long lock is ever held.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

#include <pqxx/connection_base>

namespace outbox {

struct PurgeResult {
  std::size_t rows = 0;     // rows deleted in all
  std::size_t batches = 0;  // committed transactions that deleted at least one row
};

// Deletes consumer_inbox rows processed before now() - older_than, batch_size rows per
// transaction, until a batch comes back short (nothing left) or max_batches is reached.
// The window must be longer than the longest possible redelivery or replay (Kafka retention
// of the topic, an offset reset, a replay tool): a purged inbox row lets a replayed event run
// its effect again. Rows locked by another transaction are skipped (SKIP LOCKED), never
// waited for; they go in a later run. Opens its own transactions on `conn`, so none may be
// open on it. Throws std::invalid_argument for batch_size 0 or a negative window.
[[nodiscard]] PurgeResult purge_inbox(pqxx::connection_base& conn, std::chrono::seconds older_than,
                                      std::size_t batch_size = 1000, std::size_t max_batches = SIZE_MAX,
                                      const std::string& schema = "public");

// Deletes idempotency_keys whose expires_at < now(), in the same batched way. A record that
// begin() takes over concurrently is left alone (the DELETE re-checks expiry on the row).
[[nodiscard]] PurgeResult purge_expired_keys(pqxx::connection_base& conn, std::size_t batch_size = 1000,
                                             std::size_t max_batches = SIZE_MAX,
                                             const std::string& schema = "public");

}  // namespace outbox
