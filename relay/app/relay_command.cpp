#include "relay/app/relay_command.hpp"

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <random>
#include <stop_token>
#include <thread>

#include <unistd.h>

#include "relay/app/exit_codes.hpp"
#include "relay/app/instance_identity.hpp"
#include "relay/app/metrics_page.hpp"
#include "relay/app/polling_wakeup.hpp"
#include "relay/app/settings.hpp"
#include "relay/core/errors.hpp"
#include "relay/core/runner.hpp"
#include "relay/kafka/kafka_publisher.hpp"
#include "relay/pg/pg_conninfo.hpp"
#include "relay/pg/pg_lease_store.hpp"
#include "relay/pg/pg_outbox_store.hpp"
#include "relay/pg/pg_retention.hpp"
#include "relay/pg/pg_status.hpp"
#include "relay/pg/pg_wakeup.hpp"
#include "relay/runtime/event_loop.hpp"
#include "relay/runtime/refreshed_snapshot.hpp"

#ifndef OUTBOX_RELAY_VERSION
#define OUTBOX_RELAY_VERSION "0.0.0"
#endif

namespace outbox::relay::app {
namespace {

using std::chrono::milliseconds;

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

// What the HTTP handler reads once the database answered and the instance id is claimed.
struct Running {
  pg::PgOutboxStore& store;
  Ownership& ownership;
  LeaseKeeper& keeper;
};

int run_relay_until_stopped(const config::Config& c, Logger& logger) {
  validate(c);
  const auto db = connection_settings(c);
  const std::string conninfo = db.conninfo();
  logger.log(LogLevel::info, "starting",
             {{"version", OUTBOX_RELAY_VERSION},
              {"database", db.redacted()},
              {"brokers", c.kafka.brokers},
              {"batch_size", std::to_string(c.relay.batch_size)},
              {"wakeup", config::name_of(c.relay.wakeup)},
              {"mark_mode", config::name_of(c.relay.mark_mode)}});
  const auto where = surroundings();
  const auto candidates = instance_id_candidates(c.ownership.instance_id, where);

  // The status query, retention and the lease keeper run on sessions of their own, named
  // apart, each with a statement timeout of its own.
  RelayStats stats;
  LeaseStats lease_stats;
  SteadyClock clock;
  std::atomic<std::uint64_t> retention_deleted{0};
  kafka::KafkaPublisher publisher({c.kafka.brokers, milliseconds(c.kafka.delivery_timeout_ms), c.kafka.client_id,
                                   c.kafka.properties},
                                  logger);
  // The gauges read from the database come from a snapshot refreshed on a thread of its own:
  // a scrape never waits on the database, nor does a probe queued behind it.
  auto status_reader = std::make_shared<pg::PgStatus>(db.conninfo("status", 5'000), c.database.schema);
  runtime::RefreshedSnapshot<pg::OutboxStatus> status([status_reader] { return status_reader->read(); },
                                                      std::chrono::seconds(5));
  std::atomic<Running*> running{nullptr};

  // Ready while steps reach the database and the broker and the leases are renewed; an
  // instance holding no lane (all taken by others) is ready as the healthy spare it is, so
  // rolling updates and disruption budgets count it. Who publishes: outbox_relay_lanes_held.
  const milliseconds lease_ttl(c.ownership.lease_ttl_ms);
  const auto ready_window = std::max(milliseconds(10'000), 3 * milliseconds(c.relay.poll_interval_ms));
  auto ready = [&stats, &running, ready_window, lease_ttl] {
    auto* r = running.load();
    auto age = std::chrono::steady_clock::now().time_since_epoch() - std::chrono::nanoseconds(stats.last_ok_steady_ns.load());
    return r != nullptr && stats.last_step_ok.load() && age < ready_window && r->keeper.renewed_within(lease_ttl);
  };
  runtime::EventLoop loop(logger);
  loop.serve_http(c.http.listen, [&](const std::string& path) -> http::HttpResponse {
    if (path == "/healthz") return {200, "text/plain; charset=utf-8", "ok\n"};
    if (path == "/readyz")
      return ready() ? http::HttpResponse{200, "text/plain; charset=utf-8", "ready\n"}
                     : http::HttpResponse{503, "text/plain; charset=utf-8",
                                          "not ready: the last step did not reach the database and the broker\n"};
    if (path == "/metrics") {
      MetricsInputs in{.stats = stats};
      auto snap = status.latest();
      in.status = std::move(snap.value);
      in.status_age_s = snap.age_s;
      in.status_read_ok = snap.last_read_ok;
      in.ready = ready();
      in.leases = &lease_stats;
      if (auto* r = running.load()) {
        in.lanes_held = r->ownership.held_count(clock.now());
        in.marks_unmatched = r->store.marks_unmatched();
        in.database_reconnects = r->store.reconnects();
      }
      if (auto last = lease_stats.last_renewal_ns.load())
        in.lease_renewal_age_s = std::chrono::duration<double>(clock.now().time_since_epoch() - std::chrono::nanoseconds(last)).count();
      in.producer_restarts = publisher.restarts();
      in.retention_deleted = retention_deleted;
      in.http_refused = loop.http_refused();
      return {200, "text/plain; version=0.0.4; charset=utf-8", render_metrics(in)};
    }
    return {404, "text/plain; charset=utf-8", "not found: try /healthz, /readyz or /metrics\n"};
  }, 64);
  loop.start(stats, std::chrono::seconds(10),
             milliseconds(c.kafka.delivery_timeout_ms) + milliseconds(c.database.statement_timeout_ms) + std::chrono::seconds(10),
             milliseconds(c.relay.shutdown_timeout_ms), [&publisher] { publisher.abandon(); });
  auto& stop = loop.stop_flag();
  loop.systemd().notify("READY=1\nSTATUS=waiting for the database");

  // Wait for the database, check the table's shape once (a wrong schema is fatal), and claim
  // an instance id: the lease keeper's session holds its lock for the life of the process.
  pg::PgStoreOptions store_options{conninfo, c.database.schema,
                                   c.relay.mark_mode == config::MarkMode::remove ? pg::MarkMode::remove : pg::MarkMode::update};
  // A payload the producer would refuse (message.max.bytes) is a bad row before it is read.
  if (auto it = c.kafka.properties.find("message.max.bytes"); it != c.kafka.properties.end())
    store_options.max_payload_bytes = std::stoul(it->second);
  pg::PgLeaseStore lease_store(
      {db.conninfo("lease", c.ownership.lease_ttl_ms / 3), c.database.schema, "", where.hostname, static_cast<int>(::getpid())});
  std::string instance;
  BackoffPolicy connect_backoff{milliseconds(200), milliseconds(10'000), 0.5};
  std::mt19937_64 jitter(std::random_device{}());
  auto beat = [&] { stats.heartbeat_ns = std::chrono::nanoseconds(clock.now().time_since_epoch()).count(); };
  for (int attempt = 1; !stop; ++attempt) {
    try {
      beat();
      pg::PgOutboxStore(store_options).verify_schema();
      instance = lease_store.claim(candidates, milliseconds(1'000));
      break;
    } catch (const TransientError& e) {
      auto wait = connect_backoff.delay(attempt, std::uniform_real_distribution<double>(0, 1)(jitter));
      logger.log(LogLevel::warn, "waiting_to_start",
                 {{"error", pg::redact_conninfo(e.what())}, {"retry_in_ms", std::to_string(wait.count())}});
      for (auto until = clock.now() + wait; !stop && clock.now() < until;) {
        beat();
        std::this_thread::sleep_for(milliseconds(50));
      }
    }
  }
  if (stop) return 0;
  logger.log(LogLevel::info, "database_ready", {{"schema", c.database.schema}, {"instance", instance}});
  loop.systemd().notify("STATUS=publishing");

  store_options.owner = instance;
  pg::PgOutboxStore store(store_options);
  // Lanes: this instance publishes the aggregates of the lanes it leases (a fair share of
  // the live instances'); the keeper renews the leases on a thread of its own.
  Ownership ownership(instance, pg::kLaneCount);
  LeaseKeeper keeper(ownership, lease_store, clock, logger, lease_options(c), lease_stats);
  Running parts{store, ownership, keeper};
  running = &parts;
  // The HTTP handler reads `parts`: the loop stops before they go, on every way out.
  struct LoopStopsFirst {
    runtime::EventLoop& loop;
    std::atomic<Running*>& running;
    ~LoopStopsFirst() {
      loop.shutdown();
      running = nullptr;
    }
  } loop_stops_first{loop, running};

  std::unique_ptr<Wakeup> wakeup;
  if (c.relay.wakeup == config::Wakeup::notify)
    wakeup = std::make_unique<pg::PgWakeup>(conninfo, c.database.schema);
  else
    wakeup = std::make_unique<app::PollingWakeup>();

  // Retention on a thread of its own: its batches never delay a publish.
  pg::RetentionOptions retention_options;
  retention_options.conninfo = db.conninfo("retention", 60'000);
  retention_options.schema = c.database.schema;
  if (c.relay.mark_mode == config::MarkMode::update) retention_options.published_window = std::chrono::hours(c.retention.published_hours);
  retention_options.inbox_window = std::chrono::hours(c.retention.inbox_hours);
  retention_options.batch_size = static_cast<std::size_t>(c.retention.batch_size);
  std::jthread retention;
  if (retention_options.published_window.count() > 0 || retention_options.inbox_window.count() > 0)
    retention = std::jthread([&, every = std::chrono::seconds(c.retention.interval_s)](std::stop_token halt) {
      run_retention(pg::PgRetention(retention_options), every, halt, retention_deleted, logger);
    });

  // A keeper that meets a database without lanes (not migrated to 0006) stops the relay.
  std::exception_ptr keeper_fatal;
  std::jthread keeper_thread([&](std::stop_token halt) {
    try {
      keeper.run(halt);
    } catch (const std::exception&) {
      keeper_fatal = std::current_exception();
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
  if (keeper_fatal) std::rethrow_exception(keeper_fatal);
  keeper.leave();
  try {
    wakeup->set_listening(false);
  } catch (const TransientError&) {
  }
  publisher.close();
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
  } catch (const AccessError& e) {
    logger.log(LogLevel::error, "fatal",
               {{"error", pg::redact_conninfo(e.what())},
                {"role", connection_settings(c).role()},
                {"exit_code", std::to_string(kExitAccessDenied)}});
    return kExitAccessDenied;
  }
}

}  // namespace outbox::relay::app
