#include "outbox/idempotency_keys.hpp"

#include <pqxx/result>

#include <stdexcept>

#include "outbox/sql_names.hpp"

namespace outbox {

namespace {

// A record read back after the INSERT found the key taken. `expired` is judged by the
// database (expires_at < now()), the same test purge_expired_keys() uses.
struct Record {
  std::string request_hash;
  bool completed = false;
  std::optional<std::string> response_ref;
  bool expired = false;
};

std::optional<Record> read_record(pqxx::transaction_base& tx, const std::string& table, const std::string& key,
                                  bool lock) {
  auto r = tx.exec_params("SELECT request_hash, status, response_ref, expires_at < now() FROM " + table +
                              " WHERE key = $1" + (lock ? " FOR UPDATE" : ""),
                          key);
  if (r.empty()) return std::nullopt;
  Record rec;
  rec.request_hash = r[0][0].as<std::string>();
  rec.completed = r[0][1].as<std::string>() == "completed";
  if (!r[0][2].is_null()) rec.response_ref = r[0][2].as<std::string>();
  rec.expired = r[0][3].as<bool>();
  return rec;
}

KeyDecision decide(const Record& rec, const std::string& request_hash) {
  if (rec.request_hash != request_hash) return {KeyState::conflict, std::nullopt};
  if (rec.completed) return {KeyState::completed, rec.response_ref};
  return {KeyState::in_progress, std::nullopt};
}

// Each retry means a purge deleted the record between two of our statements; more than a
// couple in a row would take a purge racing a stream of inserts of the same key.
constexpr int kMaxAttempts = 5;

}  // namespace

IdempotencyKeys::IdempotencyKeys(std::chrono::seconds ttl, std::string schema)
    : ttl_(ttl), table_(qualified_table(schema, "idempotency_keys")) {
  if (ttl_.count() <= 0)
    throw std::invalid_argument("idempotency keys: ttl must be positive, got " + std::to_string(ttl_.count()) + "s");
}

KeyDecision IdempotencyKeys::begin(pqxx::transaction_base& tx, const std::string& key,
                                   const std::string& request_hash) const {
  if (key.empty()) throw std::invalid_argument("idempotency keys: key must not be empty");
  if (request_hash.empty())
    throw std::invalid_argument("idempotency keys: request_hash must not be empty (key \"" + key + "\")");
  const long long ttl_seconds = ttl_.count();

  for (int attempt = 0; attempt < kMaxAttempts; ++attempt) {
    // Blocks on the unique index while another transaction holds an uncommitted record for
    // this key; does nothing once that one committed, inserts once it rolled back.
    auto inserted = tx.exec_params("INSERT INTO " + table_ +
                                       " (key, request_hash, status, expires_at) "
                                       "VALUES ($1, $2, 'in_progress', now() + $3::bigint * interval '1 second') "
                                       "ON CONFLICT (key) DO NOTHING RETURNING 1",
                                   key, request_hash, ttl_seconds);
    if (!inserted.empty()) return {KeyState::started, std::nullopt};

    auto rec = read_record(tx, table_, key, false);
    if (!rec) continue;  // deleted by a purge since the INSERT: try again
    if (rec->expired) {
      // Take it over under a row lock. FOR UPDATE waits for, then reads, the latest committed
      // version, so of two concurrent takeovers the second sees the first's fresh record.
      rec = read_record(tx, table_, key, true);
      if (!rec) continue;
      if (rec->expired) {
        tx.exec_params("UPDATE " + table_ +
                           " SET request_hash = $2, status = 'in_progress', response_ref = NULL, created_at = now(), "
                           "expires_at = now() + $3::bigint * interval '1 second' WHERE key = $1",
                       key, request_hash, ttl_seconds);
        return {KeyState::started, std::nullopt};
      }
    }
    return decide(*rec, request_hash);
  }
  throw std::runtime_error("idempotency keys: the record of key \"" + key + "\" was deleted " +
                           std::to_string(kMaxAttempts) +
                           " times while being read; is purge_expired_keys() running with a too short ttl?");
}

void IdempotencyKeys::complete(pqxx::transaction_base& tx, const std::string& key,
                               const std::string& response_ref) const {
  if (key.empty()) throw std::invalid_argument("idempotency keys: key must not be empty");
  auto r = tx.exec_params("UPDATE " + table_ +
                              " SET status = 'completed', response_ref = $2, "
                              "expires_at = now() + $3::bigint * interval '1 second' "
                              "WHERE key = $1 AND status = 'in_progress'",
                          key, response_ref, static_cast<long long>(ttl_.count()));
  if (r.affected_rows() == 1) return;
  auto status = tx.exec_params("SELECT status FROM " + table_ + " WHERE key = $1", key);
  const std::string found = status.empty() ? "no record" : "status " + status[0][0].as<std::string>();
  throw std::logic_error("idempotency keys: complete() of key \"" + key + "\" which is not in progress (" + found +
                         "); call begin() and get started in the same transaction first");
}

}  // namespace outbox
