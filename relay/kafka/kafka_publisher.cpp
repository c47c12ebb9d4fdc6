#include "relay/kafka/kafka_publisher.hpp"

#include <librdkafka/rdkafka.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <string_view>

#include "relay/core/errors.hpp"

namespace outbox::relay::kafka {
namespace {

// Errors that no retry of the same message can fix: count an attempt, then dead-letter.
bool permanent(rd_kafka_resp_err_t err) {
  switch (err) {
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_INVALID_MSG:
    case RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE:
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
    case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_INVALID_RECORD:
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
    case RD_KAFKA_RESP_ERR_INVALID_REQUIRED_ACKS:
      return true;
    default:
      return false;
  }
}

// Topic errors in metadata that no retry of the message fixes (an operator has to act).
bool refusing_topic(rd_kafka_resp_err_t err) {
  return err == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED || err == RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION ||
         err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;
}

// How long send() waits for a topic's metadata the first time it sees the topic; without an
// answer the message is sent anyway (the broker may just be away: that is transient).
constexpr std::chrono::milliseconds kTopicCheckTimeout{2000};
// How long a refused or unanswered topic check is reused before the metadata is asked again.
constexpr std::chrono::milliseconds kTopicVerdictReuse{1000};

DeliveryResult classify(rd_kafka_resp_err_t err) {
  if (err == RD_KAFKA_RESP_ERR_NO_ERROR) return {DeliveryStatus::delivered, {}};
  std::string detail = std::string(rd_kafka_err2name(err)) + ": " + rd_kafka_err2str(err);
  return {permanent(err) ? DeliveryStatus::permanent_failure : DeliveryStatus::transient_failure,
          std::move(detail)};
}

LogLevel level_of_syslog(int level) {
  if (level <= 3) return LogLevel::error;
  if (level == 4) return LogLevel::warn;
  if (level <= 6) return LogLevel::info;
  return LogLevel::debug;
}

}  // namespace

struct KafkaPublisher::Handle {
  rd_kafka_t* rk = nullptr;
  ~Handle() {
    if (rk != nullptr) rd_kafka_destroy(rk);
  }
};

KafkaPublisher::KafkaPublisher(KafkaOptions options, Logger& logger)
    : options_(std::move(options)), logger_(logger) {
  create();
}

KafkaPublisher::~KafkaPublisher() { close(); }

void KafkaPublisher::create() {
  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  auto set = [&](const std::string& k, const std::string& v, const std::string& key_path) {
    if (rd_kafka_conf_set(conf, k.c_str(), v.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK) {
      rd_kafka_conf_destroy(conf);
      throw ConfigError(key_path + ": " + err);
    }
  };
  set("bootstrap.servers", options_.brokers, "kafka.brokers");
  set("client.id", options_.client_id, "kafka.client_id");
  set("message.timeout.ms", std::to_string(options_.delivery_timeout.count()), "kafka.delivery_timeout_ms");
  set("enable.idempotence", "true", "kafka.properties.enable.idempotence");
  set("acks", "all", "kafka.properties.acks");
  // Any gap a failed batch could leave in a partition stops the producer instead (we
  // rebuild it and re-send the unmarked rows): order per aggregate over completeness of a run.
  set("enable.gapless.guarantee", "true", "kafka.properties.enable.gapless.guarantee");
  // Java's partitioner (Kafka Connect, Debezium, Java producers): keys land where theirs do.
  set("partitioner", "murmur2_random", "kafka.properties.partitioner");
  // Nagle plus delayed ACK costs ~40 ms per batch in a wait-for-acks loop (DESIGN.md).
  set("socket.nagle.disable", "true", "kafka.properties.socket.nagle.disable");
  set("linger.ms", "1", "kafka.properties.linger.ms");
  set("batch.num.messages", "10000", "kafka.properties.batch.num.messages");
  set("queue.buffering.max.messages", "200000", "kafka.properties.queue.buffering.max.messages");
  for (const auto& [k, v] : options_.properties) set(k, v, "kafka.properties." + k);
  rd_kafka_conf_set_opaque(conf, this);
  rd_kafka_conf_set_dr_msg_cb(conf, &KafkaPublisher::on_delivery);
  rd_kafka_conf_set_log_cb(conf, [](const rd_kafka_t* rk, int level, const char* fac, const char* buf) {
    auto* self = static_cast<KafkaPublisher*>(rd_kafka_opaque(rk));
    auto lvl = level_of_syslog(level);
    // librdkafka warns that enable.gapless.guarantee is experimental; the relay sets it on
    // purpose (see create()), so that warning is not news to an operator.
    if (std::string_view(fac) == "CONFWARN" && std::string_view(buf).find("enable.gapless.guarantee") != std::string_view::npos)
      lvl = LogLevel::debug;
    if (self->logger_.enabled(lvl)) self->logger_.log(lvl, "librdkafka", {{"facility", fac}, {"message", buf}});
  });
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  if (rk == nullptr) throw ConfigError(std::string("kafka: cannot create producer: ") + err);
  handle_ = std::make_unique<Handle>();
  handle_->rk = rk;
}

void KafkaPublisher::on_delivery(rd_kafka_s* /*rk*/, const rd_kafka_message_s* msg, void* opaque) {
  // Record and return: no logic beyond classification, no locks (runs inside rd_kafka_poll
  // on the relay thread).
  auto* self = static_cast<KafkaPublisher*>(opaque);
  auto index = reinterpret_cast<std::uintptr_t>(msg->_private);
  auto result = classify(msg->err);
  // A message that timed out in flight may or may not be persisted: for us it is not
  // delivered, and it is re-sent (a possible duplicate, never a loss).
  if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR &&
      rd_kafka_message_status(msg) != RD_KAFKA_MSG_STATUS_PERSISTED)
    result = {DeliveryStatus::transient_failure, "delivery status not PERSISTED"};
  if (msg->err == RD_KAFKA_RESP_ERR__FATAL) self->rebuild_ = true;
  if (msg->err == RD_KAFKA_RESP_ERR__MSG_TIMED_OUT) self->timed_out_topics_.emplace_back(rd_kafka_topic_name(msg->rkt));
  if (index < self->results_.size()) self->results_[index] = std::move(result);
  --self->outstanding_;
}

std::optional<DeliveryResult> KafkaPublisher::refused_topic(const std::string& topic) {
  if (usable_topics_.contains(topic) || abandoned_) return std::nullopt;
  const auto now = std::chrono::steady_clock::now();
  if (auto it = checked_topics_.find(topic); it != checked_topics_.end() && now - it->second.at < kTopicVerdictReuse)
    return it->second.refusal;
  std::optional<DeliveryResult> verdict;
  bool usable = false;
  if (rd_kafka_topic_t* rkt = rd_kafka_topic_new(handle_->rk, topic.c_str(), nullptr)) {
    const rd_kafka_metadata_t* md = nullptr;
    const auto wait = std::min(options_.delivery_timeout, kTopicCheckTimeout);
    if (rd_kafka_metadata(handle_->rk, 0, rkt, &md, static_cast<int>(wait.count())) == RD_KAFKA_RESP_ERR_NO_ERROR) {
      if (md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR && md->topics[0].partition_cnt > 0)
        usable = true;
      else if (md->topic_cnt == 1 && refusing_topic(md->topics[0].err))
        verdict = DeliveryResult{DeliveryStatus::permanent_failure,
                                 classify(md->topics[0].err).detail + " (topic " + topic + ", in the broker's metadata)"};
      rd_kafka_metadata_destroy(md);
    }
    rd_kafka_topic_destroy(rkt);
  }
  if (usable) {
    usable_topics_.insert(topic);
    return std::nullopt;
  }
  checked_topics_[topic] = {verdict, std::chrono::steady_clock::now()};
  return verdict;
}

std::optional<DeliveryResult> KafkaPublisher::send(const Message& m) {
  if (abandoned_) return DeliveryResult{DeliveryStatus::transient_failure, "abandoned at shutdown"};
  if (!handle_) create();
  if (auto refused = refused_topic(m.topic)) return refused;
  rd_kafka_headers_t* headers = rd_kafka_headers_new(m.headers.size());
  for (const auto& [k, v] : m.headers)
    rd_kafka_header_add(headers, k.data(), static_cast<ssize_t>(k.size()), v ? v->data() : nullptr,
                        v ? static_cast<ssize_t>(v->size()) : 0);
  // A null value is a tombstone; an empty one is an empty value. The key is never NULL (an
  // empty aggregate id is an empty key), so every aggregate hashes to one partition.
  static const char kNoBytes = 0;
  void* value = m.value ? const_cast<char*>(m.value->data()) : nullptr;
  const std::size_t value_size = m.value ? m.value->size() : 0;
  const void* key = m.key.empty() ? &kNoBytes : m.key.data();
  const auto index = results_.size();
  for (;;) {
    rd_kafka_resp_err_t err = rd_kafka_producev(
        handle_->rk, RD_KAFKA_V_TOPIC(m.topic.c_str()), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_KEY(key, m.key.size()), RD_KAFKA_V_VALUE(value, value_size),
        RD_KAFKA_V_HEADERS(headers), RD_KAFKA_V_OPAQUE(reinterpret_cast<void*>(index)), RD_KAFKA_V_END);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) break;  // librdkafka owns the headers now
    if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL && !abandoned_) {
      rd_kafka_poll(handle_->rk, 10);  // serve delivery reports to make room
      continue;
    }
    rd_kafka_headers_destroy(headers);
    if (err == RD_KAFKA_RESP_ERR__FATAL) rebuild_ = true;
    return classify(err);
  }
  results_.emplace_back();
  ++outstanding_;
  return std::nullopt;
}

std::vector<DeliveryResult> KafkaPublisher::await() {
  // Bounded: librdkafka reports every message by message.timeout.ms at the latest, and a
  // purge reports the rest at once (as transient failures).
  wait_outstanding();
  auto out = std::move(results_);
  results_.clear();
  for (const auto& topic : timed_out_topics_) usable_topics_.erase(topic);
  timed_out_topics_.clear();
  if (rebuild_ || (handle_ && rd_kafka_fatal_error(handle_->rk, nullptr, 0) != RD_KAFKA_RESP_ERR_NO_ERROR)) {
    char reason[512] = "";
    rd_kafka_fatal_error(handle_->rk, reason, sizeof reason);
    logger_.log(LogLevel::warn, "kafka_producer_rebuilt", {{"reason", reason}});
    // Whatever was not acknowledged before the fatal error is re-sent by the new producer.
    for (auto& r : out)
      if (!r.delivered()) r.status = DeliveryStatus::transient_failure;
    handle_.reset();
    rebuild_ = false;
    create();
    ++restarts_;
  }
  return out;
}

void KafkaPublisher::wait_outstanding() {
  while (outstanding_ > 0) {
    if (abandoned_) rd_kafka_purge(handle_->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_poll(handle_->rk, abandoned_ ? 10 : 100);
  }
}

void KafkaPublisher::close() {
  if (!handle_) return;
  wait_outstanding();
  if (abandoned_) rd_kafka_purge(handle_->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
  rd_kafka_flush(handle_->rk, abandoned_ ? 0 : 1000);
  handle_.reset();
}

}  // namespace outbox::relay::kafka
