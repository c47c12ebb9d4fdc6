#include "relay/pg/pg_lease_store.hpp"

#include <pqxx/pqxx>

#include <thread>

#include "relay/core/errors.hpp"
#include "relay/pg/pg_session.hpp"
#include "relay/pg/sql_text.hpp"

namespace outbox::relay::pg {
namespace {

constexpr const char* kChannel = "outbox_relay_lanes";

std::int64_t ms(std::chrono::milliseconds d) { return static_cast<std::int64_t>(d.count()); }

}  // namespace

PgLeaseStore::PgLeaseStore(PgLeaseOptions options) : options_(std::move(options)) {
  const auto schema = quoted_identifier(options_.schema, "database.schema");
  lanes_ = schema + ".outbox_relay_lanes";
  instances_ = schema + ".outbox_relay_instances";
  // A new session holds no lock: it takes the id's again before anything is renewed. If the
  // session dropped, the keeper has already given up its lanes (LeaseStore's contract).
  session_ = std::make_unique<PgSession>(options_.conninfo, "the lease keeper", [this](pqxx::connection& c) {
    if (claimed_ && !try_lock(c, options_.instance))
      throw InstanceIdHeld("instance id " + options_.instance +
                           " is held by another live process since this one's lease session dropped; "
                           "this process publishes nothing until it gets it back");
  });
  session_->listen(kChannel, [this](const std::string& payload) {
    if (payload == options_.schema) notified_ = true;
  });
}

PgLeaseStore::~PgLeaseStore() = default;

// The id's lock: one bigint per (schema, id), apart from migrate's own advisory lock.
bool PgLeaseStore::try_lock(pqxx::connection_base& c, const std::string& id) {
  pqxx::nontransaction tx(c);
  return tx
      .exec_params("SELECT pg_try_advisory_lock(hashtextextended('outbox_relay_instance:' || $1 || ':' || $2, 0))",
                   options_.schema, id)[0][0]
      .as<bool>();
}

std::string PgLeaseStore::claim(const std::vector<std::string>& candidates, std::chrono::milliseconds wait_first) {
  claimed_ = false;
  session_->close();  // drop any lock a previous claim left
  std::string holders;
  auto claimed = session_->run("claiming the instance id", [&](pqxx::connection& c) -> std::optional<std::string> {
    for (std::size_t i = 0; i < candidates.size(); ++i) {
      const auto& id = candidates[i];
      bool locked = try_lock(c, id);
      for (auto until = std::chrono::steady_clock::now() + wait_first;
           !locked && i == 0 && std::chrono::steady_clock::now() < until;) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        locked = try_lock(c, id);
      }
      if (!locked) {
        auto who = pqxx::nontransaction(c).exec_params(
            "SELECT host || ' pid ' || pid FROM " + instances_ + " WHERE instance = $1", id);
        holders += (holders.empty() ? "" : ", ") + id + (who.empty() ? "" : " (" + who[0][0].as<std::string>() + ")");
        continue;
      }
      pqxx::work tx(c);
      tx.exec_params("UPDATE " + lanes_ + " SET epoch = epoch + 1, acquired_at = now() "
                     "WHERE owner = $1 AND lease_until > now()", id);
      tx.commit();
      return id;
    }
    return std::nullopt;
  });
  if (!claimed)
    throw InstanceIdHeld("every instance id this process may use is held by a live process: " + holders +
                         "; set ownership.instance_id to a free one, or stop the other process");
  options_.instance = *claimed;
  claimed_ = true;
  return *claimed;
}

LeaseStore::Renewal PgLeaseStore::renew(std::span<const int> release, std::chrono::milliseconds ttl) {
  Renewal out;
  session_->run("renewing lane leases", [&](pqxx::connection& c) {
    pqxx::work tx(c);
    bool changed = false;
    auto joined = tx.exec_params(
        "INSERT INTO " + instances_ + " AS i (instance, host, pid, expires_at) "
        "VALUES ($1, $2, $3, now() + $4 * interval '1 millisecond') "
        "ON CONFLICT (instance) DO UPDATE SET seen_at = now(), expires_at = excluded.expires_at, "
        "host = excluded.host, pid = excluded.pid "
        "RETURNING (xmax = 0)",
        options_.instance, options_.host, options_.pid, ms(ttl));
    changed = joined[0][0].as<bool>();
    if (!release.empty()) {
      auto released = tx.exec_params("UPDATE " + lanes_ +
                                         " SET owner = NULL, lease_until = now() "
                                         "WHERE owner = $1 AND lane = ANY($2::int[])",
                                     options_.instance, int_array_literal(release));
      changed = changed || released.affected_rows() > 0;
    }
    for (const auto& row : tx.exec_params("UPDATE " + lanes_ +
                                              " SET lease_until = now() + $2 * interval '1 millisecond', "
                                              "renewed_at = now() WHERE owner = $1 AND lease_until > now() "
                                              "RETURNING lane, epoch",
                                          options_.instance, ms(ttl)))
      out.held.push_back({row[0].as<int>(), row[1].as<std::int64_t>()});
    for (const auto& row : tx.exec("SELECT instance FROM " + instances_ + " WHERE expires_at > now()"))
      out.live.push_back(row[0].as<std::string>());
    out.lane_count = tx.exec("SELECT count(*) FROM " + lanes_)[0][0].as<int>();
    // Instances gone for an hour leave the list (status shows the recently departed).
    tx.exec("DELETE FROM " + instances_ + " WHERE expires_at < now() - interval '1 hour'");
    if (changed) tx.exec_params("SELECT pg_notify($1, $2)", kChannel, options_.schema);
    tx.commit();
  });
  if (out.lane_count != kLaneCount)
    throw SchemaError("table " + options_.schema + ".outbox_relay_lanes has " + std::to_string(out.lane_count) +
                      " lanes, this relay expects " + std::to_string(kLaneCount) +
                      " (as migration 0006 creates them); restore them or run `outbox-relay migrate`");
  return out;
}

std::vector<LaneLease> PgLeaseStore::acquire(int max_lanes, std::chrono::milliseconds ttl) {
  std::vector<LaneLease> out;
  if (max_lanes <= 0) return out;
  session_->run("acquiring lanes", [&](pqxx::connection& c) {
    pqxx::work tx(c);
    // SKIP LOCKED: instances acquiring at the same moment take disjoint lanes; a lane whose
    // owner is renewing it right now is skipped (and re-checked against its new expiry).
    for (const auto& row : tx.exec_params(
             "UPDATE " + lanes_ + " l SET owner = $1, epoch = l.epoch + 1, "
             "lease_until = now() + $3 * interval '1 millisecond', acquired_at = now(), renewed_at = now() "
             "WHERE l.lane IN (SELECT lane FROM " + lanes_ +
                 " WHERE owner IS NULL OR lease_until <= now() ORDER BY lane LIMIT $2 FOR UPDATE SKIP LOCKED) "
             "RETURNING l.lane, l.epoch",
             options_.instance, max_lanes, ms(ttl)))
      out.push_back({row[0].as<int>(), row[1].as<std::int64_t>()});
    tx.commit();
  });
  return out;
}

void PgLeaseStore::leave() {
  session_->run("releasing lanes", [&](pqxx::connection& c) {
    pqxx::work tx(c);
    tx.exec_params("UPDATE " + lanes_ + " SET owner = NULL, lease_until = now() WHERE owner = $1", options_.instance);
    tx.exec_params("DELETE FROM " + instances_ + " WHERE instance = $1", options_.instance);
    tx.exec_params("SELECT pg_notify($1, $2)", kChannel, options_.schema);
    tx.commit();
  });
}

bool PgLeaseStore::await_change(std::chrono::milliseconds timeout) {
  notified_ = false;
  try {
    (void)session_->await_notifications("waiting for lane changes", timeout);
  } catch (const std::exception& e) {
    std::this_thread::sleep_for(timeout);  // database away: not a busy loop
    throw TransientError(std::string("the lease session was lost while waiting for lane changes: ") + e.what());
  }
  return std::exchange(notified_, false);
}

}  // namespace outbox::relay::pg
