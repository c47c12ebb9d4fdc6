// The inbox sidecar end to end: the real binary (`outbox-relay inbox run`) against the mock
// Kafka cluster and a throwaway PostgreSQL, checked from the inbox_events rows, the group's
// committed offsets and the dead-letter topic. Then the whole path: producer -> relay -> Kafka
// -> sidecar -> inbox_events -> Python and Node workers, with duplicates forced at every step.
#include <catch2/catch.hpp>

#include <librdkafka/rdkafka.h>
#include <pqxx/pqxx>

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "tests/e2e/child_process.hpp"
#include "tests/e2e/delivery_check.hpp"
#include "tests/integration/pg_fixture.hpp"
#include "tests/support/eventually.hpp"
#include "tests/support/mock_kafka.hpp"

using namespace outbox;
using namespace outbox::test;
using namespace std::chrono_literals;

namespace {

const std::string kRelay = OUTBOX_RELAY_BINARY;
const std::string kExamples = std::string(OUTBOX_SOURCE_DIR) + "/schema/examples";

std::string temp_log(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("outbox-inbox-e2e-" + std::to_string(::getpid()) + "-" + name + ".log"))
      .string();
}

std::map<std::string, std::string> sidecar_env(const std::string& url, const std::string& brokers,
                                               const std::string& topics, const std::string& inbox) {
  return {{"OUTBOX_RELAY_DATABASE_URL", url},
          {"OUTBOX_RELAY_KAFKA_BROKERS", brokers},
          {"OUTBOX_RELAY_INBOX_TOPICS", topics},
          {"OUTBOX_RELAY_INBOX_NAME", inbox},
          {"OUTBOX_RELAY_LOG_FORMAT", "text"},
          {"OUTBOX_RELAY_HTTP_LISTEN", ""}};
}

std::unique_ptr<ChildProcess> sidecar(const std::map<std::string, std::string>& env, const std::string& name) {
  return std::make_unique<ChildProcess>(kRelay, std::vector<std::string>{"inbox", "run"}, env, temp_log(name));
}

// A plain producer for the test's own messages (ids, duplicates and poison chosen here).
class Producer {
 public:
  explicit Producer(const std::string& brokers) {
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    char err[512];
    rd_kafka_conf_set(conf, "bootstrap.servers", brokers.c_str(), err, sizeof err);
    rd_kafka_conf_set(conf, "enable.idempotence", "true", err, sizeof err);
    rk_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    REQUIRE(rk_ != nullptr);
  }
  ~Producer() {
    rd_kafka_flush(rk_, 10'000);
    rd_kafka_destroy(rk_);
  }
  void send(const std::string& topic, const std::string& key, const std::string& value,
            const std::vector<std::pair<std::string, std::string>>& headers) {
    rd_kafka_headers_t* h = rd_kafka_headers_new(headers.size());
    for (const auto& [k, v] : headers) rd_kafka_header_add(h, k.data(), static_cast<ssize_t>(k.size()), v.data(), static_cast<ssize_t>(v.size()));
    void* payload = const_cast<char*>(value.data());
    const void* key_data = key.data();
    for (;;) {
      auto e = rd_kafka_producev(rk_, RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                 RD_KAFKA_V_KEY(key_data, key.size()), RD_KAFKA_V_VALUE(payload, value.size()),
                                 RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END);
      if (e == RD_KAFKA_RESP_ERR_NO_ERROR) break;
      REQUIRE(e == RD_KAFKA_RESP_ERR__QUEUE_FULL);
      rd_kafka_poll(rk_, 10);
    }
    rd_kafka_poll(rk_, 0);
  }
  void flush() { REQUIRE(rd_kafka_flush(rk_, 30'000) == RD_KAFKA_RESP_ERR_NO_ERROR); }

 private:
  rd_kafka_t* rk_ = nullptr;
};

// The group's committed offsets per partition (-1001: none), read as a fresh group member
// would find them.
std::map<int, std::int64_t> committed(const std::string& brokers, const std::string& group, const std::string& topic,
                                      int partitions) {
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  char err[512];
  rd_kafka_conf_set(conf, "bootstrap.servers", brokers.c_str(), err, sizeof err);
  rd_kafka_conf_set(conf, "group.id", group.c_str(), err, sizeof err);
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
  auto* list = rd_kafka_topic_partition_list_new(partitions);
  for (int p = 0; p < partitions; ++p) rd_kafka_topic_partition_list_add(list, topic.c_str(), p);
  std::map<int, std::int64_t> out;
  if (rd_kafka_committed(rk, list, 10'000) == RD_KAFKA_RESP_ERR_NO_ERROR)
    for (int i = 0; i < list->cnt; ++i) out[list->elems[i].partition] = list->elems[i].offset;
  rd_kafka_topic_partition_list_destroy(list);
  rd_kafka_destroy(rk);
  return out;
}

// Per partition, the inbox's order (seq) follows the offsets.
long out_of_order(const std::string& url, const std::string& inbox) {
  pqxx::connection c(url);
  pqxx::nontransaction tx(c);
  return tx.exec_params("SELECT count(*) FROM (SELECT \"offset\" < lag(\"offset\") OVER (PARTITION BY topic, partition "
                        "ORDER BY seq) AS back FROM inbox_events WHERE inbox = $1) x WHERE back",
                        inbox)[0][0].as<long>();
}

}  // namespace

TEST_CASE("inbox sidecar: killed before its offset commit, redelivered and absorbed, poison dead-lettered, SIGTERM commits",
          "[e2e][inbox]") {
  const auto url = fresh_database();
  MockKafka kafka(1);
  kafka.create_topic("orders", 4);
  TopicReader dlq(kafka.bootstrap(), "orders.dlq");
  {
    Producer p(kafka.bootstrap());
    for (int i = 0; i < 2000; ++i) {
      const std::string key = "acct-" + std::to_string(i % 50);
      p.send("orders", key, "{\"n\": " + std::to_string(i) + "}",
             {{"id", "ev-" + std::to_string(i)}, {"eventType", "Moved"}, {"traceparent", "00-trace-" + std::to_string(i) + "-01"}});
      if (i % 400 == 7)  // the relay's at-least-once: the same event again
        p.send("orders", key, "{\"n\": " + std::to_string(i) + "}", {{"id", "ev-" + std::to_string(i)}, {"eventType", "Moved"}});
    }
    p.send("orders", "acct-1", "no id at all", {{"eventType", "Moved"}});
    p.send("orders", "acct-2", "two ids", {{"id", "x-1"}, {"id", "x-2"}});
    p.flush();
  }
  auto env = sidecar_env(url, kafka.bootstrap(), "orders", "payments");
  env["OUTBOX_RELAY_INBOX_COMMIT_INTERVAL_MS"] = "600000";  // nothing committed until a revoke or SIGTERM
  env["OUTBOX_RELAY_INBOX_CONSUMER_PROPERTY_SESSION_TIMEOUT_MS"] = "6000";  // the killed member leaves sooner
  const std::string group = "outbox-inbox-payments";

  auto first = sidecar(env, "first");
  REQUIRE(eventually([&] { return scalar(url, "SELECT count(*) FROM inbox_events") >= 2000; }, 60s));
  REQUIRE(dlq.read_until([](const auto& all) { return all.size() >= 2; }, 30s));
  // Landed, dead-lettered, but not committed: the SIGKILL comes between the two.
  for (const auto& [p, o] : committed(kafka.bootstrap(), group, "orders", 4)) CHECK(o < 0);
  first->signal(SIGKILL);
  (void)first->wait(10s);

  // The next sidecar gets everything again: each message is a duplicate or dead-lettered again.
  auto second = sidecar(env, "second");
  const bool again = dlq.read_until([](const auto& all) { return all.size() >= 4; }, 60s);
  INFO(second->output());
  REQUIRE(again);
  second->signal(SIGTERM);
  const auto code = second->wait(30s);
  INFO(second->output());
  CHECK(code == std::optional<int>(0));

  CHECK(scalar(url, "SELECT count(*) FROM inbox_events") == 2000);
  CHECK(scalar(url, "SELECT count(DISTINCT event_id) FROM inbox_events WHERE inbox = 'payments'") == 2000);
  CHECK(out_of_order(url, "payments") == 0);
  // What was stored is what was sent: key, payload, type and every header, traceparent included.
  pqxx::connection c(url);
  pqxx::nontransaction tx(c);
  auto row = tx.exec("SELECT convert_from(key, 'UTF8'), convert_from(payload, 'UTF8'), event_type, headers::text, topic "
                     "FROM inbox_events WHERE event_id = 'ev-1234'")[0];
  CHECK(row[0].as<std::string>() == "acct-34");
  CHECK(row[1].as<std::string>() == "{\"n\": 1234}");
  CHECK(row[2].as<std::string>() == "Moved");
  CHECK_THAT(row[3].as<std::string>(), Catch::Contains("{\"name\": \"traceparent\", \"value\": \"00-trace-1234-01\"}"));
  CHECK(row[4].as<std::string>() == "orders");

  // SIGTERM committed every offset: a fresh member would start at the end.
  long total = 0;
  for (const auto& [p, o] : committed(kafka.bootstrap(), group, "orders", 4)) total += o;
  CHECK(total == 2000 + 5 + 2);

  // The dead letters carry their origin and reason, the message unchanged.
  const auto letters = dlq.messages();
  REQUIRE(letters.size() == 4);
  std::set<std::string> reasons;
  for (const auto& l : letters) {
    reasons.insert(header(l, "dlq.error").value_or(""));
    CHECK(header(l, "dlq.topic") == std::optional<std::string>("orders"));
    CHECK(header(l, "dlq.inbox") == std::optional<std::string>("payments"));
    CHECK(header(l, "dlq.offset").has_value());
    CHECK((l.value == "no id at all" || l.value == "two ids"));
  }
  CHECK(reasons == std::set<std::string>{"no id header (inbox.missing_id is dead_letter)",
                                         "2 id headers: the event id is ambiguous"});
}

TEST_CASE("inbox sidecars: two in one group under a stream, rebalances, one SIGKILLed: every event landed once, in order",
          "[e2e][inbox]") {
  const auto url = fresh_database();
  MockKafka kafka(1);
  kafka.create_topic("moves", 6);
  auto env = sidecar_env(url, kafka.bootstrap(), "moves", "ledger");
  env["OUTBOX_RELAY_INBOX_CONSUMER_PROPERTY_SESSION_TIMEOUT_MS"] = "6000";
  env["OUTBOX_RELAY_INBOX_CONSUMER_PROPERTY_HEARTBEAT_INTERVAL_MS"] = "500";
  env["OUTBOX_RELAY_INBOX_BATCH_SIZE"] = "200";
  constexpr int kEvents = 6000;
  std::jthread stream([&](std::stop_token) {
    Producer p(kafka.bootstrap());
    for (int i = 0; i < kEvents; ++i) {
      p.send("moves", "k-" + std::to_string(i % 97), std::string(200, 'x'), {{"id", "m-" + std::to_string(i)}});
      if (i % 100 == 99) std::this_thread::sleep_for(10ms);  // pacing the stream over ~0.6 s+
    }
    p.flush();
  });
  auto landed = [&] { return scalar(url, "SELECT count(*) FROM inbox_events"); };
  auto a = sidecar(env, "group-a");
  REQUIRE(eventually([&] { return landed() >= 500; }, 60s));
  auto b = sidecar(env, "group-b");  // a rebalance while both hold batches
  REQUIRE(eventually([&] { return landed() >= 2500; }, 60s));
  a->signal(SIGKILL);  // its partitions pass to b after the session timeout
  (void)a->wait(10s);
  stream.join();
  REQUIRE(eventually([&] { return landed() >= kEvents; }, 120s));
  auto c = sidecar(env, "group-c");  // one more rebalance, then a clean stop of both
  std::this_thread::sleep_for(3s);   // let it join: what it changes is checked below, not waited for
  for (auto* s : {b.get(), c.get()}) {
    s->signal(SIGTERM);
    const auto code = s->wait(60s);
    INFO(s->output());
    CHECK(code == std::optional<int>(0));
  }
  CHECK(landed() == kEvents);
  CHECK(scalar(url, "SELECT count(DISTINCT event_id) FROM inbox_events") == kEvents);
  CHECK(out_of_order(url, "ledger") == 0);
}

// SIGTERM while the group rebalances: members join and leave at seeded moments, each one
// stopped while another is joining (its commit then meets "rebalance in progress"). Every
// stop must exit 0, and no committed offset may pass a message missing from the inbox.
TEST_CASE("inbox sidecars: SIGTERM in the middle of rebalances exits 0 and commits nothing unlanded",
          "[e2e][inbox]") {
  const auto seed = [] {
    if (const char* s = std::getenv("OUTBOX_TEST_SEED"); s != nullptr && *s != '\0')
      return static_cast<unsigned>(std::strtoul(s, nullptr, 10));
    return static_cast<unsigned>(std::random_device{}());
  }();
  const int rounds = [] {
    const char* s = std::getenv("OUTBOX_TEST_ROUNDS");
    return s != nullptr && *s != '\0' ? std::max(1, std::atoi(s)) : 6;
  }();
  INFO("seed " << seed << " (replay: OUTBOX_TEST_SEED=" << seed << ")");
  std::mt19937 rng(seed);
  const auto url = fresh_database();
  MockKafka kafka(1);
  kafka.create_topic("churn", 6);
  kafka.create_topic("churn.more", 6);
  auto env = sidecar_env(url, kafka.bootstrap(), "churn,churn.more", "churn");
  env["OUTBOX_RELAY_INBOX_COMMIT_INTERVAL_MS"] = "600000";  // commits only on revokes and stops
  env["OUTBOX_RELAY_INBOX_CONSUMER_PROPERTY_SESSION_TIMEOUT_MS"] = "6000";
  env["OUTBOX_RELAY_INBOX_CONSUMER_PROPERTY_HEARTBEAT_INTERVAL_MS"] = "300";
  env["OUTBOX_RELAY_INBOX_BATCH_SIZE"] = "50";
  std::atomic<int> sent{0};
  std::jthread stream([&](std::stop_token halt) {
    Producer p(kafka.bootstrap());
    for (int i = 0; i < 20'000 && !halt.stop_requested(); ++i) {
      p.send(i % 2 == 0 ? "churn" : "churn.more", "k-" + std::to_string(i % 31), "v", {{"id", "c-" + std::to_string(i)}});
      sent = i + 1;
      if (i % 20 == 19) std::this_thread::sleep_for(10ms);
    }
    p.flush();
  });
  auto landed = [&] { return scalar(url, "SELECT count(*) FROM inbox_events"); };
  auto older = sidecar(env, "churn-0");
  REQUIRE(eventually([&] { return landed() > 0; }, 60s));
  for (int r = 1; r <= rounds; ++r) {
    auto newer = sidecar(env, "churn-" + std::to_string(r));
    // The newcomer's JoinGroup starts a rebalance within a few hundred ms of its start.
    std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(50, 900)(rng)));
    // Half the rounds stop both at once, the newcomer before it was ever assigned anything.
    const bool both = std::uniform_int_distribution<int>(0, 1)(rng) == 1;
    older->signal(SIGTERM);
    if (both) newer->signal(SIGTERM);
    for (auto* s : both ? std::vector<ChildProcess*>{older.get(), newer.get()} : std::vector<ChildProcess*>{older.get()}) {
      const auto code = s->wait(40s);
      INFO("round " << r << (both ? " (both stopped)" : "") << ": " << s->output());
      REQUIRE(code == std::optional<int>(0));
    }
    if (!both) {
      older = std::move(newer);
      continue;
    }
    const auto before = landed();
    older = sidecar(env, "churn-again-" + std::to_string(r));
    REQUIRE(eventually([&] { return landed() > before || landed() >= sent; }, 60s));  // consuming again
  }
  stream.request_stop();
  stream.join();
  REQUIRE(eventually([&] { return landed() >= sent; }, 120s));
  older->signal(SIGTERM);
  const auto code = older->wait(40s);
  INFO(older->output());
  REQUIRE(code == std::optional<int>(0));
  CHECK(scalar(url, "SELECT count(DISTINCT event_id) FROM inbox_events") == sent);
  CHECK(out_of_order(url, "churn") == 0);
  // Below each committed offset, every message of the partition is in the inbox.
  pqxx::connection c(url);
  pqxx::nontransaction tx(c);
  for (const std::string topic : {"churn", "churn.more"})
    for (const auto& [p, o] : committed(kafka.bootstrap(), "outbox-inbox-churn", topic, 6)) {
      if (o < 0) continue;
      INFO(topic << " partition " << p << " committed at " << o);
      CHECK(tx.exec_params("SELECT count(DISTINCT \"offset\") FROM inbox_events WHERE topic = $1 AND partition = $2 "
                           "AND \"offset\" < $3",
                           topic, p, o)[0][0].as<long>() == o);
    }
}

TEST_CASE("the whole path: producer, relay, Kafka, inbox sidecar, Python and Node workers, duplicates forced at each hop",
          "[e2e][inbox][chain]") {
  // The producing service's database and the consuming service's, as in production.
  const auto producer_url = fresh_database();
  const auto service_url = fresh_database();
  exec(service_url, "CREATE TABLE example_balances (account text PRIMARY KEY, balance bigint NOT NULL)");
  exec(service_url, "CREATE TABLE example_ledger (id bigserial PRIMARY KEY, event_id text NOT NULL, account text NOT NULL, "
                    "amount bigint NOT NULL, seq bigint NOT NULL, "
                    "applied_by text NOT NULL DEFAULT current_setting('application_name'))");
  MockKafka kafka(1);
  const std::string topic = "outbox.event.account";
  kafka.create_topic(topic, 4);
  TopicReader reader(kafka.bootstrap(), topic);

  const auto seed = static_cast<unsigned>(std::random_device{}());
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  std::map<std::string, long> expected;
  auto produce = [&](int count) {
    pqxx::connection c(producer_url);
    for (int i = 0; i < count; ++i) {
      pqxx::work tx(c);
      const std::string account = "acct-" + std::to_string(rng() % 25);
      const long amount = static_cast<long>(rng() % 1000) - 300;
      expected[account] += amount;
      tx.exec_params("INSERT INTO outbox_events (aggregate_type, aggregate_id, event_type, payload) "
                     "VALUES ('account', $1, 'Moved', convert_to($2::text, 'UTF8'))",
                     account, "{\"account\": \"" + account + "\", \"amount\": " + std::to_string(amount) + "}");
      tx.commit();
    }
  };
  produce(1500);

  // Hop 1, the relay: a batch is published but cannot be marked (the test holds row locks its
  // UPDATE waits on); SIGKILLed there, so the next relay publishes it again.
  std::map<std::string, std::string> relay_env{{"OUTBOX_RELAY_DATABASE_URL", producer_url},
                                               {"OUTBOX_RELAY_KAFKA_BROKERS", kafka.bootstrap()},
                                               {"OUTBOX_RELAY_RELAY_BATCH_SIZE", "200"},
                                               {"OUTBOX_RELAY_LOG_FORMAT", "text"},
                                               {"OUTBOX_RELAY_HTTP_LISTEN", ""}};
  std::set<std::string> locked_ids;
  {
    pqxx::connection lock_conn(producer_url);
    pqxx::work lock(lock_conn);
    for (const auto& r : lock.exec("SELECT id::text FROM outbox_events ORDER BY seq OFFSET 100 LIMIT 50 FOR UPDATE"))
      locked_ids.insert(r[0].as<std::string>());
    auto relay = std::make_unique<ChildProcess>(kRelay, std::vector<std::string>{"run"}, relay_env, temp_log("relay-1"));
    REQUIRE(reader.read_until([&](const std::vector<ConsumedMessage>& all) {
      std::size_t seen = 0;
      for (const auto& m : all) seen += locked_ids.contains(header(m, "id").value_or("")) ? 1 : 0;
      return seen >= locked_ids.size();
    }, 60s));
    relay->signal(SIGKILL);
    (void)relay->wait(10s);
    lock.abort();
  }
  CHECK(scalar(producer_url, "SELECT count(*) FROM outbox_events WHERE published_at IS NULL") >= 50);
  auto relay = std::make_unique<ChildProcess>(kRelay, std::vector<std::string>{"run"}, relay_env, temp_log("relay-2"));

  // Hop 2, the sidecars: one killed between its inbox commits and its offset commit (nothing
  // is committed before a revoke or SIGTERM), a second one in the group, rebalances.
  auto env = sidecar_env(service_url, kafka.bootstrap(), topic, "payments");
  env["OUTBOX_RELAY_INBOX_COMMIT_INTERVAL_MS"] = "600000";
  env["OUTBOX_RELAY_INBOX_CONSUMER_PROPERTY_SESSION_TIMEOUT_MS"] = "6000";
  env["OUTBOX_RELAY_INBOX_BATCH_SIZE"] = "100";
  auto inbox_rows = [&] { return scalar(service_url, "SELECT count(*) FROM inbox_events"); };
  auto s1 = sidecar(env, "chain-s1");
  REQUIRE(eventually([&] { return inbox_rows() >= 400; }, 60s));
  s1->signal(SIGKILL);
  (void)s1->wait(10s);
  auto s2 = sidecar(env, "chain-s2");
  auto s3 = sidecar(env, "chain-s3");

  // Hop 3, the workers, while events still arrive: Python alone first (one of them SIGKILLed
  // mid-work), then Node alone for the second half's start, then both; so each language's share
  // is there by construction.
  auto worker = [&](const std::string& program, const std::string& name) {
    std::vector<std::string> args;
    std::string path = "/usr/bin/env";
    if (program == "python") {
      path = "/usr/bin/python3";
      args = {kExamples + "/inbox_worker.py"};
    } else {
      args = {"node", kExamples + "/inbox_worker.mjs"};
    }
    for (const auto& a : {"--dsn", service_url.c_str(), "--inbox", "payments", "--batch", "50"}) args.emplace_back(a);
    return std::make_unique<ChildProcess>(path, args, std::map<std::string, std::string>{}, temp_log(name));
  };
  auto by = [&](const std::string& who) {
    return scalar(service_url, "SELECT count(*) FROM example_ledger WHERE applied_by = 'inbox-worker-" + who + "'");
  };
  auto py1 = worker("python", "chain-py1");
  REQUIRE(eventually([&] { return by("python") >= 300; }, 60s));
  py1->signal(SIGKILL);
  (void)py1->wait(10s);
  auto js = worker("node", "chain-node");
  produce(1500);
  REQUIRE(eventually([&] { return by("node") > 0; }, 60s));
  auto py = worker("python", "chain-py2");

  const long total = 3000;
  auto ledger = [&] { return scalar(service_url, "SELECT count(*) FROM example_ledger"); };
  REQUIRE(eventually([&] { return ledger() >= total; }, 180s));
  REQUIRE(reader.read_until([&](const auto& all) { return all.size() >= static_cast<std::size_t>(total); }, 30s));

  for (auto* p : {relay.get(), s2.get(), s3.get()}) {
    p->signal(SIGTERM);
    const auto code = p->wait(60s);
    INFO(p->output());
    CHECK(code == std::optional<int>(0));
  }
  py->signal(SIGTERM);
  js->signal(SIGTERM);
  (void)py->wait(10s);
  (void)js->wait(10s);

  // Duplicates really were on the wire, and the inbox absorbed them.
  const auto wire = reader.messages();
  std::map<std::string, int> copies;
  for (const auto& m : wire) ++copies[header(m, "id").value_or("")];
  long duplicated = 0;
  for (const auto& [id, n] : copies) duplicated += n > 1 ? 1 : 0;
  CHECK(duplicated >= 50);
  CHECK(static_cast<long>(copies.size()) == total);
  CHECK(scalar(service_url, "SELECT count(*) FROM inbox_events") == total);

  // Every effect once, none missing, both languages at work.
  CHECK(ledger() == total);
  CHECK(scalar(service_url, "SELECT count(DISTINCT event_id) FROM example_ledger") == total);
  CHECK(by("python") >= 300);
  CHECK(by("node") > 0);
  pqxx::connection sc(service_url);
  pqxx::nontransaction stx(sc);
  for (const auto& [account, sum] : expected) {
    INFO(account);
    CHECK(stx.exec_params("SELECT balance FROM example_balances WHERE account = $1", account)[0][0].as<long>() == sum);
  }
  // Each account's effects in the order its events were written (the producer's seq).
  pqxx::connection pc(producer_url);
  pqxx::nontransaction ptx(pc);
  std::map<std::string, std::vector<std::string>> written, applied;
  for (const auto& r : ptx.exec("SELECT aggregate_id, id::text FROM outbox_events ORDER BY seq"))
    written[r[0].as<std::string>()].push_back(r[1].as<std::string>());
  for (const auto& r : stx.exec("SELECT account, event_id FROM example_ledger ORDER BY id"))
    applied[r[0].as<std::string>()].push_back(r[1].as<std::string>());
  CHECK(applied == written);
}

TEST_CASE("cloudevents: the relay writes binary-mode events to Kafka and the inbox sidecar lands them by ce_id and ce_type",
          "[e2e][inbox][cloudevents]") {
  const auto url = fresh_database();
  MockKafka kafka(1);
  const std::string topic = "outbox.event.order";
  kafka.create_topic(topic, 4);
  TopicReader reader(kafka.bootstrap(), topic);
  insert_events(url, 2000, 50);
  exec(url, "INSERT INTO outbox_events (aggregate_type, aggregate_id, event_type, payload, headers) VALUES "
            "('order', 'agg-1', 'created', 'x', '{\"content-type\": \"application/protobuf\", \"ce_time\": \"2026-12-02T00:00:00Z\"}'), "
            "('order', 'agg-2', 'created', 'x', '{\"ce_id\": \"forged\"}'), "
            "('order', 'agg-3', '', 'x', '{}')");
  auto relay_env = std::map<std::string, std::string>{{"OUTBOX_RELAY_DATABASE_URL", url},
                                                      {"OUTBOX_RELAY_KAFKA_BROKERS", kafka.bootstrap()},
                                                      {"OUTBOX_RELAY_MESSAGE_FORMAT", "cloudevents"},
                                                      {"OUTBOX_RELAY_MESSAGE_CLOUDEVENTS_SOURCE", "//orders.example/${aggregate_type}"},
                                                      {"OUTBOX_RELAY_RELAY_MAX_ATTEMPTS", "1"},  // bad rows out at once
                                                      {"OUTBOX_RELAY_LOG_FORMAT", "text"},
                                                      {"OUTBOX_RELAY_HTTP_LISTEN", ""}};
  ChildProcess relay(kRelay, {"run"}, relay_env, temp_log("ce-relay"));
  auto env = sidecar_env(url, kafka.bootstrap(), topic, "ce");
  env["OUTBOX_RELAY_INBOX_EVENT_ID_HEADER"] = "ce_id";
  env["OUTBOX_RELAY_INBOX_EVENT_TYPE_HEADER"] = "ce_type";
  auto s = sidecar(env, "ce-sidecar");
  auto landed = [&] { return scalar(url, "SELECT count(*) FROM inbox_events WHERE inbox = 'ce'"); };
  const bool done = poll_reading(reader, [&] {
    return scalar(url, "SELECT count(*) FROM outbox_events WHERE published_at IS NULL AND dead_lettered_at IS NULL") == 0 &&
           landed() == 2001;
  }, 120s);
  INFO(relay.output() << s->output());
  REQUIRE(done);

  // The two bad rows: a forged attribute and an event without a type never left.
  CHECK(scalar(url, "SELECT count(*) FROM outbox_events WHERE dead_lettered_at IS NOT NULL AND "
                    "(last_error LIKE '%ce_id%written by the relay%' OR last_error LIKE '%needs a type%')") == 2);
  REQUIRE(reader.read_until([](const auto& all) { return all.size() >= 2001; }, 30s));
  const auto v = check_deliveries(url, reader.messages(), "ce_id");
  CHECK(v.distinct == 2001);
  CHECK(v.missing == 2);  // the two dead-lettered rows
  CHECK(v.ordered());
  int protobuf = 0;
  for (const auto& m : reader.messages()) {
    REQUIRE(header(m, "ce_specversion") == "1.0");
    REQUIRE(header(m, "ce_type") == "created");
    REQUIRE(header(m, "ce_source") == "//orders.example/order");
    REQUIRE(header(m, "ce_subject") == m.key);
    REQUIRE(!header(m, "id"));
    const auto ct = header(m, "content-type");
    if (ct == "application/protobuf") {
      ++protobuf;
      CHECK(header(m, "ce_time") == "2026-12-02T00:00:00Z");
    } else {
      REQUIRE(ct == "application/json");
    }
  }
  CHECK(protobuf == 1);
  // The inbox knows each event by the outbox's id and type.
  CHECK(scalar(url, "SELECT count(*) FROM inbox_events i JOIN outbox_events o ON o.id::text = i.event_id "
                    "WHERE i.inbox = 'ce' AND i.event_type = 'created'") == 2001);
  relay.signal(SIGTERM);
  s->signal(SIGTERM);
  CHECK(relay.wait(30s) == std::optional<int>(0));
  CHECK(s->wait(30s) == std::optional<int>(0));
}
