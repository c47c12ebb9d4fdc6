#include "relay/runtime/event_loop.hpp"

#include <boost/asio/post.hpp>

#include <csignal>

#include <signal.h>

namespace outbox::relay::runtime {

using std::chrono::milliseconds;

namespace {

volatile std::sig_atomic_t early_stop_signal = 0;

extern "C" void remember_signal(int signo) { early_stop_signal = signo; }

}  // namespace

void remember_early_stop_signals() {
  struct sigaction sa {};
  sa.sa_handler = remember_signal;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);
}

EventLoop::EventLoop(Logger& logger)
    : logger_(logger), signals_(io_, SIGINT, SIGTERM), report_timer_(io_), watchdog_timer_(io_), deadline_timer_(io_) {}

EventLoop::~EventLoop() { shutdown(); }

void EventLoop::serve_http(const boost::asio::ip::tcp::endpoint& endpoint, http::HttpHandler handler,
                           std::size_t max_connections) {
  http_ = std::make_unique<http::HttpServer>(io_, endpoint, std::move(handler), max_connections);
}

void EventLoop::start(const RelayStats& stats, milliseconds report_every, milliseconds stall_limit,
                      milliseconds shutdown_timeout, std::function<void()> on_deadline) {
  auto report = [this, &stats] {
    logger_.log(LogLevel::info, "progress",
                {{"published_total", std::to_string(stats.published_total.load())},
                 {"failed_transient_total", std::to_string(stats.failed_transient_total.load())},
                 {"failed_permanent_total", std::to_string(stats.failed_permanent_total.load())},
                 {"dead_lettered_total", std::to_string(stats.dead_lettered_total.load())},
                 {"batches_total", std::to_string(stats.batches_total.load())}});
  };
  start(stats.heartbeat_ns, report, report_every, stall_limit, shutdown_timeout, std::move(on_deadline));
}

void EventLoop::start(const std::atomic<std::int64_t>& heartbeat_ns, std::function<void()> report,
                      milliseconds report_every, milliseconds stall_limit, milliseconds shutdown_timeout,
                      std::function<void()> on_deadline) {
  auto on_signal = [this, shutdown_timeout, on_deadline = std::move(on_deadline)](const boost::system::error_code& ec,
                                                                                 int signo) {
    if (ec) return;
    logger_.log(LogLevel::info, "signal_received",
                {{"signal", signo == SIGTERM ? "SIGTERM" : "SIGINT"},
                 {"action", "draining"},
                 {"shutdown_timeout_ms", std::to_string(shutdown_timeout.count())}});
    stop_ = true;
    systemd_.notify("STOPPING=1");
    report_timer_.cancel();
    deadline_timer_.expires_after(shutdown_timeout);
    deadline_timer_.async_wait([this, on_deadline](const boost::system::error_code& e) {
      if (e) return;
      logger_.log(LogLevel::warn, "shutdown_deadline",
                  {{"note", "abandoning what is still in flight; those rows stay unpublished and are sent again"}});
      on_deadline();
    });
  };
  // A signal that came before the loop existed goes the same way as one that comes now.
  if (const int early = early_stop_signal; early != 0)
    boost::asio::post(io_, [on_signal, early] { on_signal({}, early); });
  else
    signals_.async_wait(on_signal);
  schedule_report(std::move(report), report_every);
  if (auto timeout = systemd_.watchdog())
    schedule_watchdog(heartbeat_ns, *timeout, std::max<std::chrono::microseconds>(*timeout, stall_limit));
  thread_ = std::thread([this] { io_.run(); });
}

void EventLoop::shutdown() {
  io_.stop();
  if (thread_.joinable()) thread_.join();
}

void EventLoop::schedule_report(std::function<void()> report, milliseconds every) {
  report_timer_.expires_after(every);
  report_timer_.async_wait([this, report = std::move(report), every](const boost::system::error_code& ec) mutable {
    if (ec || stop_) return;
    report();
    schedule_report(std::move(report), every);
  });
}

// Pings systemd's watchdog at half its timeout, but only while the relay thread shows a
// heartbeat younger than `stall_limit`: a hung relay thread stops the pings and systemd
// restarts the service. Waiting for a database or broker is not a hang.
void EventLoop::schedule_watchdog(const std::atomic<std::int64_t>& heartbeat_ns, std::chrono::microseconds timeout,
                                  std::chrono::microseconds stall_limit) {
  watchdog_timer_.expires_after(timeout / 2);
  watchdog_timer_.async_wait([this, &heartbeat_ns, timeout, stall_limit](const boost::system::error_code& ec) {
    if (ec) return;
    const auto beat = std::chrono::nanoseconds(heartbeat_ns.load());
    if (std::chrono::steady_clock::now().time_since_epoch() - beat < stall_limit) systemd_.notify("WATCHDOG=1");
    else
      logger_.log(LogLevel::error, "watchdog_missed",
                  {{"note", "the relay thread has not made progress; systemd will restart the service"}});
    schedule_watchdog(heartbeat_ns, timeout, stall_limit);
  });
}

}  // namespace outbox::relay::runtime
