// The inbox's SQL API (migration 0009) under concurrent workers, called the way a service in
// any language calls it: seeded schedules of claims, effects, failed and crashed transactions,
// workers that misuse the API (claiming in autocommit), and events landing while they work.
// Checked from outside: every event's effect applied once, none missing, each aggregate's
// effects in seq order. The checker is shown to catch an unordered claim put back on purpose.
#include <catch2/catch.hpp>

#include <pqxx/pqxx>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <thread>

#include "tests/integration/pg_fixture.hpp"

using namespace outbox::test;
using namespace std::chrono_literals;

namespace {

struct Functions {
  std::string claim = "inbox_claim";
  std::string done = "inbox_done";
};

struct Verdict {
  long events = 0;
  long applied = 0;       // distinct events whose effect committed
  long applied_twice = 0;  // events whose effect committed more than once
  long missing = 0;        // events never applied (or not marked processed)
  long out_of_order = 0;   // effects committed after a later event of their aggregate
  long refused = 0;        // transactions rolled back by inbox_done (40001) or a deadlock
  long failures = 0, crashes = 0, misuses = 0;
  std::vector<std::string> errors;  // what stopped a worker other than a class-40 rollback
  std::string left;                 // on missing events: the backlog and a few rows left
  std::string describe() const {
    std::ostringstream o;
    o << events << " events, " << applied << " applied, " << applied_twice << " applied twice, " << missing
      << " missing, " << out_of_order << " out of order; " << refused << " transactions refused by inbox_done, "
      << failures << " failed attempts, " << crashes << " crashed transactions, " << misuses << " misusing claims";
    for (const auto& e : errors) o << "\n  worker stopped: " << e;
    if (!left.empty()) o << "\n  left: " << left;
    return o.str();
  }
};

constexpr int kAggregates = 40;

// Lands `n` events in batches of random size while the workers run: partitions in offset order
// (an aggregate lives in one), one in ten without a key.
void land(const std::string& url, unsigned seed, int n) {
  pqxx::connection c(url);
  std::mt19937 rng(seed ^ 0x9e3779b9u);
  std::map<int, long> next_offset;
  for (int landed = 0; landed < n;) {
    const int batch = std::min(n - landed, 1 + static_cast<int>(rng() % 200));
    pqxx::work tx(c);
    for (int i = 0; i < batch; ++i, ++landed) {
      const int agg = static_cast<int>(rng() % kAggregates);
      const bool keyless = rng() % 10 == 0;
      const int partition = keyless ? 3 : agg % 3;
      tx.exec_params("INSERT INTO inbox_events (inbox, event_id, topic, partition, \"offset\", key, payload) "
                     "VALUES ('svc', $1, 't', $2, $3, convert_to($4::text, 'UTF8'), NULL)",
                     "e" + std::to_string(landed), partition, next_offset[partition]++,
                     keyless ? std::optional<std::string>() : std::optional<std::string>("k" + std::to_string(agg)));
    }
    tx.commit();
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
  }
}


// The effect: the balance row of the aggregate, locked, says which seq it applied last.
void apply(pqxx::transaction_base& tx, const pqxx::row& event, int worker) {
  const auto seq = event[0].as<long>();
  const bool keyed = !event[2].is_null();
  bool inverted = false;
  if (keyed) {
    const auto key = event[2].as<std::string>();
    inverted = tx.exec_params("SELECT last_seq FROM balances WHERE key = $1 FOR UPDATE", key)[0][0].as<long>() > seq;
    tx.exec_params("UPDATE balances SET last_seq = $2, n = n + 1 WHERE key = $1", key, seq);
  }
  tx.exec_params("INSERT INTO effects (event_id, seq, worker, out_of_order) VALUES ($1, $2, $3, $4)",
                 event[1].as<std::string>(), seq, worker, inverted);
}

Verdict run_workers(unsigned seed, const Functions& fn, int events = 3000, int workers = 4,
                    std::chrono::seconds budget = 60s) {
  const auto url = fresh_database();
  // A misusing worker (its claim's locks gone) can deadlock with the worker that holds the row:
  // detected after deadlock_timeout and rolled back, like a refusal; 1 s each would dominate.
  exec(url, "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET deadlock_timeout = %L', current_database(), '20ms'); "
            "END $$");
  exec(url, "CREATE TABLE balances (key text PRIMARY KEY, last_seq bigint NOT NULL, n bigint NOT NULL)");
  exec(url, "INSERT INTO balances SELECT 'k' || g, 0, 0 FROM generate_series(0, " + std::to_string(kAggregates - 1) +
                ") g");
  exec(url, "CREATE TABLE effects (event_id text NOT NULL, seq bigint NOT NULL, worker int NOT NULL, "
            "out_of_order boolean NOT NULL)");
  // The planted bugs: a claim without the per-aggregate rule, a done without its checks.
  exec(url, "CREATE FUNCTION inbox_claim_unordered(p_inbox text, p_limit int) RETURNS SETOF inbox_events "
            "LANGUAGE sql AS $$ SELECT e.* FROM inbox_events e WHERE e.inbox = p_inbox AND e.processed_at IS NULL "
            "AND e.dead_lettered_at IS NULL AND (e.next_attempt_at IS NULL OR e.next_attempt_at <= now()) "
            "ORDER BY e.seq LIMIT p_limit FOR UPDATE OF e SKIP LOCKED $$");
  exec(url, "CREATE FUNCTION inbox_done_unchecked(p_seq bigint) RETURNS void LANGUAGE sql AS "
            "$$ UPDATE inbox_events SET processed_at = now() WHERE seq = p_seq $$");

  std::atomic<bool> landed{false};
  std::mutex errors_mutex;
  std::vector<std::string> errors;
  std::atomic<long> refused{0}, failures{0}, crashes{0}, misuses{0};
  std::thread lander([&] {
    land(url, seed, events);
    landed = true;
  });
  auto all_processed = [&](pqxx::connection& c) {
    return landed && pqxx::nontransaction(c).exec("SELECT count(*) FROM inbox_events WHERE processed_at IS NULL")[0][0]
                             .as<long>() == 0;
  };
  std::vector<std::thread> pool;
  for (int w = 0; w < workers; ++w)
    pool.emplace_back([&, w] {
      std::mt19937 rng(seed * 7919u + static_cast<unsigned>(w));
      pqxx::connection c(url);
      const auto deadline = std::chrono::steady_clock::now() + budget;
      const std::string claim = "SELECT seq, event_id, convert_from(key, 'UTF8') FROM " + fn.claim + "('svc', $1)";
      const std::string done = "SELECT " + fn.done + "($1)";
      while (std::chrono::steady_clock::now() < deadline && !all_processed(c)) {
        const int limit = 1 + static_cast<int>(rng() % 50);
        try {
          if (rng() % 10 == 0) {
            // Misuse: claimed in autocommit, so nothing stays locked; each event then in its own
            // transaction. inbox_done must refuse whatever would break once-and-in-order.
            ++misuses;
            auto rows = pqxx::nontransaction(c).exec_params(claim, limit);
            for (const auto& row : rows) {
              try {
                pqxx::work tx(c);
                apply(tx, row, w);
                tx.exec_params(done, row[0].as<long>());
                tx.commit();
              } catch (const pqxx::transaction_rollback&) {
                ++refused;  // class 40: inbox_done's refusal (40001), or a deadlock with a worker that holds the row
              }
            }
            continue;
          }
          pqxx::work tx(c);
          auto rows = tx.exec_params(claim, limit);
          if (rows.empty()) {
            tx.commit();
            std::this_thread::sleep_for(2ms);
            continue;
          }
          for (const auto& row : rows) {
            tx.exec("SAVEPOINT effect");
            if (rng() % 12 == 0) {
              // The effect failed: undone to the savepoint, the attempt recorded, retried soon.
              tx.exec("ROLLBACK TO SAVEPOINT effect");
              tx.exec_params("SELECT inbox_fail($1, 'handler failed', $2, $3, 1000000)", row[0].as<long>(),
                             rng() % 2 ? "transient" : "failed", static_cast<long>(rng() % 20));
              ++failures;
              continue;
            }
            apply(tx, row, w);
            tx.exec_params(done, row[0].as<long>());
            tx.exec("RELEASE SAVEPOINT effect");
          }
          if (rng() % 15 == 0) {
            ++crashes;  // the worker dies before COMMIT: every effect of the batch is undone
            tx.abort();
            continue;
          }
          tx.commit();
        } catch (const pqxx::transaction_rollback&) {
          ++refused;
        } catch (const std::exception& e) {
          std::lock_guard lock(errors_mutex);
          errors.push_back(e.what());
          return;
        }
      }
    });
  lander.join();
  for (auto& t : pool) t.join();

  Verdict v;
  v.errors = errors;
  v.refused = refused;
  v.failures = failures;
  v.crashes = crashes;
  v.misuses = misuses;
  pqxx::connection c(url);
  pqxx::nontransaction tx(c);
  v.events = tx.exec("SELECT count(*) FROM inbox_events")[0][0].as<long>();
  auto r = tx.exec(
      "SELECT (SELECT count(DISTINCT event_id) FROM effects), "
      "(SELECT count(*) FROM (SELECT event_id FROM effects GROUP BY event_id HAVING count(*) > 1) d), "
      "(SELECT count(*) FROM inbox_events i WHERE i.processed_at IS NULL "
      "   OR NOT EXISTS (SELECT 1 FROM effects f WHERE f.event_id = i.event_id)), "
      "(SELECT count(*) FROM effects WHERE out_of_order)");
  v.applied = r[0][0].as<long>();
  v.applied_twice = r[0][1].as<long>();
  v.missing = r[0][2].as<long>();
  v.out_of_order = r[0][3].as<long>();
  if (v.missing > 0) {
    auto b = tx.exec("SELECT pending, retrying, dead_lettered, held_back FROM inbox_backlog('svc')")[0];
    v.left = "pending " + b[0].as<std::string>() + ", retrying " + b[1].as<std::string>() + ", dead " +
             b[2].as<std::string>() + ", held back " + b[3].as<std::string>();
    for (const auto& row : tx.exec("SELECT seq, coalesce(convert_from(key, 'UTF8'), '-'), attempts, "
                                   "coalesce(next_attempt_at::text, '-'), processed_at IS NOT NULL FROM inbox_events i "
                                   "WHERE processed_at IS NULL OR NOT EXISTS (SELECT 1 FROM effects f "
                                   "WHERE f.event_id = i.event_id) ORDER BY seq LIMIT 5"))
      v.left += "; seq " + row[0].as<std::string>() + " key " + row[1].as<std::string>() + " attempts " +
                row[2].as<std::string>() + " next " + row[3].as<std::string>() + " processed " + row[4].as<std::string>();
  }
  return v;
}

}  // namespace

TEST_CASE("inbox SQL API: with crashes, failures and misuse, every effect is applied once and in aggregate order",
          "[pg][inbox][checker]") {
  const unsigned first = static_cast<unsigned>(std::random_device{}());
  for (unsigned seed = first; seed < first + 3; ++seed) {
    INFO("seed " << seed << " (replay: set it as the first seed)");
    const auto v = run_workers(seed, {});
    INFO(v.describe());
    CHECK(v.errors.empty());
    CHECK(v.events == 3000);
    CHECK(v.applied == v.events);
    CHECK(v.applied_twice == 0);
    CHECK(v.missing == 0);
    CHECK(v.out_of_order == 0);
    CHECK(v.failures > 0);
    CHECK(v.crashes > 0);
    CHECK(v.misuses > 0);
  }
}

TEST_CASE("inbox SQL API: a worker with an unordered claim still cannot commit out of order (inbox_done refuses)",
          "[pg][inbox][checker]") {
  // Safety, not progress: with every claim handing out whole aggregates, workers refuse and
  // deadlock each other, so the run may end with events left; what did commit is once and in
  // order.
  const unsigned seed = static_cast<unsigned>(std::random_device{}());
  INFO("seed " << seed);
  const auto v = run_workers(seed, {.claim = "inbox_claim_unordered"}, 3000, 4, 20s);
  INFO(v.describe());
  CHECK(v.errors.empty());
  CHECK(v.applied > 0);
  CHECK(v.applied_twice == 0);
  CHECK(v.out_of_order == 0);
  CHECK(v.refused > 0);  // the guard was what held
}

TEST_CASE("inbox SQL API checker: catches the unordered claim and the unchecked done put back on purpose",
          "[pg][inbox][checker]") {
  const unsigned first = static_cast<unsigned>(std::random_device{}());
  Verdict v;
  for (unsigned seed = first; seed < first + 3 && v.out_of_order + v.applied_twice == 0; ++seed)
    v = run_workers(seed, {.claim = "inbox_claim_unordered", .done = "inbox_done_unchecked"}, 3000, 4, 20s);
  INFO(v.describe());
  CHECK(v.out_of_order + v.applied_twice > 0);
}
