#include "relay/app/metrics_page.hpp"

#include <atomic>
#include <cstdio>
#include <functional>
#include <vector>

namespace outbox::relay::app {
namespace {

void header(std::string& out, const std::string& name, const char* type, const char* help) {
  out += "# HELP " + name + ' ' + help + "\n# TYPE " + name + ' ' + type + '\n';
}

void metric(std::string& out, const std::string& name, const char* type, const char* help, const std::string& value) {
  header(out, name, type, help);
  out += name + ' ' + value + '\n';
}

std::string number(double v, const char* format = "%.6f") {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

void histogram(std::string& out, const std::string& name, const char* help, const Histogram& h) {
  header(out, name, "histogram", help);
  auto s = h.snapshot();
  for (std::size_t i = 0; i < s.cumulative.size(); ++i) {
    const std::string le = i < s.upper_bounds_s.size() ? number(s.upper_bounds_s[i], "%g") : "+Inf";
    out += name + "_bucket{le=\"" + le + "\"} " + std::to_string(s.cumulative[i]) + '\n';
  }
  out += name + "_sum " + number(s.sum_s) + '\n';
  out += name + "_count " + std::to_string(s.cumulative.back()) + '\n';
}

std::string label_value(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

// Every series but the core's counters and histograms, declared once: name, type, help and
// where its value comes from (nullopt: not exported now). Labelled series are listed apart.
struct Series {
  const char* name;
  const char* type;
  const char* help;
  std::function<std::optional<std::string>(const MetricsInputs&)> value;
};

std::string count(std::uint64_t v) { return std::to_string(v); }

// A lease keeper's counter or gauge, absent without a keeper.
template <class T>
std::function<std::optional<std::string>(const MetricsInputs&)> from_leases(std::atomic<T> LeaseStats::*member) {
  return [member](const MetricsInputs& in) -> std::optional<std::string> {
    if (!in.leases) return std::nullopt;
    return std::to_string((in.leases->*member).load());
  };
}

// A gauge of the status snapshot, absent before the first successful read.
std::function<std::optional<std::string>(const MetricsInputs&)> from_status(
    std::function<std::string(const pg::OutboxStatus&)> f) {
  return [f](const MetricsInputs& in) -> std::optional<std::string> {
    if (!in.status) return std::nullopt;
    return f(*in.status);
  };
}

const std::vector<Series>& series() {
  using In = const MetricsInputs&;
  static const std::vector<Series> list{
      {"outbox_relay_database_reconnects_total", "counter", "database sessions the relay opened again after losing one",
       [](In in) { return count(in.database_reconnects); }},
      {"outbox_relay_producer_restarts_total", "counter", "Kafka producers recreated after a fatal error",
       [](In in) { return count(in.producer_restarts); }},
      {"outbox_relay_retention_deleted_total", "counter", "published rows removed by retention (retention.published_hours)",
       [](In in) { return count(in.retention_deleted); }},
      {"outbox_relay_ready", "gauge", "1 when the last step reached the database and the broker recently",
       [](In in) { return std::string(in.ready ? "1" : "0"); }},
      {"outbox_relay_is_publisher", "gauge", "1 while this instance holds at least one lane; 0 on a spare",
       [](In in) { return std::string(in.lanes_held > 0 ? "1" : "0"); }},
      {"outbox_relay_lanes_held", "gauge", "lanes this instance holds and may publish (its share)",
       [](In in) { return count(in.lanes_held); }},
      {"outbox_relay_marks_unmatched_total", "counter",
       "rows marked that matched nothing: their lane was no longer held (fenced) or they were already marked",
       [](In in) { return count(in.marks_unmatched); }},
      {"outbox_relay_lease_renewal_age_seconds", "gauge",
       "time since this instance last renewed its leases (alert well before ownership.lease_ttl_ms)",
       [](In in) -> std::optional<std::string> {
         if (!in.lease_renewal_age_s) return std::nullopt;
         return number(*in.lease_renewal_age_s, "%.3f");
       }},
      {"outbox_relay_lanes_fair_share", "gauge", "lanes this instance should hold given the live instances",
       from_leases(&LeaseStats::fair_share)},
      {"outbox_relay_live_instances", "gauge", "relay instances seen alive at the last renewal",
       from_leases(&LeaseStats::live_instances)},
      {"outbox_relay_lanes_acquired_total", "counter", "lanes this instance took (free, expired or handed back)",
       from_leases(&LeaseStats::acquired_total)},
      {"outbox_relay_lanes_released_total", "counter", "lanes this instance handed back (rebalance or stop)",
       from_leases(&LeaseStats::released_total)},
      {"outbox_relay_lanes_lost_total", "counter",
       "lanes whose lease lapsed before this instance renewed it (paused, cut off): it stopped publishing them",
       from_leases(&LeaseStats::lost_total)},
      {"outbox_relay_lease_renew_failures_total", "counter", "lease renewals that failed (database away)",
       from_leases(&LeaseStats::renew_failures_total)},
      {"outbox_relay_http_connections_refused_total", "counter",
       "HTTP connections closed at once because the connection cap was reached",
       [](In in) { return count(in.http_refused); }},
      {"outbox_relay_database_up", "gauge",
       "1 when the latest refresh of the status gauges below succeeded (they are read apart from scrapes)",
       [](In in) { return std::string(in.status_read_ok ? "1" : "0"); }},
      {"outbox_relay_status_age_seconds", "gauge", "age of the snapshot the backlog, lag and lane gauges come from",
       [](In in) -> std::optional<std::string> {
         if (!in.status_age_s) return std::nullopt;
         return number(*in.status_age_s, "%.3f");
       }},
      {"outbox_relay_backlog_events", "gauge", "unpublished, not dead-lettered outbox rows",
       from_status([](const pg::OutboxStatus& st) { return std::to_string(st.backlog); })},
      {"outbox_relay_oldest_unpublished_age_seconds", "gauge",
       "age of the oldest unpublished event by the database clock (the lag to alert on)",
       from_status([](const pg::OutboxStatus& st) { return number(st.oldest_unpublished_age_s, "%.3f"); })},
      {"outbox_relay_dead_lettered_events", "gauge", "rows parked in the dead letter state",
       from_status([](const pg::OutboxStatus& st) { return std::to_string(st.dead_lettered); })},
      {"outbox_relay_unowned_lanes", "gauge", "lanes nobody holds (free or expired): their events wait",
       from_status([](const pg::OutboxStatus& st) { return std::to_string(st.unowned_lanes); })},
  };
  return list;
}

}  // namespace

std::string render_metrics(const MetricsInputs& in) {
  std::string out;
#define OUTBOX_RELAY_RENDER(name, help) \
  metric(out, "outbox_relay_" #name, "counter", help, std::to_string(in.stats.name.load()));
  OUTBOX_RELAY_CORE_STATS(OUTBOX_RELAY_RENDER)
#undef OUTBOX_RELAY_RENDER
  histogram(out, "outbox_relay_batch_duration_seconds", "a batch from its fetch to the broker's last acknowledgement",
            in.stats.batch_duration);
  histogram(out, "outbox_relay_commit_to_ack_seconds",
            "an event from its row's created_at (database clock) to the broker's acknowledgement",
            in.stats.commit_to_ack);
  for (const auto& s : series())
    if (auto v = s.value(in)) metric(out, s.name, s.type, s.help, *v);
  if (in.status) {
    header(out, "outbox_relay_owner_lanes", "gauge", "lanes each instance holds (from the database; every instance reports all)");
    for (const auto& o : in.status->owners)
      out += "outbox_relay_owner_lanes{owner=\"" + label_value(o.instance) + "\"} " + std::to_string(o.lanes) + '\n';
    header(out, "outbox_relay_owner_lease_age_seconds", "gauge",
           "per instance, time since the least recent renewal of its leases (database clock)");
    for (const auto& o : in.status->owners)
      out += "outbox_relay_owner_lease_age_seconds{owner=\"" + label_value(o.instance) + "\"} " +
             number(o.lease_age_s, "%.3f") + '\n';
  }
  return out;
}

std::string render_inbox_metrics(const InboxMetricsInputs& in) {
  std::string out;
#define OUTBOX_INBOX_RENDER(name, help) \
  metric(out, "outbox_inbox_" #name, "counter", help, std::to_string(in.stats.name.load()));
  OUTBOX_INBOX_STATS(OUTBOX_INBOX_RENDER)
#undef OUTBOX_INBOX_RENDER
  histogram(out, "outbox_inbox_batch_duration_seconds", "a batch from its first message to its offsets stored",
            in.stats.batch_duration);
  metric(out, "outbox_inbox_ready", "gauge", "1 when the last step reached the database and the brokers",
         in.ready ? "1" : "0");
  metric(out, "outbox_inbox_partitions_assigned", "gauge", "partitions this sidecar consumes",
         std::to_string(in.partitions_assigned));
  metric(out, "outbox_inbox_offset_commit_failures_total", "counter",
         "offset commits the group refused or that did not reach it (redeliveries follow, absorbed)",
         count(in.commit_failures));
  metric(out, "outbox_inbox_database_reconnects_total", "counter", "connections to the inbox database opened again",
         count(in.database_reconnects));
  metric(out, "outbox_inbox_retention_deleted_total", "counter", "processed inbox rows deleted by retention",
         count(in.retention_deleted));
  metric(out, "outbox_inbox_http_refused_total", "counter", "HTTP connections refused at the connection limit",
         count(in.http_refused));
  if (in.backlog) {
    metric(out, "outbox_inbox_pending", "gauge", "events waiting for the service's workers, due now",
           std::to_string(in.backlog->pending));
    metric(out, "outbox_inbox_retrying", "gauge", "events waiting for a retry after a failed attempt",
           std::to_string(in.backlog->retrying));
    metric(out, "outbox_inbox_dead_lettered", "gauge", "events dead-lettered by the workers (need an operator)",
           std::to_string(in.backlog->dead_lettered));
    metric(out, "outbox_inbox_held_back", "gauge", "events waiting behind a dead-lettered event of their aggregate",
           std::to_string(in.backlog->held_back));
    metric(out, "outbox_inbox_oldest_unprocessed_age_seconds", "gauge",
           "age of the oldest unprocessed event (not dead-lettered)", number(in.backlog->oldest_age_s, "%.3f"));
  }
  if (in.backlog_age_s)
    metric(out, "outbox_inbox_backlog_snapshot_age_seconds", "gauge", "how old the backlog figures above are",
           number(*in.backlog_age_s, "%.3f"));
  return out;
}

}  // namespace outbox::relay::app
