// A broker server for tests (nats-server; later redis-server, rabbitmq-server): the real Debian
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

  [[nodiscard]] int port() const noexcept { return port_; }
  [[nodiscard]] const std::string& directory() const noexcept { return dir_; }
  [[nodiscard]] std::string log_tail(std::size_t lines = 40) const;  // of <dir>/server.log

 private:
  void reap(std::chrono::milliseconds deadline);
  std::string label_;
  std::function<std::vector<std::string>(const std::string&, int)> argv_;
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

}  // namespace outbox::test
