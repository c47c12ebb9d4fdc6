// Broker trouble under a steady stream: every broker down, partition leaders moving,
// retriable Produce errors, a slow broker. Broker trouble never burns an attempt, nothing is
// marked without an acknowledgement, and the relay catches up once the brokers are back.
#include <catch2/catch.hpp>

#include "tests/drills/drill_harness.hpp"

using namespace outbox::test;
using namespace outbox::test::drill;
using namespace std::chrono_literals;

namespace {

constexpr int kBrokers = 3;

}  // namespace

TEST_CASE("every broker down for 12 s: not ready, nothing marked, no attempt burnt, effects once after catching up",
          "[drill][broker]") {
  Drill d("all brokers down 12 s", kBrokers);
  d.start_consumer();
  d.warm_up();
  REQUIRE(eventually([&] { return d.readyz() == 200; }, 20s));

  for (int b = 1; b <= kBrokers; ++b) rd_kafka_mock_broker_set_down(d.kafka.cluster(), b);
  const auto fault_end = std::chrono::steady_clock::now() + 12s;
  // A batch acknowledged in part before the outage is marked once its other messages time out
  // (kafka.delivery_timeout_ms, 5 s here); from then on no acknowledgement, so no mark.
  d.hold(6500ms);
  const long marked_early = d.count("published_at IS NOT NULL");
  bool not_ready = d.readyz() == 503;
  while (std::chrono::steady_clock::now() < fault_end) {
    not_ready = not_ready || d.readyz() == 503;
    d.hold(200ms);
  }
  const long marked_late = d.count("published_at IS NOT NULL");
  const double transient = d.metric("outbox_relay_transient_errors_total");
  for (int b = 1; b <= kBrokers; ++b) rd_kafka_mock_broker_set_up(d.kafka.cluster(), b);

  auto recovery = d.recover();
  CHECK(eventually([&] { return d.readyz() == 200; }, 20s));
  d.finish(recovery, "marked during the outage " + std::to_string(marked_late - marked_early) + ", " +
                         std::to_string(static_cast<long>(transient)) + " transient steps");

  CHECK(not_ready);                     // /readyz said 503 while the brokers were away
  CHECK(marked_late == marked_early);   // no acknowledgement, no mark
  CHECK(transient >= 1);
}

TEST_CASE("partition leaders move between brokers every second: no loss, order kept, no attempt burnt",
          "[drill][broker]") {
  Drill d("partition leaders move 10 times", kBrokers);
  d.warm_up();
  d.repeat(10, 1s, [&](int round) {
    for (int p = 0; p < 4; ++p)
      rd_kafka_mock_partition_set_leader(d.kafka.cluster(), kTopic, p, 1 + (p + round + 1) % kBrokers);
  });
  auto recovery = d.recover();
  d.finish(recovery);
}

// The mock does not check idempotent sequence numbers, so with several requests in flight a
// failed one can look delivered (DESIGN.md, traps); the relay's producer is told to keep one
// in flight here, and the verifier reads the topic back rather than trusting delivery reports.
TEST_CASE("retriable Produce errors for 10 s: retried without burning attempts, nothing lost", "[drill][broker]") {
  Drill d("retriable Produce errors 10 s", kBrokers);
  d.setup.relay_env["OUTBOX_RELAY_KAFKA_PROPERTY_MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION"] = "1";
  d.warm_up();
  const rd_kafka_resp_err_t errors[] = {
      RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION, RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
      RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS, RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
      RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND};
  constexpr int kProduceApiKey = 0;
  d.repeat(20, 500ms, [&](int) {
    rd_kafka_mock_push_request_errors_array(d.kafka.cluster(), kProduceApiKey, std::size(errors), errors);
  });
  rd_kafka_mock_clear_request_errors(d.kafka.cluster(), kProduceApiKey);
  auto recovery = d.recover();
  d.finish(recovery);
}

TEST_CASE("every broker answers 400 ms late for 10 s: the backlog drains after, no attempt burnt", "[drill][broker]") {
  Drill d("slow brokers (400 ms rtt) 10 s", kBrokers);
  d.warm_up();
  for (int b = 1; b <= kBrokers; ++b) rd_kafka_mock_broker_set_rtt(d.kafka.cluster(), b, 400);
  d.hold(10s);
  const long backlog = d.count("published_at IS NULL");
  for (int b = 1; b <= kBrokers; ++b) rd_kafka_mock_broker_set_rtt(d.kafka.cluster(), b, 0);
  auto recovery = d.recover();
  d.finish(recovery, "backlog " + std::to_string(backlog) + " when the delay ended");
}
