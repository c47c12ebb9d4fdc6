// outbox-demo-consumer: a consuming service in miniature. Each OrderAmountAdded event adds its
// amount to demo_balances in the same transaction as its inbox row, so redelivered events
// (the relay and Kafka deliver at least once) change nothing. Runs until SIGTERM/SIGINT,
// then prints what it processed and how many duplicates it absorbed.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include <atomic>
#include <csignal>
#include <iostream>

#include "outbox/consumer_runner.hpp"

namespace {
std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop = true; }
}  // namespace

int main(int argc, char** argv) {
  CLI::App cli{"Consumes order events and keeps a balance per order, exactly once"};
  outbox::ConsumerOptions o;
  std::string topic = "outbox.event.order";
  long commit_ms = 1000;
  long session_ms = 10000;
  bool verbose = false;
  cli.add_option("--database-url", o.database_url, "PostgreSQL connection string")->required();
  cli.add_option("--brokers", o.brokers, "Kafka bootstrap servers")->required();
  cli.add_option("--group", o.group_id, "Consumer group")->default_val("demo-balances");
  cli.add_option("--consumer-name", o.consumer_name, "Inbox consumer name (default: the group)");
  cli.add_option("--topic", topic, "Topic to consume")->default_val("outbox.event.order");
  cli.add_option("--commit-interval-ms", commit_ms, "How often settled offsets are committed")->default_val(1000);
  cli.add_option("--session-timeout-ms", session_ms, "Kafka session.timeout.ms")->default_val(10000);
  cli.add_flag("-v,--verbose", verbose, "Log retries and dead letters");
  CLI11_PARSE(cli, argc, argv);
  o.topics = {topic};
  o.commit_interval = std::chrono::milliseconds(commit_ms);
  o.kafka_properties["session.timeout.ms"] = std::to_string(session_ms);
  o.kafka_properties["heartbeat.interval.ms"] = std::to_string(std::max(100L, session_ms / 10));
  if (verbose) o.log = [](const std::string& line) { std::cerr << "outbox-demo-consumer: " << line << "\n"; };

  try {
    {
      pqxx::connection c(o.database_url);
      pqxx::work tx(c);
      tx.exec("CREATE TABLE IF NOT EXISTS demo_balances (order_id text PRIMARY KEY, total bigint NOT NULL, "
              "events bigint NOT NULL)");
      tx.commit();
    }
    outbox::ConsumerRunner runner(o, [](pqxx::work& tx, const outbox::ConsumedEvent& ev) {
      auto j = nlohmann::json::parse(ev.value, nullptr, false);
      if (j.is_discarded() || !j.contains("amount") || !j["amount"].is_number_integer())
        throw outbox::PermanentError("payload has no integer amount");
      tx.exec_params("INSERT INTO demo_balances (order_id, total, events) VALUES ($1, $2, 1) "
                     "ON CONFLICT (order_id) DO UPDATE SET total = demo_balances.total + EXCLUDED.total, "
                     "events = demo_balances.events + 1",
                     ev.key, j["amount"].get<long long>());
    });
    std::signal(SIGTERM, on_signal);
    std::signal(SIGINT, on_signal);
    runner.run(g_stop);
    const auto& s = runner.stats();
    std::cout << "processed=" << s.processed << " duplicates_absorbed=" << s.duplicates
              << " dead_lettered=" << s.dead_lettered << " transient_retries=" << s.transient_retries << std::endl;
  } catch (const std::exception& e) {
    std::cerr << "outbox-demo-consumer: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
