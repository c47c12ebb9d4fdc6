#include "tests/support/server_process.hpp"

#include "tests/support/eventually.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <thread>

namespace outbox::test {
namespace {

constexpr const char* kUnprivilegedUser = "nobody";

std::string find_in_path(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  if (const char* path = std::getenv("PATH"); path != nullptr) {
    std::string dirs = path;
    for (std::size_t at = 0; at <= dirs.size();) {
      const auto colon = std::min(dirs.find(':', at), dirs.size());
      const auto candidate = dirs.substr(at, colon - at) + "/" + name;
      if (colon > at && ::access(candidate.c_str(), X_OK) == 0) return candidate;
      at = colon + 1;
    }
  }
  for (const char* dir : {"/usr/sbin/", "/usr/bin/", "/sbin/"})
    if (::access((std::string(dir) + name).c_str(), X_OK) == 0) return std::string(dir) + name;
  throw std::runtime_error("ServerProcess: `" + name + "` is not installed (not on PATH, /usr/sbin or /usr/bin); "
                           "scripts/install-deps.sh installs it");
}

}  // namespace

bool loopback_accepts(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

int pick_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error(std::string("socket(): ") + std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const int saved = errno;
    ::close(fd);
    throw std::runtime_error(std::string("cannot pick a free port on 127.0.0.1: ") + std::strerror(saved));
  }
  const int port = ntohs(addr.sin_port);
  ::close(fd);
  return port;
}

ServerProcess::ServerProcess(std::string label,
                             std::function<std::vector<std::string>(const std::string& dir, int port)> argv)
    : label_(std::move(label)), argv_(std::move(argv)), owner_pid_(static_cast<int>(::getpid())) {
  drop_privileges_ = ::geteuid() == 0;
  if (drop_privileges_) {
    const passwd* pw = ::getpwnam(kUnprivilegedUser);
    if (pw == nullptr)
      throw std::runtime_error(std::string("ServerProcess: running as root, and the unprivileged user `") +
                               kUnprivilegedUser + "` to run " + label_ + " as does not exist");
    uid_ = pw->pw_uid;
    gid_ = pw->pw_gid;
  }
  std::string tmpl = "/tmp/outbox-" + label_ + "-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr)
    throw std::runtime_error("ServerProcess: mkdtemp(" + tmpl + "): " + std::strerror(errno));
  dir_ = tmpl;
  if (drop_privileges_ && ::chown(dir_.c_str(), uid_, gid_) != 0) {
    const int saved = errno;
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
    throw std::runtime_error("ServerProcess: chown " + dir_ + ": " + std::strerror(saved));
  }
  port_ = pick_loopback_port();
}

ServerProcess::~ServerProcess() {
  if (static_cast<int>(::getpid()) != owner_pid_) return;  // a forked child leaves it alone
  if (pid_ > 0) kill();
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

void ServerProcess::start(std::chrono::milliseconds deadline) {
  if (pid_ > 0) throw std::runtime_error("ServerProcess: " + label_ + " is already running");
  auto words = argv_(dir_, port_);
  words.at(0) = find_in_path(words.at(0));
  std::vector<char*> args;
  for (auto& w : words) args.push_back(w.data());
  args.push_back(nullptr);
  std::vector<std::string> env_words;
  if (env_) env_words = env_(dir_, port_);
  std::vector<char*> env;
  for (auto& w : env_words) env.push_back(w.data());
  env.push_back(nullptr);
  char** const envp = env_ ? env.data() : environ;
  const std::string log = dir_ + "/server.log";
  const int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (out < 0) throw std::runtime_error("ServerProcess: cannot open " + log + ": " + std::strerror(errno));
  if (drop_privileges_) (void)::fchown(out, uid_, gid_);
  const int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  const char* workdir = dir_.c_str();
  const bool drop = drop_privileges_;
  const uid_t uid = uid_;
  const gid_t gid = gid_;
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(out);
    if (devnull >= 0) ::close(devnull);
    throw std::runtime_error(std::string("ServerProcess: fork: ") + std::strerror(errno));
  }
  if (pid == 0) {  // async-signal-safe calls only
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    if (devnull >= 0) ::dup2(devnull, STDIN_FILENO);
    ::dup2(out, STDOUT_FILENO);
    ::dup2(out, STDERR_FILENO);
    ::close_range(3, ~0U, 0);
    ::setpgid(0, 0);  // its own group: a script's children (rabbitmq-server's beam) go with it
    if (::chdir(workdir) != 0) ::_exit(126);
    if (drop && (::setgroups(0, nullptr) != 0 || ::setgid(gid) != 0 || ::setuid(uid) != 0)) ::_exit(125);
    ::execve(args[0], args.data(), envp);
    ::_exit(127);
  }
  ::close(out);
  if (devnull >= 0) ::close(devnull);
  ::setpgid(pid, pid);  // as the child does, whichever runs first
  pid_ = pid;
  for (const auto until = std::chrono::steady_clock::now() + deadline;;) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      throw std::runtime_error("ServerProcess: " + words[0] + " exited at start (wait status " +
                               std::to_string(status) + ")\n--- " + log + ":\n" + log_tail(30));
    }
    if (loopback_accepts(port_)) return;
    if (std::chrono::steady_clock::now() >= until) {
      kill();
      throw std::runtime_error("ServerProcess: " + words[0] + " did not accept on 127.0.0.1:" + std::to_string(port_) +
                               " within " + std::to_string(deadline.count()) + " ms\n--- " + log + ":\n" + log_tail(30));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

void ServerProcess::reap(std::chrono::milliseconds deadline) {
  for (const auto until = std::chrono::steady_clock::now() + deadline; pid_ > 0;) {
    int status = 0;
    const auto r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_ || (r < 0 && errno == ECHILD)) {
      pid_ = -1;
      return;
    }
    if (std::chrono::steady_clock::now() >= until) {
      ::kill(-pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
      pid_ = -1;
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

void ServerProcess::kill() {
  if (pid_ <= 0) return;
  ::kill(-pid_, SIGKILL);
  reap(std::chrono::seconds(10));
  // The group's other members (a script's server) die a moment later: until the port is
  // closed, a restart could find the old server still answering.
  (void)eventually([&] { return !loopback_accepts(port_); }, std::chrono::seconds(10), std::chrono::milliseconds(10));
}

void ServerProcess::stop(std::chrono::milliseconds deadline) {
  if (pid_ <= 0) return;
  ::kill(-pid_, SIGTERM);
  reap(deadline);
}

std::string ServerProcess::log_tail(std::size_t lines) const {
  std::ifstream in(dir_ + "/server.log");
  std::vector<std::string> all;
  for (std::string line; std::getline(in, line);) all.push_back(std::move(line));
  std::string out;
  for (std::size_t i = all.size() > lines ? all.size() - lines : 0; i < all.size(); ++i) out += all[i] + "\n";
  return out;
}

NatsServer::NatsServer()
    : server_("nats", [](const std::string& dir, int port) {
        return std::vector<std::string>{"nats-server", "-js", "-a", "127.0.0.1", "-p", std::to_string(port), "-sd",
                                        dir + "/js"};
      }) {
  server_.start();
}

namespace {
const char* epmd_binary() {
  // Debian ships it inside the Erlang runtime's versioned directory; erts-* is one per release.
  static const std::string path = [] {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator("/usr/lib/erlang", ec))
      if (e.path().filename().string().starts_with("erts-") && ::access((e.path() / "bin/epmd").c_str(), X_OK) == 0)
        return (e.path() / "bin/epmd").string();
    throw std::runtime_error("RabbitServer: no /usr/lib/erlang/erts-*/bin/epmd (is rabbitmq-server installed? "
                             "scripts/install-deps.sh installs it)");
  }();
  return path.c_str();
}
}  // namespace

RabbitServer::RabbitServer()
    : dist_port_(pick_loopback_port()),
      epmd_("epmd", [](const std::string&, int port) {
        return std::vector<std::string>{epmd_binary(), "-port", std::to_string(port), "-address", "127.0.0.1"};
      }),
      server_("rabbitmq", [](const std::string&, int) {
        return std::vector<std::string>{"/usr/lib/rabbitmq/bin/rabbitmq-server"};
      }) {
  const int epmd_port = epmd_.port();
  const int dist_port = dist_port_;
  server_.environment([epmd_port, dist_port](const std::string& dir, int port) {
    return std::vector<std::string>{
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME=" + dir,
        "LANG=C.UTF-8",
        "RABBITMQ_NODENAME=outbox" + std::to_string(port) + "@localhost",
        "RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
        "RABBITMQ_NODE_PORT=" + std::to_string(port),
        "RABBITMQ_DIST_PORT=" + std::to_string(dist_port),
        "ERL_EPMD_PORT=" + std::to_string(epmd_port),
        "ERL_EPMD_ADDRESS=127.0.0.1",
        "RABBITMQ_MNESIA_BASE=" + dir + "/mnesia",
        "RABBITMQ_LOG_BASE=" + dir + "/log",
        "RABBITMQ_CONFIG_FILE=" + dir + "/rabbitmq",
        "RABBITMQ_ADVANCED_CONFIG_FILE=" + dir + "/advanced.config",
        "RABBITMQ_ENABLED_PLUGINS_FILE=" + dir + "/enabled_plugins",
        "RABBITMQ_PID_FILE=" + dir + "/rabbitmq.pid",
    };
  });
  epmd_.start();
  server_.start(std::chrono::seconds(90));  // ~5 s alone; far more on a loaded 2-core machine
}

}  // namespace outbox::test
