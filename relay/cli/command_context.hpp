// What the operator subcommands share: their context, how they end with an exit code, and
// JSON output for scripts.
#pragma once

#include <nlohmann/json.hpp>

#include <iostream>
#include <optional>
#include <stdexcept>
#include <string>

#include "relay/app/exit_codes.hpp"
#include "relay/config/config.hpp"

namespace outbox::relay::cli {

using Json = nlohmann::ordered_json;

struct Context {
  const config::Config& config;
  std::string conninfo;         // the CLI's own session, named apart from the relay's
  std::string relay_app_name;   // what the relay's sessions are called
  bool json;
};

// Ends a subcommand with a message and an exit code: kExitUsage when it cannot be done as
// asked, kExitFailure when it ran but found nothing to act on.
class CommandError : public std::runtime_error {
 public:
  CommandError(int exit_code, const std::string& what) : std::runtime_error(what), exit_code_(exit_code) {}
  [[nodiscard]] int exit_code() const { return exit_code_; }

 private:
  int exit_code_;
};

inline CommandError usage_error(const std::string& what) { return {app::kExitUsage, what}; }
inline CommandError nothing_matched(const std::string& what) { return {app::kExitFailure, what}; }

// Text columns of a database whose encoding is not UTF-8 may not be valid UTF-8: replace, never throw.
inline void print_json(const Json& j) {
  std::cout << j.dump(2, ' ', false, Json::error_handler_t::replace) << "\n";
}

template <class T>
Json json_or_null(const std::optional<T>& v) {
  return v ? Json(*v) : Json(nullptr);
}

inline std::string or_dash(const std::optional<std::string>& v) { return v ? *v : "-"; }

// `outbox-relay status`: backlog, lag, dead letters, throughput, instances, lanes, sessions.
int run_status(const Context& ctx);

}  // namespace outbox::relay::cli
