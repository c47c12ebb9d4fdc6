#include "relay/pg/pg_outbox_store.hpp"

#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include <algorithm>
#include <cctype>
#include <limits>
#include <set>

#include "relay/core/errors.hpp"
#include "relay/pg/pg_errors.hpp"

namespace outbox::relay::pg {
namespace {

constexpr const char* kFetch = "outbox_fetch";
constexpr const char* kFetchExcluding = "outbox_fetch_excluding";
constexpr const char* kMark = "outbox_mark";
constexpr const char* kFail = "outbox_fail";

// Columns the relay reads or writes; verify_schema() checks them all.
const std::set<std::string> kRequiredColumns{
    "seq",     "id",           "aggregate_type", "aggregate_id", "event_type",      "payload",
    "headers", "topic",        "published_at",   "attempts",     "next_attempt_at", "last_error",
    "dead_lettered_at", "created_at"};

std::string fetch_sql(const std::string& schema, bool excluding) {
  const std::string table = schema + ".outbox_events";
  const std::string lane = schema + ".outbox_lane(e.aggregate_type, e.aggregate_id)";
  // Rows of an aggregate wait behind an earlier dead-lettered event (operator action needed);
  // rows before it still flow (say the operator requeued an earlier one of two dead letters).
  // $3: the lanes this instance holds (NULL: all of them).
  std::string sql =
      "SELECT e.seq, e.id::text, e.aggregate_type, e.aggregate_id, e.event_type, e.payload, "
      "e.headers::text, e.topic, e.attempts, "
      "CASE WHEN e.next_attempt_at > now() "
      "THEN ceil(extract(epoch FROM e.next_attempt_at - now()) * 1000)::bigint ELSE 0 END, "
      "greatest(0, extract(epoch FROM now() - e.created_at) * 1000000)::bigint, " + lane + " "
      "FROM " + table + " e "
      "WHERE e.published_at IS NULL AND e.dead_lettered_at IS NULL AND e.seq > $1 "
      "AND ($3::int[] IS NULL OR " + lane + " = ANY($3::int[])) "
      "AND NOT EXISTS (SELECT 1 FROM " + table + " d WHERE d.dead_lettered_at IS NOT NULL "
      "AND d.aggregate_type = e.aggregate_type AND d.aggregate_id = e.aggregate_id AND d.seq < e.seq) ";
  if (excluding)
    sql += "AND NOT EXISTS (SELECT 1 FROM unnest($4::text[], $5::text[]) AS x(t, i) "
           "WHERE x.t = e.aggregate_type AND x.i = e.aggregate_id) ";
  sql += "ORDER BY e.seq LIMIT $2";
  return sql;
}

// Marks and failures land only on rows whose lane this instance still holds (fencing): an
// instance that lost a lane matches no row. Without an owner (a store used alone, in tests
// and tools) nothing is fenced.
// The held lanes are read once per statement (an InitPlan), not joined: a join's plan depends
// on the lanes table's statistics, and with none (a fresh deployment) the planner picked a
// nested loop that rescanned the batch once per lane (about 25x slower).
std::string fence(const std::string& schema, const std::string& owner_param) {
  return " AND " + schema + ".outbox_lane(e.aggregate_type, e.aggregate_id) = ANY(ARRAY(SELECT lane FROM " + schema +
         ".outbox_relay_lanes WHERE owner = " + owner_param + " AND lease_until > now()))";
}

// Row headers are a JSON object; string values pass as they are, others as their JSON text.
std::optional<std::string> decode_headers(const std::string& text, std::vector<Header>& out) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return "headers column is not a JSON object";
  out.reserve(j.size());
  for (auto it = j.begin(); it != j.end(); ++it)
    out.emplace_back(it.key(), it->is_string() ? it->get<std::string>() : it->dump());
  return std::nullopt;
}

}  // namespace

std::string quoted_identifier(const std::string& name, const std::string& key) {
  bool ok = !name.empty() && name.size() <= 63 &&
            (std::isalpha(static_cast<unsigned char>(name[0])) || name[0] == '_') &&
            std::all_of(name.begin(), name.end(), [](char c) {
              return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '$';
            });
  if (!ok)
    throw ConfigError(key + ": \"" + name +
                      "\" is not a plain SQL identifier (letters, digits, _ and $, at most 63)");
  return "\"" + name + "\"";
}

std::string bigint_array_literal(std::span<const std::int64_t> values) {
  std::string s = "{";
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(values[i]);
  }
  return s + "}";
}

std::string int_array_literal(std::span<const int> values) {
  std::string s = "{";
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(values[i]);
  }
  return s + "}";
}

std::string text_array_literal(const std::vector<std::string>& values) {
  std::string s = "{";
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i) s += ',';
    s += '"';
    for (char c : values[i]) {
      if (c == '"' || c == '\\') s += '\\';
      s += c;
    }
    s += '"';
  }
  return s + "}";
}

PgOutboxStore::PgOutboxStore(PgStoreOptions options) : options_(std::move(options)) {
  (void)quoted_identifier(options_.schema, "database.schema");  // validate early
}

PgOutboxStore::~PgOutboxStore() = default;

void PgOutboxStore::reset() { conn_.reset(); }

struct PgOutboxStore::Session {
  explicit Session(const std::string& conninfo) : conn(conninfo) {}
  pqxx::connection conn;
};

PgOutboxStore::Session& PgOutboxStore::session() {
  if (conn_ && conn_->conn.is_open()) return *conn_;
  conn_.reset();
  try {
    auto session = std::make_unique<Session>(options_.conninfo);
    pqxx::connection* c = &session->conn;
    const std::string schema = quoted_identifier(options_.schema, "database.schema");
    const std::string table = schema + ".outbox_events";
    const bool fenced = !options_.owner.empty();
    c->prepare(kFetch, fetch_sql(schema, false));
    c->prepare(kFetchExcluding, fetch_sql(schema, true));
    if (options_.mark_mode == MarkMode::update)
      c->prepare(kMark, "UPDATE " + table + " e SET published_at = now()"
                            " WHERE e.seq = ANY($1::bigint[]) AND e.published_at IS NULL" +
                            (fenced ? fence(schema, "$2") : ""));
    else
      c->prepare(kMark, "DELETE FROM " + table + " e"
                            " WHERE e.seq = ANY($1::bigint[])" + (fenced ? fence(schema, "$2") : ""));
    c->prepare(kFail,
               "UPDATE " + table +
                   " e SET attempts = $2, last_error = $3, "
                   "next_attempt_at = CASE WHEN $5 THEN NULL ELSE now() + $4 * interval '1 millisecond' END, "
                   "dead_lettered_at = CASE WHEN $5 THEN now() ELSE NULL END"
                   " WHERE e.seq = $1 AND e.published_at IS NULL" + (fenced ? fence(schema, "$6") : ""));
    conn_ = std::move(session);
    if (sessions_opened_++ > 0) ++reconnects_;
  } catch (...) {
    rethrow_translated("connecting to PostgreSQL");
  }
  return *conn_;
}

void PgOutboxStore::verify_schema() {
  auto& c = session().conn;
  try {
    pqxx::nontransaction tx(c);
    auto r = tx.exec_params(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'outbox_events'",
        options_.schema);
    if (r.empty())
      throw SchemaError("table " + options_.schema +
                        ".outbox_events does not exist (or the relay role cannot see it); run `outbox-relay migrate`");
    std::set<std::string> have;
    for (const auto& row : r) have.insert(row[0].as<std::string>());
    std::string missing;
    for (const auto& col : kRequiredColumns)
      if (!have.contains(col)) missing += (missing.empty() ? "" : ", ") + col;
    if (!missing.empty())
      throw SchemaError("table " + options_.schema + ".outbox_events lacks columns: " + missing +
                        "; run `outbox-relay migrate`, or restore them as schema/migrations/0001_outbox_events.sql "
                        "defines them if the table was altered after migrating");
  } catch (const FatalError&) {
    throw;
  } catch (...) {
    reset();
    rethrow_translated("checking the outbox table");
  }
}

std::vector<OutboxEvent> PgOutboxStore::fetch(const FetchRequest& request) {
  auto& c = session().conn;
  std::vector<OutboxEvent> events;
  try {
    pqxx::nontransaction tx(c);
    const std::int64_t after = request.after_seq.value_or(std::numeric_limits<std::int64_t>::min());
    const auto limit = static_cast<std::int64_t>(request.limit);
    std::optional<std::string> lanes;
    if (request.lanes) lanes = int_array_literal(*request.lanes);
    pqxx::result r;
    if (request.exclude.empty()) {
      r = tx.exec_prepared(kFetch, after, limit, lanes);
    } else {
      std::vector<std::string> types, ids;
      types.reserve(request.exclude.size());
      ids.reserve(request.exclude.size());
      for (const auto& k : request.exclude) {
        types.push_back(k.type);
        ids.push_back(k.id);
      }
      r = tx.exec_prepared(kFetchExcluding, after, limit, lanes, text_array_literal(types), text_array_literal(ids));
    }
    events.reserve(r.size());
    for (const auto& row : r) {
      OutboxEvent& e = events.emplace_back();
      e.seq = row[0].as<std::int64_t>();
      e.id = row[1].as<std::string>();
      e.aggregate_type = row[2].as<std::string>();
      e.aggregate_id = row[3].as<std::string>();
      e.event_type = row[4].as<std::string>();
      if (!row[5].is_null()) e.payload = pqxx::binarystring(row[5]).str();
      e.defect = decode_headers(row[6].as<std::string>(), e.headers);
      if (!row[7].is_null()) e.topic = row[7].as<std::string>();
      e.attempts = row[8].as<int>();
      e.retry_in = std::chrono::milliseconds(row[9].as<std::int64_t>());
      e.age = std::chrono::microseconds(row[10].as<std::int64_t>());
      e.lane = row[11].as<int>();
    }
  } catch (...) {
    reset();
    rethrow_translated("fetching unpublished outbox rows");
  }
  return events;
}

void PgOutboxStore::mark_published(std::span<const std::int64_t> seqs) {
  if (seqs.empty()) return;
  auto& c = session().conn;
  try {
    pqxx::nontransaction tx(c);
    auto r = options_.owner.empty() ? tx.exec_prepared(kMark, bigint_array_literal(seqs))
                                    : tx.exec_prepared(kMark, bigint_array_literal(seqs), options_.owner);
    if (r.affected_rows() < seqs.size()) marks_unmatched_ += seqs.size() - r.affected_rows();
  } catch (...) {
    reset();
    rethrow_translated("marking outbox rows published");
  }
}

void PgOutboxStore::record_failures(std::span<const FailedAttempt> failures) {
  if (failures.empty()) return;
  auto& c = session().conn;
  try {
    pqxx::work tx(c);
    for (const auto& f : failures) {
      std::string error = f.error.substr(0, options_.max_error_length);
      const auto retry_ms = static_cast<std::int64_t>(f.retry_after.count());
      if (options_.owner.empty())
        tx.exec_prepared(kFail, f.seq, f.attempts, error, retry_ms, f.dead_letter);
      else
        tx.exec_prepared(kFail, f.seq, f.attempts, error, retry_ms, f.dead_letter, options_.owner);
    }
    tx.commit();
  } catch (...) {
    reset();
    rethrow_translated("recording failed outbox rows");
  }
}

}  // namespace outbox::relay::pg
