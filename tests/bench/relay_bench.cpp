// relay_bench: drain rate of a prefilled outbox through the real relay to a Kafka broker
// (librdkafka's mock cluster, in its own process), side by side with the same-host ceiling
// of the identical claim-and-mark SQL (the same relay and store, with a publisher that
// acknowledges at once), the drain rate of one relay instance versus several on the same
// outbox, and wake-up latency (commit -> marked) with NOTIFY versus polling. Every relay and
// store runs as the daemon runs them: under leased lanes, with marks fenced by them.
// A program that prints figures; not a test.
#include <CLI/CLI.hpp>
#include <pqxx/pqxx>

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <thread>

#include "relay/app/polling_wakeup.hpp"
#include "relay/core/relay.hpp"
#include "relay/core/runner.hpp"
#include "relay/kafka/kafka_publisher.hpp"
#include "relay/nats/nats_publisher.hpp"
#include "relay/pg/pg_migrator.hpp"
#include "relay/pg/pg_outbox_store.hpp"
#include "relay/pg/pg_wakeup.hpp"
#include "tests/bench/bench_instances.hpp"
#include "tests/e2e/child_process.hpp"
#include "tests/e2e/delivery_check.hpp"
#include "tests/support/nats_client.hpp"
#include "tests/support/pg_cluster.hpp"
#include "tests/support/server_process.hpp"

#include <nats/nats.h>

using namespace outbox;
using namespace outbox::relay;
using namespace outbox::bench;
using namespace std::chrono_literals;
using WallClock = std::chrono::steady_clock;

namespace {

// Acknowledges everything at once: what is left is the relay's SQL and its own CPU.
class InstantPublisher final : public Publisher {
 public:
  std::optional<DeliveryResult> send(const Message&) override {
    ++n_;
    return std::nullopt;
  }
  std::vector<DeliveryResult> await() override {
    std::vector<DeliveryResult> r(n_, DeliveryResult{DeliveryStatus::delivered, {}});
    n_ = 0;
    return r;
  }
  void abandon() override {}

 private:
  std::size_t n_ = 0;
};

double cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

long long wal_lsn(pqxx::connection& c) {
  pqxx::nontransaction tx(c);
  return tx.exec("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint")[0][0].as<long long>();
}

void prefill(const std::string& url, long rows, int aggregates, int payload) {
  pqxx::connection c(url);
  {
    pqxx::work tx(c);
    tx.exec("TRUNCATE outbox_events");
    tx.exec_params(
        "INSERT INTO outbox_events (aggregate_type, aggregate_id, event_type, payload) "
        "SELECT 'order', 'agg-' || (g % $2), 'created', convert_to(repeat('x', $3), 'UTF8') "
        "FROM generate_series(1, $1) AS g",
        rows, aggregates, payload);
    tx.commit();
  }
  pqxx::nontransaction tx(c);
  tx.exec("VACUUM (ANALYZE) outbox_events");
  tx.exec("CHECKPOINT");
}

struct DrainResult {
  double seconds = 0;
  double rate = 0;
  double wal_per_event = 0;
  double cpu_us_per_event = 0;
};

// Wall time, WAL written and this process's CPU from construction to finish(); the WAL and
// CPU figures are per prefilled row.
class Meter {
 public:
  explicit Meter(const std::string& url) : c_(url), wal0_(wal_lsn(c_)), cpu0_(cpu_seconds()), t0_(WallClock::now()) {}

  DrainResult finish(std::uint64_t events, long rows) {
    DrainResult d;
    d.seconds = std::chrono::duration<double>(WallClock::now() - t0_).count();
    d.rate = static_cast<double>(events) / d.seconds;
    d.wal_per_event = static_cast<double>(wal_lsn(c_) - wal0_) / static_cast<double>(rows);
    d.cpu_us_per_event = (cpu_seconds() - cpu0_) * 1e6 / static_cast<double>(rows);
    return d;
  }

 private:
  pqxx::connection c_;
  long long wal0_;
  double cpu0_;
  WallClock::time_point t0_;
};

DrainResult drain(const std::string& url, Publisher& publisher, long rows, std::size_t batch, pg::MarkMode mode) {
  auto lanes = join_lanes(url, mode, 1);
  Member& member = *lanes.front();
  SteadyClock clock;
  RelayStats stats;
  Relay relay(member.store(), publisher, clock, MessageBuilder({}), relay_options(batch), stats, &member.ownership());
  Meter meter(url);
  for (;;) {
    auto r = relay.step();
    if (r.kind == StepKind::idle && r.fetched == 0) break;
    if (r.kind == StepKind::backoff) {
      std::cerr << "backoff: " << r.error << "\n";
      std::this_thread::sleep_for(r.wait);
    }
  }
  auto d = meter.finish(stats.published_total, rows);
  if (static_cast<long>(stats.published_total) != rows)
    std::cerr << "warning: published " << stats.published_total << " of " << rows << "\n";
  return d;
}

// The SQL ceiling proper: the store's own fetch and mark statements, batch after batch, with
// no relay logic and no broker. Like the busy relay, each read starts behind the previous
// batch (a head scan would wade through the index entries the marks just made dead). One
// instance holds every lane, so like the relay (Ownership::View::all) the reads need no lane
// filter; the marks are fenced as the relay's are.
DrainResult sql_only(const std::string& url, long rows, std::size_t batch, pg::MarkMode mode) {
  auto lanes = join_lanes(url, mode, 1);
  pg::PgOutboxStore& store = lanes.front()->store();
  Meter meter(url);
  long done = 0;
  std::optional<std::int64_t> after;
  std::vector<std::int64_t> previous;
  for (;;) {
    auto events = store.fetch({batch, after, {}});
    if (!previous.empty()) store.mark_published(previous);
    if (events.empty()) break;
    after = events.back().seq;
    previous.clear();
    for (const auto& e : events) previous.push_back(e.seq);
    done += static_cast<long>(events.size());
  }
  return meter.finish(static_cast<std::uint64_t>(done), rows);
}

// NATS JetStream's own ceiling with the relay's client library: `rows` messages of the same
// size and subject, published asynchronously with nothing held back (no per-key order), each
// acknowledged by the stream; no database.
DrainResult nats_ceiling(const std::string& url, const std::string& nats_url, long rows, int payload) {
  natsConnection* nc = nullptr;
  jsCtx* js = nullptr;
  natsOptions* o = nullptr;
  natsOptions_Create(&o);
  natsOptions_SetURL(o, nats_url.c_str());
  if (natsConnection_Connect(&nc, o) != NATS_OK) throw std::runtime_error("nats ceiling: cannot connect");
  natsOptions_Destroy(o);
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.PublishAsync.MaxPending = 1 << 20;
  natsConnection_JetStream(&js, nc, &jo);
  const std::string data(static_cast<std::size_t>(payload), 'x');
  Meter meter(url);
  for (long i = 0; i < rows; ++i) {
    natsMsg* m = nullptr;
    natsMsg_Create(&m, "outbox.event.order", nullptr, data.data(), payload);
    const auto id = "c-" + std::to_string(i);
    natsMsgHeader_Set(m, "Nats-Msg-Id", id.c_str());
    natsMsgHeader_Set(m, "key", ("agg-" + std::to_string(i % 1000)).c_str());
    if (js_PublishMsgAsync(js, &m, nullptr) != NATS_OK) natsMsg_Destroy(m);
  }
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MaxWait = 60'000;
  const auto s = js_PublishAsyncComplete(js, &po);
  auto d = meter.finish(static_cast<std::uint64_t>(rows), rows);
  if (s != NATS_OK) std::cerr << "nats ceiling: not every publish was acknowledged: " << natsStatus_GetText(s) << "\n";
  jsCtx_Destroy(js);
  natsConnection_Destroy(nc);
  return d;
}

struct InstanceShare {
  std::string id;
  std::size_t lanes = 0;
  std::uint64_t published = 0;
};

struct InstancesResult {
  DrainResult drain;
  std::vector<InstanceShare> shares;
};

// `n` relay instances on the prefilled outbox, started together once the lanes are shared
// out, timed until they have marked every row.
InstancesResult drain_instances(const std::string& url, const kafka::KafkaOptions& kafka, long rows,
                                std::size_t batch, pg::MarkMode mode, int n) {
  auto members = join_lanes(url, mode, n);
  // Declared after the members: each relay stops before its lanes are handed back.
  std::vector<std::unique_ptr<Instance>> instances;
  for (auto& m : members) instances.push_back(std::make_unique<Instance>(*m, url, kafka, batch));
  auto published = [&] {
    std::uint64_t sum = 0;
    for (const auto& i : instances) sum += i->published();
    return sum;
  };
  Meter meter(url);
  for (auto& i : instances) i->start();
  // Progress read in-process: counting the outbox every few ms would load the same cores.
  // A relay that stops making progress ends the wait instead of hanging the bench.
  constexpr auto kStallLimit = 30s;
  const auto target = static_cast<std::uint64_t>(rows);
  for (std::uint64_t seen = published(); seen < target; seen = published()) {
    if (!test::eventually([&] { return published() != seen; }, kStallLimit, 5ms)) {
      std::cerr << "warning: no progress for " << kStallLimit.count() << " s at " << seen << " of " << rows << " rows\n";
      break;
    }
  }
  InstancesResult result{meter.finish(published(), rows), {}};
  for (const auto& i : instances) result.shares.push_back({i->member().id(), i->member().lanes_held(), i->published()});
  for (auto& i : instances) i->request_stop();
  return result;
}

// Commit -> marked latency of single events arriving at an idle relay, by the database clock.
std::vector<double> wakeup_latencies(const std::string& url, Publisher& publisher, Wakeup& wakeup, int events,
                                     std::chrono::milliseconds poll_interval) {
  pqxx::connection c(url);
  {
    pqxx::work tx(c);
    tx.exec("TRUNCATE outbox_events");
    tx.commit();
  }
  auto lanes = join_lanes(url, pg::MarkMode::update, 1);
  Member& member = *lanes.front();
  SteadyClock clock;
  RelayStats stats;
  Relay relay(member.store(), publisher, clock, MessageBuilder({}), {}, stats, &member.ownership());
  NullLogger log;
  RunnerOptions ro;
  ro.poll_interval = poll_interval;
  Runner runner(relay, wakeup, clock, log, ro);
  std::atomic<bool> stop{false};
  std::thread t([&] { runner.run(stop); });
  std::this_thread::sleep_for(300ms);  // let it go idle
  for (int i = 0; i < events; ++i) {
    pqxx::work tx(c);
    // clock_timestamp() at the end of the transaction is the commit time to within microseconds.
    tx.exec("INSERT INTO outbox_events (aggregate_type, aggregate_id, event_type, payload, created_at) "
            "VALUES ('order', 'lat', 'created', '\\x00', clock_timestamp())");
    tx.commit();
    std::this_thread::sleep_for(std::chrono::milliseconds(20 + (i * 37) % 60));
  }
  (void)test::eventually([&] {
    pqxx::nontransaction tx(c);
    return tx.exec("SELECT count(*) FROM outbox_events WHERE published_at IS NULL")[0][0].as<long>() == 0;
  }, 10s, 20ms);
  stop = true;
  t.join();
  pqxx::nontransaction tx(c);
  std::vector<double> ms;
  for (const auto& row :
       tx.exec("SELECT extract(epoch FROM published_at - created_at) * 1000 FROM outbox_events WHERE published_at IS NOT NULL"))
    ms.push_back(row[0].as<double>());
  std::sort(ms.begin(), ms.end());
  return ms;
}

double pct(const std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  return v[std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())))];
}

void print_header(const char* first) {
  std::printf("%-8s %-26s %10s %12s %10s %14s\n", first, "run", "seconds", "events/s", "WAL B/ev", "CPU us/event");
}

void print_run(const std::string& first, const char* name, const DrainResult& d) {
  std::printf("%-8s %-26s %10.2f %12.0f %10.0f %14.1f\n", first.c_str(), name, d.seconds, d.rate, d.wal_per_event,
              d.cpu_us_per_event);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App cli{"Drain rate vs the same-host SQL ceiling, one relay instance vs several, and wake-up latency"};
  long rows = 200'000;
  std::size_t batch = 1000;
  int payload = 200;
  int aggregates = 1000;
  int rounds = 2;
  int instances = 3;
  int latency_events = 100;
  std::string mark = "update";
  std::string mock = OUTBOX_MOCK_KAFKA_BINARY;
  std::vector<std::string> kafka_props;
  cli.add_option("--rows", rows, "Rows to prefill per run");
  cli.add_option("--batch", batch, "relay.batch_size");
  cli.add_option("--payload", payload, "Payload bytes per event");
  cli.add_option("--aggregates", aggregates, "Distinct aggregates");
  cli.add_option("--rounds", rounds, "Ceiling/drain pairs, run alternately");
  cli.add_option("--instances", instances, "Relay instances to compare with one on the same outbox (0 or 1 skips)");
  cli.add_option("--latency-events", latency_events, "Events for the wake-up latency runs (0 skips)");
  cli.add_option("--mark-mode", mark, "update or delete")->check(CLI::IsMember({"update", "delete"}));
  cli.add_option("--kafka-property", kafka_props, "librdkafka property name=value for the relay (repeatable)");
  bool with_nats = false;
  cli.add_flag("--nats", with_nats,
               "Also drain to NATS JetStream (nats-server started here, file storage) next to its libnats ceiling");
  CLI11_PARSE(cli, argc, argv);
  std::map<std::string, std::string> props;
  for (const auto& p : kafka_props)
    if (auto eq = p.find('='); eq != std::string::npos) props[p.substr(0, eq)] = p.substr(eq + 1);
  auto mode = mark == "delete" ? pg::MarkMode::remove : pg::MarkMode::update;

  test::PgCluster cluster;
  cluster.create_database("bench");
  const std::string url = cluster.conninfo("bench");
  pg::PgMigrator(url, "public").migrate();

  auto bootstrap_file = std::filesystem::temp_directory_path() / ("outbox-bench-" + std::to_string(::getpid()));
  test::ChildProcess broker(mock, {"--bootstrap-file", bootstrap_file.string()}, {}, bootstrap_file.string() + ".log");
  std::string brokers;
  for (auto until = WallClock::now() + 10s; brokers.empty() && WallClock::now() < until; std::this_thread::sleep_for(20ms))
    if (std::ifstream in(bootstrap_file); in) std::getline(in, brokers);
  if (brokers.empty()) {
    std::cerr << "mock broker did not start\n";
    return 1;
  }
  NullLogger log;
  const kafka::KafkaOptions kafka_options{brokers, 30s, "outbox-relay-bench", props};
  kafka::KafkaPublisher kafka(kafka_options, log);
  warm_up(kafka);

  std::printf("relay_bench: %ld rows x %d B payload, %d aggregates, batch %zu, mark_mode %s, %d rounds\n", rows,
              payload, aggregates, batch, mark.c_str(), rounds);
  print_header("round");
  std::vector<double> ratios;
  for (int round = 1; round <= rounds; ++round) {
    prefill(url, rows, aggregates, payload);
    auto ceiling = sql_only(url, rows, batch, mode);
    InstantPublisher instant;
    prefill(url, rows, aggregates, payload);
    auto core = drain(url, instant, rows, batch, mode);
    prefill(url, rows, aggregates, payload);
    auto relay = drain(url, kafka, rows, batch, mode);
    print_run(std::to_string(round), "SQL ceiling (fetch+mark)", ceiling);
    print_run(std::to_string(round), "relay, broker acks at once", core);
    print_run(std::to_string(round), "relay -> Kafka (mock)", relay);
    ratios.push_back(relay.rate / ceiling.rate);
  }
  std::sort(ratios.begin(), ratios.end());
  std::printf("ratio relay->Kafka / SQL ceiling: median %.2f (min %.2f, max %.2f)\n", ratios[ratios.size() / 2],
              ratios.front(), ratios.back());

  if (with_nats) {
    test::NatsServer server;
    test::NatsClient client(server.url());
    nats::NatsOptions no;
    no.url = server.url();
    nats::NatsPublisher nats_publisher(no, log);
    std::printf("\nNATS JetStream (nats-server 2.9, one R1 file stream, this host): the relay's drain next to the\n"
                "libnats publish ceiling (same message size, every publish acknowledged, nothing held back)\n");
    print_header("round");
    std::vector<double> nats_ratios;
    for (int round = 1; round <= rounds; ++round) {
      client.add_stream("OUTBOX", {"outbox.event.>"});
      auto ceiling = nats_ceiling(url, server.url(), rows, payload);
      client.delete_stream("OUTBOX");
      client.add_stream("OUTBOX", {"outbox.event.>"});
      prefill(url, rows, aggregates, payload);
      auto relay = drain(url, nats_publisher, rows, batch, mode);
      if (const auto stored = client.count("OUTBOX"); stored != static_cast<std::uint64_t>(rows))
        std::cerr << "warning: the stream holds " << stored << " of " << rows << "\n";
      client.delete_stream("OUTBOX");
      print_run(std::to_string(round), "NATS ceiling (libnats)", ceiling);
      print_run(std::to_string(round), "relay -> NATS JetStream", relay);
      nats_ratios.push_back(relay.rate / ceiling.rate);
    }
    std::sort(nats_ratios.begin(), nats_ratios.end());
    std::printf("ratio relay->NATS / NATS ceiling: median %.2f (min %.2f, max %.2f)\n", nats_ratios[nats_ratios.size() / 2],
                nats_ratios.front(), nats_ratios.back());
  }

  if (instances > 1) {
    std::printf("\n1 versus %d relay instances on one outbox, %ld rows each: in-process instances, each with its own\n"
                "producer, relay and lease keeper, started together once the lanes were shared out, timed until every\n"
                "row was marked (CPU: this whole process)\n",
                instances, rows);
    print_header("relays");
    prefill(url, rows, aggregates, payload);
    auto one = drain_instances(url, kafka_options, rows, batch, mode, 1);
    prefill(url, rows, aggregates, payload);
    auto many = drain_instances(url, kafka_options, rows, batch, mode, instances);
    print_run("1", "relay -> Kafka (mock)", one.drain);
    print_run(std::to_string(instances), "relay -> Kafka (mock)", many.drain);
    std::printf("ratio %d instances / 1: %.2f\n", instances, many.drain.rate / one.drain.rate);
    std::uint64_t total = 0;
    for (const auto& s : many.shares) total += s.published;
    std::printf("%-10s %6s %12s %8s\n", "instance", "lanes", "published", "share");
    for (const auto& s : many.shares)
      std::printf("%-10s %6zu %12llu %7.1f%%\n", s.id.c_str(), s.lanes, static_cast<unsigned long long>(s.published),
                  100.0 * static_cast<double>(s.published) / static_cast<double>(std::max<std::uint64_t>(total, 1)));
  }

  if (latency_events > 0) {
    std::printf("\nwake-up latency, commit -> marked published (ms), %d single-event transactions at an idle relay\n",
                latency_events);
    std::printf("%-28s %8s %8s %8s %8s\n", "wakeup", "p50", "p90", "p99", "max");
    pg::PgWakeup notify(bench_conninfo(url), "public");
    auto n = wakeup_latencies(url, kafka, notify, latency_events, 500ms);
    std::printf("%-28s %8.1f %8.1f %8.1f %8.1f\n", "notify (poll fallback 500ms)", pct(n, .5), pct(n, .9), pct(n, .99),
                n.empty() ? 0 : n.back());
    app::PollingWakeup poll;
    auto p = wakeup_latencies(url, kafka, poll, latency_events, 100ms);
    std::printf("%-28s %8.1f %8.1f %8.1f %8.1f\n", "poll every 100ms", pct(p, .5), pct(p, .9), pct(p, .99),
                p.empty() ? 0 : p.back());
  }
  kafka.close();
  broker.signal(SIGTERM);
  (void)broker.wait(10s);
  std::filesystem::remove(bootstrap_file);
  return 0;
}
