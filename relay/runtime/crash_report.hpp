#pragma once

namespace outbox::relay::runtime {

// On SIGSEGV, SIGBUS, SIGILL, SIGFPE or SIGABRT: writes the signal, the faulting thread's name
// and a backtrace to stderr, then dies of the same signal (the exit status, and the core dump
// where enabled, are what they would have been). Frames of the binary print as offsets; resolve
// them with `addr2line -e outbox-relay -f -C`. Installed once, first thing in main.
void install_crash_report();

}  // namespace outbox::relay::runtime
