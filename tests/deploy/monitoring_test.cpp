// deploy/monitoring: the alert rules and the dashboard queries name only metrics the relay
// serves at /metrics, and every alert tells the operator what it means and where to look.
#include <catch2/catch.hpp>

#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "deploy_files.hpp"

using namespace outbox::test::deploy;

namespace {

// What /metrics serves (relay/app/metrics_page.cpp and the core's stats list). A metric renamed
// there must be renamed here and in deploy/monitoring.
const std::set<std::string> kCounters{
    "outbox_relay_published_total",          "outbox_relay_failed_transient_total",
    "outbox_relay_failed_permanent_total",   "outbox_relay_dead_lettered_total",
    "outbox_relay_held_back_total",          "outbox_relay_unmarked_after_failure_total",
    "outbox_relay_not_owned_total",          "outbox_relay_batches_total",
    "outbox_relay_transient_errors_total",   "outbox_relay_database_reconnects_total",
    "outbox_relay_producer_restarts_total",  "outbox_relay_retention_deleted_total",
    "outbox_relay_marks_unmatched_total",    "outbox_relay_lanes_acquired_total",
    "outbox_relay_lanes_released_total",     "outbox_relay_lanes_lost_total",
    "outbox_relay_lease_renew_failures_total",
    // the inbox sidecar's (OUTBOX_INBOX_STATS and metrics_page.cpp)
    "outbox_inbox_received_total", "outbox_inbox_landed_total", "outbox_inbox_duplicates_total",
    "outbox_inbox_dead_lettered_total", "outbox_inbox_refused_total", "outbox_inbox_batches_total",
    "outbox_inbox_transient_errors_total", "outbox_inbox_revoked_total", "outbox_inbox_dropped_on_revoke_total",
    "outbox_inbox_database_reconnects_total", "outbox_inbox_offset_commit_failures_total",
    "outbox_inbox_retention_deleted_total", "outbox_inbox_http_refused_total"};
const std::set<std::string> kGauges{
    "outbox_relay_ready",           "outbox_relay_database_up",
    "outbox_relay_is_publisher",    "outbox_relay_lanes_held",
    "outbox_relay_lanes_fair_share", "outbox_relay_live_instances",
    "outbox_relay_lease_renewal_age_seconds", "outbox_relay_backlog_events",
    "outbox_relay_oldest_unpublished_age_seconds", "outbox_relay_dead_lettered_events",
    "outbox_relay_owner_lanes",     "outbox_relay_owner_lease_age_seconds",
    "outbox_relay_unowned_lanes",
    "outbox_inbox_ready", "outbox_inbox_partitions_assigned", "outbox_inbox_pending", "outbox_inbox_retrying",
    "outbox_inbox_dead_lettered", "outbox_inbox_held_back", "outbox_inbox_oldest_unprocessed_age_seconds",
    "outbox_inbox_backlog_snapshot_age_seconds"};
const std::set<std::string> kHistograms{"outbox_relay_batch_duration_seconds", "outbox_relay_commit_to_ack_seconds",
                                        "outbox_inbox_batch_duration_seconds"};

bool served(const std::string& name) {
  if (kCounters.contains(name) || kGauges.contains(name)) return true;
  for (const char* suffix : {"_bucket", "_sum", "_count"})
    if (name.ends_with(suffix) && kHistograms.contains(name.substr(0, name.size() - std::string(suffix).size())))
      return true;
  return false;
}

// The metric names a PromQL expression selects: what is left once strings, label matchers,
// ranges, grouping label lists, function calls, keywords and numbers are set aside.
std::set<std::string> metric_names(std::string expr) {
  for (const auto& re : {std::regex(R"("(\\.|[^"\\])*")"), std::regex(R"('(\\.|[^'\\])*')"), std::regex(R"(\{[^}]*\})"),
                         std::regex(R"(\[[^\]]*\])"),
                         std::regex(R"(\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\))")})
    expr = std::regex_replace(expr, re, " ");
  static const std::set<std::string> kKeywords{"and", "or", "unless", "bool", "offset", "by", "without", "on",
                                               "ignoring", "group_left", "group_right", "inf", "nan", "Inf", "NaN"};
  std::set<std::string> names;
  const std::regex ident(R"([A-Za-z_:][A-Za-z0-9_:]*)");
  for (auto it = std::sregex_iterator(expr.begin(), expr.end(), ident); it != std::sregex_iterator(); ++it) {
    const auto pos = static_cast<std::size_t>(it->position());
    const auto end = expr.find_first_not_of(' ', pos + it->length());
    const bool call = end != std::string::npos && expr[end] == '(';
    const bool in_number = pos > 0 && (std::isdigit(static_cast<unsigned char>(expr[pos - 1])) || expr[pos - 1] == '.');
    if (!call && !in_number && !kKeywords.contains(it->str())) names.insert(it->str());
  }
  return names;
}

YAML::Node alert_rules() {
  const auto doc = YAML::LoadFile((deploy_dir() / "monitoring" / "outbox-relay-alerts.yaml").string());
  YAML::Node rules(YAML::NodeType::Sequence);
  for (const auto& group : at(doc, {"groups"}))
    for (const auto& rule : at(group, {"rules"})) rules.push_back(rule);
  return rules;
}

}  // namespace

TEST_CASE("the PromQL reader finds metric names and nothing else", "[monitoring]") {
  CHECK(metric_names(R"(max by (job, namespace) (outbox_relay_ready{job="a"}) == 0)") ==
        std::set<std::string>{"outbox_relay_ready"});
  CHECK(metric_names("histogram_quantile(0.99, sum by (le) (rate(x_seconds_bucket[5m]))) > 1e3 and on(pod) up") ==
        std::set<std::string>{"x_seconds_bucket", "up"});
  CHECK(metric_names("absent(outbox_relay_ready) or vector(0) offset 5m") == std::set<std::string>{"outbox_relay_ready"});
}

TEST_CASE("every alert names only metrics the relay serves and has a severity, a summary and a runbook hint",
          "[monitoring]") {
  const auto rules = alert_rules();
  REQUIRE(rules.size() >= 6);
  Findings f;
  for (const auto& rule : rules) {
    const auto name = at(rule, {"alert"}).as<std::string>("");
    const auto expr = at(rule, {"expr"}).as<std::string>("");
    f.expect(!name.empty() && !expr.empty(), "a rule without alert name or expr: " + name);
    const auto names = metric_names(expr);
    f.expect(!names.empty(), name + ": expr names no metric");
    for (const auto& m : names) f.expect(served(m), name + ": " + m + " is not served by the relay");
    const auto severity = at(rule, {"labels", "severity"}).as<std::string>("");
    f.expect(severity == "warning" || severity == "critical", name + ": severity must be warning or critical");
    f.expect(!at(rule, {"annotations", "summary"}).as<std::string>("").empty(), name + ": no summary");
    f.expect(!at(rule, {"annotations", "runbook"}).as<std::string>("").empty(), name + ": no runbook hint");
  }
  INFO(f.text());
  CHECK(f.lines.empty());
}

TEST_CASE("the alerts cover lag, no publisher, unowned lanes, late lease renewals, dead letters, readiness, the "
          "database and absent metrics",
          "[monitoring]") {
  std::multiset<std::string> covered;  // "metric/severity", and "absent" for an absent() rule
  for (const auto& rule : alert_rules()) {
    const auto expr = at(rule, {"expr"}).as<std::string>("");
    const auto severity = at(rule, {"labels", "severity"}).as<std::string>("");
    for (const auto& m : metric_names(expr)) covered.insert(m + "/" + severity);
    if (expr.find("absent(") != std::string::npos) covered.insert("absent");
  }
  CHECK(covered.contains("outbox_relay_oldest_unpublished_age_seconds/warning"));
  CHECK(covered.contains("outbox_relay_oldest_unpublished_age_seconds/critical"));
  CHECK(covered.contains("outbox_relay_is_publisher/critical"));
  CHECK(covered.contains("outbox_relay_unowned_lanes/warning"));
  CHECK(covered.contains("outbox_relay_lease_renewal_age_seconds/warning"));
  CHECK((covered.contains("outbox_relay_dead_lettered_events/warning") ||
         covered.contains("outbox_relay_dead_lettered_events/critical")));
  CHECK(covered.contains("outbox_relay_ready/critical"));
  CHECK(covered.contains("outbox_relay_database_up/critical"));
  CHECK(covered.contains("absent"));
  // The inbox sidecar's: workers behind, workers' dead letters, messages to the dead-letter
  // topic, readiness, nothing consumed.
  CHECK(covered.contains("outbox_inbox_oldest_unprocessed_age_seconds/warning"));
  CHECK(covered.contains("outbox_inbox_dead_lettered/warning"));
  CHECK(covered.contains("outbox_inbox_dead_lettered_total/warning"));
  CHECK(covered.contains("outbox_inbox_ready/critical"));
  CHECK(covered.contains("outbox_inbox_partitions_assigned/critical"));
}

TEST_CASE("every dashboard query names only metrics the relay serves and comes with its explanation",
          "[monitoring]") {
  std::ifstream in(deploy_dir() / "monitoring" / "dashboard-queries.md");
  REQUIRE(in);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  Findings f;
  int queries = 0;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    if (lines[i] != "```promql") continue;
    std::string query;
    for (++i; i < lines.size() && lines[i] != "```"; ++i) query += lines[i] + " ";
    ++queries;
    const auto names = metric_names(query);
    f.expect(!names.empty(), "query names no metric: " + query);
    for (const auto& m : names) f.expect(served(m), m + " is not served by the relay: " + query);
    f.expect(i + 1 < lines.size() && !lines[i + 1].empty() && lines[i + 1][0] != '#' && lines[i + 1][0] != '`',
             "no explanation line after: " + query);
  }
  CHECK(queries >= 10);
  INFO(f.text());
  CHECK(f.lines.empty());
}
