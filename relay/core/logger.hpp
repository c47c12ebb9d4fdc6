// Port: structured logging. One call is one line: an event name plus key=value fields.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>

namespace outbox::relay {

enum class LogLevel { debug = 0, info = 1, warn = 2, error = 3 };

struct LogField {
  std::string_view key;
  std::string value;
};

class Logger {
 public:
  virtual ~Logger() = default;
  [[nodiscard]] virtual bool enabled(LogLevel level) const = 0;
  virtual void log(LogLevel level, std::string_view event, std::initializer_list<LogField> fields = {}) = 0;
};

// Discards everything; for tests and tools that do not log.
class NullLogger final : public Logger {
 public:
  [[nodiscard]] bool enabled(LogLevel) const override { return false; }
  void log(LogLevel, std::string_view, std::initializer_list<LogField>) override {}
};

}  // namespace outbox::relay
