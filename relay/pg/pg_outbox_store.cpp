#include "relay/pg/pg_outbox_store.hpp"

#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include <algorithm>
#include <cctype>
#include <limits>
#include <set>
#include <tuple>

#include "relay/core/errors.hpp"
#include "relay/pg/outbox_rows.hpp"
#include "relay/pg/pg_session.hpp"
#include "relay/pg/sql_text.hpp"

namespace outbox::relay::pg {
using namespace detail;
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

}  // namespace

PgOutboxStore::PgOutboxStore(PgStoreOptions options)
    : options_(std::move(options)),
      schema_(quoted_identifier(options_.schema, "database.schema")),
      session_(std::make_unique<PgSession>(options_.conninfo, "to PostgreSQL",
                                           [this](pqxx::connection& c) { set_up(c); })) {}

PgOutboxStore::~PgOutboxStore() = default;

std::uint64_t PgOutboxStore::reconnects() const { return session_->reconnects(); }

void PgOutboxStore::set_up(pqxx::connection_base& c) {
  const std::string table = schema_ + ".outbox_events";
  const bool fenced = !options_.owner.empty();
  c.prepare(kFetch, fetch_sql(schema_, false));
  c.prepare(kFetchExcluding, fetch_sql(schema_, true));
  // A new session knows nothing settled: count everything until the next head scan. The
  // sequence is looked up at the first fetch (verify_schema first says what is missing).
  samples_.clear();
  settled_ = std::numeric_limits<std::int64_t>::min();
  sequence_.clear();
  sequence_known_ = false;
  if (options_.mark_mode == MarkMode::update)
    c.prepare(kMark, "UPDATE " + table + " e SET published_at = now()"
                         " WHERE e.seq = ANY($1::bigint[]) AND e.published_at IS NULL" +
                         (fenced ? fence(schema_, "$2") : ""));
  else
    c.prepare(kMark, "DELETE FROM " + table + " e"
                         " WHERE e.seq = ANY($1::bigint[])" + (fenced ? fence(schema_, "$2") : ""));
  c.prepare(kFail,
            "UPDATE " + table +
                " e SET attempts = $2, last_error = $3, "
                "next_attempt_at = CASE WHEN $5 THEN NULL ELSE now() + $4 * interval '1 millisecond' END, "
                "dead_lettered_at = CASE WHEN $5 THEN now() ELSE NULL END"
                " WHERE e.seq = $1 AND e.published_at IS NULL" + (fenced ? fence(schema_, "$6") : ""));
}

void PgOutboxStore::verify_schema() {
  session_->run("checking the outbox table", [this](pqxx::connection& c) {
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
                                   schema_ + ".outbox_events");
    if (!readable[0][0].as<bool>())
      throw FatalError("the relay's role may not read the sequence of " + options_.schema +
                       ".outbox_events.seq; grant it what schema/roles/relay_role.sql grants (SELECT on the sequence)");
  });
}

namespace {

struct FetchParams {
  explicit FetchParams(const FetchRequest& request)
      : after(request.after_seq.value_or(std::numeric_limits<std::int64_t>::min())),
        limit(static_cast<std::int64_t>(request.limit)) {
    if (request.lanes) lanes = int_array_literal(*request.lanes);
    std::vector<std::string> t, i;
    for (const auto& k : request.exclude) {
      t.push_back(k.type);
      i.push_back(k.id);
    }
    types = text_array_literal(t);
    ids = text_array_literal(i);
  }
  std::int64_t after;
  std::int64_t limit;
  std::optional<std::string> lanes;
  std::string types, ids;
};

}  // namespace

std::vector<OutboxEvent> PgOutboxStore::fetch(const FetchRequest& request) {
  const FetchParams p(request);
  const auto payload_cap = static_cast<int>(options_.max_payload_bytes);
  const auto headers_cap = static_cast<int>(options_.max_headers_bytes);
  auto batch = session_->run("fetching unpublished outbox rows",
                             [&](pqxx::connection& c) -> std::optional<std::vector<OutboxEvent>> {
    try {
      pqxx::nontransaction tx(c);
      if (!sequence_known_) {
        // The seq column's sequence, and a first sample the next head scan can use.
        auto seq = tx.exec_params("SELECT pg_get_serial_sequence($1, 'seq')", schema_ + ".outbox_events")[0][0];
        sequence_ = seq.is_null() ? std::string() : seq.as<std::string>();
        if (!sequence_.empty()) c.prepare(kSample, sample_sql(sequence_));
        sequence_known_ = true;
        sampled_at_ = {};
        sample(tx);
      }
      pqxx::result r =
          request.exclude.empty()
              ? tx.exec_prepared(kFetch, p.after, p.limit, p.lanes, payload_cap, headers_cap, settled_, reopened_)
              : tx.exec_prepared(kFetchExcluding, p.after, p.limit, p.lanes, payload_cap, headers_cap, settled_,
                                 reopened_, p.types, p.ids);
      std::vector<OutboxEvent> events;
      events.reserve(r.size());
      for (const auto& row : r) events.push_back(decode_row(row));
      if (!request.after_seq && !r.empty()) start_run(r[0][15].as<std::string>(), r[0][16].as<std::int64_t>());
      sample(tx);
      return events;
    } catch (const pqxx::sql_error& e) {
      if (!row_content_error(e)) throw;
      ++isolations_;
      return std::nullopt;
    }
  });
  if (batch) return std::move(*batch);
  return session_->run("fetching unpublished outbox rows one by one",
                       [&](pqxx::connection& c) { return fetch_isolating(c, request); });
}

// Contract 9: one row's content broke the statement. Read the same rows one by one; the one
// that cannot be read comes back unreadable (dead-lettered at once: no retry changes it) and
// everything else flows.
std::vector<OutboxEvent> PgOutboxStore::fetch_isolating(pqxx::connection_base& c, const FetchRequest& request) {
  const FetchParams p(request);
  std::vector<OutboxEvent> events;
  // Autocommit: each read is a statement of its own, so one that fails leaves the session
  // usable (libpqxx 6.4 does not roll a subtransaction back after a failed exec_params).
  pqxx::nontransaction tx(c);
  pqxx::result seqs = request.exclude.empty()
                          ? tx.exec_params(fetch_seqs_sql(schema_, false), p.after, p.limit, p.lanes)
                          : tx.exec_params(fetch_seqs_sql(schema_, true), p.after, p.limit, p.lanes, p.types, p.ids);
  for (const auto& s : seqs) {
    const auto seq = s[0].as<std::int64_t>();
    try {
      auto r = tx.exec_params(fetch_one_sql(schema_), p.after, static_cast<int>(options_.max_payload_bytes),
                              static_cast<int>(options_.max_headers_bytes), settled_, reopened_, seq);
      if (!r.empty()) events.push_back(decode_row(r[0]));
    } catch (const pqxx::sql_error& e) {
      if (!row_content_error(e)) throw;
      events.push_back(unreadable_row(tx, schema_, seq, e));
    }
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
  session_->run("marking outbox rows published", [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    auto r = options_.owner.empty() ? tx.exec_prepared(kMark, bigint_array_literal(seqs))
                                    : tx.exec_prepared(kMark, bigint_array_literal(seqs), options_.owner);
    if (r.affected_rows() < seqs.size()) marks_unmatched_ += seqs.size() - r.affected_rows();
  });
}

void PgOutboxStore::record_failures(std::span<const FailedAttempt> failures) {
  if (failures.empty()) return;
  session_->run("recording failed outbox rows", [&](pqxx::connection& c) {
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
  });
}

}  // namespace outbox::relay::pg
