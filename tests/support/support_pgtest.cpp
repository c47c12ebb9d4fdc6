// The test harness proves itself: throwaway PostgreSQL clusters start, keep data across a
// restart and leave nothing behind; the mock Kafka cluster round-trips keys, values, headers.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <pqxx/pqxx>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <memory>
#include <string>

#include "tests/support/mock_kafka.hpp"
#include "tests/support/pg_cluster.hpp"

namespace {

using namespace std::chrono_literals;
using outbox::test::ConsumedMessage;
using outbox::test::MockKafka;
using outbox::test::PgCluster;
using outbox::test::PgClusterOptions;
using outbox::test::TopicReader;

std::string query(const std::string& conninfo, const std::string& sql) {
  pqxx::connection c(conninfo);
  pqxx::nontransaction tx(c);
  return tx.exec1(sql)[0].as<std::string>();
}

// A plain idempotent producer that counts failed delivery reports.
class TestProducer {
 public:
  explicit TestProducer(const std::string& bootstrap) {
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    char err[512];
    for (auto [k, v] : {std::pair{"bootstrap.servers", bootstrap.c_str()},
                        std::pair{"enable.idempotence", "true"},
                        std::pair{"socket.nagle.disable", "true"},
                        std::pair{"linger.ms", "0"}})
      REQUIRE(rd_kafka_conf_set(conf, k, v, err, sizeof err) == RD_KAFKA_CONF_OK);
    rd_kafka_conf_set_opaque(conf, &failed_);
    rd_kafka_conf_set_dr_msg_cb(conf, [](rd_kafka_t*, const rd_kafka_message_t* m, void* opaque) {
      if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) ++*static_cast<std::atomic<int>*>(opaque);
    });
    rk_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    REQUIRE(rk_ != nullptr);
  }
  ~TestProducer() { rd_kafka_destroy(rk_); }
  TestProducer(const TestProducer&) = delete;
  TestProducer& operator=(const TestProducer&) = delete;

  void send(const std::string& topic, const std::string& key, const std::string& value,
            const std::vector<std::pair<std::string, std::string>>& headers) {
    rd_kafka_headers_t* hdrs = rd_kafka_headers_new(headers.size());
    for (const auto& [name, v] : headers)
      rd_kafka_header_add(hdrs, name.data(), static_cast<ssize_t>(name.size()), v.data(),
                          static_cast<ssize_t>(v.size()));
    const auto err = rd_kafka_producev(
        rk_, RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_KEY(key.data(), key.size()),
        RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_END);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) rd_kafka_headers_destroy(hdrs);  // owned by the message on success
    REQUIRE(err == RD_KAFKA_RESP_ERR_NO_ERROR);
  }
  // Waits (inside librdkafka, bounded) until every message has its delivery report.
  [[nodiscard]] bool flush() { return rd_kafka_flush(rk_, 10'000) == RD_KAFKA_RESP_ERR_NO_ERROR; }
  [[nodiscard]] int failed() const { return failed_.load(); }

 private:
  rd_kafka_t* rk_ = nullptr;
  std::atomic<int> failed_{0};
};

}  // namespace

TEST_CASE("a throwaway cluster starts and answers a query over its conninfo", "[support][pg]") {
  PgCluster cluster;
  CHECK(cluster.port() > 0);
  CHECK(cluster.conninfo() ==
        "host=127.0.0.1 port=" + std::to_string(cluster.port()) + " dbname=postgres user=postgres");
  CHECK(query(cluster.conninfo(), "SELECT 40 + 2") == "42");
  CHECK(query(cluster.conninfo(), "SELECT current_user") == "postgres");
  CHECK(std::stoi(query(cluster.conninfo(), "SHOW server_version_num")) >= 150000);
  CHECK(query(cluster.conninfo(), "SHOW fsync") == "off");
  CHECK(query(cluster.conninfo(), "SHOW max_connections") == "200");
  CHECK(query(cluster.conninfo(), "SHOW listen_addresses") == "127.0.0.1");
  if (::geteuid() == 0) {
    // As root, initdb and the server ran as `nobody`.
    struct stat st {};
    REQUIRE(::stat((cluster.directory() + "/data").c_str(), &st) == 0);
    const passwd* nobody = ::getpwnam("nobody");
    REQUIRE(nobody != nullptr);
    CHECK(st.st_uid == nobody->pw_uid);
    CHECK(query(cluster.conninfo(), "SELECT pg_catalog.pg_postmaster_start_time() IS NOT NULL") == "t");
  }
}

TEST_CASE("create_database makes a database its conninfo reaches", "[support][pg]") {
  PgCluster cluster;
  cluster.create_database("Mixed Case db");
  CHECK(query(cluster.conninfo("Mixed Case db"), "SELECT current_database()") == "Mixed Case db");
}

TEST_CASE("stop and start keep committed data and the port", "[support][pg]") {
  PgCluster cluster;
  cluster.create_database("keep");
  const auto url = cluster.conninfo("keep");
  const int port = cluster.port();
  {
    pqxx::connection c(url);
    pqxx::work tx(c);
    tx.exec0("CREATE TABLE t (v int)");
    tx.exec0("INSERT INTO t SELECT generate_series(1, 100)");
    tx.commit();
  }

  SECTION("after a fast stop") {
    cluster.stop(false);
    CHECK_THROWS_AS(pqxx::connection(url), pqxx::broken_connection);
    cluster.start();
    CHECK(cluster.port() == port);
    CHECK(query(url, "SELECT sum(v) FROM t") == "5050");
  }
  SECTION("after an immediate stop, for commits made with synchronous_commit=on") {
    {
      pqxx::connection c(url);
      pqxx::work tx(c);
      tx.exec0("SET LOCAL synchronous_commit = on");
      tx.exec0("INSERT INTO t VALUES (1000)");
      tx.commit();
    }
    cluster.stop(true);
    cluster.start();
    CHECK(cluster.port() == port);
    CHECK(query(url, "SELECT sum(v) FROM t") == "6050");
  }
}

TEST_CASE("extra settings reach the server and override the built-in ones", "[support][pg]") {
  PgCluster cluster(PgClusterOptions{{"log_line_prefix=%m [%p] it's ", "work_mem=8MB", "max_connections=50"}});
  CHECK(query(cluster.conninfo(), "SHOW log_line_prefix") == "%m [%p] it's ");  // spaces and a quote survive
  CHECK(query(cluster.conninfo(), "SHOW work_mem") == "8MB");
  CHECK(query(cluster.conninfo(), "SHOW max_connections") == "50");  // built-in default is 200
  CHECK(query(cluster.conninfo(), "SHOW fsync") == "off");           // other built-ins stay
}

TEST_CASE("a failed pg_ctl call throws with the command and its output", "[support][pg]") {
  PgCluster cluster;
  cluster.stop();
  try {
    cluster.stop();
    FAIL("stopping a stopped cluster should throw");
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    CHECK(what.find("pg_ctl stop") != std::string::npos);
    CHECK(what.find("exit status") != std::string::npos);
    CHECK(what.find("server running?") != std::string::npos);  // pg_ctl's own words
  }
  CHECK_FALSE(cluster.log_tail().empty());
}

TEST_CASE("destruction stops the server and removes the temp dir", "[support][pg]") {
  std::string dir;
  std::string url;
  {
    PgCluster cluster;
    dir = cluster.directory();
    url = cluster.conninfo();
    REQUIRE(std::filesystem::exists(dir + "/data/PG_VERSION"));
    CHECK(query(url, "SELECT 1") == "1");
  }
  CHECK_FALSE(std::filesystem::exists(dir));
  CHECK_THROWS_AS(pqxx::connection(url), pqxx::broken_connection);
}

TEST_CASE("the shared cluster is one per process", "[support][pg]") {
  PgCluster& a = PgCluster::shared();
  PgCluster& b = PgCluster::shared();
  CHECK(&a == &b);
  CHECK(query(a.conninfo(), "SELECT 7") == "7");
}

TEST_CASE("a producer's messages read back with key, value and headers intact", "[support][kafka]") {
  MockKafka kafka;
  REQUIRE_FALSE(kafka.bootstrap().empty());
  kafka.create_topic("harness", 3);

  TestProducer producer(kafka.bootstrap());
  for (int i = 1; i <= 3; ++i)
    producer.send("harness", "key-" + std::to_string(i), "value-" + std::to_string(i),
                  {{"id", "event-" + std::to_string(i)}, {"eventType", "created"}, {"id", "second id header"}});
  REQUIRE(producer.flush());
  REQUIRE(producer.failed() == 0);

  TopicReader reader(kafka.bootstrap(), "harness");
  REQUIRE(reader.read_until([](const auto& all) { return all.size() >= 3; }, 10s));
  CHECK(reader.partitions() == 3);
  CHECK(reader.poll_for(200ms) == 0);  // nothing beyond the three
  auto all = reader.messages();
  REQUIRE(all.size() == 3);
  std::sort(all.begin(), all.end(), [](const auto& x, const auto& y) { return x.key < y.key; });
  for (int i = 1; i <= 3; ++i) {
    const ConsumedMessage& m = all[static_cast<std::size_t>(i - 1)];
    const auto n = std::to_string(i);
    CHECK(m.topic == "harness");
    CHECK(m.partition >= 0);
    CHECK(m.partition < 3);
    CHECK(m.offset >= 0);
    CHECK(m.key == "key-" + n);
    CHECK(m.value == "value-" + n);
    CHECK(m.headers == std::vector<std::pair<std::string, std::optional<std::string>>>{
                           {"id", "event-" + n}, {"eventType", "created"}, {"id", "second id header"}});
    CHECK(outbox::test::header(m, "id") == std::optional<std::string>("event-" + n));  // the first one
    CHECK(outbox::test::header(m, "eventType") == std::optional<std::string>("created"));
    CHECK_FALSE(outbox::test::header(m, "missing").has_value());
  }
}

TEST_CASE("a reader started before anything was produced reads what arrives later", "[support][kafka]") {
  MockKafka kafka;
  TopicReader reader(kafka.bootstrap(), "late");
  CHECK(reader.poll_for(300ms) == 0);
  // The 2.0.2 mock auto-creates on any Metadata request (it speaks v2, which cannot say no), so
  // the reader's own lookup made the topic with the default 4 partitions.
  CHECK(reader.partitions() == 4);

  TestProducer producer(kafka.bootstrap());
  producer.send("late", "k", "v", {});
  REQUIRE(producer.flush());
  REQUIRE(producer.failed() == 0);

  REQUIRE(reader.read_until([](const auto& all) { return !all.empty(); }, 10s));
  REQUIRE(reader.messages().size() == 1);
  CHECK(reader.messages()[0].topic == "late");
  CHECK(reader.messages()[0].key == "k");
  CHECK(reader.messages()[0].value == "v");
  CHECK(reader.messages()[0].headers.empty());
}
