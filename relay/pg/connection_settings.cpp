#include "relay/pg/connection_settings.hpp"

#include <algorithm>
#include <fstream>

#include "relay/core/errors.hpp"

namespace outbox::relay::pg {
namespace {

std::string read_password_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError("database.password_file: cannot read " + path);
  std::string line;
  std::getline(in, line);
  while (!line.empty() && (line.back() == '\r' || line.back() == '\n')) line.pop_back();
  return line;
}

}  // namespace

ConnectionSettings ConnectionSettings::from(const std::string& url, const std::string& password_file,
                                            std::string application_name, int statement_timeout_ms) {
  ConnectionSettings s;
  s.params_ = parse_conninfo(url, "database.url");
  if (!password_file.empty()) s.params_["password"] = read_password_file(password_file);
  if (auto it = s.params_.find("options"); it != s.params_.end()) {
    s.user_options_ = it->second;
    s.params_.erase(it);
  }
  // The user's own application_name, if the URL has one, names the sessions instead.
  if (auto it = s.params_.find("application_name"); it != s.params_.end()) {
    application_name = it->second;
    s.params_.erase(it);
  }
  s.application_name_ = std::move(application_name);
  s.statement_timeout_ms_ = statement_timeout_ms;
  return s;
}

std::string ConnectionSettings::conninfo(const std::string& purpose, std::optional<int> statement_timeout_ms) const {
  auto p = params_;
  // Sessions are told apart in pg_stat_activity by their suffix.
  p["application_name"] = purpose.empty() ? application_name_ : application_name_ + "-" + purpose;
  p.try_emplace("connect_timeout", "10");
  p.try_emplace("keepalives", "1");
  p.try_emplace("keepalives_idle", "10");
  p.try_emplace("keepalives_interval", "5");
  p.try_emplace("keepalives_count", "3");
  p.try_emplace("tcp_user_timeout", "30000");
  const int timeout = statement_timeout_ms.value_or(statement_timeout_ms_);
  // jit=off: the relay's statements are short and run thousands of times a minute; JIT
  // compiling one whose estimate crosses jit_above_cost (a fetch on a large outbox) cost
  // ~15 ms per execution, several times the statement itself.
  std::string options = "-c statement_timeout=" + std::to_string(timeout) +
                        " -c idle_in_transaction_session_timeout=" + std::to_string(std::max(timeout * 2, 10'000)) +
                        " -c jit=off";
  if (!user_options_.empty()) options += " " + user_options_;  // later settings win in libpq's options
  p["options"] = options;
  return render_conninfo(p);
}

std::string ConnectionSettings::redacted() const {
  auto p = params_;
  if (p.contains("password")) p["password"] = "********";
  if (!user_options_.empty()) p["options"] = user_options_;
  return render_conninfo(p);
}

std::string ConnectionSettings::role() const { return role_of(render_conninfo(params_)); }

}  // namespace outbox::relay::pg
