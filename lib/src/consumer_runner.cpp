#include "outbox/consumer_runner.hpp"

#include "outbox/common/backoff.hpp"
#include "outbox/common/sqlstate.hpp"
#include "outbox/common/text_checks.hpp"

#include <librdkafka/rdkafka.h>
#include <pqxx/connection>
#include <pqxx/except>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <deque>
#include <map>
#include <optional>
#include <random>
#include <thread>

#include "dead_letter_producer.hpp"
#include "outbox/inbox.hpp"

namespace outbox {
namespace {

using std::chrono::milliseconds;

std::uint64_t fnv1a(const std::string& s, std::uint64_t h) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}

// Failures a retry can fix: the database went away, the commit outcome is unknown, or the
// transaction lost a serialization or deadlock race. Never counted as attempts.
bool transient(const std::exception& e) {
  if (dynamic_cast<const pqxx::broken_connection*>(&e) || dynamic_cast<const pqxx::in_doubt_error*>(&e) ||
      dynamic_cast<const pqxx::transaction_rollback*>(&e))
    return true;
  if (auto* sql = dynamic_cast<const pqxx::sql_error*>(&e))
    return common::classify_sqlstate(sql->sqlstate()) == common::SqlStateKind::retry;
  return false;
}

}  // namespace

std::string uuid_from_position(const std::string& topic, std::int32_t partition, std::int64_t offset) {
  const std::string name = topic + "/" + std::to_string(partition) + "/" + std::to_string(offset);
  std::uint64_t hi = fnv1a(name, 14695981039346656037ULL);
  std::uint64_t lo = fnv1a(name, hi ^ 0x9e3779b97f4a7c15ULL);
  hi = (hi & 0xffffffffffff0fffULL) | 0x0000000000008000ULL;  // version 8 (custom)
  lo = (lo & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;  // RFC 4122 variant
  char buf[37];
  std::snprintf(buf, sizeof buf, "%08llx-%04llx-%04llx-%04llx-%012llx", (unsigned long long)(hi >> 32),
                (unsigned long long)((hi >> 16) & 0xffff), (unsigned long long)(hi & 0xffff),
                (unsigned long long)(lo >> 48), (unsigned long long)(lo & 0xffffffffffffULL));
  return buf;
}

bool looks_like_uuid(const std::string& s) { return common::looks_like_uuid(s); }

struct ConsumerRunner::Impl {
  ConsumerOptions options;
  Handler handler;
  Inbox inbox;
  ConsumerStats stats;
  rd_kafka_t* consumer = nullptr;
  std::unique_ptr<detail::DeadLetterProducer> dlq;  // created on the first dead letter
  std::unique_ptr<pqxx::connection> db;
  bool closing = false;  // rd_kafka_consumer_close or destroy under way: no commit in the revoke

  Impl(ConsumerOptions o, Handler h)
      : options(std::move(o)),
        handler(std::move(h)),
        inbox(options.consumer_name.empty() ? options.group_id : options.consumer_name, options.schema) {}

  ~Impl() {
    closing = true;
    if (consumer != nullptr) rd_kafka_destroy(consumer);
  }

  void log(const std::string& line) const {
    if (options.log) options.log(line);
  }

  // Revoke: commit what was settled (offsets are stored only after a database commit), then
  // let the partitions go. Nothing whose transaction did not commit is ever committed.
  static void on_rebalance(rd_kafka_t* rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t* parts, void* opaque) {
    auto* self = static_cast<Impl*>(opaque);
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
      rd_kafka_assign(rk, parts);
    } else {
      // Synchronous; NO_OFFSET when nothing is stored. Not while closing: librdkafka 2.0.2
      // aborts on a synchronous commit inside the revoke of rd_kafka_consumer_close, which
      // commits what is stored itself (auto-commit is on).
      if (!self->closing) rd_kafka_commit(rk, nullptr, 0);
      self->drop_partitions(parts);
      rd_kafka_assign(rk, nullptr);
      self->log("partitions revoked; settled offsets committed");
    }
  }

  void create_consumer() {
    closing = false;
    rd_kafka_conf_t* conf = detail::new_kafka_conf(options.brokers);
    detail::set_kafka_property(conf, "group.id", options.group_id);
    detail::set_kafka_property(conf, "enable.auto.commit", "true");
    detail::set_kafka_property(conf, "enable.auto.offset.store", "false");  // stored by hand, after the commit
    detail::set_kafka_property(conf, "auto.commit.interval.ms", std::to_string(options.commit_interval.count()));
    detail::set_kafka_property(conf, "auto.offset.reset", "earliest");
    detail::set_kafka_property(conf, "enable.partition.eof", "false");
    for (const auto& [k, v] : options.kafka_properties) detail::set_kafka_property(conf, k, v);
    rd_kafka_conf_set_opaque(conf, this);
    rd_kafka_conf_set_rebalance_cb(conf, &Impl::on_rebalance);
    char err[512];
    consumer = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    if (consumer == nullptr) throw std::invalid_argument(std::string("kafka consumer: ") + err);
    rd_kafka_poll_set_consumer(consumer);
    auto* topics = rd_kafka_topic_partition_list_new(static_cast<int>(options.topics.size()));
    for (const auto& t : options.topics) rd_kafka_topic_partition_list_add(topics, t.c_str(), RD_KAFKA_PARTITION_UA);
    auto e = rd_kafka_subscribe(consumer, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) throw std::invalid_argument(std::string("subscribe: ") + rd_kafka_err2str(e));
  }

  pqxx::connection& connection() {
    if (!db || !db->is_open()) db = std::make_unique<pqxx::connection>(options.database_url);
    return *db;
  }

  // Waits `d` in slices so a stop request is noticed; false when stopping.
  static bool wait(milliseconds d, const std::atomic<bool>& stop) {
    for (auto until = std::chrono::steady_clock::now() + d; std::chrono::steady_clock::now() < until;) {
      if (stop) return false;
      std::this_thread::sleep_for(std::min(milliseconds(50), d));
    }
    return !stop;
  }

  // Jittered, so the instances of a consumer group that failed together do not retry together.
  milliseconds backoff(int n) {
    return common::BackoffPolicy{options.retry_initial, options.retry_max, 0.5}.delay(n, jitter_draw(jitter_rng));
  }
  std::mt19937_64 jitter_rng{std::random_device{}()};
  std::uniform_real_distribution<double> jitter_draw{0.0, 1.0};

  // Publishes the message to the dead-letter topic with the error and its origin, and waits
  // for the broker. False when stopping before that succeeded (then nothing is committed).
  bool dead_letter(const ConsumedEvent& ev, const std::string& reason, const std::atomic<bool>& stop) {
    if (!dlq) dlq = std::make_unique<detail::DeadLetterProducer>(options.brokers, options.kafka_properties);
    const std::string topic = options.dead_letter_topic.empty() ? ev.topic + ".dlq" : options.dead_letter_topic;
    const std::vector<std::pair<std::string, std::string>> origin{
        {"dlq.error", reason},          {"dlq.topic", ev.topic},       {"dlq.partition", std::to_string(ev.partition)},
        {"dlq.offset", std::to_string(ev.offset)}, {"dlq.event_id", ev.event_id}, {"dlq.consumer", inbox.consumer()}};
    for (int attempt = 1;; ++attempt) {
      const auto e = dlq->publish(topic, ev, origin);
      if (e == RD_KAFKA_RESP_ERR_NO_ERROR) {
        ++stats.dead_lettered;
        log("dead-lettered " + ev.topic + "/" + std::to_string(ev.partition) + "@" + std::to_string(ev.offset) +
            " to " + topic + ": " + reason);
        return true;
      }
      log("dead-letter publish failed (" + std::string(rd_kafka_err2str(e)) + "); retrying");
      if (!wait(backoff(attempt), stop)) return false;
    }
  }

  ConsumedEvent to_event(const rd_kafka_message_t* m) const {
    ConsumedEvent ev;
    ev.topic = rd_kafka_topic_name(m->rkt);
    ev.partition = m->partition;
    ev.offset = m->offset;
    if (m->key != nullptr) ev.key.assign(static_cast<const char*>(m->key), m->key_len);
    if (m->payload != nullptr) ev.value.assign(static_cast<const char*>(m->payload), m->len);
    ev.null_value = m->payload == nullptr;
    rd_kafka_headers_t* hdrs = nullptr;
    if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
      const char* name = nullptr;
      const void* value = nullptr;
      size_t size = 0;
      for (size_t i = 0; rd_kafka_header_get_all(hdrs, i, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR; ++i)
        ev.headers.emplace_back(name, value != nullptr ? std::string(static_cast<const char*>(value), size) : "");
    }
    for (const auto& [k, v] : ev.headers)
      if (k == options.event_id_header && ev.event_id_headers++ == 0) ev.event_id = v;
    return ev;
  }

  // Why a message cannot go through the inbox at all (dead-lettered at once), or nullopt.
  // Fills in the event id from the position when the policy says so.
  std::optional<std::string> id_problem(ConsumedEvent& ev) const {
    // Two ids: whichever one were taken, the inbox could drop a real event as a duplicate of
    // another message sharing it (a row header that shadowed the relay's, say).
    if (ev.event_id_headers > 1)
      return std::to_string(ev.event_id_headers) + " " + options.event_id_header + " headers: the event id is ambiguous";
    if (ev.event_id.empty()) {
      if (options.missing_id == MissingIdPolicy::dead_letter) return "no " + options.event_id_header + " header";
      ev.event_id = uuid_from_position(ev.topic, ev.partition, ev.offset);
    }
    if (!looks_like_uuid(ev.event_id)) return "event id \"" + ev.event_id + "\" is not a UUID";
    return std::nullopt;
  }

  struct Queued {
    ConsumedEvent ev;
    int failures = 0;  // counted handler failures so far
  };
  std::deque<Queued> queue;  // polled, not yet settled, in poll order

  // Stores, per partition, the offset after the last settled message of the first `settled`.
  void store_offsets(std::size_t settled) {
    if (settled == 0) return;
    std::map<std::pair<std::string, std::int32_t>, std::int64_t> next;
    for (std::size_t i = 0; i < settled; ++i) {
      auto& n = next[{queue[i].ev.topic, queue[i].ev.partition}];
      n = std::max(n, queue[i].ev.offset + 1);
    }
    auto* list = rd_kafka_topic_partition_list_new(static_cast<int>(next.size()));
    for (const auto& [tp, o] : next) rd_kafka_topic_partition_list_add(list, tp.first.c_str(), tp.second)->offset = o;
    // A partition revoked meanwhile is refused: its next owner starts from the last commit.
    (void)rd_kafka_offsets_store(consumer, list);
    rd_kafka_topic_partition_list_destroy(list);
  }

  // One transaction over the queue's messages in order, each in a savepoint: processed or
  // duplicate, or marked for the dead-letter topic; it stops before the first message whose
  // handler failed and may be retried. After the commit the marked ones are dead-lettered and
  // the offsets of the settled prefix stored. Returns false when a stop came first.
  bool run_batch(const std::atomic<bool>& stop) {
    int transients = 0;
    for (;;) {
      if (stop) return false;
      std::vector<std::pair<std::size_t, std::string>> letters;
      std::size_t processed = 0, duplicates = 0, settled = 0;
      bool failed = false;
      try {
        pqxx::work tx(connection());
        // The batch's events are claimed in one statement; each handler then runs in a
        // savepoint of its own, opened in the round trip that releases the one before it. A
        // claim whose effect does not happen (its handler failed, or its turn did not come
        // before the batch stopped) is taken back before the commit.
        std::vector<std::optional<std::string>> problems(queue.size());
        std::vector<std::string> ids;
        ids.reserve(queue.size());
        for (std::size_t i = 0; i < queue.size(); ++i) {
          problems[i] = id_problem(queue[i].ev);
          if (!problems[i]) ids.push_back(queue[i].ev.event_id);
        }
        auto claimed = inbox.claim_all(tx, ids);
        bool in_savepoint = false;
        const auto fail_back = [&](const std::string& id) {
          tx.exec("ROLLBACK TO SAVEPOINT outbox_event");
          inbox.unclaim(tx, {id});
        };
        for (; settled < queue.size(); ++settled) {
          auto& q = queue[settled];
          if (problems[settled]) {
            letters.emplace_back(settled, *problems[settled]);
            continue;
          }
          const auto id = Inbox::canonical_event_id(q.ev.event_id);
          if (claimed.erase(id) == 0) {
            ++duplicates;
            continue;
          }
          tx.exec(in_savepoint ? "RELEASE SAVEPOINT outbox_event; SAVEPOINT outbox_event" : "SAVEPOINT outbox_event");
          in_savepoint = true;
          try {
            handler(tx, q.ev);
            ++processed;
          } catch (const PermanentError& e) {
            fail_back(id);
            ++stats.handler_failures;
            letters.emplace_back(settled, e.what());
          } catch (const std::exception& e) {
            if (transient(e)) throw;  // the whole batch again
            fail_back(id);
            ++stats.handler_failures;
            if (++q.failures >= options.max_attempts) {
              letters.emplace_back(settled, "failed " + std::to_string(q.failures) + " times, last: " + e.what());
              continue;
            }
            log(std::string("handler failed, retrying: ") + e.what());
            failed = true;
            break;  // what precedes commits; this one is tried again before anything after it
          }
        }
        if (!claimed.empty()) inbox.unclaim(tx, std::vector<std::string>(claimed.begin(), claimed.end()));
        tx.commit();
      } catch (const std::exception& e) {
        if (!transient(e)) throw;
        ++stats.transient_retries;
        if (dynamic_cast<const pqxx::broken_connection*>(&e) || dynamic_cast<const pqxx::in_doubt_error*>(&e)) db.reset();
        log(std::string("transient failure, retrying the batch: ") + e.what());
        if (!wait(backoff(++transients), stop)) return false;
        continue;
      }
      stats.processed += processed;
      stats.duplicates += duplicates;
      // The letters, in order; a stop before one is acknowledged leaves it and what follows it
      // unsettled (redelivered).
      for (const auto& [index, reason] : letters) {
        if (!dead_letter(queue[index].ev, reason, stop)) {
          store_offsets(index);
          queue.erase(queue.begin(), queue.begin() + static_cast<std::ptrdiff_t>(index));
          return false;
        }
      }
      store_offsets(settled);
      queue.erase(queue.begin(), queue.begin() + static_cast<std::ptrdiff_t>(settled));
      if (failed && !queue.empty() && !wait(backoff(queue.front().failures), stop)) return false;
      return true;
    }
  }

  // Messages of revoked partitions leave the queue: their next owner gets them again.
  void drop_partitions(const rd_kafka_topic_partition_list_t* parts) {
    std::erase_if(queue, [&](const Queued& q) {
      for (int i = 0; i < parts->cnt; ++i)
        if (q.ev.topic == parts->elems[i].topic && q.ev.partition == parts->elems[i].partition) return true;
      return false;
    });
  }

  void run(const std::atomic<bool>& stop) {
    if (consumer == nullptr) create_consumer();
    while (!stop) {
      // Fill the batch: up to batch_size messages, waiting at most batch_linger once started.
      const auto started = std::chrono::steady_clock::now();
      while (!stop && queue.size() < options.batch_size) {
        auto timeout = milliseconds(100);
        if (!queue.empty()) {
          const auto left = started + options.batch_linger - std::chrono::steady_clock::now();
          if (left <= std::chrono::steady_clock::duration::zero()) break;
          timeout = std::max(milliseconds(1), std::chrono::duration_cast<milliseconds>(left));
        }
        rd_kafka_message_t* m = rd_kafka_consumer_poll(consumer, static_cast<int>(timeout.count()));
        if (m == nullptr) {
          if (!queue.empty()) break;
          continue;
        }
        if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
          log(std::string("consumer: ") + rd_kafka_message_errstr(m));
          rd_kafka_message_destroy(m);
          continue;
        }
        queue.push_back({to_event(m), 0});
        rd_kafka_message_destroy(m);
      }
      if (queue.empty()) continue;
      (void)run_batch(stop);
    }
    rd_kafka_commit(consumer, nullptr, 0);
    closing = true;
    rd_kafka_consumer_close(consumer);
    rd_kafka_destroy(consumer);
    consumer = nullptr;
  }
};

ConsumerRunner::ConsumerRunner(ConsumerOptions options, Handler handler) {
  if (options.brokers.empty()) throw std::invalid_argument("consumer: brokers must be set");
  if (options.group_id.empty()) throw std::invalid_argument("consumer: group_id must be set");
  if (options.topics.empty()) throw std::invalid_argument("consumer: at least one topic is needed");
  if (options.max_attempts < 1) throw std::invalid_argument("consumer: max_attempts must be at least 1");
  if (options.batch_size < 1) throw std::invalid_argument("consumer: batch_size must be at least 1");
  if (!handler) throw std::invalid_argument("consumer: a handler is needed");
  impl_ = std::make_unique<Impl>(std::move(options), std::move(handler));
}

ConsumerRunner::~ConsumerRunner() = default;

void ConsumerRunner::run(const std::atomic<bool>& stop) { impl_->run(stop); }

const ConsumerStats& ConsumerRunner::stats() const { return impl_->stats; }

}  // namespace outbox
