// consumer_bench: events/s through the consumer runner and its inbox (a poll batch in one
// database transaction, its inbox rows claimed in one statement, each event's balance upsert
// in a savepoint), for new events and for redelivered ones, beside the same statements issued
// without Kafka (the ceiling), the one-transaction-per-event shape, and the round trip that
// bounds them. PostgreSQL with fsync and synchronous_commit on. A program that prints figures.
#include <CLI/CLI.hpp>
#include <librdkafka/rdkafka.h>
#include <pqxx/pqxx>

#include <atomic>
#include <cstdio>
#include <thread>

#include "outbox/consumer_runner.hpp"
#include "outbox/inbox.hpp"
#include "relay/pg/pg_migrator.hpp"
#include "tests/support/mock_kafka.hpp"
#include "tests/support/pg_cluster.hpp"

using namespace outbox;
using namespace std::chrono_literals;
using WallClock = std::chrono::steady_clock;

namespace {

std::string event_id(long n) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "6f1c1f9e-8c1b-4c1e-9a53-%012ld", n % 1000000000000L);
  return buf;
}

void credit(pqxx::work& tx, const std::string& account, long amount) {
  tx.exec_prepared("credit", account, amount);
}

double consume(const std::string& brokers, const std::string& url, const std::string& group, long expect,
               bool expect_duplicates, std::size_t batch) {
  ConsumerOptions o;
  o.batch_size = batch;
  o.brokers = brokers;
  o.group_id = group;
  o.consumer_name = "bench";
  o.topics = {"bench"};
  o.database_url = url;
  o.kafka_properties = {{"session.timeout.ms", "6000"}, {"fetch.wait.max.ms", "10"}};
  bool prepared = false;
  ConsumerRunner runner(o, [&](pqxx::work& tx, const ConsumedEvent& ev) {
    if (!prepared) {
      tx.conn().prepare("credit",
                        "INSERT INTO balances VALUES ($1, $2) ON CONFLICT (account) DO UPDATE SET total = balances.total + $2");
      prepared = true;
    }
    credit(tx, ev.key, 1);
  });
  std::atomic<bool> stop{false};
  auto t0 = WallClock::now();
  std::thread t([&] { runner.run(stop); });
  auto done = [&] {
    return static_cast<long>(expect_duplicates ? runner.stats().duplicates.load() : runner.stats().processed.load()) >= expect;
  };
  while (!done()) std::this_thread::sleep_for(5ms);
  double secs = std::chrono::duration<double>(WallClock::now() - t0).count();
  stop = true;
  t.join();
  return static_cast<double>(expect) / secs;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App cli{"Consumer throughput through the inbox"};
  long events = 100'000;
  std::size_t batch = 500;
  cli.add_option("--events", events, "Events on the topic");
  cli.add_option("--batch", batch, "ConsumerOptions::batch_size (and the ceiling's transactions)");
  CLI11_PARSE(cli, argc, argv);

  test::PgCluster cluster({{"fsync=on", "synchronous_commit=on", "full_page_writes=on"}});
  cluster.create_database("bench");
  const std::string url = cluster.conninfo("bench");
  relay::pg::PgMigrator(url, "public").migrate();
  {
    pqxx::connection c(url);
    pqxx::work tx(c);
    tx.exec("CREATE TABLE balances (account text PRIMARY KEY, total bigint NOT NULL)");
    tx.commit();
  }
  test::MockKafka kafka(1);
  kafka.create_topic("bench", 8);  // the mock keeps ~5 MiB per partition
  {
    char err[256];
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", kafka.bootstrap().c_str(), err, sizeof err);
    rd_kafka_conf_set(conf, "linger.ms", "5", err, sizeof err);
    rd_kafka_t* p = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    const std::string payload(200, 'x');
    for (long i = 0; i < events; ++i) {
      std::string key = "acct-" + std::to_string(i % 1000), id = event_id(i);
      rd_kafka_headers_t* h = rd_kafka_headers_new(1);
      rd_kafka_header_add(h, "id", -1, id.data(), static_cast<ssize_t>(id.size()));
      while (rd_kafka_producev(p, RD_KAFKA_V_TOPIC("bench"), RD_KAFKA_V_KEY(key.data(), key.size()),
                               RD_KAFKA_V_VALUE(const_cast<char*>(payload.data()), payload.size()),
                               RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                               RD_KAFKA_V_END) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
        rd_kafka_poll(p, 10);
    }
    rd_kafka_flush(p, 30000);
    rd_kafka_destroy(p);
  }

  // The runner's statements without Kafka: per batch one transaction, its events claimed in
  // one statement, then per event a savepoint (opened in the round trip releasing the one
  // before) and the upsert (the ceiling); and one transaction per event, claim then upsert,
  // on a sample.
  auto sql_only = [&](const std::string& consumer, long count, std::size_t per_tx) {
    pqxx::connection c(url);
    c.prepare("credit", "INSERT INTO balances VALUES ($1, $2) ON CONFLICT (account) DO UPDATE SET total = balances.total + $2");
    Inbox inbox(consumer);
    auto t0 = WallClock::now();
    for (long i = 0; i < count;) {
      pqxx::work tx(c);
      if (per_tx == 1) {
        if (inbox.claim(tx, event_id(i))) credit(tx, "acct-" + std::to_string(i % 1000), 1);
        ++i;
      } else {
        std::vector<std::string> ids;
        for (long j = i; j < count && ids.size() < per_tx; ++j) ids.push_back(event_id(j));
        auto fresh = inbox.claim_all(tx, ids);
        bool open = false;
        for (const auto& id : ids) {
          if (fresh.erase(Inbox::canonical_event_id(id)) == 0) {
            ++i;
            continue;
          }
          tx.exec(open ? "RELEASE SAVEPOINT outbox_event; SAVEPOINT outbox_event" : "SAVEPOINT outbox_event");
          open = true;
          credit(tx, "acct-" + std::to_string(i % 1000), 1);
          ++i;
        }
      }
      tx.commit();
    }
    return static_cast<double>(count) / std::chrono::duration<double>(WallClock::now() - t0).count();
  };
  // What bounds both: the round trip to PostgreSQL, two per new event (savepoint, upsert).
  auto round_trips = [&] {
    pqxx::connection c(url);
    pqxx::nontransaction tx(c);
    constexpr int kTrips = 5000;
    auto t0 = WallClock::now();
    for (int i = 0; i < kTrips; ++i) tx.exec("SELECT 1");
    return kTrips / std::chrono::duration<double>(WallClock::now() - t0).count();
  };
  const double trips = round_trips();
  const long sample = std::min<long>(events, 3000);
  const double per_event = sql_only("sql-per-event", sample, 1);
  const double ceiling = sql_only("sql-batched", events, batch);
  double fresh = consume(kafka.bootstrap(), url, "bench-a", events, false, batch);
  double redelivered = consume(kafka.bootstrap(), url, "bench-b", events, true, batch);

  std::printf("consumer_bench: %ld events, batches of %zu (one transaction each, a savepoint per event: inbox row + "
              "balance upsert over 1,000 accounts), PostgreSQL with fsync and synchronous_commit on\n",
              events, batch);
  std::printf("%-58s %12s\n", "run", "events/s");
  std::printf("%-58s %12.0f\n", "ceiling: SQL only, the same batched transactions", ceiling);
  std::printf("%-58s %12.0f\n", "consumer runner, new events", fresh);
  std::printf("%-58s %12.0f\n", "consumer runner, redelivered (all duplicates)", redelivered);
  std::printf("%-58s %12.0f\n", "for comparison: SQL only, one transaction per event", per_event);
  std::printf("ratio new events / ceiling: %.2f\n", fresh / ceiling);
  std::printf("round trips: SELECT 1 %.0f/s on one session; at 2 per new event the bound is %.0f events/s\n", trips,
              trips / 2);
  return 0;
}
