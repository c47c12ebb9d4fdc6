// LeaseStore on PostgreSQL: lanes leased in outbox_relay_lanes, live instances in
// outbox_relay_instances (migration 0006), expiry by the database's now(). Joins, departures
// and released lanes are hinted to the other instances by NOTIFY outbox_relay_lanes.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "relay/core/errors.hpp"
#include "relay/core/ownership.hpp"

namespace pqxx {
class connection_base;
}

namespace outbox::relay::pg {

class PgSession;

// Lanes in outbox_relay_lanes (migration 0006 creates exactly these; outbox_lane() maps an
// aggregate onto them). Every instance must agree on it.
inline constexpr int kLaneCount = 64;

struct PgLeaseOptions {
  std::string conninfo;  // hardened; a statement timeout well under the lease ttl
  std::string schema = "public";
  std::string instance;  // set by claim()
  std::string host;
  int pid = 0;
};

// No candidate instance id could be claimed: each is held by a live process.
class InstanceIdHeld : public TransientError {
 public:
  using TransientError::TransientError;
};

class PgLeaseStore final : public LeaseStore {
 public:
  explicit PgLeaseStore(PgLeaseOptions options);
  ~PgLeaseStore() override;

  // Takes the first of `candidates` no live process holds, by a session-level advisory lock
  // on the keeper's session: the kernel closes a dead process's connection and PostgreSQL
  // releases its lock, so a restarted process gets its old id back at once, while a live one
  // keeps it. The first candidate is waited for up to `wait_first` (a killed process's
  // backend may take a moment to go). Lanes still leased to the id belonged to a process
  // whose keeper session is gone; they become this process's with a new epoch. Throws
  // InstanceIdHeld when every candidate is taken, TransientError when the database is away.
  [[nodiscard]] std::string claim(const std::vector<std::string>& candidates, std::chrono::milliseconds wait_first);

  [[nodiscard]] Renewal renew(std::span<const int> release, std::chrono::milliseconds ttl) override;
  [[nodiscard]] std::vector<LaneLease> acquire(int max_lanes, std::chrono::milliseconds ttl) override;
  void leave() override;
  bool await_change(std::chrono::milliseconds timeout) override;

 private:
  bool try_lock(pqxx::connection_base& c, const std::string& id);

  PgLeaseOptions options_;
  std::string lanes_;      // quoted schema.outbox_relay_lanes
  std::string instances_;  // quoted schema.outbox_relay_instances
  bool claimed_ = false;
  bool notified_ = false;
  std::unique_ptr<PgSession> session_;
};

}  // namespace outbox::relay::pg
