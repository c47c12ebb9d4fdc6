// The inbox sidecar's Kafka consumer against librdkafka's mock cluster: its rebalance callback
// under the answers librdkafka documents, including the ones it gives only while a group is
// terminating. This binary interposes rd_kafka_rebalance_protocol() (defined here, it wins
// over the shared library's for every call from this executable) so a test can make it answer
// NULL, "on error" in rdkafka.h, as it does once the group thread stopped serving requests.
#include <catch2/catch.hpp>

#include <dlfcn.h>
#include <librdkafka/rdkafka.h>

#include <atomic>
#include <chrono>
#include <set>
#include <thread>

#include "relay/core/errors.hpp"
#include "relay/kafka/kafka_inbox_source.hpp"
#include "tests/support/eventually.hpp"
#include "tests/support/mock_kafka.hpp"

namespace {
std::atomic<bool> g_protocol_unanswered{false};
std::atomic<int> g_protocol_asked{0};
}  // namespace

extern "C" const char* rd_kafka_rebalance_protocol(rd_kafka_t* rk) {
  ++g_protocol_asked;
  if (g_protocol_unanswered) return nullptr;
  using Real = const char* (*)(rd_kafka_t*);
  static const auto real = reinterpret_cast<Real>(::dlsym(RTLD_NEXT, "rd_kafka_rebalance_protocol"));
  return real != nullptr ? real(rk) : nullptr;
}

using namespace outbox;
using namespace outbox::relay;
using namespace std::chrono_literals;

namespace {

kafka::KafkaInboxOptions options(const test::MockKafka& cluster, const std::string& group,
                                 std::map<std::string, std::string> properties = {}) {
  kafka::KafkaInboxOptions o;
  o.brokers = cluster.bootstrap();
  o.group_id = group;
  o.topics = {"moves"};
  o.properties = std::move(properties);
  return o;
}

// Polls (serving the rebalance callback) until the source holds partitions.
void poll_until_assigned(kafka::KafkaInboxSource& source) {
  REQUIRE(test::eventually([&] {
    (void)source.poll(50ms);
    return source.assigned() > 0;
  }, 30s));
}

}  // namespace

TEST_CASE("inbox consumer: the rebalance protocol comes from partition.assignment.strategy", "[kafka][inbox]") {
  test::MockKafka cluster(1);
  NullLogger log;
  CHECK_FALSE(kafka::KafkaInboxSource(options(cluster, "g1"), log).cooperative());
  CHECK_FALSE(kafka::KafkaInboxSource(options(cluster, "g2", {{"partition.assignment.strategy", "range, roundrobin"}}), log)
                  .cooperative());
  CHECK(kafka::KafkaInboxSource(options(cluster, "g3", {{"partition.assignment.strategy", " cooperative-sticky"}}), log)
            .cooperative());
  // A mix of the two protocols is librdkafka's to refuse, and is refused by name.
  CHECK_THROWS_AS(
      kafka::KafkaInboxSource(options(cluster, "g4", {{"partition.assignment.strategy", "range,cooperative-sticky"}}), log),
      ConfigError);
}

TEST_CASE("inbox consumer: a revoke served while librdkafka no longer answers the protocol (NULL) settles and unassigns",
          "[kafka][inbox]") {
  const auto strategy = GENERATE(std::string("range,roundrobin"), std::string("cooperative-sticky"));
  INFO("partition.assignment.strategy=" << strategy);
  test::MockKafka cluster(1);
  cluster.create_topic("moves", 4);
  NullLogger log;
  kafka::KafkaInboxSource source(options(cluster, "g-" + strategy, {{"partition.assignment.strategy", strategy}}), log);
  std::set<int> revoked;
  source.on_revoke([&](const std::vector<TopicPartition>& gone) {
    for (const auto& tp : gone) revoked.insert(tp.partition);
  });
  poll_until_assigned(source);
  REQUIRE(source.assigned() == 4);
  g_protocol_asked = 0;
  g_protocol_unanswered = true;
  source.close();  // the revoke of close() runs the callback
  g_protocol_unanswered = false;
  CHECK(revoked == std::set<int>{0, 1, 2, 3});
  CHECK(source.assigned() == 0);
  CHECK(g_protocol_asked == 0);  // nothing on the callback's path asks the group thread
}
