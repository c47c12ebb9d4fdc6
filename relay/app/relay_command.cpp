#include "relay/app/relay_command.hpp"

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <random>
#include <stop_token>
#include <thread>

#include <unistd.h>

#include "relay/app/exit_codes.hpp"
#include "relay/app/metrics_page.hpp"
#include "relay/app/wait_for_database.hpp"
#include "relay/app/polling_wakeup.hpp"
#include "relay/app/settings.hpp"
#include "relay/core/errors.hpp"
#include "relay/core/readiness.hpp"
#include "relay/core/runner.hpp"
#include "relay/kafka/kafka_publisher.hpp"
#include "relay/nats/nats_publisher.hpp"
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

// What the HTTP handler reads once the database answered and the instance id is claimed.
struct Running {
  pg::PgOutboxStore& store;
  Ownership& ownership;
  LeaseKeeper& keeper;
};

}  // namespace

int run_relay(const config::Config& c, Logger& logger) {
  std::string role;
  try {
    auto s = daemon_settings(c);  // a ConfigError goes to main: exit 78
    role = s.role;
    logger.log(LogLevel::info, "starting",
               {{"version", OUTBOX_RELAY_VERSION},
                {"database", s.database_shown},
                {"brokers", s.summary.brokers},
                {"batch_size", s.summary.batch_size},
                {"wakeup", s.summary.wakeup},
                {"mark_mode", s.summary.mark_mode}});

    RelayStats stats;
    LeaseStats lease_stats;
    SteadyClock clock;
    std::atomic<std::uint64_t> retention_deleted{0};
    // The broker (sink.type).
    std::unique_ptr<kafka::KafkaPublisher> kafka_publisher;
    std::unique_ptr<nats::NatsPublisher> nats_publisher;
    if (s.sink == config::SinkType::kafka)
      kafka_publisher = std::make_unique<kafka::KafkaPublisher>(s.kafka, logger);
    else
      nats_publisher = std::make_unique<nats::NatsPublisher>(s.nats, logger);
    Publisher& publisher = kafka_publisher ? static_cast<Publisher&>(*kafka_publisher) : *nats_publisher;
    // The gauges read from the database come from a snapshot refreshed on a thread of its own:
    // a scrape never waits on the database, nor does a probe queued behind it.
    auto status_reader = std::make_shared<pg::PgStatus>(s.status_conninfo, s.schema);
    runtime::RefreshedSnapshot<pg::OutboxStatus> status([status_reader] { return status_reader->read(); },
                                                        std::chrono::seconds(5));
    std::atomic<Running*> running{nullptr};

    // Who publishes: outbox_relay_lanes_held; a spare holding no lane is ready too.
    auto ready = [&stats, &running, &clock, window = s.ready_window, ttl = s.lease.ttl] {
      auto* r = running.load();
      return r != nullptr && instance_ready(stats, r->keeper, clock.now(), window, ttl);
    };
    runtime::EventLoop loop(logger);
    if (s.http) loop.serve_http(*s.http, [&](const std::string& path) -> http::HttpResponse {
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
        if (kafka_publisher) in.producer_restarts = kafka_publisher->restarts();
        in.retention_deleted = retention_deleted;
        in.http_refused = loop.http_refused();
        return {200, "text/plain; version=0.0.4; charset=utf-8", render_metrics(in)};
      }
      return {404, "text/plain; charset=utf-8", "not found: try /healthz, /readyz or /metrics\n"};
    }, 64);
    loop.start(stats, std::chrono::seconds(10), s.stall_limit, s.runner.shutdown_timeout, [&publisher] { publisher.abandon(); });
    auto& stop = loop.stop_flag();
    loop.systemd().notify("READY=1\nSTATUS=waiting for the database");

    // Wait for the database, check the table's shape once (a wrong schema is fatal), and claim
    // an instance id: the lease keeper's session holds its lock for the life of the process.
    pg::PgLeaseStore lease_store({s.lease_conninfo, s.schema, "", s.hostname, static_cast<int>(::getpid())});
    std::string instance;
    const bool started = wait_for_database(stop, clock, stats.heartbeat_ns, logger, [&] {
      pg::PgOutboxStore(s.store).verify_schema();
      instance = lease_store.claim(s.instance_candidates, milliseconds(1'000));
    });
    if (!started) return 0;
    logger.log(LogLevel::info, "database_ready", {{"schema", s.schema}, {"instance", instance}});
    loop.systemd().notify("STATUS=publishing");

    s.store.owner = instance;
    pg::PgOutboxStore store(s.store);
    // Lanes: this instance publishes the aggregates of the lanes it leases (a fair share of
    // the live instances'); the keeper renews the leases on a thread of its own.
    Ownership ownership(instance, pg::kLaneCount);
    LeaseKeeper keeper(ownership, lease_store, clock, logger, s.lease, lease_stats);
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
    if (!s.wakeup_conninfo.empty())
      wakeup = std::make_unique<pg::PgWakeup>(s.wakeup_conninfo, s.schema);
    else
      wakeup = std::make_unique<app::PollingWakeup>();

    // Retention on a thread of its own: its batches never delay a publish.
    std::jthread retention;
    if (s.retention)
      retention = std::jthread([&](std::stop_token halt) {
        pg::PgRetention(*s.retention).run_every(s.retention_every, halt, retention_deleted, logger);
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

    Relay relay(store, publisher, clock, std::move(*s.messages), s.relay, stats, &ownership);
    Runner runner(relay, *wakeup, clock, logger, s.runner);
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
    if (kafka_publisher) kafka_publisher->close();
    nats_publisher.reset();  // its destructor closes the connection
    logger.log(LogLevel::info, "stopped",
               {{"published_total", std::to_string(stats.published_total.load())},
                {"clean", exit == RunnerExit::stopped ? "true" : "false"}});
    return exit == RunnerExit::stopped ? 0 : kExitFailure;
  } catch (const SchemaError& e) {
    logger.log(LogLevel::error, "fatal",
               {{"error", e.what()}, {"exit_code", std::to_string(kExitSchemaUnavailable)}});
    return kExitSchemaUnavailable;
  } catch (const AccessError& e) {
    logger.log(LogLevel::error, "fatal",
               {{"error", pg::redact_conninfo(e.what())}, {"role", role},
                {"exit_code", std::to_string(kExitAccessDenied)}});
    return kExitAccessDenied;
  }
}

}  // namespace outbox::relay::app
