// The systemd notification protocol (sd_notify(3)): READY=1, STOPPING=1, STATUS=..., and
// WATCHDOG=1 pings. A datagram to $NOTIFY_SOCKET; without it (not under Type=notify) every
// call does nothing.
#pragma once

#include <chrono>
#include <optional>
#include <string>

namespace outbox::relay::runtime {

class SystemdNotifier {
 public:
  // Reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID from the environment.
  SystemdNotifier();
  ~SystemdNotifier();
  SystemdNotifier(const SystemdNotifier&) = delete;
  SystemdNotifier& operator=(const SystemdNotifier&) = delete;

  void notify(const std::string& state) const;

  // The watchdog timeout systemd expects pings within; nullopt when no watchdog is set.
  [[nodiscard]] std::optional<std::chrono::microseconds> watchdog() const { return watchdog_; }

 private:
  int fd_ = -1;
  std::string path_;
  std::optional<std::chrono::microseconds> watchdog_;
};

}  // namespace outbox::relay::runtime
