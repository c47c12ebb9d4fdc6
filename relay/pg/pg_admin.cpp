#include "relay/pg/pg_admin.hpp"

#include <pqxx/pqxx>

#include <algorithm>
#include <set>

#include "relay/core/errors.hpp"
#include "relay/pg/pg_session.hpp"
#include "relay/pg/sql_text.hpp"

namespace outbox::relay::pg {
namespace {

// Timestamps leave the database as ISO 8601 UTC text, whatever the session's DateStyle.
// 'infinity' and '-infinity' (which to_char prints as '') stay as PostgreSQL writes them.
std::string iso(const std::string& column) {
  return "CASE WHEN isfinite(" + column + ") THEN to_char(" + column +
         " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') ELSE " + column + "::text END";
}

template <class T>
std::optional<T> optional_of(const pqxx::field& f) {
  if (f.is_null()) return std::nullopt;
  return f.as<T>();
}

// `alias` matches any of the named events; $1 = seq array, $2 = uuid array.
std::string match_refs(const std::string& alias) {
  return "(" + alias + ".seq = ANY($1::bigint[]) OR " + alias + ".id = ANY($2::uuid[]))";
}

// The columns a DeadLetter is read from, of table alias `alias`.
std::string dead_letter_columns(const std::string& alias) {
  const std::string a = alias + ".";
  return a + "seq, " + a + "id::text, " + a + "aggregate_type, " + a + "aggregate_id, " + a + "event_type, " + a +
         "attempts, " + iso(a + "dead_lettered_at") + ", " + a + "last_error";
}

// The five columns every event query here starts with.
void read_identity(const pqxx::row& row, EventIdentity& e) {
  e.seq = row[0].as<std::int64_t>();
  e.id = row[1].as<std::string>();
  e.aggregate_type = row[2].as<std::string>();
  e.aggregate_id = row[3].as<std::string>();
  e.event_type = row[4].as<std::string>();
}

DeadLetter dead_letter_of(const pqxx::row& row) {
  DeadLetter d;
  read_identity(row, d);
  d.attempts = row[5].as<int>();
  d.dead_lettered_at = row[6].is_null() ? "" : row[6].as<std::string>();
  d.last_error = optional_of<std::string>(row[7]);
  return d;
}

// Ends the session's pqxx work with the wake-up hint: NOTIFY is delivered at commit, so a
// relay waiting on the channel looks again once the change is visible. (The insert trigger
// does not fire on UPDATE or DELETE.)
void wake_relay(pqxx::transaction_base& tx) { tx.exec_params("SELECT pg_notify($1, '')", std::string(kWakeupChannel)); }

// The server's message without "ERROR:" and the CONTEXT lines libpq adds.
std::string server_message(const std::exception& e) {
  std::string msg = e.what();
  msg = msg.substr(0, msg.find('\n'));
  if (msg.starts_with("ERROR:")) msg = msg.substr(std::min(msg.size(), msg.find_first_not_of(' ', 6)));
  return msg;
}

// From (seq, published, dead-lettered, id).
std::string state_of(const pqxx::row& row) {
  if (row[2].as<bool>()) return "dead-lettered";
  if (row[1].as<bool>()) return "published, not dead-lettered";
  return "pending, not dead-lettered";
}

}  // namespace

PgAdmin::PgAdmin(std::string conninfo, std::string schema, std::string relay_application_name)
    : schema_(std::move(schema)),
      table_(quoted_identifier(schema_, "database.schema") + ".outbox_events"),
      relay_application_name_(std::move(relay_application_name)),
      session_(std::make_unique<PgSession>(std::move(conninfo), "to PostgreSQL", [](pqxx::connection& c) {
        // Timestamps the operator types without a zone mean UTC, the zone everything is shown in.
        pqxx::nontransaction tx(c);
        tx.exec("SET TIME ZONE 'UTC'");
      })) {}

PgAdmin::~PgAdmin() = default;

Activity PgAdmin::activity() {
  return session_->run("reading the relay's sessions", [&](pqxx::connection& c) {
    Activity a;
    // Published rows have no index on published_at: count them only if that is quick.
    try {
      pqxx::read_transaction tx(c);
      tx.exec("SET LOCAL statement_timeout = 3000");
      auto r = tx.exec("SELECT count(*) FILTER (WHERE published_at > now() - interval '1 minute'), "
                       "count(*) FILTER (WHERE published_at > now() - interval '1 hour'), " +
                       iso("max(published_at)") + " FROM " + table_ + " WHERE published_at IS NOT NULL");
      a.published_last_minute = r[0][0].as<long long>();
      a.published_last_hour = r[0][1].as<long long>();
      a.last_published_at = optional_of<std::string>(r[0][2]);
      a.published_counted = true;
    } catch (const pqxx::sql_error& e) {
      if (e.sqlstate() != "57014") throw;  // query_canceled by the timeout: leave them unknown
    }
    // The relay's own sessions (pg_stat_activity shows every column only for sessions of the
    // same role, or with pg_read_all_stats; the rest come back null).
    pqxx::read_transaction tx(c);
    auto r = tx.exec_params(
        "SELECT a.pid, a.application_name, a.usename::text, host(a.client_addr), a.client_port, " +
            iso("a.backend_start") +
            ", a.state, extract(epoch FROM now() - a.backend_start)::float8 "
            "FROM pg_stat_activity a WHERE a.application_name = $1 AND a.pid <> pg_backend_pid() "
            "ORDER BY a.backend_start, a.pid",
        relay_application_name_);
    const std::string lanes = quoted_identifier(schema_, "database.schema") + ".outbox_relay_lanes";
    const std::string instances = quoted_identifier(schema_, "database.schema") + ".outbox_relay_instances";
    for (const auto& row : tx.exec(
             "SELECT i.instance, i.host, i.pid, " + iso("i.started_at") +
             ", extract(epoch FROM now() - i.seen_at)::float8, extract(epoch FROM i.expires_at - now())::float8, "
             "count(l.lane), extract(epoch FROM now() - min(l.renewed_at))::float8 "
             "FROM " + instances + " i LEFT JOIN " + lanes + " l ON l.owner = i.instance AND l.lease_until > now() "
             "GROUP BY i.instance ORDER BY i.expires_at > now() DESC, i.instance")) {
      InstanceInfo in;
      in.instance = row[0].as<std::string>();
      in.host = row[1].as<std::string>();
      in.pid = row[2].as<int>();
      in.started_at = row[3].as<std::string>();
      in.seen_s = row[4].as<double>();
      in.expires_in_s = row[5].as<double>();
      in.lanes = row[6].as<long long>();
      in.lease_age_s = optional_of<double>(row[7]);
      a.instances.push_back(std::move(in));
    }
    for (const auto& row : tx.exec("SELECT lane, owner, epoch, "
                                   "CASE WHEN lease_until = '-infinity' THEN -1e9 "
                                   "ELSE extract(epoch FROM lease_until - now())::float8 END, "
                                   "extract(epoch FROM now() - renewed_at)::float8 FROM " + lanes + " ORDER BY lane")) {
      LaneInfo l;
      l.lane = row[0].as<int>();
      l.owner = optional_of<std::string>(row[1]);
      l.epoch = row[2].as<long long>();
      l.expires_in_s = row[3].as<double>();
      l.renewed_s = optional_of<double>(row[4]);
      if (!l.owner || l.expires_in_s <= 0) ++a.unowned_lanes;
      a.lanes.push_back(std::move(l));
    }
    // Pending rows the relay's fetch leaves out (an earlier dead letter in their aggregate), counted
    // like the backlog through the partial index of pending rows.
    auto h = tx.exec("SELECT " + iso("now()") + ", (SELECT count(*) FROM " + table_ +
                     " e WHERE e.published_at IS NULL AND e.dead_lettered_at IS NULL AND " +
                     behind_dead_letter(table_, "e") + ")");
    a.now = h[0][0].as<std::string>();
    a.held_back = h[0][1].as<long long>();
    for (const auto& row : r) {
      SessionInfo s;
      s.pid = row[0].as<int>();
      s.application_name = optional_of<std::string>(row[1]);
      s.user = optional_of<std::string>(row[2]);
      s.client_addr = optional_of<std::string>(row[3]);
      s.client_port = optional_of<int>(row[4]);
      s.backend_start = optional_of<std::string>(row[5]);
      s.state = optional_of<std::string>(row[6]);
      s.connected_s = optional_of<double>(row[7]);
      a.sessions.push_back(std::move(s));
    }
    return a;
  });
}

DeadLetterPage PgAdmin::list_dead_letters(std::optional<std::string> aggregate_type,
                                          std::optional<std::string> aggregate_id, long long limit) {
  return session_->run("listing dead-lettered events", [&](pqxx::connection& c) {
    const std::string limit_text = std::to_string(limit);
    pqxx::read_transaction tx(c);
    auto r = tx.exec_params("SELECT " + dead_letter_columns("e") + ", count(*) OVER () FROM " + table_ +
                                " e WHERE e.dead_lettered_at IS NOT NULL "
                                "AND ($1::text IS NULL OR (e.aggregate_type = $1 AND e.aggregate_id = $2)) "
                                "ORDER BY e.seq LIMIT $3",
                            aggregate_type ? aggregate_type->c_str() : nullptr,
                            aggregate_id ? aggregate_id->c_str() : nullptr,
                            limit > 0 ? limit_text.c_str() : nullptr);
    DeadLetterPage page;
    for (const auto& row : r) {
      page.rows.push_back(dead_letter_of(row));
      page.total = row[8].as<long long>();
    }
    return page;
  });
}

std::optional<EventRow> PgAdmin::find_event(const EventRefs& refs) {
  return session_->run("reading an outbox event", [&](pqxx::connection& c) -> std::optional<EventRow> {
    pqxx::read_transaction tx(c);
    auto r = tx.exec_params(
        "SELECT e.seq, e.id::text, e.aggregate_type, e.aggregate_id, e.event_type, e.payload, e.headers::text, "
        "e.topic, " + iso("e.created_at") + ", " + iso("e.published_at") + ", e.attempts, " +
            iso("e.next_attempt_at") + ", e.last_error, " + iso("e.dead_lettered_at") +
            ", (SELECT count(*) FROM " + table_ +
            " b WHERE b.published_at IS NULL AND b.dead_lettered_at IS NULL AND b.seq > e.seq "
            "AND b.aggregate_type = e.aggregate_type AND b.aggregate_id = e.aggregate_id) "
            "FROM " + table_ + " e WHERE " + match_refs("e") + " ORDER BY e.seq LIMIT 1",
        bigint_array_literal(refs.seqs), text_array_literal(refs.ids));
    if (r.empty()) return std::nullopt;
    const auto& row = r[0];
    EventRow e;
    read_identity(row, e);
    if (!row[5].is_null()) e.payload = pqxx::binarystring(row[5]).str();
    e.headers = row[6].as<std::string>();
    e.topic = optional_of<std::string>(row[7]);
    e.created_at = row[8].as<std::string>();
    e.published_at = optional_of<std::string>(row[9]);
    e.attempts = row[10].as<int>();
    e.next_attempt_at = optional_of<std::string>(row[11]);
    e.last_error = optional_of<std::string>(row[12]);
    e.dead_lettered_at = optional_of<std::string>(row[13]);
    e.waiting_behind = row[14].as<long long>();
    return e;
  });
}

ChangeOutcome PgAdmin::change_dead_letters(const EventRefs& refs, bool all, const std::string& change,
                                           const std::string& what, const std::string& needs) {
  return session_->run(what, [&](pqxx::connection& c) {
    try {
      pqxx::work tx(c);
      // `change` ends with the table aliased `o` holding the rows as they were.
      auto r = tx.exec_params(change + " o.dead_lettered_at IS NOT NULL AND ($3 OR " + match_refs("o") +
                                  ") RETURNING " + dead_letter_columns("o"),
                              bigint_array_literal(refs.seqs), text_array_literal(refs.ids), all);
      ChangeOutcome out;
      std::set<std::int64_t> seqs;
      std::set<std::string> ids;
      for (const auto& row : r) {
        out.rows.push_back(dead_letter_of(row));
        seqs.insert(out.rows.back().seq);
        ids.insert(out.rows.back().id);
      }
      std::sort(out.rows.begin(), out.rows.end(), [](const auto& a, const auto& b) { return a.seq < b.seq; });
      if (!all) {
        EventRefs missing;
        for (auto s : refs.seqs)
          if (!seqs.contains(s)) missing.seqs.push_back(s);
        for (const auto& i : refs.ids)
          if (!ids.contains(i)) missing.ids.push_back(i);
        if (!missing.empty()) {
          // All or nothing: say why each named event did not match, change nothing.
          auto why = tx.exec_params("SELECT e.seq, e.published_at IS NOT NULL, e.dead_lettered_at IS NOT NULL, "
                                    "e.id::text FROM " + table_ + " e WHERE " + match_refs("e"),
                                    bigint_array_literal(missing.seqs), text_array_literal(missing.ids));
          auto describe = [&](const std::string& ref, auto matches) {
            for (const auto& row : why)
              if (matches(row)) return ref + ": " + state_of(row);
            return ref + ": no such event";
          };
          out.rows.clear();
          for (auto s : missing.seqs)
            out.missing.push_back(
                describe(std::to_string(s), [s](const pqxx::row& row) { return row[0].as<std::int64_t>() == s; }));
          for (const auto& i : missing.ids)
            out.missing.push_back(describe(i, [&i](const pqxx::row& row) { return row[3].as<std::string>() == i; }));
          tx.abort();
          return out;
        }
      }
      if (!out.rows.empty()) wake_relay(tx);
      tx.commit();
      return out;
    } catch (const pqxx::insufficient_privilege& e) {
      throw FatalError(what + ": " + server_message(e) + "; run it as a role allowed to " + needs);
    }
  });
}

ChangeOutcome PgAdmin::requeue(const EventRefs& refs, bool all) {
  return change_dead_letters(refs, all,
                             "UPDATE " + table_ +
                                 " e SET dead_lettered_at = NULL, attempts = 0, next_attempt_at = NULL FROM " +
                                 table_ + " o WHERE o.seq = e.seq AND",
                             "requeueing dead-lettered events",
                             "UPDATE its bookkeeping columns (see schema/roles/relay_role.sql)");
}

ChangeOutcome PgAdmin::purge(const EventRefs& refs, bool all) {
  return change_dead_letters(refs, all, "DELETE FROM " + table_ + " o WHERE", "purging dead-lettered events",
                             "DELETE from " + schema_ + ".outbox_events (the table's owner; relay_role.sql grants "
                             "DELETE only for relay.mark_mode: delete)");
}

ReplayOutcome PgAdmin::replay(const ReplaySelector& sel, long long limit, bool dry_run) {
  return session_->run("replaying published events", [&](pqxx::connection& c) {
    // Timestamps are parsed by PostgreSQL; say which flag it could not read.
    std::vector<std::string> params;
    std::string where = "e.published_at IS NOT NULL AND e.dead_lettered_at IS NULL";
    auto bind = [&](const std::string& value) {
      params.push_back(value);
      return "$" + std::to_string(params.size());
    };
    auto timestamp = [&](const std::string& flag, const std::string& value) {
      try {
        pqxx::nontransaction tx(c);
        tx.exec_params("SELECT $1::timestamptz", value);
      } catch (const pqxx::data_exception& e) {
        throw BadArgument(flag + ": PostgreSQL cannot read \"" + value + "\" as a timestamp (" + server_message(e) +
                          "); use e.g. 2024-05-01T12:00:00Z or '2024-05-01 12:00:00+02' (no zone: UTC)");
      }
      return bind(value) + "::timestamptz";
    };
    if (sel.from_seq) where += " AND e.seq >= " + bind(std::to_string(*sel.from_seq)) + "::bigint";
    if (sel.to_seq) where += " AND e.seq <= " + bind(std::to_string(*sel.to_seq)) + "::bigint";
    if (sel.aggregate_type) where += " AND e.aggregate_type = " + bind(*sel.aggregate_type);
    if (sel.aggregate_id) where += " AND e.aggregate_id = " + bind(*sel.aggregate_id);
    if (sel.since) where += " AND e.published_at >= " + timestamp("--since", *sel.since);
    if (sel.until) where += " AND e.published_at < " + timestamp("--until", *sel.until);
    if (sel.since && sel.until) {
      pqxx::nontransaction tx(c);
      if (!tx.exec_params("SELECT $1::timestamptz < $2::timestamptz", *sel.since, *sel.until)[0][0].as<bool>())
        throw BadArgument("--until \"" + *sel.until + "\" is not after --since \"" + *sel.since + "\"");
    }
    // One more than the limit, to tell "exactly the limit" from "over it".
    const std::string cap = limit > 0 ? bind(std::to_string(limit + 1)) + "::bigint" : "ALL";
    const std::string picked = "SELECT e.seq FROM " + table_ + " e WHERE " + where + " ORDER BY e.seq LIMIT " + cap;
    const std::string summary =
        "SELECT count(*), min(r.seq), max(r.seq), count(DISTINCT (r.aggregate_type, r.aggregate_id)), "
        "count(*) FILTER (WHERE " + behind_dead_letter(table_, "r") + ") FROM r";
    const std::string sql =
        dry_run ? "WITH r AS (SELECT e.seq, e.aggregate_type, e.aggregate_id FROM " + table_ +
                      " e WHERE e.seq IN (" + picked + ")) " + summary
                : "WITH m AS (" + picked + "), r AS (UPDATE " + table_ +
                      " e SET published_at = NULL, attempts = 0, next_attempt_at = NULL FROM m "
                      "WHERE e.seq = m.seq AND e.published_at IS NOT NULL "
                      "RETURNING e.seq, e.aggregate_type, e.aggregate_id) " + summary;
    pqxx::work tx(c);
    auto row = tx.exec_params(sql, pqxx::prepare::make_dynamic_params(params))[0];
    ReplayOutcome out;
    out.matched = row[0].as<long long>();
    out.min_seq = optional_of<std::int64_t>(row[1]);
    out.max_seq = optional_of<std::int64_t>(row[2]);
    out.aggregates = row[3].as<long long>();
    out.held_back = row[4].as<long long>();
    out.over_limit = limit > 0 && out.matched > limit;
    if (dry_run || out.over_limit || out.matched == 0) {
      tx.abort();
      return out;
    }
    out.replayed = out.matched;
    wake_relay(tx);
    tx.commit();
    return out;
  });
}

}  // namespace outbox::relay::pg
