// Turns an outbox row into a message shaped like Debezium's outbox event router: topic from a
// template (per-row topic wins), key = aggregate id, value = payload unchanged (NULL: a null
// value), header `id` = event id, the event type and the row's own headers as headers. Or, with
// MessageFormat::cloudevents, a CloudEvents 1.0 event in binary content mode: the same key and
// value, the context attributes as headers under the binding's prefix (ce_id, ce_type,
// ce_source, ce_specversion, ce_subject on Kafka; ce-... on NATS) and the data's content type
// in content-type. The headers the relay writes are its own: a row header of the same name is
// refused.
#pragma once

#include <optional>
#include <regex>
#include <string>
#include <variant>
#include <vector>

#include "relay/core/outbox_event.hpp"

namespace outbox::relay {

enum class MessageFormat { debezium, cloudevents };

struct MessageOptions {
  std::string topic_template = "outbox.event.${aggregate_type}";
  MessageFormat format = MessageFormat::debezium;
  // CloudEvents binary mode: the binding's attribute prefix ("ce_" Kafka, "ce-" NATS),
  // whether attribute values are percent-encoded (the NATS binding follows HTTP's rule), the
  // source (a URI-reference template; placeholder values are percent-encoded) and the data's
  // content type when the row has no content-type header of its own.
  std::string ce_prefix = "ce_";
  bool ce_percent_encode = false;
  std::string ce_source_template = "/outbox/${aggregate_type}";
  std::string content_type = "application/json";
  std::string id_header = "id";
  std::string event_type_header = "eventType";  // empty: no event type header
  // A row's own topic must match this (ECMAScript regex, whole name); empty: any valid name.
  std::string row_topic_pattern;
  // The broker's words in errors: the template's setting and what a topic is called there;
  // kafka_names also refuses Kafka's internal "__" names.
  std::string template_setting = "kafka.topic_template";
  std::string destination = "Kafka topic";
  bool kafka_names = true;
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

  // Header names the relay writes on every message (id, event type, and what reserve() adds),
  // with the setting that names each: a row may not carry a header of these names.
  [[nodiscard]] const std::vector<std::pair<std::string, std::string>>& reserved_headers() const { return reserved_; }
  // One more header the relay writes after the build (the publisher header), named by
  // `setting`. Throws ConfigError when it is empty, has control characters, or is taken.
  void reserve(const std::string& name, const std::string& setting);

 private:
  struct Part {
    bool literal;
    std::string text;  // literal text or placeholder name
  };
  static std::vector<Part> parse(const std::string& template_text, const std::string& setting);
  [[nodiscard]] std::optional<BadRow> cloudevents_headers(const OutboxEvent& e, Message& m) const;
  [[nodiscard]] std::optional<BadRow> check_row_header(const std::string& name) const;

  MessageOptions options_;
  std::vector<Part> parts_;
  std::vector<Part> source_parts_;  // CloudEvents: the source template
  std::optional<std::regex> row_topic_pattern_;
  std::vector<std::pair<std::string, std::string>> reserved_;  // (header name, setting)
};

// The values of a CloudEvents binary-mode message's attributes, percent-encoded as HTTP's
// binding says (space, '"', '%' and every byte outside printable ASCII).
[[nodiscard]] std::string percent_encode_attribute(const std::string& value);

// Kafka's rule for topic names: 1..249 of [a-zA-Z0-9._-], not "." or "..".
[[nodiscard]] bool valid_topic_name(const std::string& topic);
// Names Kafka keeps for its own topics (__consumer_offsets, __transaction_state...).
[[nodiscard]] bool internal_topic_name(const std::string& topic);

}  // namespace outbox::relay
