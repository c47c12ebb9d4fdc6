#include "relay/app/commands.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <nlohmann/json.hpp>

#include <atomic>
#include <csignal>
#include <fstream>
#include <iostream>
#include <condition_variable>
#include <mutex>
#include <stop_token>
#include <thread>

#include <unistd.h>

#include "relay/config/config_loader.hpp"
#include "relay/app/metrics_page.hpp"
#include "relay/app/polling_wakeup.hpp"
#include "relay/app/systemd_notify.hpp"
#include "relay/http/http_server.hpp"
#include "relay/pg/pg_retention.hpp"
#include "relay/pg/pg_status.hpp"
#include "relay/core/errors.hpp"
#include "relay/core/message_builder.hpp"
#include "relay/core/relay.hpp"
#include "relay/core/runner.hpp"
#include "relay/kafka/kafka_publisher.hpp"
#include "relay/pg/pg_conninfo.hpp"
#include "relay/pg/pg_lease_store.hpp"
#include "relay/pg/pg_migrator.hpp"
#include "relay/pg/pg_outbox_store.hpp"
#include "relay/pg/pg_wakeup.hpp"

#ifndef OUTBOX_RELAY_VERSION
#define OUTBOX_RELAY_VERSION "0.0.0"
#endif

namespace outbox::relay::app {
namespace {

using std::chrono::milliseconds;

MessageOptions message_options(const config::Config& c) {
  MessageOptions m;
  m.topic_template = c.kafka.topic_template;
  m.row_topic_pattern = c.kafka.row_topic_pattern;
  m.id_header = c.message.id_header;
  m.event_type_header = c.message.event_type_header;
  return m;
}

RelayOptions relay_options(const config::Config& c) {
  RelayOptions o;
  o.batch_size = static_cast<std::size_t>(c.relay.batch_size);
  o.max_attempts = c.relay.max_attempts;
  o.row_retry = {milliseconds(c.relay.retry_initial_ms), milliseconds(c.relay.retry_max_ms)};
  o.rescan_interval = milliseconds(c.relay.rescan_interval_ms);
  o.publisher_header = c.message.publisher_header;
  return o;
}

std::string read_password_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError("database.password_file: cannot read " + path);
  std::string line;
  std::getline(in, line);
  while (!line.empty() && (line.back() == '\r' || line.back() == '\n')) line.pop_back();
  return line;
}

// Retention passes every `every` until `halt`; a failed pass is logged and tried again at the
// next one, a misconfiguration (FatalError) is logged once and ends retention, not the relay.
void run_retention(pg::PgRetention retention, std::chrono::seconds every, std::stop_token halt,
                   std::atomic<std::uint64_t>& deleted_total, Logger& logger) {
  std::mutex m;
  std::condition_variable_any cv;
  for (bool failing = false; !halt.stop_requested();) {
    try {
      auto pass = retention.run_once();
      deleted_total += pass.published_deleted + pass.inbox_deleted;
      if (pass.published_deleted + pass.inbox_deleted > 0 || failing)
        logger.log(LogLevel::info, "retention_pass",
                   {{"published_deleted", std::to_string(pass.published_deleted)},
                    {"inbox_deleted", std::to_string(pass.inbox_deleted)}});
      failing = false;
    } catch (const TransientError& e) {
      if (!failing) logger.log(LogLevel::warn, "retention_failed", {{"error", pg::redact_conninfo(e.what())}});
      failing = true;
    } catch (const FatalError& e) {
      logger.log(LogLevel::error, "retention_disabled", {{"error", e.what()}});
      return;
    }
    std::unique_lock lock(m);
    cv.wait_for(lock, halt, every, [] { return false; });
  }
}

// Stop flag set from the Asio loop that owns signals and timers.
class Lifecycle {
 public:
  explicit Lifecycle(Logger& logger)
      : logger_(logger), signals_(io_, SIGINT, SIGTERM), timer_(io_), watchdog_timer_(io_) {}

  // Serves /healthz, /readyz and /metrics on the same loop. Throws ConfigError on a bad address.
  void serve_http(const std::string& listen, http::HttpHandler handler) {
    if (!listen.empty()) http_ = std::make_unique<http::HttpServer>(io_, listen, std::move(handler));
  }

  // `stall_limit`: how long one step may legitimately keep the relay thread busy (a broker
  // round trip up to the delivery timeout, a statement up to its timeout).
  void start(const RelayStats& stats, milliseconds report_every, milliseconds stall_limit) {
    signals_.async_wait([this](const boost::system::error_code& ec, int signo) {
      if (ec) return;
      logger_.log(LogLevel::info, "signal_received",
                  {{"signal", signo == SIGTERM ? "SIGTERM" : "SIGINT"}, {"action", "draining"}});
      stop_ = true;
      systemd_.notify("STOPPING=1");
      timer_.cancel();
    });
    schedule_report(stats, report_every);
    if (auto timeout = systemd_.watchdog())
      schedule_watchdog(stats, *timeout, std::max<std::chrono::microseconds>(*timeout, stall_limit));
    thread_ = std::thread([this] { io_.run(); });
  }

  const SystemdNotifier& systemd() const { return systemd_; }

  void shutdown() {
    io_.stop();
    if (thread_.joinable()) thread_.join();
  }

  ~Lifecycle() { shutdown(); }

  std::atomic<bool>& stop_flag() { return stop_; }

 private:
  void schedule_report(const RelayStats& stats, milliseconds every) {
    timer_.expires_after(every);
    timer_.async_wait([this, &stats, every](const boost::system::error_code& ec) {
      if (ec || stop_) return;
      logger_.log(LogLevel::info, "progress",
                  {{"published_total", std::to_string(stats.published_total.load())},
                   {"failed_transient_total", std::to_string(stats.failed_transient_total.load())},
                   {"failed_permanent_total", std::to_string(stats.failed_permanent_total.load())},
                   {"dead_lettered_total", std::to_string(stats.dead_lettered_total.load())},
                   {"batches_total", std::to_string(stats.batches_total.load())}});
      schedule_report(stats, every);
    });
  }

  // Pings systemd's watchdog at half its timeout, but only while the relay thread shows a
  // heartbeat younger than `stall_limit`: a hung relay thread stops the pings and systemd
  // restarts the service. Waiting for a database or broker is not a hang.
  void schedule_watchdog(const RelayStats& stats, std::chrono::microseconds timeout, std::chrono::microseconds stall_limit) {
    watchdog_timer_.expires_after(timeout / 2);
    watchdog_timer_.async_wait([this, &stats, timeout, stall_limit](const boost::system::error_code& ec) {
      if (ec) return;
      const auto beat = std::chrono::nanoseconds(stats.heartbeat_ns.load());
      if (std::chrono::steady_clock::now().time_since_epoch() - beat < stall_limit) systemd_.notify("WATCHDOG=1");
      else
        logger_.log(LogLevel::error, "watchdog_missed",
                    {{"note", "the relay thread has not made progress; systemd will restart the service"}});
      schedule_watchdog(stats, timeout, stall_limit);
    });
  }

  Logger& logger_;
  SystemdNotifier systemd_;
  boost::asio::io_context io_;
  boost::asio::signal_set signals_;
  boost::asio::steady_timer timer_;
  boost::asio::steady_timer watchdog_timer_;
  std::unique_ptr<http::HttpServer> http_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
};

}  // namespace

std::string effective_conninfo(const config::Config& c) {
  std::string url = c.database.url;
  if (!c.database.password_file.empty()) {
    auto params = pg::parse_conninfo(url, "database.url");
    params["password"] = read_password_file(c.database.password_file);
    url = pg::render_conninfo(params);
  }
  return pg::harden_conninfo(url, c.database.application_name, c.database.statement_timeout_ms);
}

void validate(const config::Config& c) {
  std::vector<std::string> errors;
  auto check = [&](auto&& fn) {
    try {
      fn();
    } catch (const ConfigError& e) {
      errors.emplace_back(e.what());
    }
  };
  if (c.kafka.brokers.empty())
    errors.emplace_back("kafka.brokers: required (set it in the config file, OUTBOX_RELAY_KAFKA_BROKERS or --brokers)");
  check([&] { MessageBuilder{message_options(c)}; });
  check([&] { kafka::check_properties(c.kafka.properties); });
  check([&] { (void)pg::quoted_identifier(c.database.schema, "database.schema"); });
  check([&] { (void)effective_conninfo(c); });
  if (!errors.empty()) {
    std::string msg = "invalid configuration:";
    for (const auto& e : errors) msg += "\n  " + e;
    throw ConfigError(msg);
  }
}

namespace {

int run_relay_until_stopped(const config::Config& c, Logger& logger) {
  validate(c);
  const std::string conninfo = effective_conninfo(c);
  logger.log(LogLevel::info, "starting",
             {{"version", OUTBOX_RELAY_VERSION},
              {"database", pg::redact_conninfo(c.database.url)},
              {"brokers", c.kafka.brokers},
              {"batch_size", std::to_string(c.relay.batch_size)},
              {"wakeup", c.relay.wakeup},
              {"mark_mode", c.relay.mark_mode}});

  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) std::snprintf(host, sizeof host, "unknown-host");
  const std::string instance =
      c.ownership.instance_id.empty() ? pg::make_instance_id(host, static_cast<int>(::getpid())) : c.ownership.instance_id;
  logger.log(LogLevel::info, "instance", {{"instance", instance}});

  RelayStats stats;
  LeaseStats lease_stats;
  Lifecycle lifecycle(logger);
  pg::PgStoreOptions store_options{conninfo, c.database.schema,
                                   c.relay.mark_mode == "delete" ? pg::MarkMode::remove : pg::MarkMode::update};
  store_options.owner = instance;
  // A payload the producer would refuse (message.max.bytes) is a bad row before it is read.
  if (auto it = c.kafka.properties.find("message.max.bytes"); it != c.kafka.properties.end())
    store_options.max_payload_bytes = std::stoul(it->second);
  pg::PgOutboxStore store(store_options);
  kafka::KafkaPublisher publisher({c.kafka.brokers, milliseconds(c.kafka.delivery_timeout_ms), c.kafka.client_id,
                                   c.kafka.properties},
                                  logger);
  std::atomic<std::uint64_t> retention_deleted{0};

  // The status query, retention and the lease keeper run on sessions of their own, named
  // apart, each with a statement timeout of its own.
  auto side_session = [&](const std::string& suffix, int statement_timeout_ms) {
    auto params = pg::parse_conninfo(conninfo, "database.url");
    params["application_name"] = c.database.application_name + "-" + suffix;
    params["options"] = "-c statement_timeout=" + std::to_string(statement_timeout_ms);
    return pg::render_conninfo(params);
  };

  // Lanes: this instance publishes the aggregates of the lanes it leases (a fair share of
  // the live instances'); the keeper renews the leases on a thread and session of its own.
  Ownership ownership(instance, pg::kLaneCount);
  const milliseconds lease_ttl(c.ownership.lease_ttl_ms);
  pg::PgLeaseStore lease_store(
      {side_session("lease", c.ownership.lease_ttl_ms / 3), c.database.schema, instance, host, static_cast<int>(::getpid())});
  LeaseOptions lease_options;
  lease_options.ttl = lease_ttl;
  lease_options.renew_interval = milliseconds(c.ownership.renew_interval_ms);
  lease_options.safety_margin = lease_ttl / 10;
  SteadyClock clock;
  LeaseKeeper keeper(ownership, lease_store, clock, logger, lease_options, lease_stats);

  // Ready while steps reach the database and the broker and the leases are renewed; an
  // instance holding no lane (all taken by others) is ready as the healthy spare it is, so
  // rolling updates and disruption budgets count it. Who publishes: outbox_relay_lanes_held.
  const auto ready_window = std::max(milliseconds(10'000), 3 * milliseconds(c.relay.poll_interval_ms));
  auto ready = [&stats, &keeper, ready_window, lease_ttl] {
    auto age = std::chrono::steady_clock::now().time_since_epoch() - std::chrono::nanoseconds(stats.last_ok_steady_ns.load());
    return stats.last_step_ok.load() && age < ready_window && keeper.renewed_within(lease_ttl);
  };
  pg::PgStatus status_reader(side_session("status", 5'000), c.database.schema);
  lifecycle.serve_http(c.http.listen, [&](const std::string& path) -> http::HttpResponse {
    if (path == "/healthz") return {200, "text/plain; charset=utf-8", "ok\n"};
    if (path == "/readyz")
      return ready() ? http::HttpResponse{200, "text/plain; charset=utf-8", "ready\n"}
                     : http::HttpResponse{503, "text/plain; charset=utf-8",
                                          "not ready: the last step did not reach the database and the broker\n"};
    if (path == "/metrics") {
      MetricsInputs in{stats, std::nullopt};
      try {
        in.status = status_reader.read();
      } catch (const std::exception&) {
      }
      in.ready = ready();
      in.leases = &lease_stats;
      in.lanes_held = ownership.held_count(clock.now());
      if (auto last = lease_stats.last_renewal_ns.load())
        in.lease_renewal_age_s = std::chrono::duration<double>(clock.now().time_since_epoch() - std::chrono::nanoseconds(last)).count();
      in.marks_unmatched = store.marks_unmatched();
      in.database_reconnects = store.reconnects();
      in.producer_restarts = publisher.restarts();
      in.retention_deleted = retention_deleted;
      return {200, "text/plain; version=0.0.4; charset=utf-8", render_metrics(in)};
    }
    return {404, "text/plain; charset=utf-8", "not found: try /healthz, /readyz or /metrics\n"};
  });
  lifecycle.start(stats, std::chrono::seconds(10),
                  milliseconds(c.kafka.delivery_timeout_ms) + milliseconds(c.database.statement_timeout_ms) +
                      std::chrono::seconds(10));
  auto& stop = lifecycle.stop_flag();
  lifecycle.systemd().notify("READY=1\nSTATUS=waiting for the database");

  // Wait for the database, then check the table's shape once: a wrong schema is fatal.
  BackoffPolicy connect_backoff{milliseconds(200), milliseconds(10'000)};
  auto beat = [&] { stats.heartbeat_ns = std::chrono::nanoseconds(clock.now().time_since_epoch()).count(); };
  for (int attempt = 1; !stop; ++attempt) {
    try {
      beat();
      store.verify_schema();
      break;
    } catch (const TransientError& e) {
      auto wait = connect_backoff.delay(attempt);
      logger.log(LogLevel::warn, "waiting_to_start",
                 {{"error", pg::redact_conninfo(e.what())}, {"retry_in_ms", std::to_string(wait.count())}});
      for (auto until = clock.now() + wait; !stop && clock.now() < until;) {
        beat();
        std::this_thread::sleep_for(milliseconds(50));
      }
    }
  }
  if (stop) return 0;
  logger.log(LogLevel::info, "database_ready", {{"schema", c.database.schema}});
  lifecycle.systemd().notify("STATUS=publishing");

  std::unique_ptr<Wakeup> wakeup;
  if (c.relay.wakeup == "notify")
    wakeup = std::make_unique<pg::PgWakeup>(conninfo, c.database.schema);
  else
    wakeup = std::make_unique<app::PollingWakeup>();

  // Retention on a thread of its own: its batches never delay a publish.
  pg::RetentionOptions retention_options;
  retention_options.conninfo = side_session("retention", 60'000);
  retention_options.schema = c.database.schema;
  if (c.relay.mark_mode == "update") retention_options.published_window = std::chrono::hours(c.retention.published_hours);
  retention_options.inbox_window = std::chrono::hours(c.retention.inbox_hours);
  retention_options.batch_size = static_cast<std::size_t>(c.retention.batch_size);
  std::jthread retention;
  if (retention_options.published_window.count() > 0 || retention_options.inbox_window.count() > 0)
    retention = std::jthread([&, every = std::chrono::seconds(c.retention.interval_s)](std::stop_token halt) {
      run_retention(pg::PgRetention(retention_options), every, halt, retention_deleted, logger);
    });

  // A keeper that meets a database without lanes (not migrated to 0006) stops the relay.
  std::optional<std::string> keeper_fatal;
  std::jthread keeper_thread([&](std::stop_token halt) {
    try {
      keeper.run(halt);
    } catch (const FatalError& e) {
      keeper_fatal = e.what();
      ownership.clear();
      stop = true;
    }
  });

  Relay relay(store, publisher, clock, MessageBuilder(message_options(c)), relay_options(c), stats, &ownership);
  RunnerOptions ro;
  ro.poll_interval = milliseconds(c.relay.poll_interval_ms);
  ro.linger = milliseconds(c.relay.linger_ms);
  ro.shutdown_timeout = milliseconds(c.relay.shutdown_timeout_ms);
  Runner runner(relay, *wakeup, clock, logger, ro);
  auto exit = runner.run(stop);
  // Everything acknowledged is marked: hand the lanes back at once (the others are told by
  // NOTIFY) instead of letting them expire.
  keeper_thread.request_stop();
  keeper_thread.join();
  if (keeper_fatal) throw SchemaError(*keeper_fatal);
  keeper.leave();
  try {
    wakeup->set_listening(false);
  } catch (const TransientError&) {
  }
  publisher.close();
  lifecycle.shutdown();
  logger.log(LogLevel::info, "stopped",
             {{"published_total", std::to_string(stats.published_total.load())},
              {"clean", exit == RunnerExit::stopped ? "true" : "false"}});
  return exit == RunnerExit::stopped ? 0 : kExitFailure;
}

}  // namespace

int run_relay(const config::Config& c, Logger& logger) {
  try {
    return run_relay_until_stopped(c, logger);
  } catch (const SchemaError& e) {
    logger.log(LogLevel::error, "fatal",
               {{"error", e.what()}, {"exit_code", std::to_string(kExitSchemaUnavailable)}});
    return kExitSchemaUnavailable;
  }
}

int run_migrate(const config::Config& c, Logger& logger) {
  (void)pg::quoted_identifier(c.database.schema, "database.schema");
  pg::PgMigrator migrator(effective_conninfo(c), c.database.schema);
  auto result = migrator.migrate();
  int applied = 0;
  for (const auto& m : result) {
    logger.log(LogLevel::info, m.applied_now ? "migration_applied" : "migration_present",
               {{"version", std::to_string(m.version)}, {"name", m.name}});
    applied += m.applied_now ? 1 : 0;
  }
  logger.log(LogLevel::info, "migrate_done",
             {{"applied", std::to_string(applied)}, {"total", std::to_string(result.size())}});
  return 0;
}

int run_check_config(const config::Config& c, bool json) {
  validate(c);
  auto entries = config::effective_config(c);
  if (json) {
    nlohmann::ordered_json j = nlohmann::ordered_json::object();
    for (const auto& [k, v] : entries) j[k] = v;
    std::cout << j.dump(2) << "\n";
  } else {
    std::size_t width = 0;
    for (const auto& [k, v] : entries) width = std::max(width, k.size());
    for (const auto& [k, v] : entries) std::cout << k << std::string(width - k.size() + 2, ' ') << v << "\n";
    std::cout << "configuration is valid\n";
  }
  return 0;
}

int run_config_reference() {
  std::cout << "| key | environment variable | default | description |\n|---|---|---|---|\n";
  for (const auto& d : config::settings_reference())
    std::cout << "| `" << d.key << "` | `" << d.env << "` | " << (d.default_value.empty() ? "" : "`" + d.default_value + "`")
              << " | " << d.description << " |\n";
  return 0;
}

}  // namespace outbox::relay::app
