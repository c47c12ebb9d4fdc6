#include "relay/pg/pg_inbox_store.hpp"

#include <pqxx/pqxx>
#include <pqxx/stream_to>

#include <tuple>

#include "outbox/common/encoding.hpp"
#include "relay/pg/outbox_rows.hpp"
#include "relay/pg/pg_session.hpp"
#include "relay/pg/sql_text.hpp"

namespace outbox::relay::pg {
namespace {

constexpr const char* kLand = "outbox_inbox_land";

// {"a",NULL,"b"}: a text[] parameter whose elements may be NULL.
std::string nullable_array(const std::vector<const std::string*>& values) {
  std::size_t n = 2;
  for (const auto* v : values) n += (v ? v->size() + 3 : 5);
  std::string s;
  s.reserve(n);
  s += '{';
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i) s += ',';
    if (values[i] == nullptr) {
      s += "NULL";
      continue;
    }
    s += '"';
    for (char c : *values[i]) {
      if (c == '"' || c == '\\') s += '\\';
      s += c;
    }
    s += '"';
  }
  return s + '}';
}

// The batch as the statement's nine array parameters (bytes as hex, decoded in SQL).
struct Columns {
  std::string ids, topics, partitions, offsets, keys, types, payloads, headers;
  explicit Columns(const std::vector<InboxRow>& rows, std::size_t from = 0, std::size_t count = SIZE_MAX) {
    const std::size_t to = std::min(rows.size(), count == SIZE_MAX ? rows.size() : from + count);
    std::vector<const std::string*> id, topic, type, head, key, payload;
    std::vector<std::string> key_hex, payload_hex;
    std::vector<int> part;
    std::vector<std::int64_t> off;
    key_hex.reserve(to - from);
    payload_hex.reserve(to - from);
    for (std::size_t i = from; i < to; ++i) {
      const auto& r = rows[i];
      id.push_back(&r.event_id);
      topic.push_back(&r.message.topic);
      type.push_back(r.event_type ? &*r.event_type : nullptr);
      head.push_back(&r.headers_json);
      key_hex.push_back(r.message.key ? common::hex(*r.message.key) : std::string());
      payload_hex.push_back(r.message.value ? common::hex(*r.message.value) : std::string());
      part.push_back(r.message.partition);
      off.push_back(r.message.offset);
    }
    for (std::size_t i = from; i < to; ++i) {
      key.push_back(rows[i].message.key ? &key_hex[i - from] : nullptr);
      payload.push_back(rows[i].message.value ? &payload_hex[i - from] : nullptr);
    }
    ids = nullable_array(id);
    topics = nullable_array(topic);
    types = nullable_array(type);
    headers = nullable_array(head);
    keys = nullable_array(key);
    payloads = nullable_array(payload);
    partitions = int_array_literal(part);
    offsets = bigint_array_literal(off);
  }
};

// A bytea value in COPY's text form before COPY's own escaping: \x and hex digits.
std::optional<std::string> bytea_text(const std::optional<std::string>& bytes) {
  if (!bytes) return std::nullopt;
  return "\\x" + common::hex(*bytes);
}

const std::vector<std::string> kCopyColumns{"inbox",      "event_id", "topic",   "partition", "\"offset\"",
                                            "key",        "event_type", "payload", "headers"};

}  // namespace

PgInboxStore::PgInboxStore(PgInboxOptions options) : options_(std::move(options)) {
  table_ = quoted_identifier(options_.schema, "database.schema") + ".inbox_events";
  const auto& table = table_;
  // The rows go in the batch's order (ORDER BY ord): seq, the inbox's order, follows each
  // partition's offsets. A row whose (inbox, event_id) exists, committed or being inserted by
  // another sidecar of the group, is skipped: a redelivery.
  insert_sql_ =
      "INSERT INTO " + table +
      " (inbox, event_id, topic, partition, \"offset\", key, event_type, payload, headers) "
      "SELECT $1, r.event_id, r.topic, r.part, r.off, decode(r.key, 'hex'), r.event_type, decode(r.payload, 'hex'), "
      "r.headers::jsonb "
      "FROM unnest($2::text[], $3::text[], $4::int[], $5::bigint[], $6::text[], $7::text[], $8::text[], $9::text[]) "
      "WITH ORDINALITY AS r(event_id, topic, part, off, key, event_type, payload, headers, ord) "
      "ORDER BY r.ord ON CONFLICT (inbox, event_id) DO NOTHING";
  session_ = std::make_unique<PgSession>(options_.conninfo, "the inbox session",
                                         [sql = insert_sql_](pqxx::connection& c) { c.prepare(kLand, sql); });
}

PgInboxStore::~PgInboxStore() {
  if (worker_.joinable()) {
    worker_.request_stop();
    changed_.notify_all();
  }
}

void PgInboxStore::start_landing(const std::vector<InboxRow>* rows) {
  if (!worker_.joinable()) worker_ = std::jthread([this](std::stop_token halt) { worker_loop(halt); });
  std::lock_guard lock(mutex_);
  job_ = rows;
  done_ = false;
  changed_.notify_all();
}

LandOutcome PgInboxStore::finish_landing() {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [&] { return done_; });
  done_ = false;
  if (failure_) std::rethrow_exception(std::exchange(failure_, nullptr));
  return std::move(outcome_);
}

void PgInboxStore::worker_loop(std::stop_token halt) {
  std::unique_lock lock(mutex_);
  while (changed_.wait(lock, halt, [&] { return job_ != nullptr; })) {
    const auto* rows = std::exchange(job_, nullptr);
    lock.unlock();
    LandOutcome out;
    std::exception_ptr failure;
    try {
      out = land(*rows);
    } catch (...) {
      failure = std::current_exception();
    }
    lock.lock();
    outcome_ = std::move(out);
    failure_ = failure;
    done_ = true;
    changed_.notify_all();
  }
}

std::uint64_t PgInboxStore::reconnects() const { return session_->reconnects(); }

LandOutcome PgInboxStore::land(const std::vector<InboxRow>& rows) {
  if (rows.empty()) return {};
  if (!insert_next_ && copy(rows)) {
    ++copies_;
    LandOutcome o;
    o.inserted = rows.size();
    return o;
  }
  auto landed = insert(rows);
  // While redeliveries come (a rebalance, a restart), the next batches are likely to hold
  // some too: the INSERT absorbs them without a failed COPY first.
  insert_next_ = landed.duplicates > 0;
  return landed;
}

// The batch with one COPY, in its order: the fast way when none of it is in the inbox yet,
// which is every batch but redeliveries. False when a row already there (23505: a redelivery)
// or a row's content (classes 22, 54) failed it: nothing landed, and the INSERT below sorts
// the batch out.
bool PgInboxStore::copy(const std::vector<InboxRow>& rows) {
  return session_->run("copying a batch into inbox_events", [&](pqxx::connection& c) {
    try {
      pqxx::work tx(c);
      pqxx::stream_to out(tx, table_, kCopyColumns);
      for (const auto& r : rows)
        out << std::make_tuple(options_.inbox, r.event_id, r.message.topic, r.message.partition, r.message.offset,
                               bytea_text(r.message.key), r.event_type, bytea_text(r.message.value), r.headers_json);
      out.complete();
      tx.commit();
      return true;
    } catch (const pqxx::sql_error& e) {
      if (e.sqlstate() != "23505" && !detail::row_content_error(e)) throw;
      return false;
    }
  });
}

LandOutcome PgInboxStore::insert(const std::vector<InboxRow>& rows) {
  auto out = session_->run("landing a batch in inbox_events", [&](pqxx::connection& c) -> std::optional<LandOutcome> {
    const Columns cols(rows);
    try {
      pqxx::work tx(c);
      auto r = tx.exec_prepared(kLand, options_.inbox, cols.ids, cols.topics, cols.partitions, cols.offsets, cols.keys,
                                cols.types, cols.payloads, cols.headers);
      tx.commit();
      LandOutcome o;
      o.inserted = static_cast<std::size_t>(r.affected_rows());
      o.duplicates = rows.size() - o.inserted;
      return o;
    } catch (const pqxx::sql_error& e) {
      if (!detail::row_content_error(e)) throw;
      ++isolations_;
      return std::nullopt;
    }
  });
  if (out) return std::move(*out);
  return session_->run("landing inbox rows one by one", [&](pqxx::connection& c) { return land_one_by_one(c, rows); });
}

// Contract 9 for the inbox: each row in a statement of its own, in order, so one that cannot be
// stored is refused and the others land. Autocommit: a failed statement leaves the session
// usable (libpqxx 6.4 does not roll a subtransaction back after a failed exec).
LandOutcome PgInboxStore::land_one_by_one(pqxx::connection_base& c, const std::vector<InboxRow>& rows) {
  LandOutcome o;
  pqxx::nontransaction tx(c);
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const Columns cols(rows, i, 1);
    try {
      auto r = tx.exec_prepared(kLand, options_.inbox, cols.ids, cols.topics, cols.partitions, cols.offsets, cols.keys,
                                cols.types, cols.payloads, cols.headers);
      if (r.affected_rows() > 0)
        ++o.inserted;
      else
        ++o.duplicates;
    } catch (const pqxx::sql_error& e) {
      if (!detail::row_content_error(e)) throw;
      std::string why = e.what();
      while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
      o.refused.emplace_back(i, why + " (SQLSTATE " + e.sqlstate() + ")");
    }
  }
  return o;
}

void PgInboxStore::ping() {
  session_->run("reaching the inbox database", [](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    tx.exec("SELECT 1");
  });
}

void PgInboxStore::verify_schema() {
  const auto table = quoted_identifier(options_.schema, "database.schema") + ".inbox_events";
  session_->run("checking inbox_events", [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    tx.exec("SELECT seq, inbox, event_id, topic, partition, \"offset\", key, event_type, payload, headers, received_at, "
            "processed_at, attempts, next_attempt_at, last_error, dead_lettered_at FROM " + table + " LIMIT 0");
  });
}

InboxBacklog PgInboxStore::backlog() {
  const auto fn = quoted_identifier(options_.schema, "database.schema") + ".inbox_backlog";
  return session_->run("reading the inbox backlog", [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    auto r = tx.exec_params("SELECT pending, retrying, dead_lettered, held_back, oldest_age_s FROM " + fn + "($1)",
                            options_.inbox)[0];
    return InboxBacklog{r[0].as<std::int64_t>(), r[1].as<std::int64_t>(), r[2].as<std::int64_t>(),
                        r[3].as<std::int64_t>(), r[4].as<double>()};
  });
}

std::size_t PgInboxStore::purge_processed(std::chrono::seconds older_than, int batch, int max_batches) {
  const auto fn = quoted_identifier(options_.schema, "database.schema") + ".inbox_purge_processed";
  std::size_t total = 0;
  for (int i = 0; i < max_batches; ++i) {
    const auto n = session_->run("removing processed inbox rows (retention)", [&](pqxx::connection& c) {
      pqxx::nontransaction tx(c);
      return tx.exec_params("SELECT " + fn + "($1, $2, $3)", options_.inbox, static_cast<std::int64_t>(older_than.count()),
                            batch)[0][0]
          .as<std::int64_t>();
    });
    total += static_cast<std::size_t>(n);
    if (n < batch) break;
  }
  return total;
}

}  // namespace outbox::relay::pg
