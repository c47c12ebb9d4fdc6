#include "relay/pg/pg_outbox_store.hpp"

#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include <algorithm>
#include <cctype>
#include <limits>
#include <set>
#include <tuple>

#include "relay/core/errors.hpp"
#include "relay/pg/pg_errors.hpp"

namespace outbox::relay::pg {
namespace {

constexpr const char* kFetch = "outbox_fetch";
constexpr const char* kFetchExcluding = "outbox_fetch_excluding";
constexpr const char* kSample = "outbox_settled_sample";
constexpr const char* kMark = "outbox_mark";
constexpr const char* kFail = "outbox_fail";

// Columns the relay reads or writes; verify_schema() checks them all.
const std::set<std::string> kRequiredColumns{
    "seq",     "id",           "aggregate_type", "aggregate_id", "event_type",      "payload",
    "headers", "topic",        "published_at",   "attempts",     "next_attempt_at", "last_error",
    "dead_lettered_at", "created_at"};

// Longest aggregate type, aggregate id, event type or topic the relay reads (64 KiB): a
// longer one is a bad row, and only a digest of it leaves the database.
constexpr long kMaxIdentityBytes = 65'536;

// `col` as read, or a digest when it is too long (the row is then a bad row; aggregates stay
// apart by the digest, so blocking one never blocks another).
std::string capped(const std::string& col) {
  return "CASE WHEN octet_length(" + col + ") <= " + std::to_string(kMaxIdentityBytes) + " THEN " + col +
         " ELSE 'oversized:' || md5(" + col + ") END";
}

// Headers stored uncompressed in under 2 kB are read without measuring their text first (their
// text is a few kB at most); others are measured.
const std::string small_headers = "(pg_column_size(e.headers) < 2048 AND pg_column_compression(e.headers) IS NULL)";

// Why a row is too big to read in full, or '' (parameters: payload and headers text limits).
std::string oversize_reasons(const std::string& payload_cap, const std::string& headers_cap) {
  auto identity = [](const std::string& col) {
    return "CASE WHEN octet_length(e." + col + ") > " + std::to_string(kMaxIdentityBytes) + " THEN '" + col +
           " is ' || octet_length(e." + col + ") || ' bytes, limit " + std::to_string(kMaxIdentityBytes) + "' END";
  };
  return "concat_ws('; ', " + identity("aggregate_type") + ", " + identity("aggregate_id") + ", " +
         identity("event_type") + ", " + identity("topic") +
         ", CASE WHEN octet_length(e.payload) > " + payload_cap + "::integer THEN 'payload is ' || "
         "octet_length(e.payload) || ' bytes, limit ' || " + payload_cap + "::integer || "
         "' (the producer''s message.max.bytes)' END"
         ", CASE WHEN NOT " + small_headers + " AND octet_length(e.headers::text) > " + headers_cap +
         "::integer THEN 'headers are ' || "
         "octet_length(e.headers::text) || ' bytes of JSON, limit ' || " + headers_cap + "::integer END)";
}

// The columns of a fetched row, in the order decode_row() reads them. Every expression holds
// for any value the columns can hold (contract 9): infinite and extreme timestamps are
// clamped, never subtracted as timestamps ('cannot subtract infinite timestamps'), and nothing
// overflows a bigint. Parameters: the read-ahead cursor (bigint's minimum for a head scan),
// the payload and the headers text limits.
std::string fetch_columns(const std::string& schema, const std::string& after, const std::string& payload_cap,
                          const std::string& headers_cap, const std::string& settled, const std::string& reopened) {
  const std::string table = schema + ".outbox_events";
  const std::string reopened_now = "(SELECT w.reopened FROM " + schema + ".outbox_relay_wakeup w)";
  // Rows are counted above the prefix settled at the last head scan, unless a row was made
  // unpublished again since (then at any seq).
  const std::string counted_after = "(CASE WHEN " + reopened_now + " <> " + reopened +
                                    "::bigint THEN -9223372036854775808 ELSE " + settled + "::bigint END)";
  return "e.seq, e.id::text, " + capped("e.aggregate_type") + ", " + capped("e.aggregate_id") + ", " +
         capped("e.event_type") + ", "
         "CASE WHEN octet_length(e.payload) <= " + payload_cap + "::integer THEN e.payload END, e.payload IS NULL, "
         "CASE WHEN " + small_headers + " OR octet_length(e.headers::text) <= " + headers_cap +
         "::integer THEN e.headers::text END, " +
         capped("e.topic") + ", "
         "least(greatest(e.attempts, 0), 1000000000), "
         // Due in (ms), by the database clock; 'infinity' becomes a very long wait that the
         // relay's retry policy, which never schedules that far, treats as due now.
         "CASE WHEN e.next_attempt_at > now() THEN "
         "least(ceil((extract(epoch FROM e.next_attempt_at) - extract(epoch FROM now())) * 1000), 1e15)::bigint "
         "ELSE 0 END, "
         // Age (us) since created_at: 0 for one in the future, at most ~31 years.
         "(greatest(0, least(extract(epoch FROM now()) - extract(epoch FROM e.created_at), 1e9)) * 1000000)::bigint, " +
         schema + ".outbox_lane(e.aggregate_type, e.aggregate_id), "
         // Read ahead only: the aggregate's unpublished rows behind the cursor (through the
         // index of pending rows per aggregate, migration 0007).
         "CASE WHEN " + after + "::bigint > -9223372036854775808 AND " + counted_after + " < " + after +
         "::bigint THEN (SELECT count(*) FROM " + table + " p "
         "WHERE p.published_at IS NULL AND p.dead_lettered_at IS NULL AND p.aggregate_type = e.aggregate_type "
         "AND p.aggregate_id = e.aggregate_id AND p.seq > " + counted_after + " AND p.seq <= " + after +
         "::bigint) ELSE 0 END, " +
         oversize_reasons(payload_cap, headers_cap) + ", "
         // The statement's snapshot (its oldest running transaction) and the reopen count: what
         // the store needs to know which prefix is settled (see PgOutboxStore::start_run).
         "(SELECT pg_snapshot_xmin(pg_current_snapshot())::text), " + reopened_now + ", " + counted_after;
}

// Which rows a fetch returns: $1 cursor, $3 lanes or NULL, then (when excluding) the excluded
// aggregates' types and ids as parameters `first_excluded` and the one after it.
std::string fetch_where(const std::string& schema, bool excluding, int first_excluded) {
  const std::string table = schema + ".outbox_events";
  const std::string lane = schema + ".outbox_lane(e.aggregate_type, e.aggregate_id)";
  // Rows of an aggregate wait behind an earlier dead-lettered event (operator action needed);
  // rows before it still flow (say the operator requeued an earlier one of two dead letters).
  std::string sql =
      "WHERE e.published_at IS NULL AND e.dead_lettered_at IS NULL AND e.seq > $1 "
      "AND ($3::int[] IS NULL OR " + lane + " = ANY($3::int[])) "
      "AND NOT EXISTS (SELECT 1 FROM " + table + " d WHERE d.dead_lettered_at IS NOT NULL "
      "AND d.aggregate_type = e.aggregate_type AND d.aggregate_id = e.aggregate_id AND d.seq < e.seq) ";
  if (excluding)
    sql += "AND NOT EXISTS (SELECT 1 FROM unnest($" + std::to_string(first_excluded) + "::text[], $" +
           std::to_string(first_excluded + 1) + "::text[]) AS x(t, i) "
           "WHERE x.t = e.aggregate_type AND x.i = e.aggregate_id) ";
  return sql;
}

// $1 cursor, $2 limit, $3 lanes, $4 payload limit, $5 headers limit, $6 settled prefix, $7
// reopen count at the head scan, $8/$9 excluded.
std::string fetch_sql(const std::string& schema, bool excluding) {
  return "SELECT " + fetch_columns(schema, "$1", "$4", "$5", "$6", "$7") + " FROM " + schema + ".outbox_events e " +
         fetch_where(schema, excluding, 8) + "ORDER BY e.seq LIMIT $2";
}

// When a fetch fails on a row's content, the rows it would have returned, by seq only ($1
// cursor, $2 limit, $3 lanes, $4/$5 excluded): nothing here computes on a column's value.
std::string fetch_seqs_sql(const std::string& schema, bool excluding) {
  return "SELECT e.seq FROM " + schema + ".outbox_events e " + fetch_where(schema, excluding, 4) +
         "ORDER BY e.seq LIMIT $2";
}

// One row, as fetch_sql reads it ($1 cursor, $2 payload limit, $3 headers limit, $4 settled
// prefix, $5 reopen count, $6 seq).
std::string fetch_one_sql(const std::string& schema) {
  return "SELECT " + fetch_columns(schema, "$1", "$2", "$3", "$4", "$5") + " FROM " + schema +
         ".outbox_events e WHERE e.seq = $6";
}

// The sequence's last value handed out, the snapshot's xmax and the transaction ids in use,
// read in that order (the correlated subquery runs after the sequence row was read).
std::string sample_sql(const std::string& sequence) {
  return "SELECT CASE WHEN s.is_called THEN s.last_value ELSE s.last_value - 1 END, "
         "pg_snapshot_xmax(pg_current_snapshot())::text, "
         "ARRAY(SELECT a.backend_xid::text FROM pg_stat_activity a WHERE a.backend_xid IS NOT NULL "
         "AND s.last_value IS NOT NULL) FROM " + sequence + " s";
}

// A 32-bit transaction id in use now as a 64-bit one, given the snapshot's 64-bit xmax (ids in
// use are within 2^31 of it).
std::int64_t widen_xid(std::uint32_t xid, std::int64_t xmax8) {
  const auto low = static_cast<std::uint32_t>(static_cast<std::uint64_t>(xmax8) & 0xffffffffU);
  const auto delta = static_cast<std::int32_t>(xid - low);
  return xmax8 + delta;
}

// A statement that failed because of a value it computed on (data exception, class 22; a
// limit a value exceeded, class 54): the row's problem, not the database's.
bool row_content_error(const pqxx::sql_error& e) {
  const std::string state = e.sqlstate();
  return state.starts_with("22") || state.starts_with("54");
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

// At most `max` bytes of `text`, cut at a character boundary, with any invalid UTF-8 replaced:
// an error message quotes row content, and half a character would make PostgreSQL refuse the
// UPDATE that records the failure (invalid byte sequence), retried for ever.
std::string utf8_prefix(const std::string& text, std::size_t max) {
  std::string out;
  out.reserve(std::min(text.size(), max));
  for (std::size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    std::size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    bool valid = n > 0 && i + n <= text.size() && c != 0;
    for (std::size_t k = 1; valid && k < n; ++k) valid = (static_cast<unsigned char>(text[i + k]) & 0xc0) == 0x80;
    const std::string piece = valid ? text.substr(i, n) : std::string("?");
    if (out.size() + piece.size() > max) break;
    out += piece;
    i += valid ? n : 1;
  }
  return out;
}

// Row headers are a JSON object; string values pass as they are, null as a null value,
// others as their compact JSON text.
std::optional<std::string> decode_headers(const std::string& text, std::vector<Header>& out) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return "headers column is not a JSON object";
  out.reserve(j.size());
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it->is_null())
      out.emplace_back(it.key(), std::nullopt);
    else
      out.emplace_back(it.key(), it->is_string() ? it->get<std::string>() : it->dump());
  }
  return std::nullopt;
}

// One fetched row (columns as fetch_columns() lists them) as the core's event. A column the
// schema says cannot be NULL but is (the table was altered) makes a bad row, not an error.
OutboxEvent decode_row(const pqxx::row& row) {
  OutboxEvent e;
  std::string defects;
  auto defect = [&](const std::string& d) { defects += (defects.empty() ? "" : "; ") + d; };
  auto text = [&](int i, const char* name) {
    if (!row[i].is_null()) return row[i].as<std::string>();
    defect(std::string(name) + " is NULL");
    return std::string();
  };
  e.seq = row[0].as<std::int64_t>();
  e.id = text(1, "id");
  e.aggregate_type = text(2, "aggregate_type");
  e.aggregate_id = text(3, "aggregate_id");
  e.event_type = text(4, "event_type");
  if (!row[5].is_null()) e.payload = pqxx::binarystring(row[5]).str();
  else if (!row[6].as<bool>()) e.payload = std::string();  // too big to read: a bad row (below)
  if (!row[7].is_null()) {
    if (auto bad = decode_headers(row[7].as<std::string>(), e.headers)) defect(*bad);
  } else {
    defect("headers is NULL or too big");
  }
  if (!row[8].is_null()) e.topic = row[8].as<std::string>();
  e.attempts = row[9].is_null() ? 0 : row[9].as<int>();
  e.retry_in = std::chrono::milliseconds(row[10].is_null() ? 0 : row[10].as<std::int64_t>());
  e.age = std::chrono::microseconds(row[11].is_null() ? 0 : row[11].as<std::int64_t>());
  e.lane = row[12].as<int>();
  e.pending_before = row[13].as<std::int64_t>();
  if (const auto over = row[14].as<std::string>(); !over.empty()) defect("row too big: " + over);
  e.pending_counted_after = row[17].as<std::int64_t>();
  if (!defects.empty()) {
    e.defect = std::move(defects);
    e.headers.clear();
  }
  return e;
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
    // A new session knows nothing settled: count everything until the next head scan. The
    // sequence is looked up at the first fetch (verify_schema first says what is missing).
    samples_.clear();
    settled_ = std::numeric_limits<std::int64_t>::min();
    sequence_.clear();
    sequence_known_ = false;
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
    // Without it every read-ahead row costs a scan of the work list (migration 0007).
    auto index = tx.exec_params("SELECT 1 FROM pg_indexes WHERE schemaname = $1 AND tablename = 'outbox_events' "
                                "AND indexname = 'outbox_events_aggregate_pending'",
                                options_.schema);
    if (index.empty())
      throw SchemaError("index " + options_.schema + ".outbox_events_aggregate_pending is missing; run "
                        "`outbox-relay migrate` (migration 0007; see its file for building it concurrently first)");
    auto triggers = tx.exec_params(
        "SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = "
        "c.relnamespace WHERE n.nspname = $1 AND c.relname = 'outbox_events' AND NOT t.tgisinternal AND "
        "t.tgname IN ('outbox_events_assign_xid', 'outbox_events_reopened') AND t.tgenabled <> 'D'",
        options_.schema);
    if (triggers[0][0].as<int>() != 2)
      throw SchemaError("the triggers outbox_events_assign_xid and outbox_events_reopened on " + options_.schema +
                        ".outbox_events are missing or disabled; run `outbox-relay migrate` (migration 0007)");
    auto readable = tx.exec_params("SELECT has_sequence_privilege(pg_get_serial_sequence($1, 'seq'), 'SELECT')",
                                   quoted_identifier(options_.schema, "database.schema") + ".outbox_events");
    if (!readable[0][0].as<bool>())
      throw FatalError("the relay's role may not read the sequence of " + options_.schema +
                       ".outbox_events.seq; grant it what schema/roles/relay_role.sql grants (SELECT on the sequence)");
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
  const std::int64_t after = request.after_seq.value_or(std::numeric_limits<std::int64_t>::min());
  const auto limit = static_cast<std::int64_t>(request.limit);
  const auto payload_cap = static_cast<int>(options_.max_payload_bytes);
  const auto headers_cap = static_cast<int>(options_.max_headers_bytes);
  std::optional<std::string> lanes;
  if (request.lanes) lanes = int_array_literal(*request.lanes);
  std::vector<std::string> types, ids;
  for (const auto& k : request.exclude) {
    types.push_back(k.type);
    ids.push_back(k.id);
  }
  try {
    pqxx::nontransaction tx(c);
    if (!sequence_known_) {
      // The seq column's sequence, and a first sample the next head scan can use.
      auto seq = tx.exec_params("SELECT pg_get_serial_sequence($1, 'seq')",
                                quoted_identifier(options_.schema, "database.schema") + ".outbox_events")[0][0];
      sequence_ = seq.is_null() ? std::string() : seq.as<std::string>();
      if (!sequence_.empty()) c.prepare(kSample, sample_sql(sequence_));
      sequence_known_ = true;
      sampled_at_ = {};
      sample(tx);
    }
    pqxx::result r = request.exclude.empty()
                         ? tx.exec_prepared(kFetch, after, limit, lanes, payload_cap, headers_cap, settled_, reopened_)
                         : tx.exec_prepared(kFetchExcluding, after, limit, lanes, payload_cap, headers_cap, settled_,
                                            reopened_, text_array_literal(types), text_array_literal(ids));
    events.reserve(r.size());
    for (const auto& row : r) events.push_back(decode_row(row));
    if (!request.after_seq && !r.empty()) start_run(r[0][15].as<std::string>(), r[0][16].as<std::int64_t>());
    sample(tx);
    return events;
  } catch (const pqxx::sql_error& e) {
    if (!row_content_error(e)) {
      reset();
      rethrow_translated("fetching unpublished outbox rows");
    }
    ++isolations_;
  } catch (...) {
    reset();
    rethrow_translated("fetching unpublished outbox rows");
  }
  // Contract 9: one row's content broke the statement. Read the same rows one by one; the one
  // that cannot be read comes back unreadable (dead-lettered at once: no retry changes it) and
  // everything else flows.
  try {
    // Autocommit: each read is a statement of its own, so one that fails leaves the session
    // usable (libpqxx 6.4 does not roll a subtransaction back after a failed exec_params).
    pqxx::nontransaction tx(c);
    const std::string schema = quoted_identifier(options_.schema, "database.schema");
    pqxx::result seqs = request.exclude.empty()
                            ? tx.exec_params(fetch_seqs_sql(schema, false), after, limit, lanes)
                            : tx.exec_params(fetch_seqs_sql(schema, true), after, limit, lanes,
                                             text_array_literal(types), text_array_literal(ids));
    for (const auto& s : seqs) {
      const auto seq = s[0].as<std::int64_t>();
      try {
        auto r = tx.exec_params(fetch_one_sql(schema), after, payload_cap, headers_cap, settled_, reopened_, seq);
        if (!r.empty()) events.push_back(decode_row(r[0]));
      } catch (const pqxx::sql_error& e) {
        if (!row_content_error(e)) throw;
        events.push_back(unreadable_row(tx, schema, seq, e));
      }
    }
  } catch (...) {
    reset();
    rethrow_translated("fetching unpublished outbox rows one by one");
  }
  return events;
}

// Which prefix of seq values is settled: a sample (M, N) taken earlier says every row with
// seq <= M belongs to a transaction with an id below N (a transaction takes its id before its
// seq: migration 0007's trigger). A snapshot whose oldest running transaction is at least N
// sees each of those rows committed or aborted, for good: none can commit late. The head scan
// picks the largest such M for its snapshot; the read-ahead fetches until the next head scan
// count rows only above it. Other databases' long write transactions hold the snapshot's
// xmin back too: then less is settled and more is counted, never less safe.
void PgOutboxStore::start_run(const std::string& snapshot_xmin, std::int64_t reopened) {
  // A settled prefix stays settled (its rows committed or aborted for good; a row made
  // unpublished there again is caught by the reopen count), so it only grows.
  const auto xmin8 = std::stoll(snapshot_xmin);
  for (const auto& s : samples_)
    if (s.below_xid <= xmin8) settled_ = std::max(settled_, s.seq);
  std::erase_if(samples_, [this](const Settle& s) { return s.seq <= settled_; });
  reopened_ = reopened;
}

void PgOutboxStore::sample(pqxx::transaction_base& tx) {
  // A sample every 20 ms is plenty: a settled prefix moves with transactions, not batches.
  const auto now = std::chrono::steady_clock::now();
  if (sequence_.empty() || now - sampled_at_ < std::chrono::milliseconds(20)) return;
  sampled_at_ = now;
  auto r = tx.exec_prepared(kSample)[0];
  const auto seq = r[0].as<std::int64_t>();
  const auto xmax8 = std::stoll(r[1].as<std::string>());
  std::int64_t below = xmax8;
  pqxx::array_parser xids = r[2].as_array();
  for (auto [kind, value] = xids.get_next(); kind != pqxx::array_parser::done; std::tie(kind, value) = xids.get_next())
    if (kind == pqxx::array_parser::string_value)
      below = std::max(below, widen_xid(static_cast<std::uint32_t>(std::stoul(value)), xmax8) + 1);
  if (!samples_.empty() && samples_.back().seq == seq) {
    samples_.back().below_xid = std::min(samples_.back().below_xid, below);  // nothing inserted since
  } else {
    samples_.push_back({seq, below});
    if (samples_.size() > 256) samples_.pop_front();
  }
}

OutboxEvent PgOutboxStore::unreadable_row(pqxx::transaction_base& tx, const std::string& schema, std::int64_t seq,
                                          const std::exception& why) {
  OutboxEvent e;
  e.seq = seq;
  std::string msg = why.what();
  msg = msg.substr(0, msg.find('\n'));
  e.defect = "row cannot be read (" + msg + ")";
  e.unreadable = true;
  // Its aggregate, so the aggregate's later rows wait behind it: plain text columns, read as
  // they are. Should even that fail, the row stands alone.
  e.aggregate_type = "unreadable";
  e.aggregate_id = "seq:" + std::to_string(seq);
  try {
    auto r = tx.exec_params("SELECT e.id::text, e.aggregate_type, e.aggregate_id FROM " + schema +
                                 ".outbox_events e WHERE e.seq = $1",
                             seq);
    if (!r.empty()) {
      e.id = r[0][0].is_null() ? "" : r[0][0].as<std::string>();
      if (!r[0][1].is_null() && !r[0][2].is_null()) {
        e.aggregate_type = r[0][1].as<std::string>();
        e.aggregate_id = r[0][2].as<std::string>();
      }
    }
  } catch (const pqxx::sql_error&) {
  }
  try {
    auto r = tx.exec_params("SELECT " + schema + ".outbox_lane(e.aggregate_type, e.aggregate_id) FROM " + schema +
                                 ".outbox_events e WHERE e.seq = $1",
                             seq);
    if (!r.empty() && !r[0][0].is_null()) e.lane = r[0][0].as<int>();
  } catch (const pqxx::sql_error&) {
  }
  return e;
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
      std::string error = utf8_prefix(f.error, options_.max_error_length);
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
