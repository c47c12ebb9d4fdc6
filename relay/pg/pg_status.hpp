// Reads what operators watch from the outbox: backlog, age of the oldest unpublished event
// (the lag alerts are written on) and dead-lettered rows, on a connection of its own.
#pragma once

#include <memory>
#include <string>
#include <vector>

namespace outbox::relay::pg {

class PgSession;

struct OutboxStatus {
  long long backlog = 0;                // unpublished, not dead-lettered rows
  double oldest_unpublished_age_s = 0;  // by the database clock; 0 when nothing waits
  long long dead_lettered = 0;
  // Who holds the lanes (outbox_relay_lanes), by the database clock.
  struct Owner {
    std::string instance;
    long long lanes = 0;
    double lease_age_s = 0;  // since the least recent renewal of its leases
  };
  std::vector<Owner> owners;
  long long unowned_lanes = 0;  // free or expired
};

class PgStatus {
 public:
  PgStatus(std::string conninfo, std::string schema);
  ~PgStatus();

  // Throws TransientError when the database is away.
  [[nodiscard]] OutboxStatus read();

 private:
  std::string table_;
  std::string lanes_;
  std::unique_ptr<PgSession> session_;
};

}  // namespace outbox::relay::pg
