#include "relay/app/inbox_command.hpp"

#include <cstdlib>
#include <random>
#include <regex>
#include <stop_token>
#include <thread>

#include "relay/app/exit_codes.hpp"
#include "relay/app/metrics_page.hpp"
#include "relay/app/wait_for_database.hpp"
#include "relay/app/settings.hpp"
#include "relay/core/errors.hpp"
#include "relay/http/listen_address.hpp"
#include "relay/kafka/kafka_settings.hpp"
#include "relay/pg/pg_conninfo.hpp"
#include "relay/pg/sql_text.hpp"
#include "relay/runtime/event_loop.hpp"
#include "relay/runtime/refreshed_snapshot.hpp"

#ifndef OUTBOX_RELAY_VERSION
#define OUTBOX_RELAY_VERSION "0.0.0"
#endif

namespace outbox::relay::app {
namespace {

using std::chrono::milliseconds;

class SleepPause final : public Pause {
 public:
  void pause(milliseconds d) override { std::this_thread::sleep_for(d); }
};

std::vector<std::string> split_topics(const std::string& list) {
  std::vector<std::string> out;
  std::size_t start = 0;
  for (;;) {
    const auto comma = list.find(',', start);
    std::string one = list.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    one.erase(0, one.find_first_not_of(' '));
    one.erase(one.find_last_not_of(' ') + 1);
    out.push_back(one);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

}  // namespace

InboxDaemonSettings inbox_settings(const config::Config& c) {
  std::vector<std::string> errors;
  auto check = [&](auto&& f) {
    try {
      f();
    } catch (const ConfigError& e) {
      errors.emplace_back(e.what());
    }
  };
  InboxDaemonSettings s;
  check([&] { (void)pg::quoted_identifier(c.database.schema, "database.schema"); });
  check([&] {
    const auto db = connection_settings(c);
    s.database_shown = db.redacted();
    s.role = db.role();
    s.store.conninfo = db.conninfo("inbox");
    s.status.conninfo = db.conninfo("inbox-status", 60'000);
  });
  s.store.schema = s.status.schema = c.database.schema;
  s.store.inbox = s.status.inbox = c.inbox.name;
  if (c.inbox.name.empty()) errors.emplace_back("inbox.name: must not be empty");

  check([&] { kafka::check_brokers(c.kafka.brokers); });
  check([&] { kafka::check_consumer_properties(c.inbox.consumer_properties); });
  static const std::regex topic_name("^[A-Za-z0-9._-]{1,249}$");
  if (c.inbox.topics.empty()) {
    errors.emplace_back("inbox.topics: required for `inbox run` (comma-separated topic names, or ^regex)");
  } else {
    for (const auto& t : split_topics(c.inbox.topics)) {
      if (t.starts_with("^")) {
        check([&] {
          try {
            (void)std::regex(t.substr(1));
          } catch (const std::regex_error& e) {
            throw ConfigError("inbox.topics: \"" + t + "\" is not a regular expression (" + e.what() + ")");
          }
        });
      } else if (!std::regex_match(t, topic_name) || t == "." || t == "..") {
        errors.emplace_back("inbox.topics: \"" + t + "\" is not a topic name (letters, digits, . _ -, at most 249)");
      }
      s.source.topics.push_back(t);
    }
  }
  if (!c.inbox.dead_letter_topic.empty() &&
      (!std::regex_match(c.inbox.dead_letter_topic, topic_name) || c.inbox.dead_letter_topic.starts_with("__")))
    errors.emplace_back("inbox.dead_letter_topic: \"" + c.inbox.dead_letter_topic + "\" is not a topic name");
  for (const auto* key : {&c.inbox.event_id_header})
    if (key->empty()) errors.emplace_back("inbox.event_id_header: must not be empty");

  s.source.brokers = c.kafka.brokers;
  s.source.group_id = c.inbox.group_id.empty() ? "outbox-inbox-" + c.inbox.name : c.inbox.group_id;
  s.source.client_id = c.kafka.client_id + "-inbox";
  s.source.commit_interval = milliseconds(c.inbox.commit_interval_ms);
  s.source.properties = c.inbox.consumer_properties;
  s.dead_letters.brokers = c.kafka.brokers;
  s.dead_letters.topic = c.inbox.dead_letter_topic;
  s.dead_letters.inbox = c.inbox.name;
  s.dead_letters.client_id = c.kafka.client_id + "-inbox-dlq";
  for (const auto& [k, v] : c.inbox.consumer_properties)
    if (k.starts_with("security.") || k.starts_with("sasl.") || k.starts_with("ssl.")) s.dead_letters.properties[k] = v;

  s.core.inbox = c.inbox.name;
  s.core.id_header = c.inbox.event_id_header;
  s.core.event_type_header = c.inbox.event_type_header;
  s.core.missing_id = c.inbox.missing_id == config::MissingId::position ? MissingIdRule::position : MissingIdRule::dead_letter;
  s.core.batch_size = static_cast<std::size_t>(c.inbox.batch_size);
  s.core.linger = milliseconds(c.inbox.linger_ms);
  s.core.max_message_bytes = static_cast<std::size_t>(c.inbox.max_message_bytes);
  s.core.batch_max_bytes = std::max<std::size_t>(s.core.batch_max_bytes, s.core.max_message_bytes);
  s.core.shutdown_timeout = milliseconds(c.inbox.shutdown_timeout_ms);
  s.retention = std::chrono::hours(c.inbox.retention_hours);
  s.retention_every = std::chrono::seconds(c.retention.interval_s);
  s.retention_batch = c.retention.batch_size;
  check([&] {
    if (!c.http.listen.empty()) s.http = http::parse_listen(c.http.listen);
  });
  s.stall_limit = milliseconds(c.database.statement_timeout_ms) + milliseconds(30'000) + std::chrono::seconds(10);
  if (!errors.empty()) {
    std::string msg = "invalid configuration:";
    for (const auto& e : errors) msg += "\n  " + e;
    throw ConfigError(msg);
  }
  return s;
}

int run_inbox(const config::Config& c, Logger& logger) {
  try {
    auto s = inbox_settings(c);
    logger.log(LogLevel::info, "inbox_starting",
               {{"version", OUTBOX_RELAY_VERSION},
                {"database", s.database_shown},
                {"brokers", s.source.brokers},
                {"inbox", s.core.inbox},
                {"group", s.source.group_id},
                {"topics", c.inbox.topics},
                {"batch_size", std::to_string(s.core.batch_size)}});
    InboxStats stats;
    SteadyClock clock;
    std::atomic<std::uint64_t> retention_deleted{0};
    auto reader = std::make_shared<pg::PgInboxStore>(s.status);
    runtime::RefreshedSnapshot<pg::InboxBacklog> backlog([reader] { return reader->backlog(); }, std::chrono::seconds(5));
    std::atomic<kafka::KafkaInboxSource*> source_seen{nullptr};
    std::atomic<pg::PgInboxStore*> store_seen{nullptr};

    auto ready = [&stats, &clock, window = s.ready_window] {
      if (!stats.last_step_ok) return false;
      return clock.now().time_since_epoch() - std::chrono::nanoseconds(stats.last_ok_steady_ns.load()) < window;
    };
    runtime::EventLoop loop(logger);
    if (s.http) loop.serve_http(*s.http, [&](const std::string& path) -> http::HttpResponse {
      if (path == "/healthz") return {200, "text/plain; charset=utf-8", "ok\n"};
      if (path == "/readyz")
        return ready() ? http::HttpResponse{200, "text/plain; charset=utf-8", "ready\n"}
                       : http::HttpResponse{503, "text/plain; charset=utf-8",
                                            "not ready: the last step did not reach the database and the brokers\n"};
      if (path == "/metrics") {
        InboxMetricsInputs in{.stats = stats};
        in.ready = ready();
        auto snap = backlog.latest();
        in.backlog = snap.value;
        in.backlog_age_s = snap.age_s;
        if (auto* src = source_seen.load()) {
          in.partitions_assigned = src->assigned();
          in.commit_failures = src->commit_failures();
        }
        if (auto* st = store_seen.load()) in.database_reconnects = st->reconnects();
        in.retention_deleted = retention_deleted;
        in.http_refused = loop.http_refused();
        return {200, "text/plain; version=0.0.4; charset=utf-8", render_inbox_metrics(in)};
      }
      return {404, "text/plain; charset=utf-8", "not found: try /healthz, /readyz or /metrics\n"};
    }, 64);
    auto report = [&logger, &stats] {
      logger.log(LogLevel::info, "inbox_progress",
                 {{"received_total", std::to_string(stats.received_total.load())},
                  {"landed_total", std::to_string(stats.landed_total.load())},
                  {"duplicates_total", std::to_string(stats.duplicates_total.load())},
                  {"dead_lettered_total", std::to_string(stats.dead_lettered_total.load())},
                  {"batches_total", std::to_string(stats.batches_total.load())}});
    };
    // The core bounds its own shutdown (inbox.shutdown_timeout_ms). librdkafka's consumer close
    // can hang past it when SIGTERM meets a rebalance in progress (seen with the schedule
    // checker: close still running 20 s later); 5 s more and the process exits. Nothing
    // unsettled was ever committed, so the next owner's redeliveries are all it costs.
    loop.start(stats.heartbeat_ns, report, std::chrono::seconds(10), s.stall_limit,
               s.core.shutdown_timeout + std::chrono::seconds(5), [&logger] {
                 logger.log(LogLevel::warn, "inbox_shutdown_deadline",
                            {{"note", "leaving the consumer group took too long; exiting now: offsets not committed "
                                      "are redelivered to the next owner and absorbed by the inbox"}});
                 std::_Exit(0);
               });
    auto& stop = loop.stop_flag();
    loop.systemd().notify("READY=1\nSTATUS=waiting for the database");

    pg::PgInboxStore store(s.store);
    if (!wait_for_database(stop, clock, stats.heartbeat_ns, logger, [&] { store.verify_schema(); })) return 0;
    logger.log(LogLevel::info, "database_ready", {{"schema", s.store.schema}, {"inbox", s.core.inbox}});
    loop.systemd().notify("STATUS=consuming");

    kafka::KafkaInboxSource source(s.source, logger);
    kafka::KafkaDeadLetters dead_letters(s.dead_letters, logger);
    source_seen = &source;
    store_seen = &store;
    struct LoopStopsFirst {
      runtime::EventLoop& loop;
      std::atomic<kafka::KafkaInboxSource*>& source;
      std::atomic<pg::PgInboxStore*>& store;
      ~LoopStopsFirst() {
        loop.shutdown();
        source = nullptr;
        store = nullptr;
      }
    } loop_stops_first{loop, source_seen, store_seen};

    // Retention on a thread of its own, on the status session's database.
    std::jthread retention;
    if (s.retention.count() > 0)
      retention = std::jthread([&](std::stop_token halt) {
        pg::PgInboxStore purger(s.status);
        while (!halt.stop_requested()) {
          try {
            retention_deleted += purger.purge_processed(s.retention, s.retention_batch, 1000);
          } catch (const TransientError& e) {
            logger.log(LogLevel::warn, "inbox_retention_failed", {{"error", pg::redact_conninfo(e.what())}});
          } catch (const FatalError& e) {
            logger.log(LogLevel::error, "inbox_retention_stopped", {{"error", pg::redact_conninfo(e.what())}});
            return;
          }
          for (auto until = std::chrono::steady_clock::now() + s.retention_every;
               !halt.stop_requested() && std::chrono::steady_clock::now() < until;)
            std::this_thread::sleep_for(milliseconds(100));
        }
      });

    SleepPause pause;
    InboxLander lander(source, store, dead_letters, clock, pause, logger, s.core, stats);
    const bool committed = lander.run(stop);
    source.close();
    logger.log(LogLevel::info, "inbox_stopped",
               {{"landed_total", std::to_string(stats.landed_total.load())},
                {"duplicates_total", std::to_string(stats.duplicates_total.load())},
                {"offsets_committed", committed ? "true" : "false"}});
    return 0;
  } catch (const SchemaError& e) {
    logger.log(LogLevel::error, "fatal", {{"error", e.what()}, {"exit_code", std::to_string(kExitSchemaUnavailable)}});
    return kExitSchemaUnavailable;
  } catch (const AccessError& e) {
    logger.log(LogLevel::error, "fatal",
               {{"error", pg::redact_conninfo(e.what())}, {"exit_code", std::to_string(kExitAccessDenied)}});
    return kExitAccessDenied;
  }
}

}  // namespace outbox::relay::app
