// A throwaway PostgreSQL cluster for tests and benchmarks: initdb into a temp dir (as the
// unprivileged `nobody` when running as root, since initdb refuses root), a free loopback
// port, removed on destruction.
#pragma once

#include <string>
#include <vector>

namespace outbox::test {

struct PgClusterOptions {
  // Extra server settings, each passed as `-c name=value`.
  std::vector<std::string> settings{"fsync=off", "synchronous_commit=off", "full_page_writes=off",
                                    "max_connections=200"};
};

class PgCluster {
 public:
  explicit PgCluster(PgClusterOptions options = {});
  ~PgCluster();
  PgCluster(const PgCluster&) = delete;
  PgCluster& operator=(const PgCluster&) = delete;

  // One cluster per process, created on first use, removed at exit.
  static PgCluster& shared();

  [[nodiscard]] int port() const { return port_; }
  [[nodiscard]] std::string conninfo(const std::string& dbname = "postgres",
                                     const std::string& user = "postgres") const;
  void create_database(const std::string& name);
  void stop(bool immediate = true);
  void start();
  [[nodiscard]] std::string log_tail() const;
  [[nodiscard]] const std::string& directory() const { return dir_; }

 private:
  void run(const std::vector<std::string>& argv, const std::string& what);

  PgClusterOptions options_;
  std::string bindir_;
  std::string dir_;
  int port_ = 0;
  bool running_ = false;
};

}  // namespace outbox::test
