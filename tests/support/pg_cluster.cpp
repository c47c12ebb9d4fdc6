#include "tests/support/pg_cluster.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <pqxx/pqxx>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <utility>

namespace outbox::test {
namespace {

namespace fs = std::filesystem;

constexpr const char* kUnprivilegedUser = "nobody";

// "15" -> 15, "9.6" -> 9.6; anything else is not a version directory.
bool parse_version(const std::string& name, double& version) {
  if (name.empty() || name.find_first_not_of("0123456789.") != std::string::npos) return false;
  version = std::strtod(name.c_str(), nullptr);
  return true;
}

std::string find_bindir() {
  if (const char* forced = std::getenv("OUTBOX_TEST_PG_BINDIR"); forced != nullptr && *forced != '\0')
    return forced;
  std::string best;
  double best_version = -1;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/usr/lib/postgresql", ec)) {
    double version = 0;
    if (!parse_version(entry.path().filename().string(), version)) continue;
    const auto bin = entry.path() / "bin";
    if (fs::exists(bin / "initdb", ec) && fs::exists(bin / "pg_ctl", ec) && version > best_version) {
      best = bin.string();
      best_version = version;
    }
  }
  if (!best.empty()) return best;
  if (const char* path = std::getenv("PATH"); path != nullptr) {
    std::stringstream dirs(path);
    for (std::string dir; std::getline(dirs, dir, ':');)
      if (!dir.empty() && ::access((dir + "/initdb").c_str(), X_OK) == 0 && ::access((dir + "/pg_ctl").c_str(), X_OK) == 0)
        return dir;
  }
  throw std::runtime_error(
      "PgCluster: no PostgreSQL server binaries (initdb, pg_ctl) under /usr/lib/postgresql/<version>/bin or on "
      "PATH; install postgresql-15 or set OUTBOX_TEST_PG_BINDIR");
}

std::string find_runuser() {
  for (const char* candidate : {"/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser", "/bin/runuser"})
    if (::access(candidate, X_OK) == 0) return candidate;
  throw std::runtime_error(
      "PgCluster: running as root, but `runuser` (util-linux), needed to run initdb as an unprivileged user, "
      "was not found");
}

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error(std::string("PgCluster: socket(): ") + std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const int saved = errno;
    ::close(fd);
    throw std::runtime_error(std::string("PgCluster: cannot pick a free port on 127.0.0.1: ") + std::strerror(saved));
  }
  const int port = ntohs(addr.sin_port);
  ::close(fd);
  return port;
}

std::string tail_of(const std::string& path, std::size_t lines) {
  std::ifstream in(path);
  if (!in) return {};
  std::vector<std::string> all;
  for (std::string line; std::getline(in, line);) all.push_back(std::move(line));
  std::string out;
  for (std::size_t i = all.size() > lines ? all.size() - lines : 0; i < all.size(); ++i) out += all[i] + "\n";
  return out;
}

// pg_ctl hands -o to /bin/sh, so every word in it is single-quoted.
std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// A conninfo value, quoted when it would otherwise be misread.
std::string conninfo_value(const std::string& v) {
  if (!v.empty() && v.find_first_of(" \t\n'\\=") == std::string::npos) return v;
  std::string out = "'";
  for (char c : v) {
    if (c == '\'' || c == '\\') out += '\\';
    out += c;
  }
  return out + "'";
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exit status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
  return "wait status " + std::to_string(status);
}

// SIGKILLs the postmaster named in postmaster.pid (used only when pg_ctl stop failed) and
// waits up to 5 s for it to go, so removing the directory does not race its exit.
void kill_postmaster(const std::string& pidfile) {
  std::ifstream in(pidfile);
  long pid = 0;
  if (!(in >> pid) || pid <= 1) return;
  std::ifstream comm("/proc/" + std::to_string(pid) + "/comm");
  std::string name;
  if (!(comm >> name) || name.rfind("postgres", 0) != 0) return;  // gone, or the pid was reused
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, static_cast<pid_t>(pid), 0));
  if (::kill(static_cast<pid_t>(pid), SIGKILL) != 0 || pidfd < 0) {
    if (pidfd >= 0) ::close(pidfd);
    return;
  }
  pollfd p{pidfd, POLLIN, 0};
  while (::poll(&p, 1, 5000) < 0 && errno == EINTR) {
  }
  ::close(pidfd);
}

}  // namespace

PgCluster& PgCluster::shared() {
  // Destroyed by the exit-time destructors of the process that created it.
  static PgCluster cluster;
  return cluster;
}

PgCluster::PgCluster(PgClusterOptions options)
    : options_(std::move(options)), bindir_(find_bindir()), owner_pid_(static_cast<int>(::getpid())) {
  uid_t uid = 0;
  gid_t gid = 0;
  as_nobody_ = ::geteuid() == 0;
  if (as_nobody_) {
    const passwd* pw = ::getpwnam(kUnprivilegedUser);
    if (pw == nullptr)
      throw std::runtime_error(
          std::string("PgCluster: running as root; initdb refuses root, and the unprivileged user `") +
          kUnprivilegedUser + "` to run it as does not exist. Create it, or run the tests as a normal user.");
    uid = pw->pw_uid;
    gid = pw->pw_gid;
    runuser_ = find_runuser();
  }

  char tmpl[] = "/tmp/outbox-pg-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr)
    throw std::runtime_error(std::string("PgCluster: mkdtemp(/tmp/outbox-pg-XXXXXX): ") + std::strerror(errno));
  dir_ = tmpl;
  try {
    if (as_nobody_ && ::chown(dir_.c_str(), uid, gid) != 0)
      throw std::runtime_error("PgCluster: chown " + dir_ + " to " + kUnprivilegedUser + ": " + std::strerror(errno));
    port_ = free_port();
    // --locale=C: the container's locale may not be installed, and C sorts the same everywhere.
    run({bindir_ + "/initdb", "-D", dir_ + "/data", "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C",
         "--no-sync"},
        "initdb");
    start();
  } catch (...) {
    tear_down();
    throw;
  }
}

PgCluster::~PgCluster() {
  // A forked child (e.g. a test's ChildProcess that failed to exec and called exit()) must not
  // take its parent's cluster down.
  if (static_cast<int>(::getpid()) != owner_pid_) return;
  tear_down();
}

void PgCluster::tear_down() noexcept {
  if (dir_.empty()) return;
  const std::string pidfile = dir_ + "/data/postmaster.pid";
  std::error_code ec;
  if (fs::exists(pidfile, ec)) {
    try {
      stop(true);
    } catch (...) {
      kill_postmaster(pidfile);
    }
  }
  fs::remove_all(dir_, ec);
  if (ec) fs::remove_all(dir_, ec);  // a backend may still have been writing on the first pass
}

void PgCluster::run(const std::vector<std::string>& argv, const std::string& label) const {
  std::vector<std::string> full;
  if (as_nobody_) full = {runuser_, "-u", kUnprivilegedUser, "--"};
  full.insert(full.end(), argv.begin(), argv.end());
  std::string command;
  for (const auto& a : full) command += (command.empty() ? "" : " ") + a;

  const std::string out_path = dir_ + "/" + label + ".out";
  const int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (out < 0) throw std::runtime_error("PgCluster: cannot create " + out_path + ": " + std::strerror(errno));
  const int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  // Everything the child needs is prepared here: after fork() only async-signal-safe calls.
  std::vector<char*> args;
  for (auto& a : full) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const char* workdir = dir_.c_str();

  const pid_t pid = ::fork();
  if (pid < 0) {
    const int saved = errno;
    ::close(out);
    if (devnull >= 0) ::close(devnull);
    throw std::runtime_error("PgCluster: fork for `" + command + "`: " + std::strerror(saved));
  }
  if (pid == 0) {
    // The postmaster outlives us: give it a clean signal mask and none of our descriptors
    // (a librdkafka or libpq socket held by it would outlive the test that opened it).
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    if (devnull >= 0) ::dup2(devnull, STDIN_FILENO);
    ::dup2(out, STDOUT_FILENO);
    ::dup2(out, STDERR_FILENO);
    ::close_range(3, ~0U, 0);
    if (::chdir(workdir) != 0) ::_exit(126);  // initdb as nobody cannot stat root's cwd
    ::execvp(args[0], args.data());
    static const char msg[] = "PgCluster: execvp failed\n";
    [[maybe_unused]] auto ignored = ::write(STDERR_FILENO, msg, sizeof msg - 1);
    ::_exit(127);
  }
  ::close(out);
  if (devnull >= 0) ::close(devnull);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw std::runtime_error("PgCluster: waitpid for `" + command + "`: " + std::strerror(errno));
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return;

  std::ostringstream msg;
  msg << "PgCluster: `" << command << "` failed (" << describe_status(status) << ")\n--- output (" << out_path
      << "):\n"
      << tail_of(out_path, 30);
  if (std::string log = log_tail(30); !log.empty()) msg << "--- server log (" << dir_ << "/server.log):\n" << log;
  throw std::runtime_error(msg.str());
}

void PgCluster::start() {
  std::string opts = "-p " + std::to_string(port_) + " -c listen_addresses=127.0.0.1 -k " + shell_quote(dir_) +
                     " -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200";
  for (const auto& setting : options_.settings) opts += " -c " + shell_quote(setting);
  run({bindir_ + "/pg_ctl", "start", "-w", "-t", "60", "-D", dir_ + "/data", "-l", dir_ + "/server.log", "-o", opts},
      "pg_ctl-start");
}

void PgCluster::stop(bool immediate) {
  run({bindir_ + "/pg_ctl", "stop", "-w", "-t", "60", "-D", dir_ + "/data", "-m", immediate ? "immediate" : "fast"},
      "pg_ctl-stop");
}

std::string PgCluster::conninfo(const std::string& dbname, const std::string& user) const {
  return "host=127.0.0.1 port=" + std::to_string(port_) + " dbname=" + conninfo_value(dbname) +
         " user=" + conninfo_value(user);
}

void PgCluster::create_database(const std::string& name) {
  pqxx::connection conn(conninfo());
  pqxx::nontransaction tx(conn);  // CREATE DATABASE cannot run inside a transaction block
  tx.exec0("CREATE DATABASE " + tx.quote_name(name));
}

std::string PgCluster::log_tail(std::size_t lines) const { return tail_of(dir_ + "/server.log", lines); }

}  // namespace outbox::test
