// The inbox sidecar under a steady stream through the whole path: producer -> relay -> Kafka ->
// `outbox-relay inbox run` -> the service's inbox_events -> a worker applying a balance effect
// through the SQL API (inbox_claim, effect, inbox_done_batch in one transaction). Faults: the
// broker down, the service's database down, the sidecar SIGKILLed again and again. Checked from
// outside: every outbox event in the inbox once, every effect once, balances equal to the
// outbox's sums; one report line per drill.
#include <catch2/catch.hpp>

#include <pqxx/pqxx>

#include <set>

#include "tests/drills/drill_harness.hpp"
#include "tests/integration/pg_fixture.hpp"

using namespace outbox::test;
using namespace outbox::test::drill;
using namespace std::chrono_literals;

namespace {

// The consuming service: its database, its sidecar (restartable) and one worker thread.
class Service {
 public:
  Service(Drill& d, PgCluster& cluster) : d_(d), url_(fresh_database(cluster)), port_(free_loopback_port()) {
    exec(url_, "CREATE TABLE drill_balances (account text PRIMARY KEY, balance bigint NOT NULL)");
    exec(url_, "CREATE TABLE drill_ledger (id bigserial PRIMARY KEY, event_id text NOT NULL, account text NOT NULL, "
               "amount bigint NOT NULL)");
  }
  ~Service() { stop_worker(); }

  void start_sidecar() {
    sidecar_ = std::make_unique<ChildProcess>(
        kRelayBinary, std::vector<std::string>{"inbox", "run"},
        std::map<std::string, std::string>{{"OUTBOX_RELAY_DATABASE_URL", url_},
                                           {"OUTBOX_RELAY_KAFKA_BROKERS", d_.kafka.bootstrap()},
                                           {"OUTBOX_RELAY_INBOX_TOPICS", kTopic},
                                           {"OUTBOX_RELAY_INBOX_NAME", "orders"},
                                           {"OUTBOX_RELAY_INBOX_COMMIT_INTERVAL_MS", "1000"},
                                           {"OUTBOX_RELAY_INBOX_CONSUMER_PROPERTY_SESSION_TIMEOUT_MS", "3000"},
                                           {"OUTBOX_RELAY_INBOX_CONSUMER_PROPERTY_HEARTBEAT_INTERVAL_MS", "500"},
                                           {"OUTBOX_RELAY_HTTP_LISTEN", "127.0.0.1:" + std::to_string(port_)},
                                           {"OUTBOX_RELAY_LOG_FORMAT", "text"}},
        d_.url + "-sidecar-" + std::to_string(++starts_) + ".log");
  }
  // For the report only: what each sidecar run absorbed, from its metrics, scraped every
  // 100 ms (a killed one's last 100 ms are not counted: a lower bound).
  void kill_sidecar() {
    sidecar_->signal(SIGKILL);
    (void)sidecar_->wait(10s);
    absorbed_ += seen_.exchange(0);
  }
  int stop_sidecar() {
    seen_ = std::max<long>(seen_, static_cast<long>(metric_value(port_, "outbox_inbox_duplicates_total")));
    sidecar_->signal(SIGTERM);
    const int code = sidecar_->wait(30s).value_or(-1);
    absorbed_ += seen_.exchange(0);
    return code;
  }
  [[nodiscard]] int readyz() const { return http_get(port_, "/readyz").status; }
  // The running sidecar has partitions and has consumed from them.
  [[nodiscard]] bool consuming() const { return metric_value(port_, "outbox_inbox_received_total") > 0; }

  void start_worker() {
    worker_ = std::jthread([this](std::stop_token halt) { work(halt); });
    scraper_ = std::jthread([this](std::stop_token halt) {
      while (!halt.stop_requested()) {
        const auto v = static_cast<long>(metric_value(port_, "outbox_inbox_duplicates_total"));
        if (v > seen_) seen_ = v;
        std::this_thread::sleep_for(100ms);  // the scrape interval
      }
    });
  }
  void stop_worker() {
    for (auto* t : {&worker_, &scraper_})
      if (t->joinable()) {
        t->request_stop();
        t->join();
      }
  }

  // -1 when the database does not answer.
  long count(const std::string& sql) {
    try {
      return scalar(url_, sql);
    } catch (const std::exception&) {
      return -1;
    }
  }
  // Rows of the inbox among these event ids.
  long landed_of(const std::vector<std::string>& ids) {
    try {
      pqxx::connection c(url_);
      pqxx::nontransaction tx(c);
      std::string list = "{";
      for (std::size_t i = 0; i < ids.size(); ++i) list += (i ? "," : "") + ids[i];
      return tx.exec_params("SELECT count(*) FROM inbox_events WHERE inbox = 'orders' AND event_id = ANY($1::text[])",
                            list + "}")[0][0].as<long>();
    } catch (const std::exception&) {
      return -1;
    }
  }

  const std::string& url() const { return url_; }
  long absorbed() const { return absorbed_; }
  long worker_failures() const { return worker_failures_; }

 private:
  // One transaction per batch: claim, apply each effect, mark the batch done.
  void work(const std::stop_token& halt) {
    std::unique_ptr<pqxx::connection> c;
    while (!halt.stop_requested()) {
      try {
        if (!c || !c->is_open()) c = std::make_unique<pqxx::connection>(url_);
        pqxx::work tx(*c);
        auto claimed = tx.exec("SELECT seq, event_id, convert_from(key, 'UTF8'), "
                               "(convert_from(payload, 'UTF8')::jsonb->>'amount')::bigint FROM inbox_claim('orders', 100)");
        if (claimed.empty()) {
          tx.commit();
          std::this_thread::sleep_for(20ms);  // idle worker's poll interval
          continue;
        }
        std::string seqs = "{";
        for (const auto& r : claimed) {
          tx.exec_params("INSERT INTO drill_balances AS b (account, balance) VALUES ($1, $2) "
                         "ON CONFLICT (account) DO UPDATE SET balance = b.balance + excluded.balance",
                         r[2].as<std::string>(), r[3].as<long>());
          tx.exec_params("INSERT INTO drill_ledger (event_id, account, amount) VALUES ($1, $2, $3)",
                         r[1].as<std::string>(), r[2].as<std::string>(), r[3].as<long>());
          seqs += (seqs.size() > 1 ? "," : "") + r[0].as<std::string>();
        }
        tx.exec_params("SELECT inbox_done_batch($1::bigint[])", seqs + "}");
        tx.commit();
      } catch (const std::exception&) {
        ++worker_failures_;
        c.reset();
        std::this_thread::sleep_for(100ms);  // the database is away: back off before reconnecting
      }
    }
  }

  Drill& d_;
  std::string url_;
  int port_;
  std::unique_ptr<ChildProcess> sidecar_;
  int starts_ = 0;
  long absorbed_ = 0;
  std::atomic<long> worker_failures_{0};
  std::atomic<long> seen_{0};  // the running sidecar's duplicates_total, highest scraped
  std::jthread worker_;
  std::jthread scraper_;
};

std::vector<std::string> outbox_ids(const std::string& url) {
  pqxx::connection c(url);
  pqxx::nontransaction tx(c);
  std::vector<std::string> ids;
  for (const auto& r : tx.exec("SELECT id::text FROM outbox_events ORDER BY seq")) ids.push_back(r[0].as<std::string>());
  return ids;
}

// After the fault: how long until every event committed to the outbox so far is in the inbox.
std::optional<Millis> recovered(Drill& d, Service& s, Millis deadline = 90s) {
  const auto start = std::chrono::steady_clock::now();
  const auto ids = outbox_ids(d.url);
  if (!d.pump([&] { return s.landed_of(ids) >= static_cast<long>(ids.size()); }, deadline)) return std::nullopt;
  return std::chrono::duration_cast<Millis>(std::chrono::steady_clock::now() - start);
}

// Stops the stream, waits for the inbox and the effects to hold every event, stops the
// processes, reports and checks.
void finish(Drill& d, Service& s, std::optional<Millis> recovery, const std::string& detail) {
  d.stream->stop();
  const auto ids = outbox_ids(d.url);
  const long rows = static_cast<long>(ids.size());
  CHECK(d.pump([&] { return s.landed_of(ids) >= rows; }, 120s));
  CHECK(eventually([&] { return s.count("SELECT count(DISTINCT event_id) FROM drill_ledger") >= rows; }, 120s, 100ms));
  CHECK(s.stop_sidecar() == 0);
  s.stop_worker();
  d.relay->signal(SIGTERM);
  CHECK(d.relay->wait(30s) == std::optional<int>(0));

  const auto v = check_deliveries(d.url, d.reader.messages());
  const long lost = rows - s.landed_of(ids);
  const long applied_twice = s.count("SELECT count(*) - count(DISTINCT event_id) FROM drill_ledger");
  const long not_applied = rows - s.count("SELECT count(DISTINCT event_id) FROM drill_ledger");
  // Balances against the outbox's own amounts.
  std::map<std::string, long> expected;
  {
    pqxx::connection c(d.url);
    pqxx::nontransaction tx(c);
    for (const auto& r : tx.exec("SELECT aggregate_id, sum((convert_from(payload, 'UTF8')::jsonb->>'amount')::bigint) "
                                 "FROM outbox_events GROUP BY 1"))
      expected[r[0].as<std::string>()] = r[1].as<long>();
  }
  long wrong_totals = 0;
  {
    pqxx::connection c(s.url());
    pqxx::nontransaction tx(c);
    std::map<std::string, long> got;
    for (const auto& r : tx.exec("SELECT account, balance FROM drill_balances")) got[r[0].as<std::string>()] = r[1].as<long>();
    for (const auto& [k, sum] : expected) wrong_totals += got[k] == sum ? 0 : 1;
  }
  DrillResult r;
  r.scenario = d.scenario;
  r.sent = rows;
  r.lost = static_cast<std::size_t>(std::max(0L, lost));
  r.duplicates = v.duplicates;
  r.applied_twice = applied_twice;
  r.recovery = recovery;
  r.detail = detail + (detail.empty() ? "" : ", ") + std::to_string(s.absorbed()) +
             " redeliveries absorbed by the inbox (at least: sidecar metrics scraped every 100 ms)";
  report(r);
  CHECK(recovery.has_value());
  CHECK(lost == 0);
  CHECK(applied_twice == 0);
  CHECK(not_applied == 0);
  CHECK(wrong_totals == 0);
  CHECK(s.count("SELECT count(*) FROM inbox_events WHERE attempts > 0 OR dead_lettered_at IS NOT NULL") == 0);
}

}  // namespace

TEST_CASE("inbox: the broker down 6 s under the stream: the sidecar waits, resumes, nothing lost or applied twice",
          "[drill][inbox]") {
  Drill d("inbox: broker down 6 s");
  Service s(d, PgCluster::shared());
  d.warm_up();
  s.start_sidecar();
  s.start_worker();
  REQUIRE(eventually([&] { return s.count("SELECT count(*) FROM drill_ledger") >= 200; }, 60s, 100ms));
  rd_kafka_mock_broker_set_down(d.kafka.cluster(), 1);
  d.hold(6s);
  rd_kafka_mock_broker_set_up(d.kafka.cluster(), 1);
  const auto recovery = recovered(d, s);
  finish(d, s, recovery, "");
}

TEST_CASE("inbox: the service's database down 6 s (immediate stop): sidecar and worker back off and resume",
          "[drill][inbox]") {
  PgCluster service_cluster({{"synchronous_commit=on"}});
  Drill d("inbox: service database down 6 s");
  Service s(d, service_cluster);
  d.warm_up();
  s.start_sidecar();
  s.start_worker();
  REQUIRE(eventually([&] { return s.readyz() == 200; }, 30s));
  REQUIRE(eventually([&] { return s.count("SELECT count(*) FROM drill_ledger") >= 200; }, 60s, 100ms));
  service_cluster.stop(true);
  bool not_ready = false;
  for (const auto end = std::chrono::steady_clock::now() + 6s; std::chrono::steady_clock::now() < end;) {
    not_ready = not_ready || s.readyz() == 503;
    d.hold(200ms);
  }
  service_cluster.start();
  const auto recovery = recovered(d, s);
  CHECK(eventually([&] { return s.readyz() == 200; }, 30s));
  finish(d, s, recovery, std::to_string(s.worker_failures()) + " worker transactions failed while down");
  CHECK(not_ready);
}

TEST_CASE("inbox: the sidecar SIGKILLed 10 times at random 300-1500 ms intervals: every event landed and applied once",
          "[drill][inbox]") {
  Drill d("inbox: sidecar SIGKILLed 10 times");
  Service s(d, PgCluster::shared());
  d.warm_up();
  s.start_sidecar();
  s.start_worker();
  REQUIRE(eventually([&] { return s.count("SELECT count(*) FROM drill_ledger") >= 200; }, 60s, 100ms));
  // Each one killed 300-1500 ms after it started consuming (its partitions come once the group
  // has let the killed one go, session.timeout.ms 3 s): between its inbox commits and its next
  // offset commit (every second), so the next one gets some of the same events again.
  std::uniform_int_distribution<int> gap(300, 1500);
  int killed_consuming = 0;
  for (int i = 0; i < 10; ++i) {
    killed_consuming += eventually([&] { return s.consuming(); }, 30s, 50ms) ? 1 : 0;
    d.hold(Millis(gap(d.rng)));
    s.kill_sidecar();
    s.start_sidecar();
  }
  const auto recovery = recovered(d, s);
  finish(d, s, recovery, std::to_string(killed_consuming) + " of 10 killed while consuming");
  CHECK(killed_consuming == 10);
}
