// outbox-demo-producer: a service in miniature. Each transaction writes a business row
// (demo_orders) and its event (outbox_events) together, at a fixed rate, then exits.
#include <CLI/CLI.hpp>
#include <pqxx/pqxx>

#include <chrono>
#include <iostream>
#include <random>
#include <thread>

int main(int argc, char** argv) {
  CLI::App cli{"Writes business rows and their outbox events in one transaction each"};
  std::string url;
  double rate = 200;
  double duration = 10;
  int aggregates = 50;
  cli.add_option("--database-url", url, "PostgreSQL connection string")->required();
  cli.add_option("--rate", rate, "Transactions per second")->check(CLI::PositiveNumber);
  cli.add_option("--duration", duration, "Seconds to run")->check(CLI::PositiveNumber);
  cli.add_option("--aggregates", aggregates, "Distinct orders to spread events over")->check(CLI::PositiveNumber);
  CLI11_PARSE(cli, argc, argv);

  try {
    pqxx::connection c(url);
    {
      pqxx::work tx(c);
      tx.exec("CREATE TABLE IF NOT EXISTS demo_orders (id text PRIMARY KEY, amount bigint NOT NULL DEFAULT 0, "
              "version bigint NOT NULL DEFAULT 0)");
      tx.commit();
    }
    c.prepare("touch_order",
              "INSERT INTO demo_orders (id, amount, version) VALUES ($1, $2, 1) "
              "ON CONFLICT (id) DO UPDATE SET amount = demo_orders.amount + $2, version = demo_orders.version + 1 "
              "RETURNING version");
    c.prepare("event",
              "SELECT outbox_publish('order', $1, 'OrderAmountAdded', "
              "jsonb_build_object('order', $1::text, 'amount', $2::bigint, 'version', $3::bigint))");
    std::mt19937 rng(std::random_device{}());
    const auto period = std::chrono::duration<double>(1.0 / rate);
    const auto start = std::chrono::steady_clock::now();
    const auto end = start + std::chrono::duration<double>(duration);
    long written = 0;
    // Open loop: arrivals are scheduled by the clock, not by how fast commits return.
    for (auto next = start; next < end; next += std::chrono::duration_cast<std::chrono::steady_clock::duration>(period)) {
      std::this_thread::sleep_until(next);
      std::string order = "order-" + std::to_string(rng() % aggregates);
      long amount = static_cast<long>(rng() % 100) + 1;
      pqxx::work tx(c);
      auto version = tx.exec_prepared1("touch_order", order, amount)[0].as<long>();
      tx.exec_prepared("event", order, amount, version);
      tx.commit();  // business row and event commit together, or neither does
      ++written;
    }
    std::cout << "produced=" << written << "\n";
  } catch (const std::exception& e) {
    std::cerr << "outbox-demo-producer: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
