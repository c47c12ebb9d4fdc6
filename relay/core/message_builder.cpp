#include "relay/core/message_builder.hpp"

#include <algorithm>
#include <cctype>
#include <string_view>

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

std::string percent_encode_attribute(const std::string& value) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(value.size());
  for (unsigned char c : value) {
    if (c <= 0x20 || c >= 0x7f || c == '"' || c == '%') {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

namespace {

// A template's placeholder value inside a URI-reference: RFC 3986's unreserved characters
// stay, every other byte is percent-encoded.
std::string percent_encode_uri_part(const std::string& value) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : value) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
        c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

bool uri_reference_char(char c) {
  return topic_char(c) || std::string_view(":/?#[]@!$&'()*+,;=~%").find(c) != std::string_view::npos;
}

bool ascii_iequal_prefix(const std::string& s, const std::string& prefix) {
  if (s.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(s[i])) != std::tolower(static_cast<unsigned char>(prefix[i])))
      return false;
  return true;
}

bool is_content_type(const std::string& name) { return name.size() == 12 && ascii_iequal_prefix(name, "content-type"); }

}  // namespace

std::vector<MessageBuilder::Part> MessageBuilder::parse(const std::string& t, const std::string& setting) {
  std::vector<Part> parts;
  std::size_t pos = 0;
  while (pos < t.size()) {
    auto open = t.find("${", pos);
    if (open == std::string::npos) {
      parts.push_back({true, t.substr(pos)});
      break;
    }
    if (open > pos) parts.push_back({true, t.substr(pos, open - pos)});
    auto close = t.find('}', open);
    if (close == std::string::npos) throw ConfigError(setting + ": unterminated placeholder in \"" + t + "\"");
    std::string name = t.substr(open + 2, close - open - 2);
    const auto& known = placeholders();
    if (std::find(known.begin(), known.end(), name) == known.end())
      throw ConfigError(setting + ": unknown placeholder ${" + name + "} (known: ${aggregate_type}, ${event_type})");
    parts.push_back({false, name});
    pos = close + 1;
  }
  if (parts.empty()) throw ConfigError(setting + ": must not be empty");
  return parts;
}

MessageBuilder::MessageBuilder(MessageOptions options) : options_(std::move(options)) {
  const std::string& t = options_.topic_template;
  parts_ = parse(t, options_.template_setting);
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
  const bool ce = options_.format == MessageFormat::cloudevents;
  if (ce) {
    // The binding names the attributes; message.id_header and event_type_header are Debezium's.
    options_.id_header = options_.ce_prefix + "id";
    options_.event_type_header = options_.ce_prefix + "type";
    source_parts_ = parse(options_.ce_source_template, "message.cloudevents_source");
    for (const auto& p : source_parts_)
      if (p.literal && !std::all_of(p.text.begin(), p.text.end(), uri_reference_char))
        throw ConfigError("message.cloudevents_source: \"" + options_.ce_source_template +
                          "\" is not a URI-reference (letters, digits and -._~:/?#[]@!$&'()*+,;=%)");
    if (options_.content_type.find('/') == std::string::npos || has_control_char(options_.content_type) ||
        options_.content_type.front() == ' ' || options_.content_type.back() == ' ')
      throw ConfigError("message.content_type: must be a media type such as application/json");
  }
  if (options_.id_header.empty() || has_control_char(options_.id_header))
    throw ConfigError("message.id_header: must be a non-empty header name without control characters");
  if (has_control_char(options_.event_type_header))
    throw ConfigError("message.event_type_header: must not contain control characters");
  reserved_.emplace_back(options_.id_header, ce ? "message.format cloudevents" : "message.id_header");
  if (!options_.event_type_header.empty())
    reserve(options_.event_type_header, ce ? "message.format cloudevents" : "message.event_type_header");
  if (ce)
    for (const char* attribute : {"source", "specversion", "subject"})
      reserve(options_.ce_prefix + attribute, "message.format cloudevents");
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
  // The relay's own headers: those reserved, and in CloudEvents mode content-type as well.
  const std::size_t own = reserved_.size() + (options_.format == MessageFormat::cloudevents ? 1 : 0);
  if (e.headers.size() + own > options_.max_headers)
    return BadRow{"row has " + std::to_string(e.headers.size()) + " headers, limit is " +
                  std::to_string(options_.max_headers - own)};
  m.key = e.aggregate_id;
  m.value = e.payload;
  m.headers.reserve(e.headers.size() + own + 1);
  if (options_.format == MessageFormat::cloudevents) {
    if (auto bad = cloudevents_headers(e, m)) return *bad;
  } else {
    m.headers.emplace_back(options_.id_header, e.id);
    if (!options_.event_type_header.empty()) m.headers.emplace_back(options_.event_type_header, e.event_type);
  }
  for (const auto& [k, v] : e.headers) {
    if (k.empty() || has_control_char(k))
      return BadRow{"header key \"" + k + "\" is empty or contains control characters"};
    for (const auto& [taken, setting] : reserved_)
      if (k == taken)
        return BadRow{"header \"" + k + "\" is written by the relay (" + setting +
                      "); a row may not carry its own (rename it in the row's headers)"};
    if (auto bad = check_row_header(k)) return *bad;
    const std::size_t size = k.size() + (v ? v->size() : 0);
    if (size > options_.max_header_bytes)
      return BadRow{"header \"" + k + "\" is " + std::to_string(size) + " bytes, limit is " +
                    std::to_string(options_.max_header_bytes)};
    m.headers.emplace_back(k, v);
  }
  return m;
}

// id, type, source, specversion and subject (when the aggregate has an id) as attributes; the
// data's content type in content-type unless the row says its own.
std::optional<BadRow> MessageBuilder::cloudevents_headers(const OutboxEvent& e, Message& m) const {
  if (e.event_type.empty()) return BadRow{"CloudEvents needs a type and the row's event_type is empty"};
  std::string source;
  for (const auto& p : source_parts_)
    source += p.literal ? p.text : percent_encode_uri_part(p.text == "aggregate_type" ? e.aggregate_type : e.event_type);
  auto value = [&](const std::string& v) { return options_.ce_percent_encode ? percent_encode_attribute(v) : v; };
  const std::string& prefix = options_.ce_prefix;
  m.headers.emplace_back(prefix + "specversion", "1.0");
  m.headers.emplace_back(options_.id_header, value(e.id));
  m.headers.emplace_back(options_.event_type_header, value(e.event_type));
  m.headers.emplace_back(prefix + "source", value(source));
  if (!e.aggregate_id.empty()) m.headers.emplace_back(prefix + "subject", value(e.aggregate_id));
  int content_types = 0;
  for (const auto& [k, v] : e.headers) {
    if (!is_content_type(k)) continue;
    if (!v || v->empty()) return BadRow{"header \"" + k + "\" has no value (it is the event data's content type)"};
    ++content_types;
  }
  if (content_types > 1)
    return BadRow{"row has " + std::to_string(content_types) + " content-type headers: the data's content type is ambiguous"};
  if (content_types == 0) m.headers.emplace_back("content-type", options_.content_type);
  return std::nullopt;
}

// In CloudEvents mode a row header under the binding's prefix is an extension attribute (or an
// optional one such as time): lowercase letters and digits, and not one that would change the
// event's meaning under the binding (data, datacontenttype: that is content-type).
std::optional<BadRow> MessageBuilder::check_row_header(const std::string& k) const {
  if (options_.format != MessageFormat::cloudevents) return std::nullopt;
  const std::string& prefix = options_.ce_prefix;
  if (!ascii_iequal_prefix(k, prefix)) return std::nullopt;
  const std::string attribute = k.substr(prefix.size());
  const bool lower_alnum = !attribute.empty() && attribute.size() <= 20 &&
                           std::all_of(attribute.begin(), attribute.end(),
                                       [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); });
  if (k.compare(0, prefix.size(), prefix) != 0 || !lower_alnum)
    return BadRow{"header \"" + k + "\" reads as a CloudEvents attribute, whose names are \"" + prefix +
                  "\" and 1 to 20 lowercase letters or digits"};
  if (attribute == "data" || attribute == "datacontenttype")
    return BadRow{"header \"" + k + "\" is not an attribute the binding carries in a header (the data's content type "
                  "is the content-type header)"};
  return std::nullopt;
}

}  // namespace outbox::relay
