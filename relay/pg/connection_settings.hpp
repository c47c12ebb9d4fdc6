// The relay's database connection settings, parsed once from the configuration: every session
// (publishing, leases, status, retention, wake-up, the operator commands) is rendered from
// this one value, so all of them keep the safety defaults and the user's own options.
#pragma once

#include <optional>
#include <string>

#include "relay/pg/pg_conninfo.hpp"

namespace outbox::relay::pg {

class ConnectionSettings {
 public:
  // `url` is a libpq connection string or URI; a non-empty `password_file` supplies the
  // password (its first line). Throws ConfigError naming database.url or
  // database.password_file, without echoing a secret.
  static ConnectionSettings from(const std::string& url, const std::string& password_file,
                                 std::string application_name, int statement_timeout_ms);

  // One session's connection string: application_name "<name>-<purpose>" (just "<name>"
  // without a purpose), client-side deadlines (connect timeout, keepalives,
  // tcp_user_timeout) unless the user set them, and the session options statement_timeout
  // (`statement_timeout_ms`, else the configured one), idle_in_transaction_session_timeout
  // and jit=off, followed by the user's own options (which win).
  [[nodiscard]] std::string conninfo(const std::string& purpose = "",
                                     std::optional<int> statement_timeout_ms = std::nullopt) const;

  // For logs: the settings with the password replaced by "********".
  [[nodiscard]] std::string redacted() const;
  // The name every session's application_name starts with.
  [[nodiscard]] const std::string& application_name() const { return application_name_; }
  // The role sessions log in as (user, else PGUSER, else the OS user).
  [[nodiscard]] std::string role() const;

 private:
  ConninfoParams params_;     // as given, password included, without options
  std::string user_options_;  // the user's own `options`
  std::string application_name_;
  int statement_timeout_ms_ = 0;
};

}  // namespace outbox::relay::pg
