// Capped exponential backoff, shared by the relay and the library: initial * 2^(n-1), never
// above max, optionally spread by jitter so instances that failed together do not retry in
// lockstep.
#pragma once

#include <algorithm>
#include <chrono>

namespace outbox::common {

struct BackoffPolicy {
  std::chrono::milliseconds initial{100};
  std::chrono::milliseconds max{10'000};
  // Part of each delay drawn at random: the delay lies in [d * (1 - jitter), d]. 0: exact.
  double jitter = 0.0;

  // Delay before retry number `failures` (1-based); zero for failures <= 0. `unit` in [0, 1)
  // is the caller's random draw (ignored without jitter), so tests stay deterministic.
  [[nodiscard]] std::chrono::milliseconds delay(int failures, double unit = 1.0) const {
    if (failures <= 0) return std::chrono::milliseconds{0};
    auto d = initial;
    for (int i = 1; i < failures && d < max; ++i) d *= 2;
    d = std::min(d, max);
    if (jitter <= 0) return d;
    const double j = std::clamp(jitter, 0.0, 1.0);
    const double u = std::clamp(unit, 0.0, 1.0);
    return std::chrono::milliseconds(static_cast<long long>(static_cast<double>(d.count()) * (1.0 - j * (1.0 - u))));
  }
};

}  // namespace outbox::common
