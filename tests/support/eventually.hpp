// Tests wait for an outside state with a deadline, never with a bare sleep.
#pragma once

#include <chrono>
#include <thread>

namespace outbox::test {

// Polls `done` every `every` until it holds or the deadline passes; returns its last value.
template <class Pred>
bool eventually(Pred done, std::chrono::milliseconds deadline,
                std::chrono::milliseconds every = std::chrono::milliseconds(50)) {
  for (auto until = std::chrono::steady_clock::now() + deadline; std::chrono::steady_clock::now() < until;) {
    if (done()) return true;
    std::this_thread::sleep_for(every);  // polling an outside state
  }
  return done();
}

}  // namespace outbox::test
