// Reading NATS JetStream back in tests: create and delete streams, and read a stream's
// messages in stream order (direct get by sequence), headers included.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

struct __natsConnection;
struct __jsCtx;
struct __natsSubscription;

namespace outbox::test {

struct StreamMessage {
  std::uint64_t sequence = 0;
  std::string subject;
  std::string data;
  std::map<std::string, std::string> headers;  // one value per name (the first)
};

class NatsClient {
 public:
  explicit NatsClient(const std::string& url);  // throws std::runtime_error naming the url
  ~NatsClient();
  NatsClient(const NatsClient&) = delete;
  NatsClient& operator=(const NatsClient&) = delete;

  // A file-backed stream capturing `subjects`, with a duplicate window (0: the server's).
  void add_stream(const std::string& name, const std::vector<std::string>& subjects,
                  std::chrono::milliseconds duplicate_window = std::chrono::milliseconds(0));
  void delete_stream(const std::string& name);
  // Messages stored in the stream (0 when it does not exist).
  [[nodiscard]] std::uint64_t count(const std::string& stream);
  // Every message, in stream order.
  [[nodiscard]] std::vector<StreamMessage> read_all(const std::string& stream);
  // A core NATS service on `subject` answering every request with `body` (no stream).
  void respond(const std::string& subject, const std::string& body);

 private:
  __natsConnection* nc_ = nullptr;
  __jsCtx* js_ = nullptr;
  std::vector<__natsSubscription*> subscriptions_;
  std::vector<std::unique_ptr<std::string>> bodies_;
};

}  // namespace outbox::test
