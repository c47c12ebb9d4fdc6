// outbox-mock-kafka: a Kafka broker for demos and tests. Runs librdkafka's mock cluster, which
// speaks the real protocol on 127.0.0.1 (kcat and any client can produce and consume), until
// SIGTERM or SIGINT. Not for production: no persistence, no TLS, bounded log per partition.
#include <CLI/CLI.hpp>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

int main(int argc, char** argv) {
  CLI::App cli{"Runs librdkafka's mock Kafka cluster on 127.0.0.1 until SIGTERM/SIGINT"};
  int brokers = 1;
  int partitions = 4;
  std::vector<std::string> topics;
  std::string bootstrap_file;
  cli.add_option("--brokers", brokers, "Number of brokers")->check(CLI::Range(1, 16));
  cli.add_option("--partitions", partitions, "Partitions of the topics given with --topic")->check(CLI::Range(1, 1000));
  cli.add_option("--topic", topics, "Create this topic up front (repeatable); others auto-create with 4 partitions");
  cli.add_option("--bootstrap-file", bootstrap_file, "Also write the bootstrap servers to this file");
  CLI11_PARSE(cli, argc, argv);

  // Block the stop signals before librdkafka starts its threads, then wait for them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err);
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  if (rk == nullptr) {
    std::cerr << "outbox-mock-kafka: " << err << "\n";
    return 1;
  }
  rd_kafka_mock_cluster_t* cluster = rd_kafka_mock_cluster_new(rk, brokers);
  if (cluster == nullptr) {
    std::cerr << "outbox-mock-kafka: cannot create the mock cluster\n";
    rd_kafka_destroy(rk);
    return 1;
  }
  for (const auto& t : topics) {
    auto e = rd_kafka_mock_topic_create(cluster, t.c_str(), partitions, 1);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) std::cerr << "outbox-mock-kafka: topic " << t << ": " << rd_kafka_err2str(e) << "\n";
  }
  const std::string bootstraps = rd_kafka_mock_cluster_bootstraps(cluster);
  std::cout << "bootstrap.servers=" << bootstraps << std::endl;
  if (!bootstrap_file.empty()) {
    // Write then rename: a reader never sees a partial file.
    const std::string tmp = bootstrap_file + ".tmp";
    std::ofstream(tmp) << bootstraps << "\n";
    std::filesystem::rename(tmp, bootstrap_file);
  }

  int signo = 0;
  sigwait(&stop_signals, &signo);
  rd_kafka_mock_cluster_destroy(cluster);
  rd_kafka_destroy(rk);
  if (!bootstrap_file.empty()) std::filesystem::remove(bootstrap_file);
  return 0;
}
