// The relay's one event loop (Boost.Asio, a thread of its own): signals, the progress report,
// systemd's watchdog, the shutdown deadline and the HTTP endpoint. Nothing on it waits on the
// database or the broker: handlers read values other threads keep up to date.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "relay/runtime/systemd_notify.hpp"
#include "relay/core/logger.hpp"
#include "relay/core/relay_stats.hpp"
#include "relay/http/http_server.hpp"

namespace outbox::relay::runtime {

// Call first in main: a SIGTERM or SIGINT that arrives before the event loop exists (a slow
// start, a stop sent at once) is remembered, not the default action that kills the process,
// and the loop acts on it when it starts.
void remember_early_stop_signals();

class EventLoop {
 public:
  explicit EventLoop(Logger& logger);
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Serves `handler` on `endpoint`. Throws ConfigError when it cannot be bound.
  void serve_http(const boost::asio::ip::tcp::endpoint& endpoint, http::HttpHandler handler, std::size_t max_connections);

  // SIGTERM/SIGINT set the stop flag; `shutdown_timeout` later `on_deadline` runs on the loop
  // (it abandons what is still in flight). `stall_limit`: how long one step may keep the relay
  // thread busy before the watchdog stops pinging systemd.
  void start(const RelayStats& stats, std::chrono::milliseconds report_every, std::chrono::milliseconds stall_limit,
             std::chrono::milliseconds shutdown_timeout, std::function<void()> on_deadline);
  // The same for any worker: `heartbeat_ns` is its liveness (steady clock), `report` writes
  // one progress line every `report_every`.
  void start(const std::atomic<std::int64_t>& heartbeat_ns, std::function<void()> report,
             std::chrono::milliseconds report_every, std::chrono::milliseconds stall_limit,
             std::chrono::milliseconds shutdown_timeout, std::function<void()> on_deadline);

  [[nodiscard]] const SystemdNotifier& systemd() const { return systemd_; }
  [[nodiscard]] std::atomic<bool>& stop_flag() { return stop_; }
  [[nodiscard]] unsigned short http_port() const { return http_ ? http_->port() : 0; }
  [[nodiscard]] std::uint64_t http_refused() const { return http_ ? http_->refused_total() : 0; }

  void shutdown();

 private:
  void schedule_report(std::function<void()> report, std::chrono::milliseconds every);
  void schedule_watchdog(const std::atomic<std::int64_t>& heartbeat_ns, std::chrono::microseconds timeout,
                         std::chrono::microseconds stall_limit);

  Logger& logger_;
  SystemdNotifier systemd_;
  boost::asio::io_context io_;
  boost::asio::signal_set signals_;
  boost::asio::steady_timer report_timer_;
  boost::asio::steady_timer watchdog_timer_;
  boost::asio::steady_timer deadline_timer_;
  std::unique_ptr<http::HttpServer> http_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
};

}  // namespace outbox::relay::runtime
