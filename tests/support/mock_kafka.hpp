// Kafka for tests: librdkafka's mock cluster (the real protocol on 127.0.0.1, with fault
// injection) and a plain consumer that reads a topic back from the beginning.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

struct rd_kafka_s;
struct rd_kafka_mock_cluster_s;

namespace outbox::test {

class MockKafka {
 public:
  explicit MockKafka(int brokers = 1);
  ~MockKafka();
  MockKafka(const MockKafka&) = delete;
  MockKafka& operator=(const MockKafka&) = delete;

  [[nodiscard]] std::string bootstrap() const { return bootstrap_; }
  [[nodiscard]] rd_kafka_mock_cluster_s* cluster() const { return cluster_; }
  void create_topic(const std::string& topic, int partitions = 4, int replication = 1);

 private:
  rd_kafka_s* rk_ = nullptr;
  rd_kafka_mock_cluster_s* cluster_ = nullptr;
  std::string bootstrap_;
};

struct ConsumedMessage {
  std::string topic;
  int partition = 0;
  long long offset = 0;
  std::string key;
  std::string value;
  std::vector<std::pair<std::string, std::string>> headers;
};

[[nodiscard]] std::optional<std::string> header(const ConsumedMessage& m, const std::string& name);

// Reads every partition of one topic from the beginning, without a consumer group.
class TopicReader {
 public:
  TopicReader(const std::string& bootstrap, const std::string& topic);
  ~TopicReader();
  TopicReader(const TopicReader&) = delete;
  TopicReader& operator=(const TopicReader&) = delete;

  // Consumes what arrives within `budget`; returns how many messages were new.
  std::size_t poll_for(std::chrono::milliseconds budget);
  // Polls until done(all messages so far) or the deadline; returns done's last answer.
  bool read_until(const std::function<bool(const std::vector<ConsumedMessage>&)>& done,
                  std::chrono::milliseconds deadline);
  [[nodiscard]] const std::vector<ConsumedMessage>& messages() const { return messages_; }

 private:
  bool assign();

  rd_kafka_s* rk_ = nullptr;
  std::string topic_;
  bool assigned_ = false;
  std::vector<ConsumedMessage> messages_;
};

}  // namespace outbox::test
