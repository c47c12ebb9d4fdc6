// Kafka for tests: librdkafka's mock cluster (the real protocol on 127.0.0.1, with fault
// injection through rdkafka_mock.h) and a reader that reads a topic back from the beginning.
#pragma once

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>  // after rdkafka.h; here so callers can inject faults

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace outbox::test {

// A mock Kafka cluster living as long as this object. Topics auto-create with 4 partitions on
// first produce; create_topic() pins the partition count up front.
class MockKafka {
 public:
  explicit MockKafka(int brokers = 1);
  ~MockKafka();
  MockKafka(const MockKafka&) = delete;
  MockKafka& operator=(const MockKafka&) = delete;
  MockKafka(MockKafka&&) = delete;
  MockKafka& operator=(MockKafka&&) = delete;

  // Comma-separated host:port list for bootstrap.servers.
  [[nodiscard]] std::string bootstrap() const { return bootstrap_; }
  // For rd_kafka_mock_* fault injection (broker ids are 1..brokers).
  [[nodiscard]] rd_kafka_mock_cluster_t* cluster() const noexcept { return cluster_; }
  void create_topic(const std::string& topic, int partitions = 4, int replication = 1);

 private:
  rd_kafka_t* rk_ = nullptr;  // owns the cluster's thread; has no brokers of its own
  rd_kafka_mock_cluster_t* cluster_ = nullptr;
  std::string bootstrap_;
};

struct ConsumedMessage {
  std::string topic;
  std::int32_t partition = 0;
  std::int64_t offset = 0;
  std::int64_t timestamp_ms = -1;  // the producer's CreateTime (wall clock at produce); -1: none
  std::string key;    // empty when the message has no key
  bool null_key = false;
  std::string value;  // empty when the message has no payload
  bool null_value = false;  // no payload at all (a tombstone), as opposed to an empty one
  std::vector<std::pair<std::string, std::optional<std::string>>> headers;  // in wire order; nullopt: null value
  std::chrono::steady_clock::time_point received_at{};  // when this reader got it
};

// The value of the first header called `name`, if any ("" for a header with a null value).
[[nodiscard]] std::optional<std::string> header(const ConsumedMessage& message, const std::string& name);
// Every header called `name`, in wire order (nullopt: a null value).
[[nodiscard]] std::vector<std::optional<std::string>> headers_named(const ConsumedMessage& message,
                                                                   const std::string& name);

// Reads every partition of one topic from the earliest offset, with no group membership
// (explicit assign, no subscribe, no offset commits). The topic may not exist yet: it is
// assigned on the first poll that finds it with partitions in the metadata.
// Against the 2.0.2 mock, that first lookup itself creates the topic with 4 partitions (the
// mock answers Metadata v2 only, which has no AllowAutoTopicCreation flag): call
// MockKafka::create_topic() for other partition counts before constructing a reader.
class TopicReader {
 public:
  TopicReader(const std::string& bootstrap, const std::string& topic);
  ~TopicReader();
  TopicReader(const TopicReader&) = delete;
  TopicReader& operator=(const TopicReader&) = delete;
  TopicReader(TopicReader&&) = delete;
  TopicReader& operator=(TopicReader&&) = delete;

  // Consumes what arrives within `budget`; returns how many messages were new.
  std::size_t poll_for(std::chrono::milliseconds budget);
  // Polls until done(all messages so far) is true (returns true) or the deadline passes
  // (returns false). Waits only inside librdkafka polls with short timeouts.
  bool read_until(std::function<bool(const std::vector<ConsumedMessage>&)> done, std::chrono::milliseconds deadline);
  [[nodiscard]] const std::vector<ConsumedMessage>& messages() const noexcept { return messages_; }
  // Partitions assigned so far (0 until the topic showed up in the metadata).
  [[nodiscard]] int partitions() const noexcept { return partitions_; }
  // The last consumer or metadata error seen, for failure messages; empty if none.
  [[nodiscard]] const std::string& last_error() const noexcept { return last_error_; }

 private:
  // Fetches metadata and assigns all partitions once the topic has some. Waits at most `wait`.
  bool try_assign(std::chrono::milliseconds wait);

  rd_kafka_t* rk_ = nullptr;
  std::string topic_;
  int partitions_ = 0;
  std::vector<ConsumedMessage> messages_;
  std::string last_error_;
};

}  // namespace outbox::test
