#include "relay/pg/pg_status.hpp"

#include <pqxx/pqxx>

#include "relay/pg/pg_session.hpp"
#include "relay/pg/sql_text.hpp"

namespace outbox::relay::pg {

PgStatus::PgStatus(std::string conninfo, std::string schema)
    : table_(quoted_identifier(schema, "database.schema") + ".outbox_events"),
      lanes_(quoted_identifier(schema, "database.schema") + ".outbox_relay_lanes"),
      session_(std::make_unique<PgSession>(std::move(conninfo), "the status reader")) {}

PgStatus::~PgStatus() = default;

OutboxStatus PgStatus::read() {
  return session_->run("reading the outbox status", [this](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
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
  });
}

}  // namespace outbox::relay::pg
