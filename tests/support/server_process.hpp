// A broker server for tests (nats-server, rabbitmq-server; later redis-server): the real Debian
// binary in the foreground, as `nobody` when the tests run as root, on a free loopback port,
// with its data and log in a mkdtemp directory removed on destruction. It can be SIGKILLed and
// started again on the same port and data, for the drills.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace outbox::test {

// A free TCP port on 127.0.0.1 (bound, read, released: a race only with another picker).
[[nodiscard]] int pick_loopback_port();
// Something accepts TCP connections on 127.0.0.1:port.
[[nodiscard]] bool loopback_accepts(int port);

class ServerProcess {
 public:
  // `label` names the temp dir (/tmp/outbox-<label>-XXXXXX). `argv` is built from the dir and
  // the port, so a restart reuses both. Nothing is started yet.
  ServerProcess(std::string label, std::function<std::vector<std::string>(const std::string& dir, int port)> argv);
  ~ServerProcess();  // SIGKILL if running, then the directory goes. Never throws.
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  // Starts it and waits until the port accepts connections; throws with the log tail if it
  // exits first or `deadline` passes.
  void start(std::chrono::milliseconds deadline = std::chrono::seconds(30));
  void kill();                                                 // SIGKILL, reaped
  void stop(std::chrono::milliseconds deadline = std::chrono::seconds(20));  // SIGTERM, then SIGKILL
  [[nodiscard]] bool running() const noexcept { return pid_ > 0; }
  // The server's whole environment (NAME=value each), built like argv; unset: the test's own.
  void environment(std::function<std::vector<std::string>(const std::string& dir, int port)> env) { env_ = std::move(env); }

  [[nodiscard]] int port() const noexcept { return port_; }
  [[nodiscard]] int pid() const noexcept { return pid_; }
  [[nodiscard]] const std::string& directory() const noexcept { return dir_; }
  [[nodiscard]] std::string log_tail(std::size_t lines = 40) const;  // of <dir>/server.log

 private:
  void reap(std::chrono::milliseconds deadline);
  std::string label_;
  std::function<std::vector<std::string>(const std::string&, int)> argv_;
  std::function<std::vector<std::string>(const std::string&, int)> env_;
  std::string dir_;
  int port_ = 0;
  int pid_ = -1;
  int owner_pid_ = 0;
  unsigned uid_ = 0, gid_ = 0;
  bool drop_privileges_ = false;
};

// nats-server with JetStream: -js, store in <dir>/js.
class NatsServer {
 public:
  NatsServer();
  [[nodiscard]] std::string url() const { return "nats://127.0.0.1:" + std::to_string(server_.port()); }
  ServerProcess& process() { return server_; }

 private:
  ServerProcess server_;
};

// rabbitmq-server 3.10 as its own node: name, AMQP, distribution and epmd ports, HOME (the
// Erlang cookie), database and logs all under the temp dir, so nothing of a system RabbitMQ
// is touched. Its epmd runs in the foreground as a second process of the harness (the one
// rabbitmq-server would start daemonizes and outlives it). Guest/guest on 127.0.0.1, vhost /.
// Restarted on the same ports and data, durable queues and persistent messages survive.
class RabbitServer {
 public:
  RabbitServer();
  [[nodiscard]] int port() const { return server_.port(); }
  [[nodiscard]] std::string url() const { return "amqp://guest:guest@127.0.0.1:" + std::to_string(server_.port()) + "/"; }
  ServerProcess& process() { return server_; }

 private:
  int dist_port_;
  ServerProcess epmd_;
  ServerProcess server_;
};

}  // namespace outbox::test
