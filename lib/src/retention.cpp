#include "outbox/retention.hpp"

#include <pqxx/result>
#include <pqxx/transaction>

#include <stdexcept>

#include "outbox/sql_names.hpp"

namespace outbox {

namespace {

// Runs `delete_sql` ($1 = batch size, then `extra` if any) once per transaction until a batch
// deletes fewer than batch_size rows or max_batches batches ran.
template <typename... Extra>
PurgeResult purge_batches(pqxx::connection_base& conn, const std::string& delete_sql, std::size_t batch_size,
                          std::size_t max_batches, const Extra&... extra) {
  PurgeResult result;
  for (std::size_t i = 0; i < max_batches; ++i) {
    pqxx::work tx(conn);
    auto r = tx.exec_params(delete_sql, static_cast<long long>(batch_size), extra...);
    tx.commit();
    const auto deleted = static_cast<std::size_t>(r.affected_rows());
    if (deleted == 0) break;
    result.rows += deleted;
    ++result.batches;
    if (deleted < batch_size) break;
  }
  return result;
}

// The subselect picks one batch by ctid (a TID scan, no sort) and locks it, skipping rows a
// service transaction holds; the outer WHERE repeats the predicate so a row updated since
// (an idempotency key taken over) is re-checked on its new version and kept.
std::string batched_delete(const std::string& table, const std::string& predicate) {
  return "DELETE FROM " + table + " WHERE ctid = ANY(ARRAY(SELECT ctid FROM " + table + " WHERE " + predicate +
         " LIMIT $1 FOR UPDATE SKIP LOCKED)) AND " + predicate;
}

void check_batch_size(std::size_t batch_size, const char* what) {
  if (batch_size == 0) throw std::invalid_argument(std::string(what) + ": batch_size must be at least 1");
}

}  // namespace

PurgeResult purge_inbox(pqxx::connection_base& conn, std::chrono::seconds older_than, std::size_t batch_size,
                        std::size_t max_batches, const std::string& schema) {
  check_batch_size(batch_size, "purge_inbox");
  if (older_than.count() < 0)
    throw std::invalid_argument("purge_inbox: older_than must not be negative, got " +
                                std::to_string(older_than.count()) + "s");
  const auto table = qualified_table(schema, "consumer_inbox");
  return purge_batches(conn, batched_delete(table, "processed_at < now() - $2::bigint * interval '1 second'"),
                       batch_size, max_batches, static_cast<long long>(older_than.count()));
}

PurgeResult purge_expired_keys(pqxx::connection_base& conn, std::size_t batch_size, std::size_t max_batches,
                               const std::string& schema) {
  check_batch_size(batch_size, "purge_expired_keys");
  const auto table = qualified_table(schema, "idempotency_keys");
  return purge_batches(conn, batched_delete(table, "expires_at < now()"), batch_size, max_batches);
}

}  // namespace outbox
