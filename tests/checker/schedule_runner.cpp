#include "tests/checker/schedule_runner.hpp"

#include <pqxx/pqxx>

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "relay/pg/pg_migrator.hpp"
#include "tests/checker/hostile_rows.hpp"
#include "tests/e2e/child_process.hpp"
#include "tests/support/mock_kafka.hpp"

namespace outbox::test::checker {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr const char* kPublisherHeader = "relay";
constexpr int kPartitions = 4;
constexpr long kMaxEvents = 6000;  // written per schedule, about

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::string hex(const std::string& bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

std::string last_lines(const std::string& text, std::size_t lines) {
  std::size_t start = text.size();
  for (std::size_t n = 0; n <= lines; ++n) {
    if (start == 0) return text;
    start = text.rfind('\n', start - 1);
    if (start == std::string::npos) return text;
  }
  return text.substr(start + 1);
}

// What the producers share: the clock, which aggregates have an open transaction (when an
// aggregate is written one transaction at a time), counters.
struct Shared {
  Shared(const Schedule& s, std::string u) : schedule(s), url(std::move(u)) {}
  const Schedule& schedule;
  std::string url;
  Clock::time_point t0 = Clock::now();
  std::mutex mutex;
  std::set<std::string> busy;
  std::atomic<long> next_n{0};
  std::atomic<std::int64_t> next_tx{1};
  std::atomic<bool> stop{false};
};

// One producer session: a service writing its events, with its own seeded choices.
class Producer {
 public:
  Producer(Shared& shared, int index)
      : s_(shared), rng_(static_cast<std::uint32_t>(shared.schedule.seed * 1000003 + static_cast<std::uint64_t>(index))) {}

  std::vector<Written> run() {
    // A bounded volume, so every schedule drains in seconds whatever its batch size: past it,
    // the producers only hold back.
    while (!s_.stop) {
      if (s_.next_n >= kMaxEvents) {
        std::this_thread::sleep_for(10ms);
        continue;
      }
      const int roll = static_cast<int>(rng_() % 100);
      const int late = s_.schedule.late_commit_weight;
      if (roll < late) late_commit();
      else if (roll < late + 10) burst(50 + static_cast<int>(rng_() % 450), /*second=*/false);
      else if (roll < late + 20) events(1 + rng_() % 4, /*rollback=*/true, 0);
      else if (roll < late + 30) events(1, false, 0.1 + (rng_() % 700) / 1000.0);
      else if (roll < late + 45) events(2 + rng_() % 3, false, 0);
      else if (roll < late + 50) std::this_thread::sleep_for(std::chrono::milliseconds(20 + rng_() % 150));
      else events(1, false, 0);
      std::this_thread::sleep_for(std::chrono::microseconds(rng_() % 2000));
    }
    return std::move(out_);
  }

 private:
  pqxx::connection& conn(std::unique_ptr<pqxx::connection>& c) {
    if (stale_.erase(&c) > 0) c.reset();  // its last transaction failed to commit: start afresh
    if (!c || !c->is_open())
      c = std::make_unique<pqxx::connection>(
          s_.url + " application_name=checker-producer connect_timeout=2 options='-c synchronous_commit=on'");
    return *c;
  }

  std::string healthy_aggregate() { return "agg-" + std::to_string(rng_() % static_cast<unsigned>(s_.schedule.aggregates)); }
  static std::string type_of(const std::string& aggregate) {
    return (std::stoi(aggregate.substr(4)) % 2 == 0) ? "order" : "item";
  }

  // Writing an aggregate one transaction at a time: take it, or give up this round.
  bool take(const std::vector<std::string>& aggregates) {
    if (s_.schedule.row_locks) return true;
    std::lock_guard lock(s_.mutex);
    for (const auto& a : aggregates)
      if (s_.busy.contains(a)) return false;
    s_.busy.insert(aggregates.begin(), aggregates.end());
    return true;
  }
  void give_back(const std::vector<std::string>& aggregates) {
    if (s_.schedule.row_locks) return;
    std::lock_guard lock(s_.mutex);
    for (const auto& a : aggregates) s_.busy.erase(a);
  }

  Written insert(pqxx::work& tx, const RowSpec& r, std::int64_t tx_id, int index) {
    if (s_.schedule.row_locks && r.label == "healthy")
      tx.exec_params("SELECT pg_advisory_xact_lock(hashtext($1))", r.aggregate_id);  // the business row's lock
    Written w;
    w.written_at = seconds_since(s_.t0);
    std::optional<std::string> payload_hex;
    if (r.payload) payload_hex = hex(*r.payload);
    auto row = tx.exec_params(insert_sql(), r.aggregate_type, r.aggregate_id, r.event_type, payload_hex, r.headers_json,
                              r.topic, r.created_at, r.next_attempt_at, r.attempts, r.published_at)[0];
    w.id = row[0].as<std::string>();
    w.aggregate_type = r.aggregate_type;
    w.aggregate_id = r.aggregate_id;
    w.tx = tx_id;
    w.index = index;
    w.expect = r.expect;
    w.topic = r.topic_expected;
    w.value = r.payload;
    w.event_type = r.event_type;
    w.headers = r.headers_expected;
    w.label = r.label;
    return w;
  }

  // Commits (or rolls back) what `mine` wrote in `tx` and records the fate of each event.
  void settle(pqxx::work& tx, std::vector<Written>& mine, bool rollback, std::unique_ptr<pqxx::connection>& c) {
    if (rollback) {
      tx.abort();
      for (auto& w : mine) w.fate = Fate::rolled_back;
    } else {
      try {
        tx.commit();
        const double at = seconds_since(s_.t0);
        for (auto& w : mine) {
          w.fate = Fate::committed;
          w.committed_at = at;
        }
      } catch (const std::exception&) {
        for (auto& w : mine) w.fate = Fate::unknown;  // the answer never came
        stale_.insert(&c);  // not reset here: `tx` still lives on it
      }
    }
    out_.insert(out_.end(), mine.begin(), mine.end());
  }

  void fail(std::vector<Written>& mine, std::unique_ptr<pqxx::connection>& c) {
    for (auto& w : mine) w.fate = Fate::rolled_back;  // never reached COMMIT
    out_.insert(out_.end(), mine.begin(), mine.end());
    c.reset();
    std::this_thread::sleep_for(20ms);  // the database may be restarting: do not spin
  }

  // One transaction of `n` healthy events over one or two aggregates, held open `hold_s`.
  void events(std::size_t n, bool rollback, double hold_s) {
    std::vector<std::string> aggs{healthy_aggregate()};
    if (n > 1 && rng_() % 2) aggs.push_back(healthy_aggregate());
    std::sort(aggs.begin(), aggs.end());
    aggs.erase(std::unique(aggs.begin(), aggs.end()), aggs.end());
    if (!take(aggs)) return;
    std::vector<Written> mine;
    const auto tx_id = s_.next_tx++;
    try {
      pqxx::work tx(conn(main_));
      for (std::size_t i = 0; i < n; ++i) {
        const auto& a = aggs[i % aggs.size()];
        mine.push_back(insert(tx, healthy_row(type_of(a), a, s_.next_n++, rng_), tx_id, static_cast<int>(i)));
      }
      if (hold_s > 0) std::this_thread::sleep_for(std::chrono::duration<double>(hold_s));
      settle(tx, mine, rollback, main_);
    } catch (const std::exception&) {
      fail(mine, main_);
    }
    give_back(aggs);
  }

  // A burst of rows for the bulk aggregates in one transaction, on the main or second session.
  void burst(int rows, bool second) {
    auto& c = second ? side_ : main_;
    std::vector<Written> mine;
    const auto tx_id = s_.next_tx++;
    try {
      pqxx::work tx(conn(c));
      const double at = seconds_since(s_.t0);
      auto r = tx.exec_params(
          "WITH ins AS (INSERT INTO outbox_events (aggregate_type, aggregate_id, event_type, payload) "
          "SELECT 'order', 'bulk-' || (g % 20), 'Bulk', convert_to('{\"b\":' || ($2::bigint + g) || '}', 'UTF8') "
          "FROM generate_series(1, $1) g RETURNING id::text, aggregate_id, payload, seq) "
          "SELECT id, aggregate_id, convert_from(payload, 'UTF8') FROM ins ORDER BY seq",
          rows, static_cast<long>(s_.next_n.fetch_add(rows)));
      int index = 0;
      for (const auto& row : r) {
        Written w;
        w.id = row[0].as<std::string>();
        w.aggregate_type = "order";
        w.aggregate_id = row[1].as<std::string>();
        w.tx = tx_id;
        w.index = index++;
        w.written_at = at;
        w.topic = template_topic("order");
        w.value = row[2].as<std::string>();
        w.event_type = "Bulk";
        w.label = "healthy";
        mine.push_back(std::move(w));
      }
      settle(tx, mine, false, c);
    } catch (const std::exception&) {
      fail(mine, c);
    }
  }

  // The late commit: X's first event in a transaction held open while a burst commits on
  // another session, then X's second written once the first committed.
  void late_commit() {
    const std::string x = healthy_aggregate();
    if (!take({x})) return;
    std::vector<Written> mine;
    const auto tx_id = s_.next_tx++;
    bool first_committed = false;
    try {
      pqxx::work tx(conn(main_));
      mine.push_back(insert(tx, healthy_row(type_of(x), x, s_.next_n++, rng_), tx_id, 0));
      burst(100 + static_cast<int>(rng_() % 900), /*second=*/true);
      settle(tx, mine, false, main_);
      first_committed = out_.back().fate == Fate::committed;
    } catch (const std::exception&) {
      fail(mine, main_);
    }
    if (first_committed) events_of(x);
    give_back({x});
  }

  // One more event of an aggregate this producer has already taken.
  void events_of(const std::string& aggregate) {
    std::vector<Written> mine;
    const auto tx_id = s_.next_tx++;
    try {
      pqxx::work tx(conn(main_));
      mine.push_back(insert(tx, healthy_row(type_of(aggregate), aggregate, s_.next_n++, rng_), tx_id, 0));
      settle(tx, mine, false, main_);
    } catch (const std::exception&) {
      fail(mine, main_);
    }
  }

  Shared& s_;
  std::mt19937 rng_;
  std::unique_ptr<pqxx::connection> main_, side_;
  std::set<std::unique_ptr<pqxx::connection>*> stale_;
  std::vector<Written> out_;
};

// The fuzzer's rows, spread over the workload, each in a transaction of its own.
std::vector<Written> insert_hostile(Shared& s, std::vector<RowSpec> rows) {
  std::vector<Written> out;
  std::unique_ptr<pqxx::connection> c;
  std::mt19937 rng(static_cast<std::uint32_t>(s.schedule.seed ^ 0x5bd1e995));
  for (const auto& r : rows) {
    std::this_thread::sleep_for(std::chrono::duration<double>(s.schedule.workload_s / (rows.size() + 1)));
    Written w;
    bool stale = false;
    try {
      if (!c || !c->is_open())
        c = std::make_unique<pqxx::connection>(s.url + " application_name=checker-fuzzer connect_timeout=2 "
                                                       "options='-c synchronous_commit=on'");
      pqxx::work tx(*c);
      w.written_at = seconds_since(s.t0);
      std::optional<std::string> payload_hex;
      if (r.payload) payload_hex = hex(*r.payload);
      auto row = tx.exec_params(insert_sql(), r.aggregate_type, r.aggregate_id, r.event_type, payload_hex,
                                r.headers_json, r.topic, r.created_at, r.next_attempt_at, r.attempts, r.published_at)[0];
      w.id = row[0].as<std::string>();
      w.tx = s.next_tx++;
      try {
        tx.commit();
        w.fate = Fate::committed;
        w.committed_at = seconds_since(s.t0);
      } catch (const std::exception&) {
        w.fate = Fate::unknown;
        stale = true;  // reset once `tx` is gone
      }
    } catch (const std::exception&) {
      c.reset();
      continue;  // not written (database away): nothing to expect
    }
    if (stale) c.reset();
    w.aggregate_type = r.aggregate_type;
    w.aggregate_id = r.aggregate_id;
    w.expect = r.expect;
    w.topic = r.topic_expected;
    w.value = r.payload;
    w.event_type = r.event_type;
    w.headers = r.headers_expected;
    w.label = r.label;
    out.push_back(std::move(w));
  }
  (void)rng;
  return out;
}

std::string property_env(const std::string& name) {
  std::string e = "OUTBOX_RELAY_KAFKA_PROPERTY_";
  for (char ch : name) e += ch == '.' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  return e;
}

// The relay processes of one run.
class Relays {
 public:
  Relays(std::string binary, std::map<std::string, std::string> env, std::string log_prefix)
      : binary_(std::move(binary)), env_(std::move(env)), log_prefix_(std::move(log_prefix)) {}

  struct Instance {
    std::string name;
    std::unique_ptr<ChildProcess> process;
    bool stopped = false;
    Clock::time_point resume_at{};
    bool terminated = false;  // SIGTERM sent: must exit 0
    bool killed = false;
    // Started with a property it must refuse: must exit 78 before probe_deadline.
    std::optional<std::string> refused;
    Clock::time_point probe_deadline{};
    std::string log;  // the tail, kept once it exited
  };

  Instance& start(const std::map<std::string, std::string>& extra = {}) {
    auto env = env_;
    for (const auto& [k, v] : extra) env[k] = v;
    auto& in = all_.emplace_back();
    in.name = "r" + std::to_string(all_.size());
    in.process = std::make_unique<ChildProcess>(binary_, std::vector<std::string>{"run"}, env,
                                                log_prefix_ + in.name + ".log");
    return in;
  }

  // The running, not stopped, not stopping instances that are relays in earnest.
  std::vector<Instance*> live() {
    std::vector<Instance*> out;
    for (auto& in : all_)
      if (!in.killed && !in.terminated && !in.stopped && !in.refused && in.process->running()) out.push_back(&in);
    return out;
  }

  void kill(Instance& in) {
    in.process->signal(SIGKILL);
    in.killed = true;
    (void)in.process->wait(10s);
    in.log = last_lines(in.process->output(), 15);
  }
  void stop_for(Instance& in, std::chrono::milliseconds span) {
    in.process->signal(SIGSTOP);
    in.stopped = true;
    in.resume_at = Clock::now() + span;
  }
  void terminate(Instance& in) {
    if (in.stopped) resume(in);
    in.process->signal(SIGTERM);
    in.terminated = true;
  }
  void resume(Instance& in) {
    in.process->signal(SIGCONT);
    in.stopped = false;
  }

  // Time-driven duties: resume stopped instances, judge refused-property probes.
  void tick(std::vector<Violation>& violations) {
    for (auto& in : all_) {
      if (in.stopped && Clock::now() >= in.resume_at) resume(in);
      if (in.refused && !in.process->running()) {
        const auto code = in.process->wait(0ms);
        if (code != std::optional<int>(78))
          violations.push_back({"config", "", "a relay with " + *in.refused + " exited " +
                                                  (code ? std::to_string(*code) : "?") + ", expected 78: " +
                                                  last_lines(in.process->output(), 3)});
        in.refused.reset();
        in.killed = true;  // gone, judged
      } else if (in.refused && Clock::now() >= in.probe_deadline) {
        violations.push_back({"config", "", "a relay started with " + *in.refused +
                                                " is still running after 5 s: the property was accepted"});
        in.refused.reset();  // it runs on as a relay, and the history shows what it does
      }
    }
  }

  // SIGTERM everything still running; every clean stop must exit 0. A relay started with a
  // property it must refuse and still running was not refused, however short the run.
  void stop_all(std::vector<Violation>& violations) {
    tick(violations);
    for (auto& in : all_) {
      if (in.refused && in.process->running()) {
        violations.push_back({"config", "", "a relay started with " + *in.refused +
                                                " was still running when the schedule ended: the property was accepted"});
        in.refused.reset();
      }
      if (in.killed) continue;
      if (in.process->running() && !in.terminated) terminate(in);
    }
    for (auto& in : all_) {
      if (in.killed) continue;
      const auto code = in.process->wait(20s);
      in.log = last_lines(in.process->output(), 15);
      if (code != std::optional<int>(0))
        violations.push_back({"relay exit", "", in.name + " exited " + (code ? std::to_string(*code) : "(still running)") +
                                                    " after SIGTERM: " + last_lines(in.log, 3)});
    }
  }

  std::string logs() {
    std::string out;
    for (auto& in : all_) {
      if (in.log.empty()) in.log = last_lines(in.process->output(), 15);
      out += "--- " + in.name + " log tail\n" + in.log + "\n";
    }
    return out;
  }

  std::deque<Instance>& all() { return all_; }

 private:
  std::string binary_;
  std::map<std::string, std::string> env_;
  std::string log_prefix_;
  std::deque<Instance> all_;
};

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

    Shared shared(s, url);
    std::mt19937 rng(static_cast<std::uint32_t>(s.seed));
    std::vector<std::vector<Written>> per_producer(static_cast<std::size_t>(s.producers));
    std::vector<std::thread> producers;
    for (int p = 0; p < s.producers; ++p)
      producers.emplace_back([&, p] { per_producer[static_cast<std::size_t>(p)] = Producer(shared, p).run(); });
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
      poll(30ms);
    }
    shared.stop = true;
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
