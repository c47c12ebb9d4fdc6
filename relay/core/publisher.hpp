// Port: the message broker. Sends are asynchronous; await() collects every outcome.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <vector>

#include "relay/core/delivery_result.hpp"
#include "relay/core/outbox_event.hpp"

namespace outbox::relay {

class Publisher {
 public:
  virtual ~Publisher() = default;

  // Queues a message for delivery. Returns a result at once when the message was refused
  // locally (too large, queue full, producer unusable); nullopt when it was accepted and its
  // outcome will be reported by await(). Messages with equal keys are delivered in send order.
  [[nodiscard]] virtual std::optional<DeliveryResult> send(const Message& message) = 0;

  // Waits until every accepted message since the last await() has an outcome and returns
  // them in send order (refused messages are not included).
  [[nodiscard]] virtual std::vector<DeliveryResult> await() = 0;

  // Safe from any thread: a running or later await() returns within a moment, every message
  // without an acknowledgement given a transient outcome (its row stays unpublished and is
  // sent again); later sends fail the same way. For a shutdown that must not wait out the
  // broker's delivery timeout.
  virtual void abandon() = 0;
};

}  // namespace outbox::relay
