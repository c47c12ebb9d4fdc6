// Capped exponential backoff: initial * 2^(n-1), never above max.
#pragma once

#include <chrono>

namespace outbox::relay {

struct BackoffPolicy {
  std::chrono::milliseconds initial{100};
  std::chrono::milliseconds max{10'000};

  // Delay before retry number `failures` (1-based); zero for failures <= 0.
  [[nodiscard]] std::chrono::milliseconds delay(int failures) const;
};

}  // namespace outbox::relay
