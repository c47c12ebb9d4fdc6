#include "relay/kafka/kafka_inbox_source.hpp"

#include <librdkafka/rdkafka.h>

#include <string_view>

#include "relay/core/errors.hpp"

namespace outbox::relay::kafka {
namespace {

// The incremental (cooperative) calls return an error object to free.
void free_error(rd_kafka_error_t* e) {
  if (e != nullptr) rd_kafka_error_destroy(e);
}

}  // namespace

struct KafkaInboxCallbacks {
  static void rebalance(rd_kafka_t* rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t* parts, void* opaque) {
    auto* self = static_cast<KafkaInboxSource*>(opaque);
    // Known from the configuration, not asked here: rd_kafka_rebalance_protocol() is a request
    // to the group thread that returns NULL once the group is terminating (a revoke served in
    // rd_kafka_consumer_close during a rebalance); read as a string, that NULL was a SIGSEGV.
    const bool cooperative = self->cooperative_;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
      if (cooperative)
        free_error(rd_kafka_incremental_assign(rk, parts));
      else
        rd_kafka_assign(rk, parts);
      self->assigned_ = self->assigned_ + static_cast<std::size_t>(parts->cnt);
      self->logger_.log(LogLevel::info, "inbox_partitions_assigned", {{"partitions", std::to_string(parts->cnt)}});
      return;
    }
    // Revoked (or the group lost): the core settles what it holds of these partitions and
    // stores their offsets; then what is stored is committed before they go. Nothing whose
    // batch did not commit in the inbox was stored, so nothing unsettled is committed.
    std::vector<TopicPartition> gone;
    for (int i = 0; i < parts->cnt; ++i) gone.push_back({parts->elems[i].topic, parts->elems[i].partition});
    if (self->listener_) self->listener_(gone);
    // Not while closing: librdkafka 2.0.2 aborts (rd_kafka_cgrp_terminated: assert
    // !rd_kafka_assignment_in_progress) when a synchronous commit runs in the revoke of
    // rd_kafka_consumer_close, which commits what is stored itself (auto-commit is on); the
    // sidecar committed synchronously just before closing anyway.
    if (!rd_kafka_assignment_lost(rk) && !self->closed_) {
      const auto e = rd_kafka_commit(rk, nullptr, 0);
      if (e != RD_KAFKA_RESP_ERR_NO_ERROR && e != RD_KAFKA_RESP_ERR__NO_OFFSET) {
        ++self->commit_failures_;
        self->logger_.log(LogLevel::warn, "inbox_commit_failed", {{"when", "revoke"}, {"error", rd_kafka_err2str(e)}});
      }
    }
    if (cooperative)
      free_error(rd_kafka_incremental_unassign(rk, parts));
    else
      rd_kafka_assign(rk, nullptr);
    self->assigned_ = cooperative && self->assigned_ >= static_cast<std::size_t>(parts->cnt)
                          ? self->assigned_ - static_cast<std::size_t>(parts->cnt)
                          : 0;
  }

  static void committed(rd_kafka_t*, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t*, void* opaque) {
    auto* self = static_cast<KafkaInboxSource*>(opaque);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR || err == RD_KAFKA_RESP_ERR__NO_OFFSET) return;
    ++self->commit_failures_;
    self->logger_.log(LogLevel::warn, "inbox_commit_failed", {{"when", "interval"}, {"error", rd_kafka_err2str(err)}});
  }
};

namespace {

void set(rd_kafka_conf_t* conf, const std::string& name, const std::string& value) {
  char err[512];
  if (rd_kafka_conf_set(conf, name.c_str(), value.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK) {
    rd_kafka_conf_destroy(conf);
    throw ConfigError("inbox consumer property " + name + ": " + err);
  }
}

// partition.assignment.strategy names cooperative-sticky (alone: librdkafka refuses a list
// that mixes the incremental protocol with the eager one).
bool lists_cooperative(rd_kafka_conf_t* conf) {
  char value[512];
  size_t size = sizeof value;
  if (rd_kafka_conf_get(conf, "partition.assignment.strategy", value, &size) != RD_KAFKA_CONF_OK) return false;
  std::string_view list(value);
  while (!list.empty()) {
    const auto comma = list.find(',');
    auto name = list.substr(0, comma);
    while (!name.empty() && name.front() == ' ') name.remove_prefix(1);
    while (!name.empty() && name.back() == ' ') name.remove_suffix(1);
    if (name == "cooperative-sticky") return true;
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return false;
}

}  // namespace

KafkaInboxSource::KafkaInboxSource(KafkaInboxOptions options, Logger& logger)
    : options_(std::move(options)), logger_(logger) {
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  set(conf, "bootstrap.servers", options_.brokers);
  set(conf, "client.id", options_.client_id);
  set(conf, "group.id", options_.group_id);
  set(conf, "socket.nagle.disable", "true");
  set(conf, "auto.offset.reset", "earliest");
  set(conf, "enable.partition.eof", "false");
  for (const auto& [k, v] : options_.properties) set(conf, k, v);
  // The sidecar's own, after the user's: offsets are stored by hand once their batch committed
  // in the inbox, and what is stored is committed every commit_interval.
  set(conf, "enable.auto.offset.store", "false");
  set(conf, "enable.auto.commit", "true");
  set(conf, "auto.commit.interval.ms", std::to_string(options_.commit_interval.count()));
  cooperative_ = lists_cooperative(conf);
  rd_kafka_conf_set_opaque(conf, this);
  rd_kafka_conf_set_rebalance_cb(conf, &KafkaInboxCallbacks::rebalance);
  rd_kafka_conf_set_offset_commit_cb(conf, &KafkaInboxCallbacks::committed);
  char err[512];
  rk_ = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
  if (rk_ == nullptr) throw ConfigError(std::string("inbox consumer: ") + err);
  rd_kafka_poll_set_consumer(rk_);
  auto* topics = rd_kafka_topic_partition_list_new(static_cast<int>(options_.topics.size()));
  for (const auto& t : options_.topics) rd_kafka_topic_partition_list_add(topics, t.c_str(), RD_KAFKA_PARTITION_UA);
  const auto e = rd_kafka_subscribe(rk_, topics);
  rd_kafka_topic_partition_list_destroy(topics);
  if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
    rd_kafka_destroy(rk_);
    rk_ = nullptr;
    throw ConfigError(std::string("inbox.topics: cannot subscribe (") + rd_kafka_err2str(e) + ")");
  }
}

KafkaInboxSource::~KafkaInboxSource() {
  close();
  if (rk_ != nullptr) rd_kafka_destroy(rk_);
}

void KafkaInboxSource::on_revoke(RevokeListener listener) { listener_ = std::move(listener); }

std::optional<InboxMessage> KafkaInboxSource::poll(std::chrono::milliseconds timeout) {
  rd_kafka_message_t* m = rd_kafka_consumer_poll(rk_, static_cast<int>(timeout.count()));
  if (m == nullptr) return std::nullopt;
  struct Release {
    rd_kafka_message_t* m;
    ~Release() { rd_kafka_message_destroy(m); }
  } release{m};
  if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    // Broker and group errors librdkafka recovers from by itself; logged, never fatal here.
    if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
      logger_.log(LogLevel::warn, "inbox_consumer_error",
                  {{"error", rd_kafka_message_errstr(m)}, {"code", rd_kafka_err2name(m->err)}});
    return std::nullopt;
  }
  InboxMessage out;
  out.topic = rd_kafka_topic_name(m->rkt);
  out.partition = m->partition;
  out.offset = m->offset;
  if (m->key != nullptr) out.key.emplace(static_cast<const char*>(m->key), m->key_len);
  if (m->payload != nullptr) out.value.emplace(static_cast<const char*>(m->payload), m->len);
  rd_kafka_headers_t* hdrs = nullptr;
  if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
    const char* name = nullptr;
    const void* value = nullptr;
    size_t size = 0;
    for (size_t i = 0; rd_kafka_header_get_all(hdrs, i, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR; ++i) {
      if (value != nullptr)
        out.headers.emplace_back(name, std::string(static_cast<const char*>(value), size));
      else
        out.headers.emplace_back(name, std::nullopt);
    }
  }
  return out;
}

void KafkaInboxSource::store_offsets(const std::vector<std::pair<TopicPartition, std::int64_t>>& next_offsets) {
  if (next_offsets.empty()) return;
  auto* list = rd_kafka_topic_partition_list_new(static_cast<int>(next_offsets.size()));
  for (const auto& [tp, next] : next_offsets)
    rd_kafka_topic_partition_list_add(list, tp.topic.c_str(), tp.partition)->offset = next;
  // A partition revoked meanwhile is refused (its next owner starts from the last commit).
  (void)rd_kafka_offsets_store(rk_, list);
  rd_kafka_topic_partition_list_destroy(list);
}

bool KafkaInboxSource::commit() {
  const auto e = rd_kafka_commit(rk_, nullptr, 0);
  if (e == RD_KAFKA_RESP_ERR_NO_ERROR || e == RD_KAFKA_RESP_ERR__NO_OFFSET) return true;
  ++commit_failures_;
  logger_.log(LogLevel::warn, "inbox_commit_failed", {{"when", "now"}, {"error", rd_kafka_err2str(e)}});
  return false;
}

bool KafkaInboxSource::ping() {
  const struct rd_kafka_metadata* md = nullptr;
  const auto e = rd_kafka_metadata(rk_, 0, nullptr, &md, 2'000);
  if (md != nullptr) rd_kafka_metadata_destroy(md);
  return e == RD_KAFKA_RESP_ERR_NO_ERROR;
}

void KafkaInboxSource::close() {
  if (closed_ || rk_ == nullptr) return;
  closed_ = true;
  rd_kafka_consumer_close(rk_);
}

}  // namespace outbox::relay::kafka
