#include "relay/pg/pg_status.hpp"

#include <pqxx/pqxx>

#include "relay/pg/pg_errors.hpp"
#include "relay/pg/pg_outbox_store.hpp"

namespace outbox::relay::pg {

struct PgStatus::Session {
  explicit Session(const std::string& conninfo) : conn(conninfo) {}
  pqxx::connection conn;
};

PgStatus::PgStatus(std::string conninfo, std::string schema)
    : conninfo_(std::move(conninfo)),
      table_(quoted_identifier(schema, "database.schema") + ".outbox_events"),
      lanes_(quoted_identifier(schema, "database.schema") + ".outbox_relay_lanes") {}

PgStatus::~PgStatus() = default;

OutboxStatus PgStatus::read() {
  try {
    if (!session_ || !session_->conn.is_open()) session_ = std::make_unique<Session>(conninfo_);
    pqxx::nontransaction tx(session_->conn);
    // The backlog count walks the partial index of pending rows only. The age is the oldest
    // pending row's with a finite created_at (a producer can write 'infinity' or
    // '-infinity', which says nothing about how long the backlog has waited), computed on
    // epochs so no value of the column can make the query fail.
    auto r = tx.exec(
        "SELECT (SELECT count(*) FROM " + table_ + " WHERE published_at IS NULL AND dead_lettered_at IS NULL), "
        "COALESCE((SELECT (extract(epoch FROM now()) - extract(epoch FROM created_at))::float8 FROM " + table_ +
        " WHERE published_at IS NULL AND dead_lettered_at IS NULL AND isfinite(created_at) ORDER BY seq LIMIT 1), 0), "
        "(SELECT count(*) FROM " + table_ + " WHERE dead_lettered_at IS NOT NULL)");
    OutboxStatus s;
    s.backlog = r[0][0].as<long long>();
    s.oldest_unpublished_age_s = std::max(0.0, r[0][1].as<double>());
    s.dead_lettered = r[0][2].as<long long>();
    for (const auto& row : tx.exec("SELECT owner, count(*), greatest(0, extract(epoch FROM now() - min(renewed_at))) "
                                   "FROM " + lanes_ + " WHERE owner IS NOT NULL AND lease_until > now() "
                                   "GROUP BY owner ORDER BY owner"))
      s.owners.push_back({row[0].as<std::string>(), row[1].as<long long>(), row[2].as<double>()});
    s.unowned_lanes = tx.exec("SELECT count(*) FROM " + lanes_ + " WHERE owner IS NULL OR lease_until <= now()")[0][0]
                          .as<long long>();
    return s;
  } catch (...) {
    session_.reset();
    rethrow_translated("reading the outbox status");
  }
}

}  // namespace outbox::relay::pg
