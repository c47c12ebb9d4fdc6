// The consumer runner against the mock Kafka cluster and PostgreSQL: exactly-once effects
// through the inbox, offsets only after commit, retries, dead letters.
#include <catch2/catch.hpp>

#include <librdkafka/rdkafka.h>
#include <pqxx/pqxx>

#include <atomic>
#include <thread>

#include "outbox/consumer_runner.hpp"
#include "tests/integration/pg_fixture.hpp"
#include "tests/support/mock_kafka.hpp"

using namespace outbox;
using namespace std::chrono_literals;

namespace {

std::string event_id(int n) {
  char buf[37];
  std::snprintf(buf, sizeof buf, "6f1c1f9e-8c1b-4c1e-9a53-%012d", n);
  return buf;
}

// Produces messages as the relay would: key, value, `id` header (omitted when id is empty).
void produce(const std::string& brokers, const std::string& topic,
             const std::vector<std::tuple<std::string, std::string, std::string>>& messages) {
  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", brokers.c_str(), err, sizeof err);
  rd_kafka_t* p = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  for (const auto& [key, value, id] : messages) {
    rd_kafka_headers_t* h = rd_kafka_headers_new(1);
    if (!id.empty()) rd_kafka_header_add(h, "id", -1, id.data(), static_cast<ssize_t>(id.size()));
    rd_kafka_producev(p, RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_KEY(key.data(), key.size()),
                      RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()), RD_KAFKA_V_HEADERS(h),
                      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
  }
  rd_kafka_flush(p, 10000);
  rd_kafka_destroy(p);
}

// Produces one message with exactly these headers (several of one name allowed).
void produce_with_headers(const std::string& brokers, const std::string& topic, const std::string& key,
                          const std::string& value, const std::vector<std::pair<std::string, std::string>>& headers) {
  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", brokers.c_str(), err, sizeof err);
  rd_kafka_t* p = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  rd_kafka_headers_t* h = rd_kafka_headers_new(headers.size());
  for (const auto& [k, v] : headers)
    rd_kafka_header_add(h, k.data(), static_cast<ssize_t>(k.size()), v.data(), static_cast<ssize_t>(v.size()));
  rd_kafka_producev(p, RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_KEY(key.data(), key.size()),
                    RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()), RD_KAFKA_V_HEADERS(h),
                    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
  rd_kafka_flush(p, 10000);
  rd_kafka_destroy(p);
}

struct Rig {
  std::string url = test::fresh_database();
  test::MockKafka kafka{1};
  std::string topic = "outbox.event.account";

  Rig() {
    kafka.create_topic(topic, 2);
    pqxx::connection c(url);
    pqxx::work tx(c);
    tx.exec("CREATE TABLE balances (account text PRIMARY KEY, total bigint NOT NULL)");
    tx.commit();
  }

  ConsumerOptions options(const std::string& group = "ledger") const {
    ConsumerOptions o;
    o.brokers = kafka.bootstrap();
    o.group_id = group;
    o.topics = {topic};
    o.database_url = url;
    o.retry_initial = 10ms;
    o.retry_max = 50ms;
    o.commit_interval = 100ms;
    // A member that joins the mock's group waits for the session of the one before; keep it short.
    o.kafka_properties = {{"session.timeout.ms", "6000"}, {"heartbeat.interval.ms", "500"}};
    return o;
  }

  // The effect: add the message value (an integer) to the key's balance.
  static void credit(pqxx::work& tx, const ConsumedEvent& ev) {
    tx.exec_params("INSERT INTO balances (account, total) VALUES ($1, $2) "
                   "ON CONFLICT (account) DO UPDATE SET total = balances.total + EXCLUDED.total",
                   ev.key, std::stoll(ev.value));
  }

  long balance(const std::string& account) const {
    return test::scalar(url, "SELECT COALESCE((SELECT total FROM balances WHERE account = '" + account + "'), 0)");
  }
};

// Runs the consumer on a thread until `done(stats)` or the deadline, then stops it.
bool run_until(ConsumerRunner& runner, const std::function<bool(const ConsumerStats&)>& done,
               std::chrono::seconds deadline = 30s) {
  std::atomic<bool> stop{false};
  std::thread t([&] { runner.run(stop); });
  bool ok = false;
  for (auto until = std::chrono::steady_clock::now() + deadline; !ok && std::chrono::steady_clock::now() < until;) {
    ok = done(runner.stats());
    if (!ok) std::this_thread::sleep_for(20ms);  // polling the runner's counters
  }
  stop = true;
  t.join();
  return ok;
}

}  // namespace

TEST_CASE("each event's effect happens once, redelivered ids are skipped and offsets survive a restart", "[consumer]") {
  Rig rig;
  produce(rig.kafka.bootstrap(), rig.topic,
          {{"alice", "10", event_id(1)}, {"bob", "5", event_id(2)}, {"alice", "7", event_id(3)},
           {"alice", "10", event_id(1)}, {"bob", "5", event_id(2)}});  // the last two: at-least-once duplicates
  {
    ConsumerRunner runner(rig.options(), Rig::credit);
    REQUIRE(run_until(runner, [](const auto& s) { return s.processed + s.duplicates == 5; }));
    CHECK(runner.stats().processed == 3);
    CHECK(runner.stats().duplicates == 2);
  }
  CHECK(rig.balance("alice") == 17);
  CHECK(rig.balance("bob") == 5);

  // The same group again: committed offsets mean nothing is delivered a second time.
  produce(rig.kafka.bootstrap(), rig.topic, {{"bob", "1", event_id(4)}});
  ConsumerRunner again(rig.options(), Rig::credit);
  REQUIRE(run_until(again, [](const auto& s) { return s.processed == 1; }));
  CHECK(again.stats().duplicates == 0);
  CHECK(rig.balance("bob") == 6);
}

TEST_CASE("two instances of one consumer each receiving every event apply each effect once", "[consumer]") {
  Rig rig;
  std::vector<std::tuple<std::string, std::string, std::string>> msgs;
  for (int i = 0; i < 200; ++i) msgs.emplace_back("acct-" + std::to_string(i % 7), "1", event_id(i));
  produce(rig.kafka.bootstrap(), rig.topic, msgs);
  // Different groups, so both get all 200 messages; the same inbox consumer name.
  auto oa = rig.options("ledger-a");
  auto ob = rig.options("ledger-b");
  oa.consumer_name = ob.consumer_name = "ledger";
  ConsumerRunner a(oa, Rig::credit);
  ConsumerRunner b(ob, Rig::credit);
  std::atomic<bool> stop{false};
  std::thread ta([&] { a.run(stop); });
  std::thread tb([&] { b.run(stop); });
  for (auto until = std::chrono::steady_clock::now() + 30s;
       std::chrono::steady_clock::now() < until &&
       a.stats().processed + a.stats().duplicates + b.stats().processed + b.stats().duplicates < 400;)
    std::this_thread::sleep_for(20ms);
  stop = true;
  ta.join();
  tb.join();
  CHECK(a.stats().processed + b.stats().processed == 200);
  CHECK(a.stats().duplicates + b.stats().duplicates == 200);
  CHECK(test::scalar(rig.url, "SELECT sum(total) FROM balances") == 200);
}

TEST_CASE("a permanent error dead-letters the message with its origin and the rest flows", "[consumer]") {
  Rig rig;
  produce(rig.kafka.bootstrap(), rig.topic,
          {{"alice", "oops", event_id(1)}, {"alice", "3", event_id(2)}, {"carol", "4", ""}});
  auto o = rig.options();
  ConsumerRunner runner(o, [](pqxx::work& tx, const ConsumedEvent& ev) {
    if (ev.value == "oops") throw PermanentError("value is not a number");
    Rig::credit(tx, ev);
  });
  REQUIRE(run_until(runner, [](const auto& s) { return s.processed == 1 && s.dead_lettered == 2; }));
  CHECK(rig.balance("alice") == 3);

  test::TopicReader dlq(rig.kafka.bootstrap(), rig.topic + ".dlq");
  REQUIRE(dlq.read_until([](const auto& all) { return all.size() == 2; }, 20s));
  std::map<std::string, test::ConsumedMessage> by_key;
  for (const auto& m : dlq.messages()) by_key[m.value] = m;
  const auto& poison = by_key.at("oops");
  CHECK(poison.key == "alice");
  CHECK(test::header(poison, "dlq.error") == std::optional<std::string>("value is not a number"));
  CHECK(test::header(poison, "dlq.topic") == std::optional<std::string>(rig.topic));
  CHECK(test::header(poison, "dlq.event_id") == std::optional<std::string>(event_id(1)));
  CHECK(test::header(poison, "dlq.offset").has_value());
  CHECK(test::header(poison, "dlq.partition").has_value());
  CHECK(test::header(poison, "id") == std::optional<std::string>(event_id(1)));  // original headers kept
  CHECK(test::header(by_key.at("4"), "dlq.error") == std::optional<std::string>("no id header"));
}

TEST_CASE("transient database failures are retried without skipping and burn no attempt", "[consumer]") {
  Rig rig;
  produce(rig.kafka.bootstrap(), rig.topic, {{"alice", "10", event_id(1)}});
  int calls = 0;
  auto o = rig.options();
  o.max_attempts = 1;  // a counted failure would dead-letter at once
  ConsumerRunner runner(o, [&](pqxx::work& tx, const ConsumedEvent& ev) {
    if (++calls <= 3) throw pqxx::serialization_failure("could not serialize access");
    Rig::credit(tx, ev);
  });
  REQUIRE(run_until(runner, [](const auto& s) { return s.processed == 1; }));
  CHECK(runner.stats().transient_retries == 3);
  CHECK(runner.stats().dead_lettered == 0);
  CHECK(rig.balance("alice") == 10);
}

TEST_CASE("a handler that keeps failing is dead-lettered after max_attempts", "[consumer]") {
  Rig rig;
  produce(rig.kafka.bootstrap(), rig.topic, {{"alice", "10", event_id(1)}, {"bob", "2", event_id(2)}});
  auto o = rig.options();
  o.max_attempts = 3;
  int alice_calls = 0;
  ConsumerRunner runner(o, [&](pqxx::work& tx, const ConsumedEvent& ev) {
    if (ev.key == "alice") {
      ++alice_calls;
      throw std::runtime_error("downstream said 500");
    }
    Rig::credit(tx, ev);
  });
  REQUIRE(run_until(runner, [](const auto& s) { return s.dead_lettered == 1 && s.processed == 1; }));
  CHECK(alice_calls == 3);
  CHECK(runner.stats().handler_failures == 3);
  CHECK(rig.balance("alice") == 0);
  CHECK(rig.balance("bob") == 2);
}

TEST_CASE("without an id header, the derive policy uses a stable id from the message position", "[consumer]") {
  CHECK(uuid_from_position("t", 0, 5) == uuid_from_position("t", 0, 5));
  CHECK(uuid_from_position("t", 0, 5) != uuid_from_position("t", 1, 5));
  CHECK(looks_like_uuid(uuid_from_position("t", 0, 5)));
  CHECK_FALSE(looks_like_uuid("6f1c1f9e-8c1b-4c1e-9a53"));
  Rig rig;
  produce(rig.kafka.bootstrap(), rig.topic, {{"dave", "8", ""}});
  auto o = rig.options();
  o.missing_id = MissingIdPolicy::derive_from_position;
  ConsumerRunner runner(o, Rig::credit);
  REQUIRE(run_until(runner, [](const auto& s) { return s.processed == 1; }));
  CHECK(rig.balance("dave") == 8);
}

TEST_CASE("unusable options are refused with the option's name", "[consumer]") {
  ConsumerOptions o;
  CHECK_THROWS_WITH(ConsumerRunner(o, [](pqxx::work&, const ConsumedEvent&) {}), Catch::Contains("brokers"));
  o.brokers = "127.0.0.1:1";
  CHECK_THROWS_WITH(ConsumerRunner(o, [](pqxx::work&, const ConsumedEvent&) {}), Catch::Contains("group_id"));
}

// A message carrying two event ids (written by an older relay that let a row's own `id` header
// through, or by another producer): taking either one could make the inbox drop a real event
// as a duplicate of another message that shares it. Neither is guessed at: it is dead-lettered.
TEST_CASE("a message with more than one event id header is dead-lettered, never deduplicated on a guess",
          "[consumer]") {
  Rig rig;
  const std::string shared = event_id(99);  // the row header both messages carried
  produce_with_headers(rig.kafka.bootstrap(), rig.topic, "alice", "10", {{"id", event_id(1)}, {"id", shared}});
  produce_with_headers(rig.kafka.bootstrap(), rig.topic, "alice", "20", {{"id", event_id(2)}, {"id", shared}});
  produce(rig.kafka.bootstrap(), rig.topic, {{"bob", "5", event_id(3)}});
  ConsumerRunner runner(rig.options(), Rig::credit);
  REQUIRE(run_until(runner, [](const auto& s) { return s.processed + s.duplicates + s.dead_lettered == 3; }));
  CHECK(runner.stats().duplicates == 0);
  CHECK(runner.stats().dead_lettered == 2);
  CHECK(rig.balance("alice") == 0);
  CHECK(rig.balance("bob") == 5);
  test::TopicReader dlq(rig.kafka.bootstrap(), rig.topic + ".dlq");
  REQUIRE(dlq.read_until([](const auto& all) { return all.size() == 2; }, 20s));
  for (const auto& m : dlq.messages())
    CHECK_THAT(test::header(m, "dlq.error").value_or(""), Catch::Contains("2 id headers"));
}

TEST_CASE("a batch commits in one transaction, a failing handler rolls back only its savepoint and is retried "
          "before the events after it",
          "[consumer][batch]") {
  Rig rig;
  test::exec(rig.url, "CREATE TABLE applied (n bigserial PRIMARY KEY, key text NOT NULL, value text NOT NULL, "
                      "tx bigint NOT NULL DEFAULT txid_current())");
  std::vector<std::tuple<std::string, std::string, std::string>> messages;
  for (int i = 1; i <= 200; ++i) messages.emplace_back(i % 2 ? "alice" : "bob", std::to_string(i), event_id(i));
  produce(rig.kafka.bootstrap(), rig.topic, messages);
  auto o = rig.options();
  o.batch_size = 100;
  o.batch_linger = 200ms;
  o.max_attempts = 5;
  int fails_left = 2;
  ConsumerRunner runner(o, [&](pqxx::work& tx, const ConsumedEvent& ev) {
    tx.exec_params("INSERT INTO applied (key, value) VALUES ($1, $2)", ev.key, ev.value);
    // Event 51 half-applies, then fails twice: its row above must roll back with its savepoint.
    if (ev.value == "51" && fails_left-- > 0) throw std::runtime_error("downstream said 503");
    Rig::credit(tx, ev);
  });
  REQUIRE(run_until(runner, [](const auto& s) { return s.processed == 200; }));
  CHECK(runner.stats().handler_failures == 2);
  CHECK(runner.stats().dead_lettered == 0);
  // Every effect once (the failed attempts' rows rolled back with their savepoints).
  CHECK(test::scalar(rig.url, "SELECT count(*) FROM applied") == 200);
  CHECK(test::scalar(rig.url, "SELECT count(DISTINCT value) FROM applied") == 200);
  long alice = 0, bob = 0;
  for (int i = 1; i <= 200; ++i) (i % 2 ? alice : bob) += i;
  CHECK(rig.balance("alice") == alice);
  CHECK(rig.balance("bob") == bob);
  // Per key, in the order produced (51 before 53, 55, ... although 51 failed twice).
  CHECK(test::scalar(rig.url, "SELECT count(*) FROM (SELECT value::int < lag(value::int) OVER (PARTITION BY key "
                              "ORDER BY n) AS back FROM applied) x WHERE back") == 0);
  // Batches, not one transaction per event.
  CHECK(test::scalar(rig.url, "SELECT count(DISTINCT tx) FROM applied") <= 20);
}
