#include "relay/pg/pg_retention.hpp"

#include <pqxx/pqxx>

#include <condition_variable>
#include <limits>
#include <mutex>

#include "outbox/retention.hpp"
#include "relay/core/errors.hpp"
#include "relay/pg/pg_conninfo.hpp"
#include "relay/pg/pg_session.hpp"
#include "relay/pg/sql_text.hpp"

namespace outbox::relay::pg {

PgRetention::PgRetention(RetentionOptions options)
    : options_(std::move(options)),
      schema_(quoted_identifier(options_.schema, "database.schema")),
      session_(std::make_unique<PgSession>(options_.conninfo, "the retention session")) {
  if (options_.batch_size == 0) throw ConfigError("retention.batch_size: must be at least 1");
}

PgRetention::~PgRetention() = default;

// One outbox_purge_published() call per batch (migration 0005: it walks the primary key from
// the oldest row, deletes published rows past the window, and says when the walk reached rows
// created inside it), each in its own short transaction.
std::size_t PgRetention::purge_published(pqxx::connection_base& c) {
  const std::string sql = "SELECT deleted, scanned, last_seq, reached_window FROM " + schema_ +
                          ".outbox_purge_published($1, $2, $3)";
  std::size_t deleted = 0;
  std::int64_t after = std::numeric_limits<std::int64_t>::min();
  for (std::size_t i = 0; i < options_.max_batches; ++i) {
    pqxx::work tx(c);
    auto r = tx.exec_params(sql, after, static_cast<int>(options_.batch_size),
                            static_cast<long long>(options_.published_window.count()));
    tx.commit();
    deleted += r[0][0].as<std::size_t>();
    if (r[0][1].as<std::size_t>() < options_.batch_size || r[0][3].as<bool>()) break;
    after = r[0][2].as<std::int64_t>();
  }
  return deleted;
}

RetentionPass PgRetention::run_once() {
  return session_->run("removing old rows (retention)", [this](pqxx::connection& c) {
    RetentionPass pass;
    if (options_.published_window.count() > 0) pass.published_deleted = purge_published(c);
    if (options_.inbox_window.count() > 0) {
      pqxx::nontransaction tx(c);
      auto exists = tx.exec_params("SELECT to_regclass($1) IS NOT NULL", schema_ + ".consumer_inbox");
      tx.commit();
      if (!exists[0][0].as<bool>())
        throw FatalError("retention.inbox_hours is set but " + options_.schema +
                         ".consumer_inbox does not exist; run `outbox-relay migrate` or set it to 0");
      pass.inbox_deleted =
          purge_inbox(c, options_.inbox_window, options_.batch_size, options_.max_batches, options_.schema).rows;
    }
    return pass;
  });
}

void PgRetention::run_every(std::chrono::seconds every, std::stop_token halt, std::atomic<std::uint64_t>& deleted_total,
                            Logger& logger) {
  std::mutex m;
  std::condition_variable_any cv;
  for (bool failing = false; !halt.stop_requested();) {
    try {
      auto pass = run_once();
      deleted_total += pass.published_deleted + pass.inbox_deleted;
      if (pass.published_deleted + pass.inbox_deleted > 0 || failing)
        logger.log(LogLevel::info, "retention_pass",
                   {{"published_deleted", std::to_string(pass.published_deleted)},
                    {"inbox_deleted", std::to_string(pass.inbox_deleted)}});
      failing = false;
    } catch (const TransientError& e) {
      if (!failing) logger.log(LogLevel::warn, "retention_failed", {{"error", redact_conninfo(e.what())}});
      failing = true;
    } catch (const FatalError& e) {
      logger.log(LogLevel::error, "retention_disabled", {{"error", e.what()}});
      return;
    }
    std::unique_lock lock(m);
    cv.wait_for(lock, halt, every, [] { return false; });
  }
}

}  // namespace outbox::relay::pg
