// Renders /metrics in the Prometheus text format: the core's counters (declared once, in
// relay_stats.hpp), its latency histograms, the adapters' facts and the outbox gauges
// operators alert on.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "relay/core/inbox_lander.hpp"
#include "relay/core/ownership.hpp"
#include "relay/core/relay_stats.hpp"
#include "relay/pg/pg_inbox_store.hpp"
#include "relay/pg/pg_status.hpp"

namespace outbox::relay::app {

struct MetricsInputs {
  const RelayStats& stats;
  std::optional<pg::OutboxStatus> status{};  // the latest snapshot; nullopt: never read
  std::optional<double> status_age_s{};    // how old that snapshot is
  bool status_read_ok = false;             // the latest attempt to refresh it succeeded
  bool ready = false;
  const LeaseStats* leases = nullptr;
  std::size_t lanes_held = 0;
  std::optional<double> lease_renewal_age_s{};  // nullopt: never renewed
  std::uint64_t marks_unmatched = 0;
  std::uint64_t database_reconnects = 0;
  std::uint64_t producer_restarts = 0;
  std::uint64_t retention_deleted = 0;
  std::uint64_t http_refused = 0;
};

[[nodiscard]] std::string render_metrics(const MetricsInputs& in);

// The inbox sidecar's page: its core's counters (inbox_lander.hpp), the consumer's facts and
// the inbox's backlog as the service's workers see it.
struct InboxMetricsInputs {
  const InboxStats& stats;
  bool ready = false;
  std::size_t partitions_assigned = 0;
  std::uint64_t commit_failures = 0;
  std::uint64_t database_reconnects = 0;
  std::uint64_t retention_deleted = 0;
  std::uint64_t http_refused = 0;
  std::optional<pg::InboxBacklog> backlog{};  // the latest snapshot; nullopt: never read
  std::optional<double> backlog_age_s{};
};

[[nodiscard]] std::string render_inbox_metrics(const InboxMetricsInputs& in);

}  // namespace outbox::relay::app
