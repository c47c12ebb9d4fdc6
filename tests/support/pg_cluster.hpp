// A throwaway PostgreSQL cluster for tests and benchmarks: initdb into a mkdtemp dir (as
// `nobody` through runuser when running as root, since initdb refuses root), a free loopback
// port, tuned for speed not durability; stopped and removed on destruction.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace outbox::test {

struct PgClusterOptions {
  // Extra server settings, each passed as `-c name=value` after the built-in ones
  // (fsync=off, synchronous_commit=off, full_page_writes=off, max_connections=200), so a
  // setting given here overrides a built-in one.
  std::vector<std::string> settings;
};

class PgCluster {
 public:
  // initdb + start; throws std::runtime_error (command, exit status, output tail) on failure
  // and leaves nothing behind.
  explicit PgCluster(PgClusterOptions options = {});
  // Stops the server (immediate) and removes the whole temp dir. Never throws.
  ~PgCluster();
  PgCluster(const PgCluster&) = delete;
  PgCluster& operator=(const PgCluster&) = delete;
  PgCluster(PgCluster&&) = delete;
  PgCluster& operator=(PgCluster&&) = delete;

  // One cluster per test process, created on first use, removed when the process exits
  // normally (a forked child that exits does not tear it down).
  static PgCluster& shared();

  [[nodiscard]] int port() const noexcept { return port_; }
  // key=value conninfo: host=127.0.0.1 port=<port> dbname=<dbname> user=<user>.
  [[nodiscard]] std::string conninfo(const std::string& dbname = "postgres",
                                     const std::string& user = "postgres") const;
  void create_database(const std::string& name);

  // Immediate stop skips the shutdown checkpoint, like a crash: with the default
  // synchronous_commit=off, commits from the last ~200 ms (wal_writer_delay) may be lost.
  // A session that must survive it sets synchronous_commit=on. Fast stop loses nothing.
  void stop(bool immediate = true);
  // Starts the same data dir on the same port again.
  void start();

  // Last lines of the server log, for failure messages.
  [[nodiscard]] std::string log_tail(std::size_t lines = 40) const;
  [[nodiscard]] const std::string& directory() const noexcept { return dir_; }

 private:
  // Runs argv (as `nobody` when root), output captured to <dir>/<label>.out; throws with the
  // command, exit status, captured output and server log tail unless it exits 0.
  void run(const std::vector<std::string>& argv, const std::string& label) const;
  // Best effort: stop the server, SIGKILL it if that failed, remove the temp dir.
  void tear_down() noexcept;

  PgClusterOptions options_;
  std::string bindir_;
  std::string dir_;
  int port_ = 0;
  int owner_pid_ = 0;  // the process that created the cluster; only it tears it down
  bool as_nobody_ = false;
  std::string runuser_;
};

}  // namespace outbox::test
