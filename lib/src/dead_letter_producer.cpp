#include "dead_letter_producer.hpp"

#include <stdexcept>

namespace outbox::detail {

rd_kafka_conf_t* new_kafka_conf(const std::string& brokers) {
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  set_kafka_property(conf, "bootstrap.servers", brokers);
  set_kafka_property(conf, "socket.nagle.disable", "true");
  return conf;
}

void set_kafka_property(rd_kafka_conf_t* conf, const std::string& name, const std::string& value) {
  char err[512];
  if (rd_kafka_conf_set(conf, name.c_str(), value.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK) {
    rd_kafka_conf_destroy(conf);
    throw std::invalid_argument("kafka property " + name + ": " + err);
  }
}

DeadLetterProducer::DeadLetterProducer(const std::string& brokers,
                                       const std::map<std::string, std::string>& consumer_properties) {
  rd_kafka_conf_t* conf = new_kafka_conf(brokers);
  set_kafka_property(conf, "enable.idempotence", "true");
  set_kafka_property(conf, "acks", "all");
  for (const auto& [k, v] : consumer_properties)
    if (k.starts_with("security.") || k.starts_with("sasl.") || k.starts_with("ssl.")) set_kafka_property(conf, k, v);
  rd_kafka_conf_set_opaque(conf, this);
  rd_kafka_conf_set_dr_msg_cb(conf, &DeadLetterProducer::delivered);
  char err[512];
  rk_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  if (rk_ == nullptr) throw std::runtime_error(std::string("dead-letter producer: ") + err);
}

DeadLetterProducer::~DeadLetterProducer() {
  rd_kafka_flush(rk_, 5000);
  rd_kafka_destroy(rk_);
}

void DeadLetterProducer::delivered(rd_kafka_t*, const rd_kafka_message_t* m, void* opaque) {
  auto* self = static_cast<DeadLetterProducer*>(opaque);
  if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) self->error_ = m->err;
  --self->outstanding_;
}

rd_kafka_resp_err_t DeadLetterProducer::publish(const std::string& topic, const ConsumedEvent& ev,
                                                const std::vector<std::pair<std::string, std::string>>& extra) {
  rd_kafka_headers_t* h = rd_kafka_headers_new(ev.headers.size() + extra.size());
  auto add = [h](const std::string& k, const std::string& v) {
    rd_kafka_header_add(h, k.data(), static_cast<ssize_t>(k.size()), v.data(), static_cast<ssize_t>(v.size()));
  };
  for (const auto& [k, v] : ev.headers) add(k, v);
  for (const auto& [k, v] : extra) add(k, v);
  error_ = RD_KAFKA_RESP_ERR_NO_ERROR;
  const auto e = rd_kafka_producev(rk_, RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                   RD_KAFKA_V_KEY(ev.key.data(), ev.key.size()),
                                   RD_KAFKA_V_VALUE(ev.null_value ? nullptr : const_cast<char*>(ev.value.data()),
                                                    ev.value.size()),
                                   RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END);
  if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
    rd_kafka_headers_destroy(h);
    return e;
  }
  ++outstanding_;
  while (outstanding_ > 0) rd_kafka_poll(rk_, 100);
  return error_;
}

}  // namespace outbox::detail
