#include "tests/checker/producers.hpp"

#include <pqxx/pqxx>

#include <algorithm>
#include <memory>
#include <optional>
#include <random>
#include <thread>

namespace outbox::test::checker {
namespace {

using namespace std::chrono_literals;

std::string hex(const std::string& bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

// What a written row's spec says it is and what a consumer must read of it.
void take_spec(Written& w, const RowSpec& r) {
  w.aggregate_type = r.aggregate_type;
  w.aggregate_id = r.aggregate_id;
  w.expect = r.expect;
  w.topic = r.topic_expected;
  w.value = r.payload;
  w.event_type = r.event_type;
  w.headers = r.headers_expected;
  w.label = r.label;
}

// One producer session: a service writing its events, with its own seeded choices.
class Producer {
 public:
  Producer(Shared& shared, int index)
      : s_(shared), rng_(static_cast<std::uint32_t>(shared.schedule.seed * 1000003 + static_cast<std::uint64_t>(index))) {}

  std::vector<Written> run() {
    while (!s_.stop) {
      if (s_.next_n >= kMaxEvents) {
        s_.wait_for_stop();
        continue;
      }
      const int roll = static_cast<int>(rng_() % 100);
      const int late = s_.schedule.late_commit_weight;
      if (roll < late) late_commit();
      else if (roll < late + 10) burst(50 + static_cast<int>(rng_() % 450), /*second=*/false);
      else if (roll < late + 20) events(1 + rng_() % 4, /*rollback=*/true, 0);
      else if (roll < late + 30) events(1, false, 0.1 + (rng_() % 700) / 1000.0);
      else if (roll < late + 45) events(2 + rng_() % 3, false, 0);
      else if (roll < late + 50) std::this_thread::sleep_for(std::chrono::milliseconds(20 + rng_() % 150));
      else events(1, false, 0);
      std::this_thread::sleep_for(std::chrono::microseconds(rng_() % 2000));
    }
    return std::move(out_);
  }

 private:
  pqxx::connection& conn(std::unique_ptr<pqxx::connection>& c) {
    if (stale_.erase(&c) > 0) c.reset();  // its last transaction failed to commit: start afresh
    if (!c || !c->is_open())
      c = std::make_unique<pqxx::connection>(
          s_.url + " application_name=checker-producer connect_timeout=2 options='-c synchronous_commit=on'");
    return *c;
  }

  std::string healthy_aggregate() { return "agg-" + std::to_string(rng_() % static_cast<unsigned>(s_.schedule.aggregates)); }
  static std::string type_of(const std::string& aggregate) {
    return (std::stoi(aggregate.substr(4)) % 2 == 0) ? "order" : "item";
  }

  // Writing an aggregate one transaction at a time: take it, or give up this round.
  bool take(const std::vector<std::string>& aggregates) {
    if (s_.schedule.row_locks) return true;
    std::lock_guard lock(s_.mutex);
    for (const auto& a : aggregates)
      if (s_.busy.contains(a)) return false;
    s_.busy.insert(aggregates.begin(), aggregates.end());
    return true;
  }
  void give_back(const std::vector<std::string>& aggregates) {
    if (s_.schedule.row_locks) return;
    std::lock_guard lock(s_.mutex);
    for (const auto& a : aggregates) s_.busy.erase(a);
  }

  Written insert(pqxx::work& tx, const RowSpec& r, std::int64_t tx_id, int index) {
    if (s_.schedule.row_locks && r.label == "healthy")
      tx.exec_params("SELECT pg_advisory_xact_lock(hashtext($1))", r.aggregate_id);  // the business row's lock
    Written w;
    w.written_at = seconds_since(s_.t0);
    std::optional<std::string> payload_hex;
    if (r.payload) payload_hex = hex(*r.payload);
    auto row = tx.exec_params(insert_sql(), r.aggregate_type, r.aggregate_id, r.event_type, payload_hex, r.headers_json,
                              r.topic, r.created_at, r.next_attempt_at, r.attempts, r.published_at)[0];
    w.id = row[0].as<std::string>();
    w.tx = tx_id;
    w.index = index;
    take_spec(w, r);
    return w;
  }

  // Commits (or rolls back) what `mine` wrote in `tx` and records the fate of each event.
  void settle(pqxx::work& tx, std::vector<Written>& mine, bool rollback, std::unique_ptr<pqxx::connection>& c) {
    if (rollback) {
      tx.abort();
      for (auto& w : mine) w.fate = Fate::rolled_back;
    } else {
      try {
        tx.commit();
        const double at = seconds_since(s_.t0);
        for (auto& w : mine) {
          w.fate = Fate::committed;
          w.committed_at = at;
        }
      } catch (const std::exception&) {
        for (auto& w : mine) w.fate = Fate::unknown;  // the answer never came
        stale_.insert(&c);  // not reset here: `tx` still lives on it
      }
    }
    out_.insert(out_.end(), mine.begin(), mine.end());
  }

  void fail(std::vector<Written>& mine, std::unique_ptr<pqxx::connection>& c) {
    for (auto& w : mine) w.fate = Fate::rolled_back;  // never reached COMMIT
    out_.insert(out_.end(), mine.begin(), mine.end());
    c.reset();
    std::this_thread::sleep_for(20ms);  // the database may be restarting: do not spin
  }

  // One transaction of `n` healthy events over one or two aggregates, held open `hold_s`.
  void events(std::size_t n, bool rollback, double hold_s) {
    std::vector<std::string> aggs{healthy_aggregate()};
    if (n > 1 && rng_() % 2) aggs.push_back(healthy_aggregate());
    std::sort(aggs.begin(), aggs.end());
    aggs.erase(std::unique(aggs.begin(), aggs.end()), aggs.end());
    if (!take(aggs)) return;
    std::vector<Written> mine;
    const auto tx_id = s_.next_tx++;
    try {
      pqxx::work tx(conn(main_));
      for (std::size_t i = 0; i < n; ++i) {
        const auto& a = aggs[i % aggs.size()];
        mine.push_back(insert(tx, healthy_row(type_of(a), a, s_.next_n++, rng_), tx_id, static_cast<int>(i)));
      }
      if (hold_s > 0) std::this_thread::sleep_for(std::chrono::duration<double>(hold_s));
      settle(tx, mine, rollback, main_);
    } catch (const std::exception&) {
      fail(mine, main_);
    }
    give_back(aggs);
  }

  // A burst of rows for the bulk aggregates in one transaction, on the main or second session.
  void burst(int rows, bool second) {
    auto& c = second ? side_ : main_;
    std::vector<Written> mine;
    const auto tx_id = s_.next_tx++;
    try {
      pqxx::work tx(conn(c));
      const double at = seconds_since(s_.t0);
      auto r = tx.exec_params(
          "WITH ins AS (INSERT INTO outbox_events (aggregate_type, aggregate_id, event_type, payload) "
          "SELECT 'order', 'bulk-' || (g % 20), 'Bulk', convert_to('{\"b\":' || ($2::bigint + g) || '}', 'UTF8') "
          "FROM generate_series(1, $1) g RETURNING id::text, aggregate_id, payload, seq) "
          "SELECT id, aggregate_id, convert_from(payload, 'UTF8') FROM ins ORDER BY seq",
          rows, static_cast<long>(s_.next_n.fetch_add(rows)));
      int index = 0;
      for (const auto& row : r) {
        Written w;
        w.id = row[0].as<std::string>();
        w.aggregate_type = "order";
        w.aggregate_id = row[1].as<std::string>();
        w.tx = tx_id;
        w.index = index++;
        w.written_at = at;
        w.topic = template_topic("order");
        w.value = row[2].as<std::string>();
        w.event_type = "Bulk";
        w.label = "healthy";
        mine.push_back(std::move(w));
      }
      settle(tx, mine, false, c);
    } catch (const std::exception&) {
      fail(mine, c);
    }
  }

  // The late commit: X's first event in a transaction held open while a burst commits on
  // another session, then X's second written once the first committed.
  void late_commit() {
    const std::string x = healthy_aggregate();
    if (!take({x})) return;
    std::vector<Written> mine;
    const auto tx_id = s_.next_tx++;
    bool first_committed = false;
    try {
      pqxx::work tx(conn(main_));
      mine.push_back(insert(tx, healthy_row(type_of(x), x, s_.next_n++, rng_), tx_id, 0));
      burst(100 + static_cast<int>(rng_() % 900), /*second=*/true);
      settle(tx, mine, false, main_);
      first_committed = out_.back().fate == Fate::committed;
    } catch (const std::exception&) {
      fail(mine, main_);
    }
    if (first_committed) events_of(x);
    give_back({x});
  }

  // One more event of an aggregate this producer has already taken.
  void events_of(const std::string& aggregate) {
    std::vector<Written> mine;
    const auto tx_id = s_.next_tx++;
    try {
      pqxx::work tx(conn(main_));
      mine.push_back(insert(tx, healthy_row(type_of(aggregate), aggregate, s_.next_n++, rng_), tx_id, 0));
      settle(tx, mine, false, main_);
    } catch (const std::exception&) {
      fail(mine, main_);
    }
  }

  Shared& s_;
  std::mt19937 rng_;
  std::unique_ptr<pqxx::connection> main_, side_;
  std::set<std::unique_ptr<pqxx::connection>*> stale_;
  std::vector<Written> out_;
};

}  // namespace

std::vector<Written> run_producer(Shared& shared, int index) { return Producer(shared, index).run(); }

// The fuzzer's rows, spread over the workload, each in a transaction of its own.
std::vector<Written> insert_hostile(Shared& s, std::vector<RowSpec> rows) {
  std::vector<Written> out;
  std::unique_ptr<pqxx::connection> c;
  for (const auto& r : rows) {
    std::this_thread::sleep_for(std::chrono::duration<double>(s.schedule.workload_s / (rows.size() + 1)));
    Written w;
    bool stale = false;
    try {
      if (!c || !c->is_open())
        c = std::make_unique<pqxx::connection>(s.url + " application_name=checker-fuzzer connect_timeout=2 "
                                                       "options='-c synchronous_commit=on'");
      pqxx::work tx(*c);
      w.written_at = seconds_since(s.t0);
      std::optional<std::string> payload_hex;
      if (r.payload) payload_hex = hex(*r.payload);
      auto row = tx.exec_params(insert_sql(), r.aggregate_type, r.aggregate_id, r.event_type, payload_hex,
                                r.headers_json, r.topic, r.created_at, r.next_attempt_at, r.attempts, r.published_at)[0];
      w.id = row[0].as<std::string>();
      w.tx = s.next_tx++;
      try {
        tx.commit();
        w.fate = Fate::committed;
        w.committed_at = seconds_since(s.t0);
      } catch (const std::exception&) {
        w.fate = Fate::unknown;
        stale = true;  // reset once `tx` is gone
      }
    } catch (const std::exception&) {
      c.reset();
      continue;  // not written (database away): nothing to expect
    }
    if (stale) c.reset();
    take_spec(w, r);
    out.push_back(std::move(w));
  }
  return out;
}

}  // namespace outbox::test::checker
