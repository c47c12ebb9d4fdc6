#include "relay/cli/command_context.hpp"

#include <algorithm>
#include <cstdio>

#include "relay/cli/console_format.hpp"
#include "relay/pg/pg_admin.hpp"
#include "relay/pg/pg_conninfo.hpp"
#include "relay/pg/pg_status.hpp"

namespace outbox::relay::cli {
namespace {

Json to_json(const pg::SessionInfo& s) {
  return {{"pid", s.pid},
          {"application_name", json_or_null(s.application_name)},
          {"user", json_or_null(s.user)},
          {"client_addr", json_or_null(s.client_addr)},
          {"client_port", json_or_null(s.client_port)},
          {"backend_start", json_or_null(s.backend_start)},
          {"state", json_or_null(s.state)},
          {"connected_seconds", json_or_null(s.connected_s)}};
}

Json to_json(const pg::InstanceInfo& i) {
  return {{"instance", i.instance},       {"host", i.host},
          {"pid", i.pid},                 {"started_at", i.started_at},
          {"live", i.expires_in_s > 0},   {"seen_seconds_ago", i.seen_s},
          {"expires_in_seconds", i.expires_in_s}, {"lanes", i.lanes},
          {"lease_age_seconds", json_or_null(i.lease_age_s)}};
}

Json to_json(const pg::LaneInfo& l) {
  const bool held = l.owner && l.expires_in_s > 0;
  return {{"lane", l.lane},
          {"owner", held ? Json(*l.owner) : Json(nullptr)},
          {"last_owner", json_or_null(l.owner)},
          {"epoch", l.epoch},
          {"expires_in_seconds", held ? Json(l.expires_in_s) : Json(nullptr)},
          {"renewed_seconds_ago", json_or_null(l.renewed_s)}};
}

std::string client_of(const pg::SessionInfo& s) {
  if (!s.client_addr) return s.backend_start ? "local socket" : "(hidden)";
  return *s.client_addr + (s.client_port ? ":" + std::to_string(*s.client_port) : "");
}

}  // namespace

int run_status(const Context& ctx) {
  auto outbox = pg::PgStatus(ctx.conninfo, ctx.config.database.schema).read();
  auto activity = pg::PgAdmin(ctx.conninfo, ctx.config.database.schema, ctx.relay_app_name).activity();
  const bool deletes = ctx.config.relay.mark_mode == config::MarkMode::remove;
  const std::string where = ctx.config.database.url.empty() ? "(PG* environment)" : pg::redact_conninfo(ctx.config.database.url);
  if (ctx.json) {
    Json sessions = Json::array(), instances = Json::array(), lanes = Json::array();
    for (const auto& s : activity.sessions) sessions.push_back(to_json(s));
    for (const auto& i : activity.instances) instances.push_back(to_json(i));
    for (const auto& l : activity.lanes) lanes.push_back(to_json(l));
    Json j{{"database", where},
           {"schema", ctx.config.database.schema},
           {"database_time", activity.now},
           {"backlog", outbox.backlog},
           {"oldest_unpublished_age_seconds", outbox.oldest_unpublished_age_s},
           {"dead_lettered", outbox.dead_lettered},
           {"held_back", activity.held_back},
           {"mark_mode", config::name_of(ctx.config.relay.mark_mode)},
           // Not kept in mark_mode delete: null rather than a misleading 0.
           {"published_last_minute", deletes ? Json(nullptr) : json_or_null(activity.published_last_minute)},
           {"published_last_hour", deletes ? Json(nullptr) : json_or_null(activity.published_last_hour)},
           {"last_published_at", deletes ? Json(nullptr) : json_or_null(activity.last_published_at)},
           {"instances", instances},
           {"unowned_lanes", activity.unowned_lanes},
           {"lanes", lanes},
           {"sessions", sessions}};
    print_json(j);
    return 0;
  }
  std::cout << "outbox          " << ctx.config.database.schema << ".outbox_events on " << where << "\n"
            << "database time   " << activity.now << "\n"
            << "backlog         " << count_of(outbox.backlog, "event") << " waiting";
  if (outbox.backlog > 0) std::cout << ", the oldest for " << duration(outbox.oldest_unpublished_age_s);
  if (activity.held_back > 0) std::cout << "; " << activity.held_back << " of them held back behind dead letters";
  std::cout << "\ndead-lettered   " << count_of(outbox.dead_lettered, "event")
            << (outbox.dead_lettered > 0 ? " (see: outbox-relay dead-letters list)" : "") << "\npublished       ";
  if (deletes)
    std::cout << "not kept (relay.mark_mode=delete deletes rows once published)";
  else if (!activity.published_counted)
    std::cout << "not counted (the table is too large to count within 3 s)";
  else
    std::cout << *activity.published_last_minute << " in the last minute, " << *activity.published_last_hour
              << " in the last hour, last at " << or_dash(activity.last_published_at);
  long long live = 0;
  for (const auto& i : activity.instances) live += i.expires_in_s > 0 ? 1 : 0;
  std::cout << "\ninstances       ";
  if (live == 0)
    std::cout << "none live: no relay is publishing this outbox";
  else
    std::cout << live << " live, sharing " << activity.lanes.size() << " lanes";
  if (activity.unowned_lanes > 0)
    std::cout << "; " << activity.unowned_lanes << " lanes unowned (their events wait for an instance to take them)";
  std::cout << "\n";
  if (!activity.instances.empty()) {
    std::vector<std::vector<std::string>> table;
    for (const auto& i : activity.instances)
      table.push_back({i.instance, i.host, std::to_string(i.pid), std::to_string(i.lanes),
                       i.lease_age_s ? duration(*i.lease_age_s) : "-",
                       i.expires_in_s > 0 ? "live, expires in " + duration(i.expires_in_s)
                                          : "gone " + duration(-i.expires_in_s) + " ago",
                       i.started_at});
    std::cout << "\n";
    print_table({"INSTANCE", "HOST", "PID", "LANES", "LEASE AGE", "STATE", "STARTED AT"}, table);
  }
  if (!activity.sessions.empty()) {
    std::cout << "\nsessions named " << ctx.relay_app_name << " (relays' stores and wake-up listeners):\n";
    std::vector<std::vector<std::string>> table;
    for (const auto& s : activity.sessions)
      table.push_back({std::to_string(s.pid), s.user.value_or("?"), client_of(s), s.backend_start.value_or("(hidden)"),
                       s.state.value_or("(hidden)")});
    print_table({"PID", "USER", "CLIENT", "CONNECTED SINCE", "STATE"}, table);
  }
  return 0;
}

}  // namespace outbox::relay::cli
