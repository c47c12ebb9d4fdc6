#include "tests/support/pg_cluster.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <netinet/in.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <pqxx/pqxx>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>

namespace outbox::test {
namespace {

std::string find_bindir() {
  std::vector<std::filesystem::path> found;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/usr/lib/postgresql", ec))
    if (std::filesystem::exists(e.path() / "bin" / "initdb")) found.push_back(e.path() / "bin");
  if (found.empty()) throw std::runtime_error("PostgreSQL server binaries not found under /usr/lib/postgresql");
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) {
    return std::stoi(a.parent_path().filename().string()) < std::stoi(b.parent_path().filename().string());
  });
  return found.back().string();
}

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    if (fd >= 0) ::close(fd);
    throw std::runtime_error("cannot find a free port");
  }
  int port = ntohs(addr.sin_port);
  ::close(fd);
  return port;
}

std::string tail_of(const std::string& path, std::size_t lines = 30) {
  std::ifstream in(path);
  std::vector<std::string> all;
  for (std::string l; std::getline(in, l);) all.push_back(l);
  std::string out;
  for (std::size_t i = all.size() > lines ? all.size() - lines : 0; i < all.size(); ++i) out += all[i] + "\n";
  return out;
}

}  // namespace

PgCluster& PgCluster::shared() {
  static PgCluster cluster;
  return cluster;
}

PgCluster::PgCluster(PgClusterOptions options) : options_(std::move(options)), bindir_(find_bindir()) {
  char tmpl[] = "/tmp/outbox-pg.XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
  dir_ = tmpl;
  if (::geteuid() == 0) {
    passwd* pw = ::getpwnam("nobody");
    if (pw == nullptr) throw std::runtime_error("running as root needs the user `nobody` to own the test cluster");
    if (::chown(dir_.c_str(), pw->pw_uid, pw->pw_gid) != 0)
      throw std::runtime_error("cannot chown " + dir_ + " to nobody");
    ::chmod(dir_.c_str(), 0755);
  }
  port_ = free_port();
  run({bindir_ + "/initdb", "-D", dir_ + "/data", "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"},
      "initdb");
  start();
}

PgCluster::~PgCluster() {
  try {
    if (running_) stop(true);
  } catch (...) {
  }
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

void PgCluster::run(const std::vector<std::string>& argv, const std::string& what) {
  const std::string out = dir_ + "/" + what + ".out";
  std::vector<std::string> full;
  if (::geteuid() == 0) full = {"runuser", "-u", "nobody", "--"};
  full.insert(full.end(), argv.begin(), argv.end());
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    std::vector<char*> args;
    for (auto& a : full) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::ostringstream msg;
    msg << what << " failed (status " << status << "): ";
    for (const auto& a : full) msg << a << " ";
    msg << "\n" << tail_of(out) << tail_of(dir_ + "/server.log");
    throw std::runtime_error(msg.str());
  }
}

void PgCluster::start() {
  std::string opts = "-p " + std::to_string(port_) + " -c listen_addresses=127.0.0.1 -k " + dir_;
  for (const auto& s : options_.settings) opts += " -c " + s;
  run({bindir_ + "/pg_ctl", "-w", "-t", "60", "-D", dir_ + "/data", "-l", dir_ + "/server.log", "-o", opts, "start"},
      "pg_ctl-start");
  running_ = true;
}

void PgCluster::stop(bool immediate) {
  run({bindir_ + "/pg_ctl", "-w", "-D", dir_ + "/data", "-m", immediate ? "immediate" : "fast", "stop"},
      "pg_ctl-stop");
  running_ = false;
}

std::string PgCluster::conninfo(const std::string& dbname, const std::string& user) const {
  return "host=127.0.0.1 port=" + std::to_string(port_) + " dbname=" + dbname + " user=" + user;
}

void PgCluster::create_database(const std::string& name) {
  pqxx::connection c(conninfo());
  pqxx::nontransaction tx(c);
  tx.exec("CREATE DATABASE " + tx.quote_name(name));
}

std::string PgCluster::log_tail() const { return tail_of(dir_ + "/server.log"); }

}  // namespace outbox::test
