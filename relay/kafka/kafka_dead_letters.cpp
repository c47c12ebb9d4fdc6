#include "relay/kafka/kafka_dead_letters.hpp"

#include <librdkafka/rdkafka.h>

#include <chrono>

#include "relay/core/errors.hpp"

namespace outbox::relay::kafka {

struct KafkaDeadLetterCallbacks {
  static void delivered(rd_kafka_t*, const rd_kafka_message_t* m, void* opaque) {
    auto* self = static_cast<KafkaDeadLetters*>(opaque);
    const auto id = reinterpret_cast<std::uintptr_t>(m->_private);
    if (auto it = self->outcomes_.find(id); it != self->outcomes_.end())
      it->second = m->err == RD_KAFKA_RESP_ERR_NO_ERROR ? 1 : 2;
    if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR)
      self->logger_.log(LogLevel::warn, "inbox_dead_letter_not_delivered",
                        {{"topic", rd_kafka_topic_name(m->rkt)}, {"error", rd_kafka_err2str(m->err)}});
  }
};

namespace {

void set(rd_kafka_conf_t* conf, const std::string& name, const std::string& value) {
  char err[512];
  if (rd_kafka_conf_set(conf, name.c_str(), value.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK) {
    rd_kafka_conf_destroy(conf);
    throw ConfigError("dead-letter producer property " + name + ": " + err);
  }
}

}  // namespace

KafkaDeadLetters::KafkaDeadLetters(KafkaDeadLetterOptions options, Logger& logger)
    : options_(std::move(options)), logger_(logger) {}

KafkaDeadLetters::~KafkaDeadLetters() {
  if (rk_ == nullptr) return;
  rd_kafka_flush(rk_, 5'000);
  rd_kafka_destroy(rk_);
}

void KafkaDeadLetters::create() {
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  set(conf, "bootstrap.servers", options_.brokers);
  set(conf, "client.id", options_.client_id);
  set(conf, "socket.nagle.disable", "true");
  for (const auto& [k, v] : options_.properties) set(conf, k, v);
  set(conf, "enable.idempotence", "true");
  set(conf, "acks", "all");
  set(conf, "message.timeout.ms", "30000");
  rd_kafka_conf_set_opaque(conf, this);
  rd_kafka_conf_set_dr_msg_cb(conf, &KafkaDeadLetterCallbacks::delivered);
  char err[512];
  rk_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  if (rk_ == nullptr) throw ConfigError(std::string("dead-letter producer: ") + err);
}

std::vector<bool> KafkaDeadLetters::send(const std::vector<DeadLetter>& letters,
                                         std::chrono::steady_clock::time_point deadline) {
  if (rk_ == nullptr) create();
  std::vector<std::uint64_t> ids(letters.size(), 0);
  for (std::size_t i = 0; i < letters.size(); ++i) {
    const auto& l = letters[i];
    const auto& m = l.message;
    rd_kafka_headers_t* h = rd_kafka_headers_new(m.headers.size() + 6);
    auto add = [h](const std::string& k, const std::string* v) {
      rd_kafka_header_add(h, k.data(), static_cast<ssize_t>(k.size()), v ? v->data() : nullptr,
                          v ? static_cast<ssize_t>(v->size()) : 0);
    };
    for (const auto& [k, v] : m.headers) add(k, v ? &*v : nullptr);
    const std::string partition = std::to_string(m.partition), offset = std::to_string(m.offset);
    add("dlq.error", &l.reason);
    add("dlq.topic", &m.topic);
    add("dlq.partition", &partition);
    add("dlq.offset", &offset);
    add("dlq.inbox", &options_.inbox);
    const std::string topic = options_.topic.empty() ? m.topic + ".dlq" : options_.topic;
    const auto id = next_id_++;
    outcomes_[id] = 0;
    // Plain values: the macros below cast their arguments without parentheses.
    const void* key = m.key ? m.key->data() : nullptr;
    const std::size_t key_size = m.key ? m.key->size() : 0;
    void* value = m.value ? const_cast<char*>(m.value->data()) : nullptr;
    const std::size_t value_size = m.value ? m.value->size() : 0;
    const auto e = rd_kafka_producev(
        rk_, RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_KEY(key, key_size), RD_KAFKA_V_VALUE(value, value_size),
        RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_OPAQUE(reinterpret_cast<void*>(static_cast<std::uintptr_t>(id))),
        RD_KAFKA_V_END);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
      rd_kafka_headers_destroy(h);
      outcomes_[id] = 2;
      logger_.log(LogLevel::warn, "inbox_dead_letter_not_sent", {{"topic", topic}, {"error", std::string(rd_kafka_err2str(e))}});
    }
    ids[i] = id;
  }
  auto waiting = [&] {
    for (auto id : ids)
      if (outcomes_[id] == 0) return true;
    return false;
  };
  while (waiting() && std::chrono::steady_clock::now() < deadline) rd_kafka_poll(rk_, 50);
  std::vector<bool> sent(letters.size(), false);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    sent[i] = outcomes_[ids[i]] == 1;
    outcomes_.erase(ids[i]);
  }
  return sent;
}

}  // namespace outbox::relay::kafka
