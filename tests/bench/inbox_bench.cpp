// inbox_bench: events/s the inbox sidecar (the real `outbox-relay inbox run`) lands from the
// mock Kafka broker (outbox-mock-kafka, a process of its own) into inbox_events, beside the
// same-host ceiling of its own INSERT statement at the same batch size (PgInboxStore::land on
// prebuilt rows, one connection, no Kafka). PostgreSQL with fsync and synchronous_commit on;
// 200-byte payloads with an id, an eventType and a traceparent header. Figures come from the
// rows: the sidecar's rate is the rows landed between its first and its last batch's
// received_at (database clock) over that time. A program that prints figures.
#include <CLI/CLI.hpp>
#include <librdkafka/rdkafka.h>
#include <pqxx/pqxx>

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "relay/core/inbox_lander.hpp"
#include "tests/bench/process_cpu.hpp"
#include "relay/pg/pg_inbox_store.hpp"
#include "relay/pg/pg_migrator.hpp"
#include "tests/e2e/child_process.hpp"
#include "tests/support/eventually.hpp"
#include "tests/support/pg_cluster.hpp"

using namespace std::chrono_literals;
using WallClock = std::chrono::steady_clock;
using namespace outbox;

namespace {

constexpr const char* kTopic = "inbox.bench";

std::vector<std::pair<std::string, std::string>> headers_of(long i) {
  return {{"id", "00000000-0000-4000-8000-" + std::string(12 - std::min<std::size_t>(12, std::to_string(i).size()), '0') +
                     std::to_string(i)},
          {"eventType", "AccountMoved"},
          {"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}};
}

class Producer {
 public:
  explicit Producer(const std::string& brokers) {
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    char err[512];
    rd_kafka_conf_set(conf, "bootstrap.servers", brokers.c_str(), err, sizeof err);
    rd_kafka_conf_set(conf, "linger.ms", "5", err, sizeof err);
    rd_kafka_conf_set(conf, "socket.nagle.disable", "true", err, sizeof err);
    rk_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  }
  ~Producer() {
    rd_kafka_flush(rk_, 30'000);
    rd_kafka_destroy(rk_);
  }
  void send(long i, const std::string& payload) {
    const std::string key = "acct-" + std::to_string(i % 10'000);
    rd_kafka_headers_t* h = rd_kafka_headers_new(3);
    for (const auto& [k, v] : headers_of(i))
      rd_kafka_header_add(h, k.data(), static_cast<ssize_t>(k.size()), v.data(), static_cast<ssize_t>(v.size()));
    const void* key_data = key.data();
    void* value = const_cast<char*>(payload.data());
    while (rd_kafka_producev(rk_, RD_KAFKA_V_TOPIC(kTopic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                             RD_KAFKA_V_KEY(key_data, key.size()), RD_KAFKA_V_VALUE(value, payload.size()),
                             RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
      rd_kafka_poll(rk_, 10);
    rd_kafka_poll(rk_, 0);
  }
  void flush() { rd_kafka_flush(rk_, 60'000); }
  // Messages each partition holds from offset 0 on; -1 when a partition's log no longer
  // starts at 0 (the mock broker keeps a bounded log per partition and drops its oldest
  // messages past it) or could not be read.
  long held_from_start(int partitions) {
    long total = 0;
    for (int p = 0; p < partitions; ++p) {
      std::int64_t low = -1, high = -1;
      if (rd_kafka_query_watermark_offsets(rk_, kTopic, p, &low, &high, 10'000) != RD_KAFKA_RESP_ERR_NO_ERROR || low != 0)
        return -1;
      total += high;
    }
    return total;
  }

 private:
  rd_kafka_t* rk_ = nullptr;
};

// CPU seconds spent by each process of a run, from /proc.
struct Cpu {
  double database = 0, lander = 0, broker = 0;
  [[nodiscard]] double total() const { return database + lander + broker; }
};

struct Figures {
  double events_per_s = 0;
  double seconds = 0;
  long events = 0;
  Cpu cpu;
};

struct Pids {
  pid_t postmaster = 0, broker = 0;
};

Cpu sample(const Pids& p, pid_t lander) {
  return {bench::tree_cpu_seconds(p.postmaster), bench::proc_stat(lander).self, bench::proc_stat(p.broker).self};
}

Cpu minus(const Cpu& a, const Cpu& b) { return {a.database - b.database, a.lander - b.lander, a.broker - b.broker}; }

std::string fresh(test::PgCluster& cluster, const std::string& name) {
  cluster.create_database(name);
  const std::string url = cluster.conninfo(name);
  relay::pg::PgMigrator(url, "public").migrate();
  return url;
}

// What autovacuum and the checkpointer owe for a run's rows is paid before the next run starts,
// so no run's figures carry the one before it.
void quiesce(const std::string& url) {
  pqxx::connection c(url);
  pqxx::nontransaction tx(c);
  tx.exec("VACUUM (ANALYZE) inbox_events");
  tx.exec("CHECKPOINT");
}

// The ceiling: the sidecar's own statement, on rows built beforehand, batch after batch.
Figures ceiling(const std::string& url, long events, std::size_t batch, const std::string& payload, const Pids& pids) {
  relay::pg::PgInboxStore store({url, "public", "bench"});
  std::vector<std::vector<relay::InboxRow>> batches;
  for (long i = 0; i < events;) {
    std::vector<relay::InboxRow> rows;
    for (std::size_t k = 0; k < batch && i < events; ++k, ++i) {
      relay::InboxMessage m;
      m.topic = kTopic;
      m.partition = static_cast<int>(i % 16);
      m.offset = i / 16;
      m.key = "acct-" + std::to_string(i % 10'000);
      m.value = payload;
      for (const auto& [k2, v] : headers_of(i)) m.headers.emplace_back(k2, v);
      rows.push_back(std::get<relay::InboxRow>(relay::decode_message(std::move(m), relay::InboxOptions{})));
    }
    batches.push_back(std::move(rows));
  }
  store.ping();
  const auto cpu0 = sample(pids, ::getpid());
  const auto t0 = WallClock::now();
  for (const auto& b : batches) (void)store.land(b);
  Figures f;
  f.seconds = std::chrono::duration<double>(WallClock::now() - t0).count();
  f.cpu = minus(sample(pids, ::getpid()), cpu0);
  f.events = events;
  f.events_per_s = static_cast<double>(events) / f.seconds;
  return f;
}

// The sidecar binary on a topic already full: from the rows' received_at.
Figures sidecar(const std::string& binary, const std::string& url, const std::string& brokers, const std::string& group,
                long events, std::size_t batch, const std::string& log, const Pids& pids) {
  test::ChildProcess proc(binary, {"inbox", "run"},
                          {{"OUTBOX_RELAY_DATABASE_URL", url},
                           {"OUTBOX_RELAY_KAFKA_BROKERS", brokers},
                           {"OUTBOX_RELAY_INBOX_TOPICS", kTopic},
                           {"OUTBOX_RELAY_INBOX_NAME", "bench"},
                           {"OUTBOX_RELAY_INBOX_GROUP_ID", group},
                           {"OUTBOX_RELAY_INBOX_BATCH_SIZE", std::to_string(batch)},
                           {"OUTBOX_RELAY_HTTP_LISTEN", ""},
                           {"OUTBOX_RELAY_LOG_LEVEL", "warn"}},
                          log);
  const auto cpu0 = sample(pids, proc.pid());
  pqxx::connection c(url);
  // A cheap probe (the primary key's ends) while it lands, so the waiting costs PostgreSQL
  // next to nothing; the count confirms.
  (void)test::eventually(
      [&] {
        pqxx::nontransaction tx(c);
        return tx.exec("SELECT coalesce(max(seq) - min(seq) + 1, 0) FROM inbox_events")[0][0].as<long>() >= events &&
               tx.exec("SELECT count(*) FROM inbox_events")[0][0].as<long>() >= events;
      },
      600s, 100ms);
  Figures f;
  f.cpu = minus(sample(pids, proc.pid()), cpu0);
  proc.signal(SIGTERM);
  (void)proc.wait(60s);
  auto r = pqxx::nontransaction(c).exec(
      "SELECT count(*) FILTER (WHERE received_at < (SELECT max(received_at) FROM inbox_events)), "
      "extract(epoch FROM max(received_at) - min(received_at)), count(*) FROM inbox_events")[0];
  f.events = r[2].as<long>();
  f.seconds = r[1].as<double>();
  f.events_per_s = f.seconds > 0 ? static_cast<double>(r[0].as<long>()) / f.seconds : 0;
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App cli{"Events/s the inbox sidecar lands from Kafka, beside its own INSERT's ceiling"};
  long events = 200'000;
  std::size_t batch = 1000;
  int rounds = 2, payload_bytes = 200, partitions = 16;
  std::string binary = OUTBOX_RELAY_BINARY, mock = OUTBOX_MOCK_KAFKA_BINARY;
  cli.add_option("--events", events, "Events on the topic per round");
  cli.add_option("--batch", batch, "inbox.batch_size (and the ceiling's batch)");
  cli.add_option("--rounds", rounds, "Ceiling/sidecar pairs");
  cli.add_option("--partitions", partitions, "Partitions of the topic");
  cli.add_option("--relay-binary", binary, "The outbox-relay binary to run as the sidecar");
  CLI11_PARSE(cli, argc, argv);
  const std::string payload(static_cast<std::size_t>(payload_bytes), 'x');

  test::PgCluster cluster({{"fsync=on", "synchronous_commit=on", "full_page_writes=on"}});
  auto bootstrap_file = std::filesystem::temp_directory_path() / ("outbox-inbox-bench-" + std::to_string(::getpid()));
  test::ChildProcess broker(mock, {"--topic", kTopic, "--partitions", std::to_string(partitions), "--bootstrap-file",
                                   bootstrap_file.string()},
                            {}, bootstrap_file.string() + ".log");
  std::string brokers;
  for (auto until = WallClock::now() + 10s; brokers.empty() && WallClock::now() < until; std::this_thread::sleep_for(20ms))
    if (std::ifstream in(bootstrap_file); in) std::getline(in, brokers);
  if (brokers.empty()) {
    std::fprintf(stderr, "mock broker did not start\n");
    return 1;
  }
  {
    Producer p(brokers);
    for (long i = 0; i < events; ++i) p.send(i, payload);
    p.flush();
    if (const long held = p.held_from_start(partitions); held != events) {
      std::fprintf(stderr,
                   "the mock broker holds %ld of the %ld events from offset 0 (-1: a partition's oldest messages were "
                   "dropped, its log is bounded): use fewer --events or more --partitions\n",
                   held, events);
      return 1;
    }
  }

  std::printf("inbox_bench: %ld events x %d B payload (3 headers), %d partitions, batch %zu, %d rounds; "
              "PostgreSQL fsync and synchronous_commit on; mock broker in its own process\n",
              events, payload_bytes, partitions, batch, rounds);
  std::printf("%-6s %-52s %10s %9s %9s\n", "round", "run", "events/s", "seconds", "events");
  std::vector<double> ratios;
  const Pids pids{bench::postmaster_pid(cluster.directory() + "/data"), broker.pid()};
  const long cores = ::sysconf(_SC_NPROCESSORS_ONLN);
  std::vector<std::string> cpu_lines;
  for (int round = 1; round <= rounds; ++round) {
    const auto ceiling_url = fresh(cluster, "ceiling_" + std::to_string(round));
    const auto ceil = ceiling(ceiling_url, events, batch, payload, pids);
    quiesce(ceiling_url);
    const auto sidecar_url = fresh(cluster, "sidecar_" + std::to_string(round));
    const auto side = sidecar(binary, sidecar_url, brokers, "bench-" + std::to_string(round), events, batch,
                              bootstrap_file.string() + "-sidecar.log", pids);
    quiesce(sidecar_url);
    const auto us = [&](double s, long n) { return 1e6 * s / static_cast<double>(n); };
    char line[400];
    std::snprintf(line, sizeof line,
                  "%-6d ceiling: PostgreSQL %.1f, landing process %.1f | sidecar run: PostgreSQL %.1f, sidecar %.1f, "
                  "broker %.1f = %.1f us/event -> %ld cores allow %.0f events/s",
                  round, us(ceil.cpu.database, ceil.events), us(ceil.cpu.lander, ceil.events),
                  us(side.cpu.database, side.events), us(side.cpu.lander, side.events), us(side.cpu.broker, side.events),
                  us(side.cpu.total(), side.events), cores,
                  side.cpu.total() > 0 ? static_cast<double>(cores) * static_cast<double>(side.events) / side.cpu.total() : 0);
    cpu_lines.emplace_back(line);
    std::printf("%-6d %-52s %10.0f %9.2f %9ld\n", round, "ceiling: its COPY on prebuilt rows, one session",
                ceil.events_per_s, ceil.seconds, ceil.events);
    std::printf("%-6d %-52s %10.0f %9.2f %9ld\n", round, "inbox sidecar: mock Kafka -> inbox_events", side.events_per_s,
                side.seconds, side.events);
    ratios.push_back(side.events_per_s / ceil.events_per_s);
  }
  std::printf("CPU per event landed, from /proc (a bound: the sidecar run cannot go faster than the host's cores "
              "spend on it):\n");
  for (const auto& l : cpu_lines) std::printf("%s\n", l.c_str());
  std::sort(ratios.begin(), ratios.end());
  std::printf("ratio sidecar / ceiling: median %.2f (min %.2f, max %.2f)\n", ratios[ratios.size() / 2], ratios.front(),
              ratios.back());
  return 0;
}
