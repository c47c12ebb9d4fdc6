#include "tests/support/mock_kafka.hpp"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <stdexcept>

namespace outbox::test {
namespace {

using std::chrono::milliseconds;

void set(rd_kafka_conf_t* conf, const char* name, const std::string& value) {
  char err[512];
  if (rd_kafka_conf_set(conf, name, value.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK) {
    rd_kafka_conf_destroy(conf);
    throw std::runtime_error(std::string("kafka test config ") + name + "=" + value + ": " + err);
  }
}

milliseconds left_until(std::chrono::steady_clock::time_point until) {
  return std::chrono::duration_cast<milliseconds>(until - std::chrono::steady_clock::now());
}

int timeout_ms(milliseconds wait) { return static_cast<int>(std::max<milliseconds::rep>(wait.count(), 0)); }

ConsumedMessage to_consumed(const rd_kafka_message_t& msg) {
  ConsumedMessage m;
  m.topic = rd_kafka_topic_name(msg.rkt);
  m.partition = msg.partition;
  m.offset = msg.offset;
  m.timestamp_ms = rd_kafka_message_timestamp(&msg, nullptr);
  m.received_at = std::chrono::steady_clock::now();
  if (msg.key != nullptr) m.key.assign(static_cast<const char*>(msg.key), msg.key_len);
  m.null_key = msg.key == nullptr;
  if (msg.payload != nullptr) m.value.assign(static_cast<const char*>(msg.payload), msg.len);
  m.null_value = msg.payload == nullptr;
  rd_kafka_headers_t* headers = nullptr;
  // rd_kafka_message_headers() needs a non-const message; it only parses lazily.
  if (rd_kafka_message_headers(const_cast<rd_kafka_message_t*>(&msg), &headers) == RD_KAFKA_RESP_ERR_NO_ERROR) {
    const char* name = nullptr;
    const void* value = nullptr;
    std::size_t size = 0;
    for (std::size_t i = 0; rd_kafka_header_get_all(headers, i, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR;
         ++i)
      m.headers.emplace_back(name, value != nullptr ? std::optional<std::string>(std::string(static_cast<const char*>(value), size))
                                                    : std::nullopt);
  }
  return m;
}

}  // namespace

MockKafka::MockKafka(int brokers) {
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  // The handle has no brokers of its own; errors only, so it does not warn about that.
  set(conf, "log_level", "3");
  // The mock brokers' sockets take this setting from the handle that hosts them. Real Kafka
  // brokers set TCP_NODELAY; without it each acknowledgement waits ~40 ms for a delayed ACK.
  set(conf, "socket.nagle.disable", "true");
  char err[512];
  rk_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);  // takes conf on success
  if (rk_ == nullptr) {
    rd_kafka_conf_destroy(conf);
    throw std::runtime_error(std::string("MockKafka: rd_kafka_new: ") + err);
  }
  cluster_ = rd_kafka_mock_cluster_new(rk_, brokers);
  if (cluster_ == nullptr) {
    rd_kafka_destroy(rk_);
    throw std::runtime_error("MockKafka: rd_kafka_mock_cluster_new failed for " + std::to_string(brokers) +
                             " broker(s)");
  }
  bootstrap_ = rd_kafka_mock_cluster_bootstraps(cluster_);
}

MockKafka::~MockKafka() {
  rd_kafka_mock_cluster_destroy(cluster_);
  rd_kafka_destroy(rk_);
}

void MockKafka::create_topic(const std::string& topic, int partitions, int replication) {
  const auto err = rd_kafka_mock_topic_create(cluster_, topic.c_str(), partitions, replication);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
    throw std::runtime_error("MockKafka: create topic " + topic + " (" + std::to_string(partitions) +
                             " partitions, replication " + std::to_string(replication) + "): " + rd_kafka_err2str(err));
}

std::optional<std::string> header(const ConsumedMessage& message, const std::string& name) {
  for (const auto& [key, value] : message.headers)
    if (key == name) return value.value_or("");
  return std::nullopt;
}

std::vector<std::optional<std::string>> headers_named(const ConsumedMessage& message, const std::string& name) {
  std::vector<std::optional<std::string>> out;
  for (const auto& [key, value] : message.headers)
    if (key == name) out.push_back(value);
  return out;
}

TopicReader::TopicReader(const std::string& bootstrap, const std::string& topic) : topic_(topic) {
  static std::atomic<int> readers{0};
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  set(conf, "bootstrap.servers", bootstrap);
  // The assign/consumer_poll API needs a group.id, but this reader never joins the group
  // (no subscribe) and never commits; a unique id keeps readers apart anyway.
  set(conf, "group.id", "outbox-test-reader-" + std::to_string(::getpid()) + "-" + std::to_string(readers++));
  set(conf, "enable.auto.commit", "false");
  set(conf, "enable.auto.offset.store", "false");
  set(conf, "auto.offset.reset", "earliest");
  set(conf, "socket.nagle.disable", "true");
  set(conf, "fetch.wait.max.ms", "50");
  // A verifier reading through a broker outage must not lag the relay: reconnect within a
  // second rather than librdkafka's 10 s, and give up within 5 s rather than 60 s on a
  // request the 2.0.2 mock left unanswered on a connection it kept open across
  // rd_kafka_mock_broker_set_down/up. The connection errors such a drill causes on purpose
  // stay off stderr (consumer errors still reach last_error()).
  set(conf, "reconnect.backoff.max.ms", "1000");
  set(conf, "socket.timeout.ms", "5000");
  set(conf, "log_level", "2");
  char err[512];
  rk_ = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
  if (rk_ == nullptr) {
    rd_kafka_conf_destroy(conf);
    throw std::runtime_error(std::string("TopicReader: rd_kafka_new: ") + err);
  }
  rd_kafka_poll_set_consumer(rk_);
}

TopicReader::~TopicReader() {
  rd_kafka_consumer_close(rk_);
  rd_kafka_destroy(rk_);
}

bool TopicReader::try_assign(milliseconds wait) {
  rd_kafka_topic_t* handle = rd_kafka_topic_new(rk_, topic_.c_str(), nullptr);
  const rd_kafka_metadata_t* md = nullptr;
  auto err = rd_kafka_metadata(rk_, 0, handle, &md, std::max(timeout_ms(wait), 1));
  rd_kafka_topic_destroy(handle);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    last_error_ = "metadata for " + topic_ + ": " + rd_kafka_err2str(err);
    return false;
  }
  int count = 0;
  if (md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR)
    count = md->topics[0].partition_cnt;
  else if (md->topic_cnt == 1)
    last_error_ = "metadata for " + topic_ + ": " + rd_kafka_err2str(md->topics[0].err);
  rd_kafka_metadata_destroy(md);
  if (count <= 0) return false;

  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(count);
  for (int p = 0; p < count; ++p)
    rd_kafka_topic_partition_list_add(list, topic_.c_str(), p)->offset = RD_KAFKA_OFFSET_BEGINNING;
  err = rd_kafka_assign(rk_, list);
  rd_kafka_topic_partition_list_destroy(list);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    last_error_ = "assign " + topic_ + ": " + rd_kafka_err2str(err);
    return false;
  }
  partitions_ = count;
  return true;
}

std::size_t TopicReader::poll_for(milliseconds budget) {
  const auto until = std::chrono::steady_clock::now() + budget;
  std::size_t fresh = 0;
  for (auto left = left_until(until); left.count() > 0; left = left_until(until)) {
    if (partitions_ == 0 && !try_assign(std::min(left, milliseconds(500)))) {
      // Not there yet (mock topics appear on first produce): wait inside librdkafka, not in a
      // sleep, then ask again.
      if (rd_kafka_message_t* m = rd_kafka_consumer_poll(rk_, timeout_ms(std::min(left_until(until), milliseconds(50)))))
        rd_kafka_message_destroy(m);
      continue;
    }
    rd_kafka_message_t* msg = rd_kafka_consumer_poll(rk_, timeout_ms(std::min(left_until(until), milliseconds(50))));
    if (msg == nullptr) continue;
    if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      messages_.push_back(to_consumed(*msg));
      ++fresh;
    } else if (msg->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      last_error_ = rd_kafka_message_errstr(msg);
    }
    rd_kafka_message_destroy(msg);
  }
  return fresh;
}

bool TopicReader::read_until(std::function<bool(const std::vector<ConsumedMessage>&)> done, milliseconds deadline) {
  const auto until = std::chrono::steady_clock::now() + deadline;
  for (;;) {
    if (done(messages_)) return true;
    const auto left = left_until(until);
    if (left.count() <= 0) return false;
    poll_for(std::min(left, milliseconds(100)));
  }
}

}  // namespace outbox::test
