// Loads and validates the configuration from every source, reporting all errors at once
// with their key paths. Also renders the effective config (secrets redacted) and the
// reference table of every key, from the same declarative list of settings.
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "relay/config/config.hpp"

namespace outbox::relay::config {

struct ConfigSources {
  std::optional<std::filesystem::path> file;
  std::map<std::string, std::string> environment;             // usually the process environment
  std::vector<std::pair<std::string, std::string>> overrides;  // key path -> value, from flags
};

// Throws ConfigError whose message lists every problem, one per line, each naming its key.
[[nodiscard]] Config load_config(const ConfigSources& sources);

// The process environment as a map (only OUTBOX_RELAY_* variables).
[[nodiscard]] std::map<std::string, std::string> relay_environment();

// key = value lines of the effective config, secrets redacted.
[[nodiscard]] std::vector<std::pair<std::string, std::string>> effective_config(const Config& config);

struct SettingDoc {
  std::string key;
  std::string env;
  std::string default_value;
  std::string description;
};
[[nodiscard]] std::vector<SettingDoc> settings_reference();

}  // namespace outbox::relay::config
