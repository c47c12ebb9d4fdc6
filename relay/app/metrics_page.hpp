// Renders /metrics in the Prometheus text format: the core's counters (declared once, in
// relay_stats.hpp) and the outbox gauges operators alert on.
#pragma once

#include <optional>
#include <string>

#include "relay/core/relay_stats.hpp"
#include "relay/pg/pg_status.hpp"

namespace outbox::relay::app {

// `status` is nullopt when the database could not be read (outbox_relay_database_up 0).
[[nodiscard]] std::string render_metrics(const RelayStats& stats, const std::optional<pg::OutboxStatus>& status,
                                         bool ready);

}  // namespace outbox::relay::app
