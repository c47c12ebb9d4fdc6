// inbox_sql_bench: events/s a service processes through the inbox's SQL API (migration 0009)
// with W workers, each transaction claiming a batch, applying a trivial effect (one counter
// update per event) and marking the events done (one inbox_done call per event, or one for
// the batch), beside the same-host ceiling: the same transactions with a plain queue pop
// (FOR UPDATE SKIP LOCKED, no per-aggregate rule) and one UPDATE marking the batch.
// PostgreSQL with fsync and synchronous_commit on. Latency per event: from its batch's claim to
// that batch's commit. A program that prints figures.
#include <CLI/CLI.hpp>
#include <pqxx/pqxx>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <mutex>
#include <thread>

#include "relay/pg/pg_migrator.hpp"
#include "tests/bench/process_cpu.hpp"
#include "tests/support/pg_cluster.hpp"

using namespace std::chrono_literals;
using WallClock = std::chrono::steady_clock;

namespace {

struct Figures {
  double events_per_s = 0;
  double p50_ms = 0, p99_ms = 0, max_ms = 0;  // claimed to committed
  long batches = 0;
  double database_us = 0, workers_us = 0;  // CPU per event processed
};

void land(const std::string& url, const std::string& inbox, long events, int aggregates) {
  pqxx::connection c(url);
  pqxx::work tx(c);
  tx.exec_params("INSERT INTO inbox_events (inbox, event_id, topic, partition, \"offset\", key, event_type, payload) "
                 "SELECT $1, 'ev-' || g, 'bench', g % 4, g, convert_to('agg-' || (g % $3), 'UTF8'), 'Bench', "
                 "convert_to(repeat('x', 200), 'UTF8') FROM generate_series(1, $2) g",
                 inbox, events, aggregates);
  tx.exec("CREATE TABLE IF NOT EXISTS bench_counters (worker int PRIMARY KEY, n bigint NOT NULL)");
  tx.exec("INSERT INTO bench_counters SELECT g, 0 FROM generate_series(0, 63) g ON CONFLICT DO NOTHING");
  tx.commit();
  pqxx::nontransaction(c).exec("VACUUM ANALYZE inbox_events");
}

enum class Mark { each, batch, plain_update };

// `claim_sql` returns a batch's seqs, locked; `mark` says how they are marked processed.
Figures run(const std::string& url, const std::string& inbox, long events, int workers, int batch,
            const std::string& claim_sql, Mark mark, pid_t postmaster) {
  const double db0 = outbox::bench::tree_cpu_seconds(postmaster), me0 = outbox::bench::proc_stat(::getpid()).self;
  std::atomic<long> processed{0}, batches{0};
  std::mutex m;
  std::vector<double> latencies;
  latencies.reserve(static_cast<std::size_t>(events));
  const auto t0 = WallClock::now();
  std::vector<std::thread> pool;
  for (int w = 0; w < workers; ++w)
    pool.emplace_back([&, w] {
      pqxx::connection c(url);
      c.prepare("claim", claim_sql);
      c.prepare("done", "SELECT inbox_done($1)");
      c.prepare("done_all", "SELECT inbox_done_batch($1)");
      c.prepare("mark", "UPDATE inbox_events SET processed_at = now() WHERE seq = ANY($1::bigint[])");
      c.prepare("effect", "UPDATE bench_counters SET n = n + 1 WHERE worker = $1");
      std::vector<double> mine;
      for (int empty = 0; processed < events && empty < 200;) {
        const auto claimed_at = WallClock::now();
        pqxx::work tx(c);
        auto rows = tx.exec_prepared("claim", inbox, batch);
        if (rows.empty()) {
          tx.commit();
          ++empty;
          std::this_thread::sleep_for(1ms);
          continue;
        }
        std::string seqs = "{";
        for (const auto& r : rows) {
          tx.exec_prepared("effect", w);
          if (mark == Mark::each) tx.exec_prepared("done", r[0].as<long>());
          seqs += (seqs.size() > 1 ? "," : "") + r[0].as<std::string>();
        }
        if (mark == Mark::batch) tx.exec_prepared("done_all", seqs + "}");
        if (mark == Mark::plain_update) tx.exec_prepared("mark", seqs + "}");
        tx.commit();
        const double ms = std::chrono::duration<double, std::milli>(WallClock::now() - claimed_at).count();
        mine.insert(mine.end(), rows.size(), ms);
        processed += static_cast<long>(rows.size());
        ++batches;
      }
      std::lock_guard lock(m);
      latencies.insert(latencies.end(), mine.begin(), mine.end());
    });
  for (auto& t : pool) t.join();
  Figures f;
  f.database_us = 1e6 * (outbox::bench::tree_cpu_seconds(postmaster) - db0) / static_cast<double>(std::max(1L, processed.load()));
  f.workers_us = 1e6 * (outbox::bench::proc_stat(::getpid()).self - me0) / static_cast<double>(std::max(1L, processed.load()));
  f.events_per_s = static_cast<double>(processed) / std::chrono::duration<double>(WallClock::now() - t0).count();
  f.batches = batches;
  std::sort(latencies.begin(), latencies.end());
  auto at = [&](double q) { return latencies.empty() ? 0 : latencies[static_cast<std::size_t>(q * (latencies.size() - 1))]; };
  f.p50_ms = at(0.5);
  f.p99_ms = at(0.99);
  f.max_ms = latencies.empty() ? 0 : latencies.back();
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App cli{"Events/s through the inbox's SQL API, beside a plain queue pop"};
  long events = 100'000;
  int workers = 4, batch = 100, aggregates = 10'000;
  cli.add_option("--events", events, "Events landed in the inbox before the workers start");
  cli.add_option("--workers", workers, "Concurrent workers, one connection each");
  cli.add_option("--batch", batch, "Events claimed per transaction");
  cli.add_option("--aggregates", aggregates, "Distinct keys the events are spread over");
  CLI11_PARSE(cli, argc, argv);

  outbox::test::PgCluster cluster({{"fsync=on", "synchronous_commit=on", "full_page_writes=on"}});
  // Each run on a database of its own, landed and analyzed just before it.
  auto fresh = [&](const std::string& name) {
    cluster.create_database(name);
    const std::string url = cluster.conninfo(name);
    outbox::relay::pg::PgMigrator(url, "public").migrate();
    land(url, "bench", events, aggregates);
    return url;
  };
  const std::string claim = "SELECT seq FROM inbox_claim($1, $2)";
  const pid_t postmaster = outbox::bench::postmaster_pid(cluster.directory() + "/data");
  const auto pop = run(fresh("bench_pop"), "bench", events, workers, batch,
                       "SELECT seq FROM inbox_events WHERE inbox = $1 AND processed_at IS NULL "
                       "AND dead_lettered_at IS NULL ORDER BY seq LIMIT $2 FOR UPDATE SKIP LOCKED",
                       Mark::plain_update, postmaster);
  const auto each = run(fresh("bench_each"), "bench", events, workers, batch, claim, Mark::each, postmaster);
  const auto all = run(fresh("bench_batch"), "bench", events, workers, batch, claim, Mark::batch, postmaster);

  std::printf("inbox_sql_bench: %ld events over %d aggregates, %d workers, batches of %d, 200-byte payloads, "
              "PostgreSQL with fsync and synchronous_commit on\n",
              events, aggregates, workers, batch);
  const long cores = ::sysconf(_SC_NPROCESSORS_ONLN);
  std::printf("%-58s %10s %9s %9s %9s %8s %22s %12s\n", "run", "events/s", "p50 ms", "p99 ms", "max ms", "batches",
              "CPU us/event: db+workers", "cores allow");
  auto row = [&](const char* name, const Figures& f) {
    const double us = f.database_us + f.workers_us;
    std::printf("%-58s %10.0f %9.1f %9.1f %9.1f %8ld %14.1f + %5.1f %12.0f\n", name, f.events_per_s, f.p50_ms, f.p99_ms,
                f.max_ms, f.batches, f.database_us, f.workers_us, us > 0 ? 1e6 * static_cast<double>(cores) / us : 0);
  };
  row("SQL API: inbox_claim + effect + inbox_done per event", each);
  row("SQL API: inbox_claim + effect + inbox_done_batch", all);
  row("ceiling: plain SKIP LOCKED pop + effect + one UPDATE", pop);
  std::printf("ratio to the ceiling: per-event done %.2f, batch done %.2f\n", each.events_per_s / pop.events_per_s,
              all.events_per_s / pop.events_per_s);
  std::printf("latency per event: from its batch's claim to the batch's commit; CPU from /proc (PostgreSQL's processes, "
              "this program's workers): %ld cores cannot run more events/s than they can pay for\n", cores);
  return 0;
}
