// Shared set-up for tests that need PostgreSQL: a fresh database in the process's throwaway
// cluster, migrated, with helpers to insert events the way a service would.
#pragma once

#include <pqxx/pqxx>

#include <atomic>
#include <string>

#include "relay/pg/pg_conninfo.hpp"
#include "relay/pg/pg_migrator.hpp"
#include "tests/support/pg_cluster.hpp"

namespace outbox::test {

inline std::string fresh_database(PgCluster& cluster = PgCluster::shared()) {
  static std::atomic<int> n{0};
  std::string name = "t" + std::to_string(::getpid()) + "_" + std::to_string(n++);
  cluster.create_database(name);
  std::string url = cluster.conninfo(name);
  relay::pg::PgMigrator(url, "public").migrate();
  return url;
}

// Inserts `count` events spread over `aggregates` aggregates, each in its own transaction
// unless `one_transaction`. Returns nothing: tests read ids back from the table.
inline void insert_events(const std::string& url, int count, int aggregates, const std::string& type = "order",
                          std::size_t payload_bytes = 200) {
  pqxx::connection c(url);
  pqxx::work tx(c);
  tx.exec_params(
      "INSERT INTO outbox_events (aggregate_type, aggregate_id, event_type, payload, headers) "
      "SELECT $1, 'agg-' || (g % $3), 'created', convert_to(repeat('x', $4), 'UTF8'), "
      "jsonb_build_object('n', g::text) FROM generate_series(1, $2) AS g",
      type, count, aggregates, static_cast<int>(payload_bytes));
  tx.commit();
}

// Runs one statement in its own transaction (test set-up the way an operator or service would).
inline void exec(const std::string& url, const std::string& sql) {
  pqxx::connection c(url);
  pqxx::work tx(c);
  tx.exec(sql);
  tx.commit();
}

inline long scalar(const std::string& url, const std::string& sql) {
  pqxx::connection c(url);
  pqxx::nontransaction tx(c);
  return tx.exec(sql)[0][0].as<long>();
}

}  // namespace outbox::test
