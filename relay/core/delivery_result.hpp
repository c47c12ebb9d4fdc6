// The outcome of publishing one message: a value, not an exception.
#pragma once

#include <string>

namespace outbox::relay {

enum class DeliveryStatus {
  delivered,          // the broker acknowledged it (acks=all)
  transient_failure,  // broker away, timeout, possibly persisted: retry, no attempt burnt
  permanent_failure,  // this message can never succeed as it is: count an attempt
};

struct DeliveryResult {
  DeliveryStatus status = DeliveryStatus::transient_failure;
  std::string detail;

  [[nodiscard]] bool delivered() const { return status == DeliveryStatus::delivered; }
};

[[nodiscard]] const char* to_string(DeliveryStatus s);

}  // namespace outbox::relay
