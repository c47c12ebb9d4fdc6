// Turns an outbox row into a Kafka message shaped like Debezium's outbox event router:
// topic from a template (per-row topic wins), key = aggregate id, value = payload unchanged,
// header `id` = event id, the event type and the row's own headers as headers.
#pragma once

#include <optional>
#include <regex>
#include <string>
#include <variant>
#include <vector>

#include "relay/core/outbox_event.hpp"

namespace outbox::relay {

struct MessageOptions {
  std::string topic_template = "outbox.event.${aggregate_type}";
  std::string id_header = "id";
  std::string event_type_header = "eventType";  // empty: no event type header
  // A row's own topic must match this (ECMAScript regex, whole name); empty: any valid name.
  std::string row_topic_pattern;
  std::size_t max_headers = 64;
  std::size_t max_header_bytes = 16 * 1024;  // key + value, per header
};

// A row that can never become a valid message; the text says why.
struct BadRow {
  std::string reason;
};

class MessageBuilder {
 public:
  // Throws ConfigError naming the key when the template has an unknown placeholder or
  // produces names Kafka rejects.
  explicit MessageBuilder(MessageOptions options);

  [[nodiscard]] std::variant<Message, BadRow> build(const OutboxEvent& event) const;

  // The placeholders a topic template may use.
  static const std::vector<std::string>& placeholders();

 private:
  struct Part {
    bool literal;
    std::string text;  // literal text or placeholder name
  };
  MessageOptions options_;
  std::vector<Part> parts_;
  std::optional<std::regex> row_topic_pattern_;
};

// Kafka's rule for topic names: 1..249 of [a-zA-Z0-9._-], not "." or "..".
[[nodiscard]] bool valid_topic_name(const std::string& topic);

}  // namespace outbox::relay
