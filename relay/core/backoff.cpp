#include "relay/core/backoff.hpp"

namespace outbox::relay {

std::chrono::milliseconds BackoffPolicy::delay(int failures) const {
  if (failures <= 0) return std::chrono::milliseconds{0};
  auto d = initial;
  for (int i = 1; i < failures && d < max; ++i) d *= 2;
  return d < max ? d : max;
}

}  // namespace outbox::relay
