#include "tests/support/mock_kafka.hpp"

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <stdexcept>

namespace outbox::test {
namespace {

void set(rd_kafka_conf_t* conf, const char* k, const std::string& v) {
  char err[256];
  if (rd_kafka_conf_set(conf, k, v.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK)
    throw std::runtime_error(std::string("kafka conf ") + k + ": " + err);
}

}  // namespace

MockKafka::MockKafka(int brokers) {
  char err[256];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  set(conf, "log_level", "0");
  rk_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  if (rk_ == nullptr) throw std::runtime_error(std::string("mock kafka handle: ") + err);
  cluster_ = rd_kafka_mock_cluster_new(rk_, brokers);
  if (cluster_ == nullptr) throw std::runtime_error("rd_kafka_mock_cluster_new failed");
  bootstrap_ = rd_kafka_mock_cluster_bootstraps(cluster_);
}

MockKafka::~MockKafka() {
  if (cluster_ != nullptr) rd_kafka_mock_cluster_destroy(cluster_);
  if (rk_ != nullptr) rd_kafka_destroy(rk_);
}

void MockKafka::create_topic(const std::string& topic, int partitions, int replication) {
  auto err = rd_kafka_mock_topic_create(cluster_, topic.c_str(), partitions, replication);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) throw std::runtime_error("mock topic create: " + std::string(rd_kafka_err2str(err)));
}

std::optional<std::string> header(const ConsumedMessage& m, const std::string& name) {
  for (const auto& [k, v] : m.headers)
    if (k == name) return v;
  return std::nullopt;
}

TopicReader::TopicReader(const std::string& bootstrap, const std::string& topic) : topic_(topic) {
  char err[256];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  set(conf, "bootstrap.servers", bootstrap);
  set(conf, "group.id", "outbox-test-reader");  // required by the consumer API; no subscribe
  set(conf, "enable.auto.commit", "false");
  set(conf, "socket.nagle.disable", "true");
  set(conf, "fetch.wait.max.ms", "50");
  set(conf, "allow.auto.create.topics", "true");
  set(conf, "log_level", "2");
  rk_ = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
  if (rk_ == nullptr) throw std::runtime_error(std::string("topic reader: ") + err);
  rd_kafka_poll_set_consumer(rk_);
}

TopicReader::~TopicReader() {
  if (rk_ != nullptr) {
    rd_kafka_consumer_close(rk_);
    rd_kafka_destroy(rk_);
  }
}

bool TopicReader::assign() {
  if (assigned_) return true;
  rd_kafka_topic_t* t = rd_kafka_topic_new(rk_, topic_.c_str(), nullptr);
  const rd_kafka_metadata_t* md = nullptr;
  auto err = rd_kafka_metadata(rk_, 0, t, &md, 500);
  rd_kafka_topic_destroy(t);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR || md == nullptr) return false;
  int partitions = 0;
  bool ok = false;
  if (md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR) {
    partitions = md->topics[0].partition_cnt;
    ok = partitions > 0;
  }
  rd_kafka_metadata_destroy(md);
  if (!ok) return false;
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(partitions);
  for (int p = 0; p < partitions; ++p)
    rd_kafka_topic_partition_list_add(list, topic_.c_str(), p)->offset = RD_KAFKA_OFFSET_BEGINNING;
  err = rd_kafka_assign(rk_, list);
  rd_kafka_topic_partition_list_destroy(list);
  assigned_ = err == RD_KAFKA_RESP_ERR_NO_ERROR;
  return assigned_;
}

std::size_t TopicReader::poll_for(std::chrono::milliseconds budget) {
  auto until = std::chrono::steady_clock::now() + budget;
  std::size_t fresh = 0;
  while (std::chrono::steady_clock::now() < until) {
    if (!assign()) continue;  // metadata lookups wait up to 500 ms each
    rd_kafka_message_t* msg = rd_kafka_consumer_poll(rk_, 50);
    if (msg == nullptr) continue;
    if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      ConsumedMessage m;
      m.topic = rd_kafka_topic_name(msg->rkt);
      m.partition = msg->partition;
      m.offset = msg->offset;
      if (msg->key != nullptr) m.key.assign(static_cast<const char*>(msg->key), msg->key_len);
      if (msg->payload != nullptr) m.value.assign(static_cast<const char*>(msg->payload), msg->len);
      rd_kafka_headers_t* hdrs = nullptr;
      if (rd_kafka_message_headers(msg, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        const char* name = nullptr;
        const void* value = nullptr;
        size_t size = 0;
        for (size_t i = 0; rd_kafka_header_get_all(hdrs, i, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR; ++i)
          m.headers.emplace_back(name, value != nullptr ? std::string(static_cast<const char*>(value), size) : "");
      }
      messages_.push_back(std::move(m));
      ++fresh;
    }
    rd_kafka_message_destroy(msg);
  }
  return fresh;
}

bool TopicReader::read_until(const std::function<bool(const std::vector<ConsumedMessage>&)>& done,
                             std::chrono::milliseconds deadline) {
  auto until = std::chrono::steady_clock::now() + deadline;
  while (!done(messages_)) {
    if (std::chrono::steady_clock::now() >= until) return false;
    poll_for(std::chrono::milliseconds(100));
  }
  return true;
}

}  // namespace outbox::test
