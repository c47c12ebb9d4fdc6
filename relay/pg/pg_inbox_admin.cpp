#include "relay/pg/pg_inbox_admin.hpp"

#include <pqxx/pqxx>

#include "relay/pg/pg_session.hpp"
#include "relay/pg/sql_text.hpp"

namespace outbox::relay::pg {
namespace {

constexpr const char* kColumns =
    "seq, event_id, topic, partition, \"offset\", key, event_type, payload, headers::text, "
    "to_char(received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), "
    "to_char(processed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), "
    "to_char(next_attempt_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), last_error, "
    "to_char(dead_lettered_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), attempts";

std::optional<std::string> opt(const pqxx::field& f) {
  if (f.is_null()) return std::nullopt;
  return f.as<std::string>();
}

std::optional<std::string> bytes(const pqxx::field& f) {
  if (f.is_null()) return std::nullopt;
  pqxx::binarystring b(f);
  return b.str();
}

InboxEventRow decode(const pqxx::row& r) {
  InboxEventRow e;
  e.seq = r[0].as<std::int64_t>();
  e.event_id = r[1].as<std::string>();
  e.topic = r[2].as<std::string>();
  e.partition = r[3].as<std::int32_t>();
  e.offset = r[4].as<std::int64_t>();
  e.key = bytes(r[5]);
  e.event_type = opt(r[6]);
  e.payload = bytes(r[7]);
  e.headers = r[8].as<std::string>();
  e.received_at = r[9].as<std::string>();
  e.processed_at = opt(r[10]);
  e.next_attempt_at = opt(r[11]);
  e.last_error = opt(r[12]);
  e.dead_lettered_at = opt(r[13]);
  e.attempts = r[14].as<int>();
  return e;
}

std::vector<std::int64_t> seq_list(const pqxx::result& r) {
  std::vector<std::int64_t> out;
  for (const auto& row : r) out.push_back(row[0].as<std::int64_t>());
  return out;
}

}  // namespace

PgInboxAdmin::PgInboxAdmin(std::string conninfo, std::string schema, std::string inbox)
    : schema_(quoted_identifier(schema, "database.schema")),
      inbox_(std::move(inbox)),
      session_(std::make_unique<PgSession>(std::move(conninfo), "the inbox CLI session")) {}

PgInboxAdmin::~PgInboxAdmin() = default;

InboxStatus PgInboxAdmin::status() {
  return session_->run("reading the inbox status", [&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    InboxStatus s;
    auto b = tx.exec_params("SELECT pending, retrying, dead_lettered, held_back, oldest_age_s FROM " + schema_ +
                                ".inbox_backlog($1)",
                            inbox_)[0];
    s.backlog = {b[0].as<std::int64_t>(), b[1].as<std::int64_t>(), b[2].as<std::int64_t>(), b[3].as<std::int64_t>(),
                 b[4].as<double>()};
    auto t = tx.exec_params(
        "SELECT count(*), count(processed_at), "
        "to_char(max(received_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
        "to_char(max(processed_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM " +
            schema_ + ".inbox_events WHERE inbox = $1",
        inbox_)[0];
    s.rows = t[0].as<std::int64_t>();
    s.processed = t[1].as<std::int64_t>();
    s.last_received_at = opt(t[2]);
    s.last_processed_at = opt(t[3]);
    for (const auto& r : tx.exec_params("SELECT topic, partition, max(\"offset\"), count(*) FROM " + schema_ +
                                            ".inbox_events WHERE inbox = $1 GROUP BY topic, partition ORDER BY 1, 2",
                                        inbox_))
      s.sources.push_back({r[0].as<std::string>(), r[1].as<std::int32_t>(), r[2].as<std::int64_t>(), r[3].as<std::int64_t>()});
    return s;
  });
}

std::pair<std::vector<InboxEventRow>, std::int64_t> PgInboxAdmin::dead_letters(std::int64_t limit) {
  return session_->run("listing inbox dead letters", [&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    std::vector<InboxEventRow> rows;
    for (const auto& r :
         tx.exec_params(std::string("SELECT ") + kColumns + " FROM " + schema_ +
                            ".inbox_events WHERE inbox = $1 AND dead_lettered_at IS NOT NULL AND processed_at IS NULL "
                            "ORDER BY seq LIMIT CASE WHEN $2 > 0 THEN $2 END",
                        inbox_, limit))
      rows.push_back(decode(r));
    const auto total = tx.exec_params("SELECT count(*) FROM " + schema_ +
                                          ".inbox_events WHERE inbox = $1 AND dead_lettered_at IS NOT NULL "
                                          "AND processed_at IS NULL",
                                      inbox_)[0][0]
                           .as<std::int64_t>();
    return std::pair{std::move(rows), total};
  });
}

std::optional<InboxEventRow> PgInboxAdmin::find(const std::optional<std::int64_t>& seq,
                                                const std::optional<std::string>& event_id) {
  return session_->run("reading an inbox event", [&](pqxx::connection& c) -> std::optional<InboxEventRow> {
    pqxx::read_transaction tx(c);
    auto r = seq ? tx.exec_params(std::string("SELECT ") + kColumns + " FROM " + schema_ +
                                      ".inbox_events WHERE inbox = $1 AND seq = $2",
                                  inbox_, *seq)
                 : tx.exec_params(std::string("SELECT ") + kColumns + " FROM " + schema_ +
                                      ".inbox_events WHERE inbox = $1 AND event_id = $2",
                                  inbox_, event_id.value_or(""));
    if (r.empty()) return std::nullopt;
    return decode(r[0]);
  });
}

std::vector<std::int64_t> PgInboxAdmin::requeue(const std::optional<std::vector<std::int64_t>>& seqs) {
  return session_->run("requeueing inbox dead letters", [&](pqxx::connection& c) {
    pqxx::work tx(c);
    auto r = seqs ? tx.exec_params("SELECT * FROM " + schema_ + ".inbox_requeue($1, $2::bigint[])", inbox_,
                                   bigint_array_literal(*seqs))
                  : tx.exec_params("SELECT * FROM " + schema_ + ".inbox_requeue($1, NULL)", inbox_);
    tx.commit();
    return seq_list(r);
  });
}

std::vector<std::int64_t> PgInboxAdmin::skip(const std::vector<std::int64_t>& seqs) {
  return session_->run("skipping inbox dead letters", [&](pqxx::connection& c) {
    pqxx::work tx(c);
    auto r = tx.exec_params("SELECT * FROM " + schema_ + ".inbox_skip($1, $2::bigint[])", inbox_, bigint_array_literal(seqs));
    tx.commit();
    return seq_list(r);
  });
}

std::vector<std::int64_t> PgInboxAdmin::seqs_of(const std::vector<std::string>& event_ids) {
  return session_->run("finding inbox events", [&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    return seq_list(tx.exec_params("SELECT seq FROM " + schema_ +
                                       ".inbox_events WHERE inbox = $1 AND event_id = ANY($2::text[]) ORDER BY seq",
                                   inbox_, text_array_literal(event_ids)));
  });
}

}  // namespace outbox::relay::pg
