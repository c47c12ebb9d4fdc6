#include "relay/runtime/crash_report.hpp"

#include <execinfo.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cstring>

namespace outbox::relay::runtime {
namespace {

constexpr int kSignals[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};

void put(const char* s) {
  const auto n = std::strlen(s);
  if (::write(STDERR_FILENO, s, n) < 0) return;
}

// Only async-signal-safe calls below: write, backtrace_symbols_fd (glibc loads libgcc's
// unwinder on the first backtrace call, done once at install), sigaction and raise.
void on_fatal(int sig) {
  put("fatal signal ");
  put(sigabbrev_np(sig) != nullptr ? sigabbrev_np(sig) : "?");
  char name[32] = "?";
  (void)pthread_getname_np(pthread_self(), name, sizeof name);
  put(" in thread ");
  put(name);
  put("; backtrace:\n");
  void* frames[64];
  const int n = backtrace(frames, 64);
  backtrace_symbols_fd(frames, n, STDERR_FILENO);
  struct sigaction dfl{};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(sig, &dfl, nullptr);
  raise(sig);
}

}  // namespace

void install_crash_report() {
  void* warm[1];
  (void)backtrace(warm, 1);
  // A stack of its own, so a stack overflow on the main thread still reports.
  static char alt[64 * 1024];
  stack_t ss{};
  ss.ss_sp = alt;
  ss.ss_size = sizeof alt;
  (void)sigaltstack(&ss, nullptr);
  struct sigaction sa{};
  sa.sa_handler = on_fatal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_ONSTACK | SA_RESETHAND;
  for (int s : kSignals) sigaction(s, &sa, nullptr);
}

}  // namespace outbox::relay::runtime
