#include "tests/support/text_tail.hpp"
#include "tests/drills/drill_harness.hpp"

#include <catch2/catch.hpp>
#include <pqxx/pqxx>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <regex>
#include <set>

#include "tests/integration/pg_fixture.hpp"

namespace outbox::test::drill {

const std::string kRelayBinary = OUTBOX_RELAY_BINARY;
const std::string kConsumerBinary = OUTBOX_DEMO_CONSUMER_BINARY;

namespace {

using namespace std::chrono_literals;

std::string seconds_text(const std::optional<Millis>& d) {
  if (!d) return "never";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f s", static_cast<double>(d->count()) / 1000.0);
  return buf;
}

}  // namespace

std::uint32_t drill_seed() {
  static const std::uint32_t seed = [] {
    if (const char* s = std::getenv("OUTBOX_DRILL_SEED"); s != nullptr && *s != '\0')
      return static_cast<std::uint32_t>(std::strtoul(s, nullptr, 10));
    return std::random_device{}();
  }();
  return seed;
}

EventStream::EventStream(std::string url, int rate_per_second, int aggregates, std::uint32_t seed)
    : url_(std::move(url)),
      period_(1'000'000 / rate_per_second),
      aggregates_(aggregates),
      seed_(seed),
      thread_([this](const std::stop_token& halt) { run(halt); }) {}

EventStream::~EventStream() { stop(); }

void EventStream::stop() {
  thread_.request_stop();
  if (thread_.joinable()) thread_.join();
}

void EventStream::run(const std::stop_token& halt) {
  std::mt19937 rng(seed_);
  std::unique_ptr<pqxx::connection> conn;
  auto next = std::chrono::steady_clock::now();
  for (long n = 0; !halt.stop_requested(); ++n) {
    std::this_thread::sleep_until(next);  // paces the open-loop producer
    next += period_;
    if (std::chrono::steady_clock::now() - next > 1s) next = std::chrono::steady_clock::now();
    const std::string order = "order-" + std::to_string(rng() % static_cast<unsigned>(aggregates_));
    const long amount = 1 + (n * 7919) % 100;
    try {
      if (!conn) {
        conn = std::make_unique<pqxx::connection>(url_ + " application_name=drill-producer connect_timeout=2");
        // A service writes an aggregate's events under that aggregate's lock, so per aggregate
        // commit order is seq order (rows of different aggregates commit in any order).
        conn->prepare("lock", "SELECT pg_advisory_xact_lock(hashtext($1))");
        conn->prepare("event",
                      "INSERT INTO outbox_events (aggregate_type, aggregate_id, event_type, payload) "
                      "VALUES ('order', $1, 'OrderAmountAdded', convert_to(json_build_object('amount', $2::bigint)::text, "
                      "'UTF8'))");
      }
      pqxx::work tx(*conn);
      tx.exec_prepared("lock", order);
      tx.exec_prepared("event", order, amount);
      tx.commit();
    } catch (const std::exception&) {
      // Database away: the row is not there, or (commit outcome unknown) it is. The verifier
      // takes the table, not this count, as what was sent.
      ++failed_;
      conn.reset();
    }
  }
}

void report(const DrillResult& r) {
  char line[1024];
  std::snprintf(line, sizeof line,
                "drill | %-40s | sent %6ld | lost %zu | duplicates %5zu | applied twice %s | recovered in %s | %s",
                r.scenario.c_str(), r.sent, r.lost, r.duplicates,
                r.applied_twice ? std::to_string(*r.applied_twice).c_str() : "-", seconds_text(r.recovery).c_str(),
                r.detail.c_str());
  std::printf("%s\n", line);
  std::fflush(stdout);
  std::ofstream out(OUTBOX_DRILL_RESULTS, std::ios::app);
  const std::time_t now = std::time(nullptr);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  out << stamp << " seed " << drill_seed() << " " << line << "\n";
}

Drill::Drill(std::string name, int brokers, PgCluster* cluster)
    : scenario(std::move(name)),
      seed(drill_seed()),
      rng(seed),
      url(fresh_database(cluster != nullptr ? *cluster : PgCluster::shared())),
      kafka(brokers),
      reader((kafka.create_topic(kTopic, 4, brokers), kafka.bootstrap()), kTopic),
      http_port(free_loopback_port()) {}

Drill::~Drill() {
  if (stream) stream->stop();
}

std::string Drill::log_path(const std::string& what, int n) const {
  return "/tmp/outbox-drill-" + std::to_string(::getpid()) + "-" + what + "-" + std::to_string(n) + ".log";
}

void Drill::warm_up(long published) {
  start_stream();
  start_relay();
  const bool flowing = pump([&] { return count("published_at IS NOT NULL") >= published; }, 30s);
  INFO(diagnosis());
  REQUIRE(flowing);
}

void Drill::start_stream() { stream = std::make_unique<EventStream>(url, setup.rate, setup.aggregates, seed); }

void Drill::prefill(long count) {
  pqxx::connection c(url);
  pqxx::work tx(c);
  tx.exec_params("INSERT INTO outbox_events (aggregate_type, aggregate_id, event_type, payload) "
                 "SELECT 'order', 'order-' || (g % $2), 'OrderAmountAdded', "
                 "convert_to(json_build_object('amount', 1 + g % 100)::text, 'UTF8') FROM generate_series(1, $1) AS g",
                 count, setup.aggregates);
  tx.commit();
}

void Drill::start_relay() {
  std::map<std::string, std::string> env{{"OUTBOX_RELAY_DATABASE_URL", url},
                                         {"OUTBOX_RELAY_KAFKA_BROKERS", kafka.bootstrap()},
                                         {"OUTBOX_RELAY_RELAY_BATCH_SIZE", "100"},
                                         {"OUTBOX_RELAY_KAFKA_DELIVERY_TIMEOUT_MS", "5000"},
                                         {"OUTBOX_RELAY_HTTP_LISTEN", "127.0.0.1:" + std::to_string(http_port)},
                                         {"OUTBOX_RELAY_LOG_FORMAT", "text"}};
  for (const auto& [k, v] : setup.relay_env) env[k] = v;
  relay.reset();  // a previous, killed instance is reaped first
  relay = std::make_unique<ChildProcess>(kRelayBinary, std::vector<std::string>{"run"}, env,
                                         log_path("relay", ++relay_starts));
}

Drill::CommandOutcome Drill::run_command(const std::vector<std::string>& args, const std::string& database_url) {
  ChildProcess p(kRelayBinary, args,
                 {{"OUTBOX_RELAY_DATABASE_URL", database_url.empty() ? url : database_url},
                  {"OUTBOX_RELAY_KAFKA_BROKERS", kafka.bootstrap()},
                  {"OUTBOX_RELAY_HTTP_LISTEN", ""},
                  {"OUTBOX_RELAY_LOG_FORMAT", "text"}},
                 log_path("command", ++commands_run_));
  CommandOutcome o;
  o.code = p.wait(20s);
  o.output = p.output();
  return o;
}

void Drill::kill_relay() {
  relay->signal(SIGKILL);
  REQUIRE(relay->wait(10s) == std::optional<int>(128 + SIGKILL));
}

void Drill::start_consumer(long commit_ms) {
  consumer.reset();
  consumer = std::make_unique<ChildProcess>(
      kConsumerBinary,
      std::vector<std::string>{"--database-url", url, "--brokers", kafka.bootstrap(), "--group", "balances",
                               "--commit-interval-ms", std::to_string(commit_ms), "--session-timeout-ms", "3000"},
      std::map<std::string, std::string>{}, log_path("consumer", ++consumer_starts));
}

void Drill::kill_consumer() {
  consumer->signal(SIGKILL);
  REQUIRE(consumer->wait(10s) == std::optional<int>(128 + SIGKILL));
}

void Drill::hold(Millis span) {
  for (auto until = std::chrono::steady_clock::now() + span; std::chrono::steady_clock::now() < until;)
    reader.poll_for(std::min(Millis(100), std::chrono::duration_cast<Millis>(until - std::chrono::steady_clock::now())));
}

void Drill::sql(const std::string& statements) {
  pqxx::connection c(url);
  pqxx::nontransaction tx(c);
  tx.exec(statements);  // a multi-statement string runs as one implicit transaction
}

long Drill::count(const std::string& where_sql) {
  try {
    return scalar(url, "SELECT count(*) FROM outbox_events WHERE " + where_sql);
  } catch (const std::exception&) {
    return -1;
  }
}

std::int64_t Drill::max_seq() { return scalar(url, "SELECT coalesce(max(seq), 0) FROM outbox_events"); }

long Drill::pending_through(std::int64_t seq) {
  return count("published_at IS NULL AND dead_lettered_at IS NULL AND seq <= " + std::to_string(seq));
}

std::optional<Millis> Drill::recover(Millis deadline) {
  const auto from = std::chrono::steady_clock::now();
  const auto seq = max_seq();
  if (!pump([&] { return pending_through(seq) == 0; }, deadline)) return std::nullopt;
  const auto took = std::chrono::duration_cast<Millis>(std::chrono::steady_clock::now() - from);
  hold(std::chrono::seconds(1));
  return took;
}

int Drill::readyz() const { return http_get(http_port, "/readyz").status; }

std::string Drill::relay_log() const { return relay ? last_lines(relay->output(), 30) : std::string(); }

std::string Drill::diagnosis() {
  std::string out = "relay log tail:\n" + relay_log() + "\nrows with counted failures:\n";
  try {
    pqxx::connection c(url);
    pqxx::nontransaction tx(c);
    for (const auto& row : tx.exec("SELECT seq, aggregate_id, attempts, dead_lettered_at IS NOT NULL, "
                                   "coalesce(last_error, '') FROM outbox_events "
                                   "WHERE attempts > 0 OR last_error IS NOT NULL ORDER BY seq LIMIT 20"))
      out += "  seq " + row[0].as<std::string>() + " " + row[1].as<std::string>() + " attempts " +
             row[2].as<std::string>() + (row[3].as<bool>() ? " dead-lettered: " : ": ") + row[4].as<std::string>() +
             "\n";
  } catch (const std::exception& e) {
    out += std::string("  (database: ") + e.what() + ")\n";
  }
  return out;
}

EffectsVerdict Drill::check_effects() {
  pqxx::connection c(url);
  pqxx::nontransaction tx(c);
  auto row = tx.exec1(
      "WITH expected AS (SELECT aggregate_id AS order_id, count(*) AS events, "
      "sum((convert_from(payload, 'UTF8')::jsonb ->> 'amount')::bigint) AS total "
      "FROM outbox_events GROUP BY aggregate_id) "
      "SELECT coalesce(sum(greatest(coalesce(b.events, 0) - coalesce(e.events, 0), 0)), 0), "
      "coalesce(sum(greatest(coalesce(e.events, 0) - coalesce(b.events, 0), 0)), 0), "
      "count(*) FILTER (WHERE b.total IS DISTINCT FROM e.total) "
      "FROM expected e FULL JOIN demo_balances b USING (order_id)");
  return {row[0].as<long>(), row[1].as<long>(), row[2].as<long>()};
}

void Drill::finish(std::optional<Millis> recovery, const std::string& detail) {
  if (stream) stream->stop();
  const long rows = count("true");
  const bool drained = pump([&] { return count("published_at IS NULL AND dead_lettered_at IS NULL") == 0; }, 90s);
  INFO(diagnosis());
  CHECK(drained);
  // Every row's id read back: count distinct ids as the reader goes.
  std::set<std::string> ids;
  std::size_t scanned = 0;
  CHECK(reader.read_until(
      [&](const auto& all) {
        for (; scanned < all.size(); ++scanned)
          if (auto id = header(all[scanned], "id")) ids.insert(*id);
        return static_cast<long>(ids.size()) >= rows;
      },
      60s));

  DrillResult r;
  r.scenario = scenario;
  r.recovery = recovery;
  r.detail = detail;
  std::optional<EffectsVerdict> effects;
  if (consumer) {
    auto applied = [&] { return scalar(url, "SELECT count(*) FROM consumer_inbox WHERE consumer = 'balances'"); };
    CHECK(eventually([&] { return applied() >= rows; }, 90s, 100ms));
    consumer->signal(SIGTERM);
    CHECK(consumer->wait(30s) == std::optional<int>(0));
    std::smatch m;
    const std::string out = consumer->output();
    if (std::regex_search(out, m, std::regex("duplicates_absorbed=([0-9]+)"))) consumer_absorbed += std::stol(m[1]);
    effects = check_effects();
    r.applied_twice = effects->applied_twice;
    r.detail += (r.detail.empty() ? "" : ", ") + std::to_string(consumer_absorbed) + " redeliveries absorbed by the inbox";
  }
  relay->signal(SIGTERM);
  CHECK(relay->wait(30s) == std::optional<int>(0));

  const auto v = check_deliveries(url, reader.messages());
  r.sent = static_cast<long>(v.rows);
  r.lost = v.missing;
  r.duplicates = v.duplicates;
  report(r);

  INFO(v.first_problem);
  CHECK(recovery.has_value());
  CHECK(burnt_attempts() == 0);  // broker or database trouble, crashes: no attempt burnt
  CHECK(v.rows > 0);
  CHECK(v.missing == 0);
  CHECK(v.ordered());
  if (effects) {
    CHECK(effects->applied_twice == 0);
    CHECK(effects->not_applied == 0);
    CHECK(effects->wrong_totals == 0);
  }
}

}  // namespace outbox::test::drill
