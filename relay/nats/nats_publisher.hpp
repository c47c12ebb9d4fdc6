// Publisher on NATS JetStream (libnats): every message is published asynchronously and counts
// as delivered only once a stream acknowledged it (never core NATS fire-and-forget). The event
// id goes in Nats-Msg-Id, so the stream's duplicate window absorbs the relay's own re-sends.
//
// Order: at most one message per key (aggregate id) is in flight; the next one of that key
// goes out from the acknowledgement of the one before, and when one fails, the rest of its
// key in the batch fail (transient) unsent. A lost message can therefore never be overtaken
// by a later one of its aggregate, whatever a reconnect drops. Different keys pipeline.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "relay/core/logger.hpp"
#include "relay/core/publisher.hpp"

struct __natsConnection;
struct __jsCtx;
struct __natsMsg;
struct jsPubAck;
struct jsPubAckErr;

namespace outbox::relay::nats {

struct NatsOptions {
  std::string url = "nats://127.0.0.1:4222";  // comma-separated server URLs
  std::string name = "outbox-relay";          // connection name, shown by the server
  std::chrono::milliseconds ack_timeout{5'000};     // per message: no acknowledgement by then is transient
  std::chrono::milliseconds connect_timeout{2'000};
  std::string id_header = "id";      // the message header holding the event id (-> Nats-Msg-Id)
  std::string key_header = "key";    // header the key (aggregate id) is written to: NATS has no key
  std::string null_payload_header = "Outbox-Null-Payload";  // "true" on a NULL payload (sent empty)
  std::string credentials_file;      // a .creds file (JWT + nkey), or empty
  std::string user, password, token;
};

// nats.url: one or more nats:// (or tls://) host:port URLs, comma-separated. Throws ConfigError.
void check_urls(const std::string& urls);
// A header the relay writes on NATS (`setting` names it): not one the server or its clients
// read (Nats-..., Status, Description), and one NATS can carry. Throws ConfigError.
void check_header_name(const std::string& name, const std::string& setting);

class NatsPublisher final : public Publisher {
 public:
  // Connects in the background (a server down at start is an outage like any other) and
  // reconnects without end. Throws ConfigError on options libnats refuses.
  NatsPublisher(NatsOptions options, Logger& logger);
  ~NatsPublisher() override;
  NatsPublisher(const NatsPublisher&) = delete;
  NatsPublisher& operator=(const NatsPublisher&) = delete;

  [[nodiscard]] std::optional<DeliveryResult> send(const Message& message) override;
  [[nodiscard]] std::vector<DeliveryResult> await() override;
  void abandon() override;

  // Acknowledgements the stream flagged as duplicates (Nats-Msg-Id seen in its window).
  [[nodiscard]] std::uint64_t duplicates() const { return duplicates_; }
  // Messages of the current batch without an outcome yet (sent or held behind their key).
  [[nodiscard]] std::size_t unsettled() const {
    std::lock_guard lock(mutex_);
    return unsettled_;
  }

 private:
  struct Slot {
    std::string key;
    std::string subject;
    __natsMsg* msg = nullptr;  // built in send(); owned here until published
    std::optional<DeliveryResult> result;
  };
  static void on_ack(__jsCtx* js, __natsMsg* msg, jsPubAck* pa, jsPubAckErr* pae, void* closure);
  void acknowledged(__natsMsg* msg, std::optional<DeliveryResult> result, bool duplicate, bool no_responders);
  // Publishes slot `index` of batch `generation` (lock not held); nothing when that batch was
  // given up on meanwhile. A refusal settles it and fails its key's rest.
  void publish(std::size_t index, std::uint64_t generation);
  // Under the lock: settles `index`, fails the rest of its key, returns the next to publish.
  std::optional<std::size_t> settle_locked(std::size_t index, DeliveryResult result);
  // A subject's verdict after "no responders": permanent when JetStream answers that no stream
  // captures it; transient when JetStream itself does not answer (starting, restarting).
  DeliveryResult no_stream_verdict(const std::string& subject);
  std::optional<DeliveryResult> refused(const Message& m) const;

  NatsOptions options_;
  Logger& logger_;
  __natsConnection* nc_ = nullptr;
  __jsCtx* js_ = nullptr;
  // What libnats's callbacks reach: it outlives the publisher (never freed: a callback already
  // dispatched when the connection closes may still run), and `self` goes null first.
  struct Gate {
    std::mutex mutex;
    NatsPublisher* self = nullptr;
  };
  Gate* gate_ = nullptr;

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<Slot> slots_;                                     // this batch, in send order
  std::unordered_map<std::string, std::deque<std::size_t>> waiting_;  // per key, not yet sent
  std::set<std::string> busy_keys_;                             // keys with a message in flight
  std::set<std::string> failed_keys_;  // keys with a failure in this batch: the rest stays unsent
  std::unordered_map<const __natsMsg*, std::size_t> in_flight_;  // published, not acknowledged
  std::vector<std::size_t> no_responders_;                      // to classify in await()
  std::size_t unsettled_ = 0;
  std::uint64_t generation_ = 0;  // bumped each time a batch is handed back
  std::atomic<bool> abandoned_{false};
  std::atomic<std::uint64_t> duplicates_{0};
};

}  // namespace outbox::relay::nats
