// libpq connection strings: parsing (URI or key=value), adding the relay's safety defaults,
// and redacting secrets for logs and error messages.
#pragma once

#include <map>
#include <string>

namespace outbox::relay::pg {

using ConninfoParams = std::map<std::string, std::string>;

// Parses a libpq connection string or URI; throws ConfigError naming `key` when it is invalid.
[[nodiscard]] ConninfoParams parse_conninfo(const std::string& conninfo, const std::string& key);

// Renders key=value form with every value quoted.
[[nodiscard]] std::string render_conninfo(const ConninfoParams& params);

// ConnectionSettings::from(conninfo, "", application_name, statement_timeout_ms).conninfo():
// client-side deadlines and session settings (a stopped backend or half-open TCP connection
// would otherwise hang a libpq call past statement_timeout), the user's own kept.
[[nodiscard]] std::string harden_conninfo(const std::string& conninfo, const std::string& application_name,
                                          int statement_timeout_ms);

// The role a session of `conninfo` logs in as: its user, else PGUSER, else the OS user.
[[nodiscard]] std::string role_of(const std::string& conninfo);

// The connection string with any password replaced by "********"; never throws.
[[nodiscard]] std::string redact_conninfo(const std::string& conninfo);

}  // namespace outbox::relay::pg
