// Request-level idempotency: a retried request (a client's double click, a webhook redelivery)
// carrying the same key finds the stored outcome of the first one instead of running again.
// The database decides, even between concurrent requests on different connections.
#pragma once

#include <chrono>
#include <optional>
#include <string>

#include <pqxx/transaction_base>

namespace outbox {

enum class KeyState {
  started,      // new key (or its record had expired): perform the effect, then complete()
  in_progress,  // a begin() with this request committed without complete() and has not expired
  completed,    // this key with this request already ran: response_ref is its stored outcome
  conflict,     // same key, different request_hash: the request must not run
};

struct KeyDecision {
  KeyState state;
  std::optional<std::string> response_ref;  // set when completed
};

// Works on the idempotency_keys table (migration 0004) of `schema`.
class IdempotencyKeys {
 public:
  // `ttl` is how long a record counts, from begin() and again from complete(): a completed
  // outcome is returned for that long, and an in_progress record (a crashed worker) blocks
  // its key for that long. After it the record is taken over by the next begin() or deleted
  // by purge_expired_keys(). Throws std::invalid_argument when ttl is not positive or the
  // schema is not a plain identifier.
  explicit IdempotencyKeys(std::chrono::seconds ttl, std::string schema = "public");

  // In the caller's transaction. started: the key is new (or its record had expired and is
  // now reset to in_progress with this request_hash); the caller performs the effect and
  // calls complete() in the SAME transaction, so the outcome is stored atomically with the
  // effect. A concurrent begin() of the same key on another connection blocks on the unique
  // index until this transaction ends, then sees its outcome (completed after a commit,
  // started after a rollback). Reading an existing live record takes no row lock; taking
  // over an expired one locks its row (SELECT ... FOR UPDATE) until the transaction ends.
  // Expiry is judged by the database's now(). Under REPEATABLE READ or SERIALIZABLE a
  // concurrent begin() may throw pqxx::serialization_failure instead: retry the transaction.
  // Throws std::invalid_argument for an empty key or request_hash.
  [[nodiscard]] KeyDecision begin(pqxx::transaction_base& tx, const std::string& key,
                                  const std::string& request_hash) const;

  // In the caller's transaction: stores `response_ref` as the outcome of the key's
  // in_progress record and keeps it for ttl from now(). Throws std::logic_error naming the
  // key when the key has no in_progress record (unknown, purged, or already completed).
  void complete(pqxx::transaction_base& tx, const std::string& key, const std::string& response_ref) const;

  [[nodiscard]] std::chrono::seconds ttl() const { return ttl_; }

 private:
  std::chrono::seconds ttl_;
  std::string table_;
};

}  // namespace outbox
