#include "relay/runtime/systemd_notify.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string_view>

namespace outbox::relay::runtime {

SystemdNotifier::SystemdNotifier() {
  const char* socket_path = std::getenv("NOTIFY_SOCKET");
  if (socket_path && (socket_path[0] == '/' || socket_path[0] == '@') &&
      std::strlen(socket_path) < sizeof(sockaddr_un::sun_path)) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    path_ = socket_path;
  }
  // WATCHDOG_PID, when set, names the process the watchdog is meant for.
  const char* pid = std::getenv("WATCHDOG_PID");
  const bool for_us = !pid || std::strtol(pid, nullptr, 10) == static_cast<long>(::getpid());
  if (const char* usec = std::getenv("WATCHDOG_USEC"); usec && for_us) {
    const long long v = std::strtoll(usec, nullptr, 10);
    if (v > 0) watchdog_ = std::chrono::microseconds(v);
  }
  // Children (none today) must not inherit the protocol.
  ::unsetenv("NOTIFY_SOCKET");
  ::unsetenv("WATCHDOG_USEC");
  ::unsetenv("WATCHDOG_PID");
}

SystemdNotifier::~SystemdNotifier() {
  if (fd_ >= 0) ::close(fd_);
}

void SystemdNotifier::notify(const std::string& state) const {
  if (fd_ < 0) return;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path_.data(), path_.size());
  if (addr.sun_path[0] == '@') addr.sun_path[0] = '\0';  // abstract namespace
  const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path_.size());
  // Best effort, like sd_notify: a lost datagram is not worth failing the relay for.
  (void)::sendto(fd_, state.data(), state.size(), MSG_NOSIGNAL, reinterpret_cast<const sockaddr*>(&addr), len);
}

}  // namespace outbox::relay::runtime
