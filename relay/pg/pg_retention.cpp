#include "relay/pg/pg_retention.hpp"

#include <pqxx/pqxx>

#include <limits>

#include "outbox/retention.hpp"
#include "relay/core/errors.hpp"
#include "relay/pg/pg_errors.hpp"
#include "relay/pg/pg_outbox_store.hpp"

namespace outbox::relay::pg {

struct PgRetention::Session {
  explicit Session(const std::string& conninfo) : conn(conninfo) {}
  pqxx::connection conn;
};

PgRetention::PgRetention(RetentionOptions options)
    : options_(std::move(options)), table_(quoted_identifier(options_.schema, "database.schema") + ".outbox_events") {
  if (options_.batch_size == 0) throw ConfigError("retention.batch_size: must be at least 1");
}

PgRetention::~PgRetention() = default;

// Walks the primary key from the oldest row, a batch at a time: deletes the published rows
// older than the window and steps over the rest (pending or dead-lettered rows stay). The
// walk ends at the first row created inside the window: seq follows insertion, so nothing
// after it can be old enough. No sort, no extra index, no lock on unpublished rows.
std::size_t PgRetention::purge_published() {
  const std::string sql =
      "WITH scan AS (SELECT seq, created_at, published_at FROM " + table_ + " WHERE seq > $1 ORDER BY seq LIMIT $2), "
      "cutoff AS (SELECT now() - $3::bigint * interval '1 second' AS at), "
      "gone AS (DELETE FROM " + table_ + " t USING cutoff WHERE t.seq IN (SELECT seq FROM scan, cutoff "
      "WHERE published_at < cutoff.at) AND t.published_at < cutoff.at RETURNING 1) "
      "SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM scan), (SELECT max(seq) FROM scan), "
      "(SELECT count(*) FROM scan, cutoff WHERE created_at >= cutoff.at)";
  std::size_t deleted = 0;
  std::int64_t after = std::numeric_limits<std::int64_t>::min();
  for (std::size_t i = 0; i < options_.max_batches; ++i) {
    pqxx::work tx(session_->conn);
    auto r = tx.exec_params(sql, after, static_cast<long long>(options_.batch_size),
                            static_cast<long long>(options_.published_window.count()));
    tx.commit();
    deleted += r[0][0].as<std::size_t>();
    const auto scanned = r[0][1].as<std::size_t>();
    if (scanned < options_.batch_size || r[0][3].as<long long>() > 0) break;
    after = r[0][2].as<std::int64_t>();
  }
  return deleted;
}

RetentionPass PgRetention::run_once() {
  RetentionPass pass;
  try {
    if (!session_ || !session_->conn.is_open()) session_ = std::make_unique<Session>(options_.conninfo);
    if (options_.published_window.count() > 0) pass.published_deleted = purge_published();
    if (options_.inbox_window.count() > 0) {
      pqxx::nontransaction tx(session_->conn);
      auto exists = tx.exec_params("SELECT to_regclass($1) IS NOT NULL",
                                   quoted_identifier(options_.schema, "database.schema") + ".consumer_inbox");
      tx.commit();
      if (!exists[0][0].as<bool>())
        throw FatalError("retention.inbox_hours is set but " + options_.schema +
                         ".consumer_inbox does not exist; run `outbox-relay migrate` or set it to 0");
      pass.inbox_deleted =
          purge_inbox(session_->conn, options_.inbox_window, options_.batch_size, options_.max_batches, options_.schema)
              .rows;
    }
  } catch (const FatalError&) {
    throw;
  } catch (...) {
    session_.reset();
    rethrow_translated("removing old rows (retention)");
  }
  return pass;
}

}  // namespace outbox::relay::pg
