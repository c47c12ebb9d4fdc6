#include "tests/checker/schedule_runner.hpp"

#include <pqxx/pqxx>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <thread>

#include "relay/pg/pg_migrator.hpp"
#include "tests/checker/hostile_rows.hpp"
#include "tests/checker/producers.hpp"
#include "tests/checker/relay_fleet.hpp"
#include "tests/support/mock_kafka.hpp"

namespace outbox::test::checker {
namespace {

using namespace std::chrono_literals;

constexpr const char* kPublisherHeader = "relay";
constexpr int kPartitions = 4;
constexpr const char* kInbox = "checker";

}  // namespace

// The broker side of one run: a mock cluster and a reader per topic.
struct KafkaSide {
  explicit KafkaSide(int brokers) : kafka(brokers) {}
  ~KafkaSide() { readers.clear(); }  // readers before the cluster they read
  MockKafka kafka;
  std::vector<std::unique_ptr<TopicReader>> readers;
};

ScheduleRunner::~ScheduleRunner() {
  if (reaper_.joinable()) reaper_.join();
}

ScheduleRunner::ScheduleRunner(PgCluster& cluster, std::string relay_binary)
    : cluster_(cluster), relay_binary_(std::move(relay_binary)) {
  template_ = "checker_template_" + std::to_string(::getpid());
  cluster_.create_database(template_);
  relay::pg::PgMigrator(cluster_.conninfo(template_), "public").migrate();
}

RunResult ScheduleRunner::run(const Schedule& s) {
  RunResult result;
  const auto started = Clock::now();
  const std::string db = "sched_" + std::to_string(::getpid()) + "_" + std::to_string(++runs_);
  {
    pqxx::connection c(cluster_.conninfo());
    pqxx::nontransaction tx(c);
    tx.exec0("CREATE DATABASE " + tx.quote_name(db) + " TEMPLATE " + tx.quote_name(template_));
  }
  const std::string url = cluster_.conninfo(db);
  std::vector<Violation> violations;
  std::vector<Written> written;
  std::vector<Delivery> deliveries;
  std::map<std::string, RowState> rows;
  std::string relay_logs;
  {
    auto side = std::make_unique<KafkaSide>(s.brokers);
    MockKafka& kafka = side->kafka;
    const std::vector<std::string> topics{template_topic("order"), template_topic("item"), kOtherTopic};
    for (const auto& t : topics) kafka.create_topic(t, kPartitions, s.brokers);
    auto& readers = side->readers;
    for (const auto& t : topics) readers.push_back(std::make_unique<TopicReader>(kafka.bootstrap(), t));
    auto poll = [&](std::chrono::milliseconds budget) {
      for (auto& r : readers) r->poll_for(budget / static_cast<int>(readers.size()));
    };

    std::map<std::string, std::string> env{{"OUTBOX_RELAY_DATABASE_URL", url},
                                           {"OUTBOX_RELAY_KAFKA_BROKERS", kafka.bootstrap()},
                                           {"OUTBOX_RELAY_RELAY_BATCH_SIZE", std::to_string(s.batch_size)},
                                           {"OUTBOX_RELAY_RELAY_RESCAN_INTERVAL_MS", std::to_string(s.rescan_ms)},
                                           {"OUTBOX_RELAY_RELAY_WAKEUP", s.wakeup},
                                           {"OUTBOX_RELAY_RELAY_MARK_MODE", s.mark_mode},
                                           {"OUTBOX_RELAY_RELAY_POLL_INTERVAL_MS", "100"},
                                           {"OUTBOX_RELAY_RELAY_MAX_ATTEMPTS", "2"},
                                           {"OUTBOX_RELAY_RELAY_RETRY_INITIAL_MS", "50"},
                                           {"OUTBOX_RELAY_RELAY_RETRY_MAX_MS", "200"},
                                           {"OUTBOX_RELAY_RELAY_SHUTDOWN_TIMEOUT_MS", "5000"},
                                           {"OUTBOX_RELAY_OWNERSHIP_LEASE_TTL_MS", std::to_string(s.lease_ttl_ms)},
                                           {"OUTBOX_RELAY_OWNERSHIP_RENEW_INTERVAL_MS", std::to_string(s.renew_ms)},
                                           {"OUTBOX_RELAY_MESSAGE_PUBLISHER_HEADER", kPublisherHeader},
                                           {"OUTBOX_RELAY_KAFKA_DELIVERY_TIMEOUT_MS", "3000"},
                                           {"OUTBOX_RELAY_RETENTION_PUBLISHED_HOURS", "0"},
                                           {"OUTBOX_RELAY_HTTP_LISTEN", ""},
                                           {"OUTBOX_RELAY_LOG_FORMAT", "text"},
                                           {property_env("reconnect.backoff.max.ms"), "1000"}};
    if (s.one_in_flight) env[property_env("max.in.flight")] = "1";
    Relays relays(relay_binary_, env, "/tmp/outbox-checker-" + std::to_string(::getpid()) + "-" + db + "-");
    for (int i = 0; i < s.relays; ++i) relays.start();

    // The inbox stage: sidecars of one group landing the three topics in this database's
    // inbox_events, and readers of their dead-letter topics.
    std::string topic_list;
    for (const auto& t : topics) topic_list += (topic_list.empty() ? "" : ",") + t;
    std::map<std::string, std::string> sidecar_env{
        {"OUTBOX_RELAY_DATABASE_URL", url},
        {"OUTBOX_RELAY_KAFKA_BROKERS", kafka.bootstrap()},
        {"OUTBOX_RELAY_INBOX_TOPICS", topic_list},
        {"OUTBOX_RELAY_INBOX_NAME", kInbox},
        {"OUTBOX_RELAY_INBOX_BATCH_SIZE", std::to_string(s.sidecar_batch)},
        {"OUTBOX_RELAY_INBOX_COMMIT_INTERVAL_MS", std::to_string(s.sidecar_commit_ms)},
        {"OUTBOX_RELAY_INBOX_SHUTDOWN_TIMEOUT_MS", "5000"},
        {"OUTBOX_RELAY_INBOX_CONSUMER_PROPERTY_SESSION_TIMEOUT_MS", "3000"},
        {"OUTBOX_RELAY_INBOX_CONSUMER_PROPERTY_HEARTBEAT_INTERVAL_MS", "300"},
        {"OUTBOX_RELAY_HTTP_LISTEN", ""},
        {"OUTBOX_RELAY_LOG_FORMAT", "text"}};
    // A diagnosis knob: librdkafka debug contexts for the sidecars' consumers (cgrp, ...).
    if (const char* debug = std::getenv("OUTBOX_CHECK_SIDECAR_KAFKA_DEBUG"); debug != nullptr && *debug != '\0')
      sidecar_env["OUTBOX_RELAY_INBOX_CONSUMER_PROPERTY_DEBUG"] = debug;
    Relays sidecars(relay_binary_, sidecar_env, "/tmp/outbox-checker-" + std::to_string(::getpid()) + "-" + db + "-",
                    {"inbox", "run"}, "sidecar");
    for (int i = 0; i < s.sidecars; ++i) sidecars.start();
    std::vector<std::unique_ptr<TopicReader>> dlq_readers;
    if (s.sidecars > 0)
      for (const auto& t : topics) dlq_readers.push_back(std::make_unique<TopicReader>(kafka.bootstrap(), t + ".dlq"));
    std::mt19937 sidecar_rng(static_cast<std::uint32_t>(s.seed ^ 0x9e3779b9U));
    std::size_t next_sidecar_fault = 0;
    std::vector<Clock::time_point> sidecar_restarts;
    // A stall: the lock's transaction, when a sidecar is killed under it, when it ends.
    std::unique_ptr<pqxx::connection> stall_conn;
    std::unique_ptr<pqxx::work> stall_tx;
    std::optional<Clock::time_point> stall_kill_at, stall_end_at;
    // The sidecars' faults are timed from their first landed row, not from the workload's
    // start: joining the group takes them longer than a short workload lasts, and a fault
    // before then finds nothing in flight to break.
    std::optional<Clock::time_point> inbox_t0;
    std::unique_ptr<pqxx::connection> probe;
    auto inbox_started = [&] {
      if (inbox_t0) return true;
      try {
        if (!probe) probe = std::make_unique<pqxx::connection>(url);
        if (pqxx::nontransaction(*probe).exec("SELECT EXISTS (SELECT 1 FROM inbox_events)")[0][0].as<bool>())
          inbox_t0 = Clock::now();
      } catch (const std::exception&) {
        probe.reset();  // the database restarting: ask again next time
      }
      return inbox_t0.has_value();
    };
    auto sidecar_duties = [&] {
      while (next_sidecar_fault < s.sidecar_faults.size() && inbox_started() &&
             std::chrono::duration<double>(Clock::now() - *inbox_t0).count() >= s.sidecar_faults[next_sidecar_fault].at_s) {
        const Fault& f = s.sidecar_faults[next_sidecar_fault++];
        auto live = sidecars.live();
        if (f.kind == FaultKind::kill_sidecar && !live.empty()) {
          sidecars.kill(*live[sidecar_rng() % live.size()]);
          sidecar_restarts.push_back(Clock::now() + std::chrono::milliseconds(f.arg));
        } else if (f.kind == FaultKind::join_sidecar && live.size() < 3) {
          sidecars.start();
        } else if (f.kind == FaultKind::stall_kill_sidecar && !stall_tx && !live.empty()) {
          // Writers of inbox_events wait (COPY and INSERT need ROW EXCLUSIVE); readers do not.
          // A database restarting meanwhile (a fault of the relays') makes it no stall.
          try {
            stall_conn = std::make_unique<pqxx::connection>(url);
            stall_tx = std::make_unique<pqxx::work>(*stall_conn);
            stall_tx->exec("LOCK TABLE inbox_events IN EXCLUSIVE MODE");
            stall_kill_at = Clock::now() + std::chrono::milliseconds(f.arg * 3 / 4);
            stall_end_at = Clock::now() + std::chrono::milliseconds(f.arg);
          } catch (const std::exception&) {
            stall_tx.reset();
            stall_conn.reset();
          }
        }
      }
      if (stall_kill_at && Clock::now() >= *stall_kill_at) {
        stall_kill_at.reset();
        if (auto live = sidecars.live(); !live.empty()) {
          sidecars.kill(*live[sidecar_rng() % live.size()]);
          sidecar_restarts.push_back(*stall_end_at + 100ms);
        }
      }
      if (stall_end_at && Clock::now() >= *stall_end_at) {
        stall_end_at.reset();
        try {
          stall_tx->abort();
        } catch (const std::exception&) {
          // the lock went with its session (a database restart): nothing left to release
        }
        stall_tx.reset();
        stall_conn.reset();
      }
      for (auto it = sidecar_restarts.begin(); it != sidecar_restarts.end();)
        if (Clock::now() >= *it) {
          sidecars.start();
          it = sidecar_restarts.erase(it);
        } else {
          ++it;
        }
      sidecars.tick(violations);
    };

    Shared shared(s, url);
    std::mt19937 rng(static_cast<std::uint32_t>(s.seed));
    std::vector<std::vector<Written>> per_producer(static_cast<std::size_t>(s.producers));
    std::vector<std::thread> producers;
    for (int p = 0; p < s.producers; ++p)
      producers.emplace_back([&, p] { per_producer[static_cast<std::size_t>(p)] = run_producer(shared, p); });
    std::vector<Written> hostile_written;
    std::thread fuzzer([&] {
      hostile_written = insert_hostile(shared, hostile_rows(s.hostile, rng, std::to_string(s.seed)));
    });

    // The workload runs; faults fall at their times.
    std::size_t next_fault = 0;
    std::vector<std::pair<Clock::time_point, bool>> pending_starts;  // restarts after a kill
    while (seconds_since(shared.t0) < s.workload_s) {
      while (next_fault < s.faults.size() && seconds_since(shared.t0) >= s.faults[next_fault].at_s) {
        const Fault& f = s.faults[next_fault++];
        auto live = relays.live();
        auto pick = [&]() -> Relays::Instance* {
          return live.empty() ? nullptr : live[static_cast<std::size_t>(rng()) % live.size()];
        };
        switch (f.kind) {
          case FaultKind::kill_relay:
            if (auto* in = pick()) {
              relays.kill(*in);
              pending_starts.emplace_back(Clock::now() + std::chrono::milliseconds(f.arg), true);
            }
            break;
          case FaultKind::stop_relay:
            if (auto* in = pick()) relays.stop_for(*in, std::chrono::milliseconds(f.arg));
            break;
          case FaultKind::join:
            if (live.size() < 3) relays.start();
            break;
          case FaultKind::leave:
            if (live.size() >= 2) relays.terminate(*pick());
            break;
          case FaultKind::terminate_sessions:
            try {
              pqxx::connection c(url);
              pqxx::nontransaction tx(c);
              tx.exec("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = "
                      "current_database() AND application_name LIKE 'outbox-relay%'");
            } catch (const std::exception&) {
            }
            break;
          case FaultKind::restart_postgres:
            cluster_.stop(true);
            poll(300ms);
            cluster_.start();
            break;
          case FaultKind::produce_errors: {
            std::vector<rd_kafka_resp_err_t> errs(static_cast<std::size_t>(f.arg),
                                                  RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION);
            for (std::size_t i = 0; i < errs.size(); i += 2) errs[i] = RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT;
            rd_kafka_mock_push_request_errors_array(kafka.cluster(), 0 /* Produce */, errs.size(), errs.data());
            break;
          }
          case FaultKind::move_leaders:
            for (const auto& t : topics)
              for (int p = 0; p < kPartitions; ++p)
                rd_kafka_mock_partition_set_leader(kafka.cluster(), t.c_str(), p, 1 + static_cast<int>(rng() % 3));
            break;
          case FaultKind::refused_property: {
            const auto& [name, value] = refused_properties()[static_cast<std::size_t>(f.arg)];
            auto& in = relays.start({{property_env(name), value}});
            in.refused = name + "=" + value;
            in.probe_deadline = Clock::now() + 5s;
            break;
          }
          case FaultKind::kill_sidecar:
          case FaultKind::join_sidecar:
          case FaultKind::stall_kill_sidecar:
            break;  // the inbox stage's own faults (sidecar_faults)
        }
      }
      for (auto it = pending_starts.begin(); it != pending_starts.end();)
        if (Clock::now() >= it->first) {
          relays.start();
          it = pending_starts.erase(it);
        } else {
          ++it;
        }
      relays.tick(violations);
      sidecar_duties();
      poll(30ms);
    }
    shared.request_stop();
    for (auto& t : producers) t.join();
    fuzzer.join();
    for (auto& v : per_producer) written.insert(written.end(), v.begin(), v.end());
    written.insert(written.end(), hostile_written.begin(), hostile_written.end());
    for (std::size_t i = 0; i < pending_starts.size(); ++i) relays.start();
    if (relays.live().empty()) {
      bool stopped = false;
      for (auto& in : relays.all()) stopped = stopped || in.stopped;
      if (!stopped) relays.start();  // every instance left: the service would start one
    }

    // Drain: until every committed event to be published was read and no row is pending.
    std::set<std::string> expected;
    for (const auto& w : written)
      if (w.fate == Fate::committed && w.expect == Expect::delivered) expected.insert(w.id);
    std::set<std::string> seen;
    std::vector<std::size_t> scanned(readers.size(), 0);
    auto read_ids = [&] {
      for (std::size_t i = 0; i < readers.size(); ++i) {
        const auto& all = readers[i]->messages();
        for (; scanned[i] < all.size(); ++scanned[i])
          if (auto id = header(all[scanned[i]], "id")) seen.insert(*id);
      }
    };
    auto pending = [&]() -> long {
      try {
        pqxx::connection c(url);
        pqxx::nontransaction tx(c);
        return tx.exec("SELECT count(*) FROM outbox_events WHERE published_at IS NULL AND dead_lettered_at IS NULL")[0][0]
            .as<long>();
      } catch (const std::exception&) {
        return -1;
      }
    };
    const auto drain_deadline = Clock::now() + std::chrono::duration<double>(s.latency_bound_s() + 20);
    auto last_check = Clock::now() - 1s;
    bool drained = false;
    while (Clock::now() < drain_deadline) {
      relays.tick(violations);
      sidecar_duties();
      poll(30ms);
      read_ids();
      if (Clock::now() - last_check < 200ms) continue;
      last_check = Clock::now();
      if (std::includes(seen.begin(), seen.end(), expected.begin(), expected.end()) && pending() == 0) {
        drained = true;
        break;
      }
    }
    if (!drained) {
      long missing = 0;
      for (const auto& id : expected) missing += seen.contains(id) ? 0 : 1;
      violations.push_back({"stalled", "", "not drained within " + std::to_string(static_cast<int>(s.latency_bound_s() + 20)) +
                                               " s after the workload: " + std::to_string(missing) +
                                               " committed events unread, " + std::to_string(pending()) + " rows pending"});
    }
    relays.stop_all(violations);
    poll(100ms);
    relay_logs = relays.logs();

    // The inbox: until every delivered event landed (or was dead-lettered), then SIGTERM.
    std::vector<InboxRowState> inbox_rows;
    std::set<std::string> dead_lettered_ids;
    if (s.sidecars > 0) {
      for (std::size_t i = 0; i < sidecar_restarts.size(); ++i) sidecars.start();
      sidecar_restarts.clear();
      if (sidecars.live().empty()) sidecars.start();
      read_ids();
      auto landed = [&] {
        std::set<std::string> ids;
        try {
          pqxx::connection c(url);
          pqxx::nontransaction tx(c);
          for (const auto& r : tx.exec_params("SELECT event_id FROM inbox_events WHERE inbox = $1", std::string(kInbox)))
            ids.insert(r[0].as<std::string>());
        } catch (const std::exception&) {
        }
        for (auto& r : dlq_readers) {
          r->poll_for(20ms);
          for (const auto& m : r->messages())
            if (auto id = header(m, "id")) ids.insert(*id);
        }
        return ids;
      };
      // Stalled: nothing newly landed for inbox_bound_s, or not all within four times it. The
      // mock refuses commits once a member joins (a real broker takes them until the rebalance
      // completes), so rare commits re-deliver everything per rebalance: at batch 1 under load
      // that outlasted a fixed bound while landing all along (seed 483176871).
      const auto bound = std::chrono::duration<double>(s.inbox_bound_s());
      const auto inbox_started = Clock::now();
      const auto inbox_cap = inbox_started + 4 * bound;
      auto progress_deadline = inbox_started + bound;
      std::size_t best_missing = std::numeric_limits<std::size_t>::max();
      bool settled = false;
      std::size_t missing = 0;
      while (Clock::now() < std::min(progress_deadline, inbox_cap)) {
        sidecar_duties();
        const auto ids = landed();
        missing = 0;
        for (const auto& id : seen) missing += ids.contains(id) ? 0 : 1;
        if (missing < best_missing) {
          best_missing = missing;
          progress_deadline = Clock::now() + bound;
        }
        // Every fault played out first (a stall still held, a restart still due), once the
        // sidecars have started landing.
        const bool faults_due = inbox_t0 && (next_sidecar_fault < s.sidecar_faults.size() || stall_tx ||
                                             !sidecar_restarts.empty());
        if (missing == 0 && !faults_due) {
          settled = true;
          break;
        }
        poll(200ms);  // the checker's readers, while the sidecars land
      }
      if (!settled) {
        const bool capped = Clock::now() >= inbox_cap;
        violations.push_back({"inbox stalled", "", std::to_string(missing) + " delivered events not in the inbox: " +
                                                       (capped ? "not all in " + std::to_string(static_cast<int>(4 * s.inbox_bound_s())) +
                                                                     " s after the relays drained"
                                                               : "none more for " + std::to_string(static_cast<int>(s.inbox_bound_s())) +
                                                                     " s")});
      }
      sidecars.stop_all(violations);
      relay_logs += sidecars.logs();
      pqxx::connection c(url);
      pqxx::nontransaction tx(c);
      for (const auto& r : tx.exec_params("SELECT event_id, topic, partition, \"offset\", seq FROM inbox_events "
                                          "WHERE inbox = $1",
                                          std::string(kInbox)))
        inbox_rows.push_back({r[0].as<std::string>(), r[1].as<std::string>(), r[2].as<int>(), r[3].as<std::int64_t>(),
                              r[4].as<std::int64_t>()});
      for (auto& r : dlq_readers)
        for (const auto& m : r->messages())
          if (auto id = header(m, "id")) dead_lettered_ids.insert(*id);
    }

    for (auto& r : readers)
      for (const auto& m : r->messages()) {
        Delivery d;
        d.topic = m.topic;
        d.partition = m.partition;
        d.offset = m.offset;
        d.timestamp_ms = m.timestamp_ms;
        d.received_at = std::chrono::duration<double>(m.received_at - shared.t0).count();
        d.null_key = m.null_key;
        d.key = m.key;
        if (!m.null_value) d.value = m.value;
        d.headers = m.headers;
        deliveries.push_back(std::move(d));
      }
    pqxx::connection c(url);
    pqxx::nontransaction tx(c);
    for (const auto& row : tx.exec("SELECT id::text, seq, published_at IS NOT NULL, dead_lettered_at IS NOT NULL, "
                                   "coalesce(last_error, '') FROM outbox_events"))
      rows[row[0].as<std::string>()] = {row[1].as<std::int64_t>(), row[2].as<bool>(), row[3].as<bool>(),
                                        row[4].as<std::string>()};
    if (s.sidecars > 0) {
      auto found = check_inbox(deliveries, inbox_rows, dead_lettered_ids);
      violations.insert(violations.end(), found.begin(), found.end());
    }
    dlq_readers.clear();
    // librdkafka handles take up to a second to destroy: done while the next schedule runs.
    if (reaper_.joinable()) reaper_.join();
    reaper_ = std::thread([gone = std::move(side)]() mutable { gone.reset(); });
  }

  CheckOptions o;
  o.publisher_header = kPublisherHeader;
  o.partitions = kPartitions;
  o.rows_deleted_when_marked = s.mark_mode == "delete";
  o.latency_bound_s = s.latency_bound_s();
  auto found = check_history(written, deliveries, rows, o);
  violations.insert(violations.end(), found.begin(), found.end());

  result.violations = violations;
  result.written = written.size();
  std::set<std::string> ids;
  for (const auto& d : deliveries) {
    auto v = std::find_if(d.headers.begin(), d.headers.end(), [](const auto& h) { return h.first == "id"; });
    if (v != d.headers.end() && v->second && !ids.insert(*v->second).second) ++result.duplicates;
  }
  for (const auto& w : written) result.committed += (w.fate == Fate::committed || rows.contains(w.id)) ? 1 : 0;
  result.deliveries = deliveries.size();
  if (!violations.empty()) {
    std::string r = "schedule " + s.describe() + "\nreplay: schedule_check --seed " + std::to_string(s.seed) + "\n";
    std::map<std::string, int> per_rule;
    std::set<std::string> aggregates;
    for (const auto& v : violations) {
      if (per_rule[v.rule]++ < 5) r += "  [" + v.rule + "] " + (v.aggregate.empty() ? "" : v.aggregate + ": ") + v.detail + "\n";
      if (!v.aggregate.empty() && aggregates.size() < 2 && (v.rule == "order" || v.rule == "lost")) aggregates.insert(v.aggregate);
    }
    for (const auto& [rule, n] : per_rule)
      if (n > 5) r += "  [" + rule + "] ... " + std::to_string(n - 5) + " more\n";
    for (const auto& a : aggregates) r += describe_aggregate(a, written, deliveries, rows, o);
    r += relay_logs;
    result.report = r;
  }
  try {
    pqxx::connection c(cluster_.conninfo());
    pqxx::nontransaction tx(c);
    tx.exec0("DROP DATABASE " + tx.quote_name(db) + " WITH (FORCE)");
  } catch (const std::exception&) {
  }
  result.seconds = seconds_since(started);
  return result;
}

}  // namespace outbox::test::checker
