// consumer_bench: events/s through the consumer runner and its inbox (one database
// transaction per event: inbox row + a balance upsert), for new events and for redelivered
// ones, beside the same transactions issued without Kafka. A program that prints figures.
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
               bool expect_duplicates) {
  ConsumerOptions o;
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
  long events = 20000;
  cli.add_option("--events", events, "Events on the topic");
  CLI11_PARSE(cli, argc, argv);

  test::PgCluster cluster;
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
  kafka.create_topic("bench", 4);
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

  // The same transactions without Kafka: inbox claim + upsert, one commit per event.
  double sql_rate = 0;
  {
    pqxx::connection c(url);
    c.prepare("credit", "INSERT INTO balances VALUES ($1, $2) ON CONFLICT (account) DO UPDATE SET total = balances.total + $2");
    Inbox inbox("sql-only");
    auto t0 = WallClock::now();
    for (long i = 0; i < events; ++i)
      (void)inbox.process(c, event_id(i), [&](pqxx::work& tx) { credit(tx, "acct-" + std::to_string(i % 1000), 1); });
    sql_rate = static_cast<double>(events) / std::chrono::duration<double>(WallClock::now() - t0).count();
  }
  double fresh = consume(kafka.bootstrap(), url, "bench-a", events, false);
  double redelivered = consume(kafka.bootstrap(), url, "bench-b", events, true);

  std::printf("consumer_bench: %ld events, one transaction per event (inbox row + balance upsert), "
              "PostgreSQL with synchronous_commit=off\n", events);
  std::printf("%-44s %12s\n", "run", "events/s");
  std::printf("%-44s %12.0f\n", "SQL only (same transactions, no Kafka)", sql_rate);
  std::printf("%-44s %12.0f\n", "consumer runner, new events", fresh);
  std::printf("%-44s %12.0f\n", "consumer runner, redelivered (all duplicates)", redelivered);
  std::printf("ratio new events / SQL only: %.2f\n", fresh / sql_rate);
  return 0;
}
