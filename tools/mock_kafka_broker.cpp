// outbox-mock-kafka: "the Kafka broker" for the demo, end-to-end tests and benchmarks. Runs
// librdkafka's mock cluster, which speaks the real protocol on 127.0.0.1 (kcat and any client
// can produce and consume), until SIGTERM or SIGINT. No persistence, no TLS/SASL, and each
// partition keeps only a bounded log: for tests, never for production.
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <pthread.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace {

constexpr int kExitUsage = 2;
constexpr int kExitFailure = 1;

constexpr const char* kUsage =
    "usage: outbox-mock-kafka [--brokers N] [--partitions N] [--topic NAME]... [--bootstrap-file PATH]\n"
    "\n"
    "Runs librdkafka's mock Kafka cluster on 127.0.0.1 until SIGTERM or SIGINT, then exits 0.\n"
    "Prints one line, bootstrap.servers=<host:port,...>, to stdout once it is ready.\n"
    "\n"
    "  --brokers N            brokers in the cluster (default 1, at most 32)\n"
    "  --partitions N         partitions of each --topic (default 4; other topics auto-create\n"
    "                         with 4 partitions on first use)\n"
    "  --topic NAME           create this topic up front (repeatable)\n"
    "  --bootstrap-file PATH  also write the bootstrap list to PATH (atomically: written to a\n"
    "                         temporary file, then renamed); removed again on exit\n"
    "  -h, --help             show this help\n";

struct Options {
  int brokers = 1;
  int partitions = 4;
  std::vector<std::string> topics;
  std::string bootstrap_file;
};

[[noreturn]] void usage_error(const std::string& message) {
  std::cerr << "outbox-mock-kafka: " << message << "\n" << kUsage;
  std::exit(kExitUsage);
}

int parse_int(const std::string& flag, const std::string& text, int min, int max) {
  char* end = nullptr;
  errno = 0;
  const long value = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno != 0 || value < min || value > max)
    usage_error(flag + ": expected an integer from " + std::to_string(min) + " to " + std::to_string(max) +
                ", got '" + text + "'");
  return static_cast<int>(value);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      std::cout << kUsage;
      std::exit(0);
    }
    // Both "--flag value" and "--flag=value".
    std::optional<std::string> inline_value;
    if (const auto eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      inline_value = arg.substr(eq + 1);
      arg.resize(eq);
    }
    auto value = [&]() -> std::string {
      if (inline_value) return *inline_value;
      if (i + 1 >= argc) usage_error(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--brokers") {
      o.brokers = parse_int(arg, value(), 1, 32);
    } else if (arg == "--partitions") {
      o.partitions = parse_int(arg, value(), 1, 10000);
    } else if (arg == "--topic") {
      std::string topic = value();
      if (topic.empty()) usage_error("--topic: empty topic name");
      o.topics.push_back(std::move(topic));
    } else if (arg == "--bootstrap-file") {
      o.bootstrap_file = value();
      if (o.bootstrap_file.empty()) usage_error("--bootstrap-file: empty path");
    } else {
      usage_error("unknown argument '" + arg + "'");
    }
  }
  return o;
}

// Writes `content` to a temporary file next to `path`, then renames it over `path`, so a
// reader polling for the file sees either nothing or the whole list.
bool write_atomically(const std::string& path, const std::string& content) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  std::FILE* f = std::fopen(tmp.c_str(), "w");
  if (f == nullptr) {
    std::cerr << "outbox-mock-kafka: cannot write " << tmp << ": " << std::strerror(errno) << "\n";
    return false;
  }
  const bool written = std::fputs(content.c_str(), f) >= 0;
  if (std::fclose(f) != 0 || !written || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::cerr << "outbox-mock-kafka: cannot write " << path << ": " << std::strerror(errno) << "\n";
    std::remove(tmp.c_str());
    return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  const Options options = parse(argc, argv);

  // Block the stop signals before librdkafka starts its threads (they inherit the mask), so
  // the only place they are taken is the sigwait below.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  if (const int rc = pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr); rc != 0) {
    std::cerr << "outbox-mock-kafka: pthread_sigmask: " << std::strerror(rc) << "\n";
    return kExitFailure;
  }

  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  // The handle that hosts the cluster has no brokers of its own: errors only, no warning.
  // The mock brokers' sockets take socket.nagle.disable from the handle that hosts them. Real
  // Kafka brokers set TCP_NODELAY; without it each acknowledgement waits ~40 ms for a delayed ACK.
  if (rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err) != RD_KAFKA_CONF_OK ||
      rd_kafka_conf_set(conf, "socket.nagle.disable", "true", err, sizeof err) != RD_KAFKA_CONF_OK) {
    std::cerr << "outbox-mock-kafka: " << err << "\n";
    rd_kafka_conf_destroy(conf);
    return kExitFailure;
  }
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  if (rk == nullptr) {
    std::cerr << "outbox-mock-kafka: rd_kafka_new: " << err << "\n";
    rd_kafka_conf_destroy(conf);
    return kExitFailure;
  }
  rd_kafka_mock_cluster_t* cluster = rd_kafka_mock_cluster_new(rk, options.brokers);
  if (cluster == nullptr) {
    std::cerr << "outbox-mock-kafka: cannot create a mock cluster of " << options.brokers << " broker(s)\n";
    rd_kafka_destroy(rk);
    return kExitFailure;
  }
  auto shut_down = [&](int code) {
    rd_kafka_mock_cluster_destroy(cluster);
    rd_kafka_destroy(rk);
    return code;
  };

  for (const auto& topic : options.topics) {
    const auto e = rd_kafka_mock_topic_create(cluster, topic.c_str(), options.partitions, 1);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
      std::cerr << "outbox-mock-kafka: create topic " << topic << ": " << rd_kafka_err2str(e) << "\n";
      return shut_down(kExitFailure);
    }
  }

  const std::string bootstraps = rd_kafka_mock_cluster_bootstraps(cluster);
  if (!options.bootstrap_file.empty() && !write_atomically(options.bootstrap_file, bootstraps + "\n"))
    return shut_down(kExitFailure);
  // The file is written first, so whoever saw this line can also read the file.
  std::cout << "bootstrap.servers=" << bootstraps << std::endl;
  std::cerr << "outbox-mock-kafka: ready brokers=" << options.brokers << " topics=" << options.topics.size()
            << " bootstrap.servers=" << bootstraps << "\n";

  int signo = 0;
  while (sigwait(&stop_signals, &signo) != 0) {
  }
  std::cerr << "outbox-mock-kafka: got " << (signo == SIGTERM ? "SIGTERM" : "SIGINT") << ", stopping\n";
  if (!options.bootstrap_file.empty()) std::remove(options.bootstrap_file.c_str());
  return shut_down(0);
}
