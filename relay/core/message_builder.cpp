#include "relay/core/message_builder.hpp"

#include <algorithm>

#include "relay/core/errors.hpp"

namespace outbox::relay {
namespace {

bool has_control_char(const std::string& s) {
  return std::any_of(s.begin(), s.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f;
  });
}

bool topic_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '.' || c == '_' || c == '-';
}

}  // namespace

bool valid_topic_name(const std::string& topic) {
  if (topic.empty() || topic.size() > 249 || topic == "." || topic == "..") return false;
  return std::all_of(topic.begin(), topic.end(), topic_char);
}

bool internal_topic_name(const std::string& topic) { return topic.starts_with("__"); }

const std::vector<std::string>& MessageBuilder::placeholders() {
  static const std::vector<std::string> names{"aggregate_type", "event_type"};
  return names;
}

MessageBuilder::MessageBuilder(MessageOptions options) : options_(std::move(options)) {
  const std::string& t = options_.topic_template;
  std::size_t pos = 0;
  while (pos < t.size()) {
    auto open = t.find("${", pos);
    if (open == std::string::npos) {
      parts_.push_back({true, t.substr(pos)});
      break;
    }
    if (open > pos) parts_.push_back({true, t.substr(pos, open - pos)});
    auto close = t.find('}', open);
    if (close == std::string::npos)
      throw ConfigError(options_.template_setting + ": unterminated placeholder in \"" + t + "\"");
    std::string name = t.substr(open + 2, close - open - 2);
    const auto& known = placeholders();
    if (std::find(known.begin(), known.end(), name) == known.end())
      throw ConfigError(options_.template_setting + ": unknown placeholder ${" + name +
                        "} (known: ${aggregate_type}, ${event_type})");
    parts_.push_back({false, name});
    pos = close + 1;
  }
  if (parts_.empty()) throw ConfigError(options_.template_setting + ": must not be empty");
  for (const auto& p : parts_) {
    if (p.literal && !std::all_of(p.text.begin(), p.text.end(), topic_char))
      throw ConfigError(options_.template_setting + ": \"" + t + "\" contains characters not allowed in " +
                        options_.destination + " names (allowed: a-z A-Z 0-9 . _ -)");
  }
  if (!options_.row_topic_pattern.empty()) {
    try {
      row_topic_pattern_.emplace(options_.row_topic_pattern, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      throw ConfigError("kafka.row_topic_pattern: not a valid regular expression (" + std::string(e.what()) + ")");
    }
  }
  if (options_.id_header.empty() || has_control_char(options_.id_header))
    throw ConfigError("message.id_header: must be a non-empty header name without control characters");
  if (has_control_char(options_.event_type_header))
    throw ConfigError("message.event_type_header: must not contain control characters");
  reserved_.emplace_back(options_.id_header, "message.id_header");
  if (!options_.event_type_header.empty()) reserve(options_.event_type_header, "message.event_type_header");
  if (options_.kafka_names && !parts_.empty() && parts_.front().literal && internal_topic_name(parts_.front().text))
    throw ConfigError(options_.template_setting + ": \"" + t + "\" starts with \"__\", which Kafka keeps for its internal topics");
}

void MessageBuilder::reserve(const std::string& name, const std::string& setting) {
  if (name.empty() || has_control_char(name))
    throw ConfigError(setting + ": must be a non-empty header name without control characters");
  for (const auto& [taken, by] : reserved_)
    if (taken == name)
      throw ConfigError(setting + ": \"" + name + "\" is already the header of " + by +
                        " (each header the relay writes needs a name of its own)");
  reserved_.emplace_back(name, setting);
}

std::variant<Message, BadRow> MessageBuilder::build(const OutboxEvent& e) const {
  Message m;
  if (e.topic && !e.topic->empty()) {
    m.topic = *e.topic;
    if (row_topic_pattern_ && !std::regex_match(m.topic, *row_topic_pattern_))
      return BadRow{"row topic \"" + m.topic + "\" is not allowed by kafka.row_topic_pattern"};
  } else {
    for (const auto& p : parts_) {
      if (p.literal)
        m.topic += p.text;
      else if (p.text == "aggregate_type")
        m.topic += e.aggregate_type;
      else
        m.topic += e.event_type;
    }
  }
  if (!valid_topic_name(m.topic))
    return BadRow{"topic \"" + m.topic + "\" is not a valid " + options_.destination + " name (1 to 249 of a-z A-Z 0-9 . _ -)"};
  if (options_.kafka_names && internal_topic_name(m.topic))
    return BadRow{"topic \"" + m.topic + "\" starts with \"__\", which Kafka keeps for its internal topics"};
  const std::size_t own = reserved_.size();
  if (e.headers.size() + own > options_.max_headers)
    return BadRow{"row has " + std::to_string(e.headers.size()) + " headers, limit is " +
                  std::to_string(options_.max_headers - own)};
  m.key = e.aggregate_id;
  m.value = e.payload;
  m.headers.reserve(e.headers.size() + own);
  m.headers.emplace_back(options_.id_header, e.id);
  if (!options_.event_type_header.empty())
    m.headers.emplace_back(options_.event_type_header, e.event_type);
  for (const auto& [k, v] : e.headers) {
    if (k.empty() || has_control_char(k))
      return BadRow{"header key \"" + k + "\" is empty or contains control characters"};
    for (const auto& [taken, setting] : reserved_)
      if (k == taken)
        return BadRow{"header \"" + k + "\" is written by the relay (" + setting +
                      "); a row may not carry its own (rename it in the row's headers)"};
    const std::size_t size = k.size() + (v ? v->size() : 0);
    if (size > options_.max_header_bytes)
      return BadRow{"header \"" + k + "\" is " + std::to_string(size) + " bytes, limit is " +
                    std::to_string(options_.max_header_bytes)};
    m.headers.emplace_back(k, v);
  }
  return m;
}

}  // namespace outbox::relay
