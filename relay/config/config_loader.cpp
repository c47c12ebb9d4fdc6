#include "relay/config/config_loader.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <regex>
#include <set>

#include "relay/config/settings_table.hpp"
#include "relay/core/errors.hpp"
#include "relay/kafka/kafka_settings.hpp"
#include "relay/pg/pg_conninfo.hpp"

extern char** environ;

namespace outbox::relay::config {
using namespace detail;
namespace {

const std::string kPropertiesKey = "kafka.properties";
const std::string kEnvPrefix = "OUTBOX_RELAY_";
const std::string kPropertyEnvPrefix = "OUTBOX_RELAY_KAFKA_PROPERTY_";
const std::string kConsumerPropertiesKey = "inbox.consumer_properties";
const std::string kConsumerPropertyEnvPrefix = "OUTBOX_RELAY_INBOX_CONSUMER_PROPERTY_";

// The two pass-through maps of librdkafka properties: the relay's producer and the inbox
// sidecar's consumer.
std::map<std::string, std::string>* property_map(Config& c, const std::string& key) {
  if (key == kPropertiesKey) return &c.kafka.properties;
  if (key == kConsumerPropertiesKey) return &c.inbox.consumer_properties;
  return nullptr;
}

std::string env_name(const std::string& key) {
  std::string e = kEnvPrefix;
  for (char c : key) e += c == '.' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return e;
}

const Setting* find_setting(const std::string& key) {
  for (const auto& s : settings())
    if (s.key == key) return &s;
  return nullptr;
}

// Edit distance, for "did you mean" on unknown keys.
std::size_t distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string unknown_key(const std::string& key) {
  std::string best;
  std::size_t best_d = 4;
  for (const auto& s : settings()) {
    auto d = distance(key, s.key);
    if (d < best_d) best_d = d, best = s.key;
  }
  std::string msg = key + ": unknown key";
  if (!best.empty()) msg += " (did you mean " + best + "?)";
  return msg;
}

class Loader {
 public:
  void apply(const std::string& key, const std::string& value, const std::string& origin) {
    for (const auto& map_key : {kPropertiesKey, kConsumerPropertiesKey}) {
      if (!key.starts_with(map_key + ".")) continue;
      std::string name = key.substr(map_key.size() + 1);
      if (name.empty()) return error(key + ": empty property name" + origin);
      (*property_map(config_, map_key))[name] = value;
      return;
    }
    const Setting* s = find_setting(key);
    if (s == nullptr) return error(unknown_key(key) + origin);
    switch (s->kind) {
      case Kind::text:
        s->text(config_) = value;
        break;
      case Kind::choice: {
        auto it = std::find(s->choices.begin(), s->choices.end(), value);
        if (it == s->choices.end()) {
          std::string list;
          for (const auto& c : s->choices) list += (list.empty() ? "" : ", ") + c;
          return error(key + ": must be one of " + list + ", got \"" + value + "\"" + origin);
        }
        s->choose(config_, static_cast<std::size_t>(it - s->choices.begin()));
        break;
      }
      case Kind::integer: {
        long long v = 0;
        auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
        if (ec != std::errc{} || p != value.data() + value.size() || value.empty())
          return error(key + ": expected an integer, got \"" + value + "\"" + origin);
        if (v < s->min || v > s->max)
          return error(key + ": must be between " + std::to_string(s->min) + " and " + std::to_string(s->max) +
                       ", got " + value + origin);
        s->integer(config_) = static_cast<int>(v);
        break;
      }
    }
  }

  void load_yaml(const std::filesystem::path& path) {
    YAML::Node root;
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec)) return error("config file " + path.string() + ": is a directory");
    // Read whole first: a read error is reported here, never met half-way by the parser.
    std::ifstream in(path, std::ios::binary);
    std::string text;
    try {
      if (in) text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    } catch (const std::exception&) {
      in.setstate(std::ios::badbit);  // libstdc++'s filebuf throws on a read error
    }
    if (!in && !in.eof()) return error("config file " + path.string() + ": cannot be read (" + std::strerror(errno) + ")");
    try {
      root = YAML::Load(text);
    } catch (const YAML::ParserException& e) {
      return error("config file " + path.string() + ":" + std::to_string(e.mark.line + 1) + ":" +
                   std::to_string(e.mark.column + 1) + ": malformed YAML: " + e.msg);
    } catch (const std::exception& e) {
      return error("config file " + path.string() + ": cannot be read (" + e.what() + ")");
    }
    if (root.IsNull()) return;
    if (!root.IsMap()) return error("config file " + path.string() + ": top level must be a mapping of sections");
    walk(root, "");
  }

  void error(std::string message) { errors_.push_back(std::move(message)); }

  Config config_;
  std::vector<std::string> errors_;

 private:
  // A key given twice in one mapping is refused: YAML parsers differ on which one wins.
  bool first_time(std::set<std::string>& seen, const std::string& key) {
    if (seen.insert(key).second) return true;
    error(key + ": given twice in the config file");
    return false;
  }

  void walk(const YAML::Node& node, const std::string& prefix) {
    std::set<std::string> seen;
    for (const auto& kv : node) {
      std::string name = kv.first.as<std::string>();
      std::string key = prefix.empty() ? name : prefix + "." + name;
      if (!first_time(seen, key)) continue;
      const YAML::Node& value = kv.second;
      if (property_map(config_, key) != nullptr) {
        if (!value.IsMap() && !value.IsNull()) {
          error(key + ": must be a mapping of librdkafka property names to values");
          continue;
        }
        std::set<std::string> properties_seen;
        for (const auto& p : value) {
          if (!first_time(properties_seen, key + "." + p.first.as<std::string>())) continue;
          if (!p.second.IsScalar()) {
            error(key + "." + p.first.as<std::string>() + ": must be a single value");
            continue;
          }
          apply(key + "." + p.first.as<std::string>(), p.second.Scalar(), "");
        }
        continue;
      }
      if (value.IsMap()) {
        bool section = std::any_of(settings().begin(), settings().end(),
                                   [&](const Setting& s) { return s.key.starts_with(key + "."); });
        if (!section) {
          error(unknown_key(key));
          continue;
        }
        walk(value, key);
      } else if (value.IsScalar()) {
        if (!find_setting(key) && std::any_of(settings().begin(), settings().end(), [&](const Setting& s) {
              return s.key.starts_with(key + ".");
            }))
          error(key + ": is a section, expected a mapping");
        else
          apply(key, value.Scalar(), "");
      } else if (value.IsNull()) {
        if (!find_setting(key)) error(unknown_key(key));
      } else {
        error(key + ": expected a single value, got a list");
      }
    }
  }
};

}  // namespace

// Kubernetes injects <SERVICE>_SERVICE_HOST, <SERVICE>_PORT_9464_TCP... for every Service
// in the namespace (unless enableServiceLinks is false); a Service named outbox-relay* gives
// OUTBOX_RELAY_* names that are not settings and must not stop the relay.
bool kubernetes_service_link(const std::string& name) {
  static const std::regex link("^[A-Z0-9_]*(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT(_[0-9]+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)?)$");
  return std::regex_match(name, link);
}

std::map<std::string, std::string> relay_environment() {
  std::map<std::string, std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string entry = *e;
    auto eq = entry.find('=');
    if (eq == std::string::npos || !entry.starts_with(kEnvPrefix)) continue;
    env[entry.substr(0, eq)] = entry.substr(eq + 1);
  }
  return env;
}

Config load_config(const ConfigSources& sources) {
  Loader l;
  if (sources.file) l.load_yaml(*sources.file);
  for (const auto& [name, value] : sources.environment) {
    bool property = false;
    for (const auto& [prefix, map_key] : {std::pair{kPropertyEnvPrefix, kPropertiesKey},
                                          std::pair{kConsumerPropertyEnvPrefix, kConsumerPropertiesKey}}) {
      if (!name.starts_with(prefix)) continue;
      std::string prop = name.substr(prefix.size());
      std::transform(prop.begin(), prop.end(), prop.begin(), [](unsigned char c) {
        return c == '_' ? '.' : static_cast<char>(std::tolower(c));
      });
      l.apply(map_key + "." + prop, value, " (from " + name + ")");
      property = true;
      break;
    }
    if (property) continue;
    if (!name.starts_with(kEnvPrefix)) continue;
    const Setting* match = nullptr;
    for (const auto& s : settings())
      if (env_name(s.key) == name) match = &s;
    if (match != nullptr)
      l.apply(match->key, value, " (from " + name + ")");
    else if (name != "OUTBOX_RELAY_CONFIG" && !kubernetes_service_link(name))
      l.error(name + ": unknown environment variable (not a relay setting)");
  }
  for (const auto& [key, value] : sources.overrides) l.apply(key, value, " (from the command line)");

  Config& c = l.config_;
  if (c.relay.retry_max_ms < c.relay.retry_initial_ms)
    l.error("relay.retry_max_ms: must be at least relay.retry_initial_ms (" + std::to_string(c.relay.retry_initial_ms) + ")");
  if (c.ownership.renew_interval_ms * 20 > c.ownership.lease_ttl_ms * 9)
    l.error("ownership.renew_interval_ms: at most 0.45 of ownership.lease_ttl_ms (" +
            std::to_string(c.ownership.lease_ttl_ms) + "), so one missed renewal does not lose the lanes");
  if (c.inbox.retention_hours > 0 && c.inbox.topic_retention_hours > 0 &&
      c.inbox.retention_hours <= c.inbox.topic_retention_hours)
    l.error("inbox.retention_hours: " + std::to_string(c.inbox.retention_hours) +
            " is not longer than inbox.topic_retention_hours (" + std::to_string(c.inbox.topic_retention_hours) +
            "): a message redelivered or replayed after its processed row was purged would be processed again");
  if (!c.database.url.empty()) {
    try {
      (void)pg::parse_conninfo(c.database.url, "database.url");
    } catch (const ConfigError& e) {
      l.error(e.what());
    }
  }
  if (!l.errors_.empty()) {
    std::string msg = "invalid configuration:";
    for (const auto& e : l.errors_) msg += "\n  " + e;
    throw ConfigError(msg);
  }
  return c;
}

std::vector<std::pair<std::string, std::string>> effective_config(const Config& config) {
  Config copy = config;
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& s : settings()) {
    std::string value = shown(s, copy);
    if (s.key == "database.url" && !value.empty()) value = pg::redact_conninfo(value);
    out.emplace_back(s.key, value);
  }
  for (const auto& [k, v] : config.kafka.properties)
    out.emplace_back(kPropertiesKey + "." + k, kafka::secret_property(k) ? "********" : v);
  for (const auto& [k, v] : config.inbox.consumer_properties)
    out.emplace_back(kConsumerPropertiesKey + "." + k, kafka::secret_property(k) ? "********" : v);
  return out;
}

std::vector<SettingDoc> settings_reference() {
  Config defaults;
  std::vector<SettingDoc> out;
  for (const auto& s : settings()) {
    std::string def = shown(s, defaults);
    std::string doc = s.description;
    if (s.kind == Kind::choice) {
      std::string list;
      for (const auto& c : s.choices) list += (list.empty() ? "" : ", ") + c;
      doc = "One of " + list + ". " + doc;
    }
    out.push_back({s.key, env_name(s.key), def, doc});
  }
  out.push_back({kPropertiesKey + ".<name>", kPropertyEnvPrefix + "<NAME>", "",
                 "Any librdkafka producer property, passed through (e.g. security.protocol, sasl.*, ssl.*, "
                 "compression.type, message.max.bytes). Refused with exit 78, because they would break per-key "
                 "order or at-least-once: enable.idempotence, enable.gapless.guarantee or acks=all turned off, "
                 "max.in.flight above 5, a partitioner other than murmur2_random (the default, Java's), murmur2, "
                 "consistent or fnv1a, queuing.strategy lifo, delivery.report.only.error, transactional.id, "
                 "retries 0, message.timeout.ms (use kafka.delivery_timeout_ms), bootstrap.servers (use "
                 "kafka.brokers), and any name or value librdkafka refuses. In the variable name, dots become "
                 "underscores."});
  out.push_back({kConsumerPropertiesKey + ".<name>", kConsumerPropertyEnvPrefix + "<NAME>", "",
                 "Inbox sidecar: any librdkafka consumer property, passed through (security.*, sasl.*, ssl.* also "
                 "go to its dead-letter producer). Refused with exit 78: enable.auto.offset.store, "
                 "enable.auto.commit and auto.commit.interval.ms (offsets are stored only after their batch "
                 "committed; use inbox.commit_interval_ms), group.id (inbox.group_id), bootstrap.servers "
                 "(kafka.brokers), enable.partition.eof, and any name or value librdkafka refuses."});
  return out;
}

}  // namespace outbox::relay::config
