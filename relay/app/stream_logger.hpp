// Logger writing one line per event to a stream: JSON objects, or key=value text for terminals.
#pragma once

#include <mutex>
#include <ostream>

#include "relay/core/logger.hpp"

namespace outbox::relay::app {

enum class LogFormat { json, text };

class StreamLogger final : public Logger {
 public:
  StreamLogger(std::ostream& out, LogLevel min_level, LogFormat format)
      : out_(out), min_level_(min_level), format_(format) {}

  [[nodiscard]] bool enabled(LogLevel level) const override { return level >= min_level_; }
  void log(LogLevel level, std::string_view event, std::initializer_list<LogField> fields) override;

 private:
  std::ostream& out_;
  std::mutex mutex_;  // librdkafka logs from its own threads
  LogLevel min_level_;
  LogFormat format_;
};

[[nodiscard]] LogLevel parse_log_level(const std::string& name);

}  // namespace outbox::relay::app
