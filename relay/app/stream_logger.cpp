#include "relay/app/stream_logger.hpp"

#include <nlohmann/json.hpp>

#include <chrono>
#include <ctime>

namespace outbox::relay::app {
namespace {

const char* level_name(LogLevel l) {
  switch (l) {
    case LogLevel::debug: return "debug";
    case LogLevel::info: return "info";
    case LogLevel::warn: return "warn";
    case LogLevel::error: return "error";
  }
  return "info";
}

std::string timestamp() {
  auto now = std::chrono::system_clock::now();
  auto t = std::chrono::system_clock::to_time_t(now);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  char out[48];
  std::snprintf(out, sizeof out, "%s.%03dZ", buf, static_cast<int>(ms));
  return out;
}

bool needs_quotes(const std::string& v) {
  return v.empty() || v.find_first_of(" \"=\t\n") != std::string::npos;
}

}  // namespace

LogLevel parse_log_level(const std::string& name) {
  if (name == "debug") return LogLevel::debug;
  if (name == "warn") return LogLevel::warn;
  if (name == "error") return LogLevel::error;
  return LogLevel::info;
}

void StreamLogger::log(LogLevel level, std::string_view event, std::initializer_list<LogField> fields) {
  if (!enabled(level)) return;
  std::string line;
  if (format_ == LogFormat::json) {
    nlohmann::ordered_json j;
    j["ts"] = timestamp();
    j["level"] = level_name(level);
    j["event"] = std::string(event);
    for (const auto& f : fields) j[std::string(f.key)] = f.value;
    line = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  } else {
    line = timestamp() + " " + level_name(level) + " " + std::string(event);
    for (const auto& f : fields) {
      line += " " + std::string(f.key) + "=";
      line += needs_quotes(f.value) ? nlohmann::json(f.value).dump(-1, ' ', false,
                                                                   nlohmann::json::error_handler_t::replace)
                                    : f.value;
    }
  }
  line += '\n';
  std::lock_guard lock(mutex_);
  out_ << line << std::flush;
}

}  // namespace outbox::relay::app
