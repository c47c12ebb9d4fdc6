#include "relay/pg/outbox_rows.hpp"

#include "relay/pg/sql_text.hpp"

#include <nlohmann/json.hpp>

#include <limits>

namespace outbox::relay::pg::detail {

namespace {

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
      "AND NOT " + behind_dead_letter(table, "e") + " ";
  if (excluding)
    sql += "AND NOT EXISTS (SELECT 1 FROM unnest($" + std::to_string(first_excluded) + "::text[], $" +
           std::to_string(first_excluded + 1) + "::text[]) AS x(t, i) "
           "WHERE x.t = e.aggregate_type AND x.i = e.aggregate_id) ";
  return sql;
}

}  // namespace

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

namespace {

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

}  // namespace

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

}  // namespace outbox::relay::pg::detail
