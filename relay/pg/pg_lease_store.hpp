// LeaseStore on PostgreSQL: lanes leased in outbox_relay_lanes, live instances in
// outbox_relay_instances (migration 0006), expiry by the database's now(). Joins, departures
// and released lanes are hinted to the other instances by NOTIFY outbox_relay_lanes.
#pragma once

#include <memory>
#include <string>

#include "relay/core/ownership.hpp"

namespace outbox::relay::pg {

// Lanes in outbox_relay_lanes (migration 0006 creates exactly these; outbox_lane() maps an
// aggregate onto them). Every instance must agree on it.
inline constexpr int kLaneCount = 64;

struct PgLeaseOptions {
  std::string conninfo;  // hardened; a statement timeout well under the lease ttl
  std::string schema = "public";
  std::string instance;  // unique per process
  std::string host;
  int pid = 0;
};

class PgLeaseStore final : public LeaseStore {
 public:
  explicit PgLeaseStore(PgLeaseOptions options);
  ~PgLeaseStore() override;

  [[nodiscard]] Renewal renew(std::span<const int> release, std::chrono::milliseconds ttl) override;
  [[nodiscard]] std::vector<LaneLease> acquire(int max_lanes, std::chrono::milliseconds ttl) override;
  void leave() override;
  bool await_change(std::chrono::milliseconds timeout) override;

 private:
  struct Session;
  Session& session();
  void reset();

  PgLeaseOptions options_;
  std::string lanes_;      // quoted schema.outbox_relay_lanes
  std::string instances_;  // quoted schema.outbox_relay_instances
  std::unique_ptr<Session> conn_;
};

// "host:pid:random" — unique for this process's life, readable in status output.
[[nodiscard]] std::string make_instance_id(const std::string& host, int pid);

}  // namespace outbox::relay::pg
