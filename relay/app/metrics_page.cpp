#include "relay/app/metrics_page.hpp"

#include <cstdio>

namespace outbox::relay::app {
namespace {

void metric(std::string& out, const char* name, const char* type, const char* help, const std::string& value) {
  out += "# HELP ";
  out += name;
  out += ' ';
  out += help;
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
  out += name;
  out += ' ';
  out += value;
  out += '\n';
}

std::string number(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3f", v);
  return buf;
}

}  // namespace

std::string render_metrics(const RelayStats& stats, const std::optional<pg::OutboxStatus>& status, bool ready) {
  std::string out;
#define OUTBOX_RELAY_RENDER(name, help) \
  metric(out, "outbox_relay_" #name, "counter", help, std::to_string(stats.name.load()));
  OUTBOX_RELAY_CORE_STATS(OUTBOX_RELAY_RENDER)
#undef OUTBOX_RELAY_RENDER
  metric(out, "outbox_relay_ready", "gauge", "1 when the last step reached the database and the broker recently",
         ready ? "1" : "0");
  metric(out, "outbox_relay_database_up", "gauge", "1 when the status query below succeeded", status ? "1" : "0");
  if (status) {
    metric(out, "outbox_relay_backlog_events", "gauge", "unpublished, not dead-lettered outbox rows",
           std::to_string(status->backlog));
    metric(out, "outbox_relay_oldest_unpublished_age_seconds", "gauge",
           "age of the oldest unpublished event by the database clock (the lag to alert on)",
           number(status->oldest_unpublished_age_s));
    metric(out, "outbox_relay_dead_lettered_events", "gauge", "rows parked in the dead letter state",
           std::to_string(status->dead_lettered));
  }
  return out;
}

}  // namespace outbox::relay::app
