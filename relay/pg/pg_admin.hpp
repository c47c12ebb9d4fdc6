// What the operator CLI asks of the outbox: which instances hold which lanes, throughput, dead
// letters (list, show, requeue, purge) and replays, on a connection of its own.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "relay/pg/pg_outbox_store.hpp"

namespace outbox::relay::pg {

class PgSession;

// The channel the relay LISTENs on (PgWakeup) and the insert trigger of migration 0002 notifies.
inline constexpr const char* kWakeupChannel = "outbox_events";

// The operator's input is wrong in a way only the database could tell (a timestamp it cannot
// parse); the message names the flag.
class BadArgument : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Events named by seq or by event id (UUID, lower case).
struct EventRefs {
  std::vector<std::int64_t> seqs;
  std::vector<std::string> ids;
  [[nodiscard]] bool empty() const { return seqs.empty() && ids.empty(); }
};

// One PostgreSQL session. Timestamps are ISO 8601 UTC text ("2024-05-01T12:00:00.123456Z").
struct SessionInfo {
  int pid = 0;
  std::optional<std::string> application_name;  // null when pg_stat_activity hides it
  std::optional<std::string> user;
  std::optional<std::string> client_addr;       // null: Unix socket, or hidden (another role)
  std::optional<int> client_port;
  std::optional<std::string> backend_start;
  std::optional<std::string> state;
  std::optional<double> connected_s;             // now() - backend_start, database clock
};

// A relay instance in outbox_relay_instances (live, or gone within the last hour).
struct InstanceInfo {
  std::string instance;
  std::string host;
  int pid = 0;
  std::string started_at;
  double seen_s = 0;        // since its last renewal
  double expires_in_s = 0;  // negative: gone (expired)
  long long lanes = 0;      // leases it holds now
  std::optional<double> lease_age_s;  // since the least recent renewal of those leases
};

struct LaneInfo {
  int lane = 0;
  std::optional<std::string> owner;  // null: free; an expired lease keeps its last owner
  long long epoch = 0;
  double expires_in_s = 0;           // negative: expired
  std::optional<double> renewed_s;   // since its last renewal
};

struct Activity {
  std::string now;                                 // the database clock
  long long held_back = 0;                         // pending rows waiting behind a dead letter of their aggregate
  std::optional<long long> published_last_minute;  // null: not counted in time (large table)
  std::optional<long long> published_last_hour;
  std::optional<std::string> last_published_at;
  bool published_counted = false;
  std::vector<InstanceInfo> instances;             // live first, then by name
  std::vector<LaneInfo> lanes;                     // by lane
  long long unowned_lanes = 0;                     // free or expired: their events wait
  std::vector<SessionInfo> sessions;               // sessions of the relay's application_name
};

// What names an event to an operator.
struct EventIdentity {
  std::int64_t seq = 0;
  std::string id;
  std::string aggregate_type;
  std::string aggregate_id;
  std::string event_type;
};

struct DeadLetter : EventIdentity {
  int attempts = 0;
  std::string dead_lettered_at;
  std::optional<std::string> last_error;
};

struct DeadLetterPage {
  std::vector<DeadLetter> rows;  // in seq order
  long long total = 0;           // matching rows before the limit
};

struct EventRow : EventIdentity {
  std::optional<std::string> payload;  // raw bytes; null payload -> nullopt
  std::string headers;                 // JSON object text
  std::optional<std::string> topic;
  std::string created_at;
  std::optional<std::string> published_at;
  int attempts = 0;
  std::optional<std::string> next_attempt_at;
  std::optional<std::string> last_error;
  std::optional<std::string> dead_lettered_at;
  long long waiting_behind = 0;  // unpublished later events of its aggregate (held back if dead)
};

// The rows changed, or, when some named event did not match, nothing changed and `missing`
// names those (all or nothing).
struct ChangeOutcome {
  std::vector<DeadLetter> rows;
  std::vector<std::string> missing;
};

struct ReplaySelector {
  std::optional<std::int64_t> from_seq;  // inclusive
  std::optional<std::int64_t> to_seq;    // inclusive
  std::optional<std::string> aggregate_type;
  std::optional<std::string> aggregate_id;
  std::optional<std::string> since;      // timestamps as the operator typed them; PostgreSQL parses
  std::optional<std::string> until;      // (session time zone UTC) inclusive / exclusive on published_at
};

struct ReplayOutcome {
  long long matched = 0;            // published rows the selector matches (at most limit + 1 counted)
  long long replayed = 0;           // rows set unpublished (0 on a dry run or when over the limit)
  bool over_limit = false;          // matched > limit: nothing was replayed
  std::optional<std::int64_t> min_seq, max_seq;
  long long aggregates = 0;
  long long held_back = 0;          // of them, behind a dead-lettered event of their aggregate
};

class PgAdmin {
 public:
  // `relay_application_name`: the relay's database.application_name, to find its sessions.
  PgAdmin(std::string conninfo, std::string schema, std::string relay_application_name);
  ~PgAdmin();

  // Throughput, the live instances and their lanes. Throws TransientError/FatalError (pg_errors).
  [[nodiscard]] Activity activity();

  [[nodiscard]] DeadLetterPage list_dead_letters(std::optional<std::string> aggregate_type,
                                                 std::optional<std::string> aggregate_id, long long limit);
  // Any row of the outbox, dead-lettered or not.
  [[nodiscard]] std::optional<EventRow> find_event(const EventRefs& ref);

  // Dead-lettered rows named in `refs` (or every one when `all`) become pending again:
  // dead_lettered_at, attempts, next_attempt_at reset; last_error kept. Wakes the relay.
  [[nodiscard]] ChangeOutcome requeue(const EventRefs& refs, bool all);
  // Deletes dead-lettered rows; the later events of their aggregates flow again. Wakes the relay.
  [[nodiscard]] ChangeOutcome purge(const EventRefs& refs, bool all);

  // Sets published rows matching `selector` unpublished (attempts and next_attempt_at reset),
  // in one statement, unless more than `limit` match (0: no limit) or `dry_run`.
  // Throws BadArgument for a timestamp PostgreSQL cannot parse.
  [[nodiscard]] ReplayOutcome replay(const ReplaySelector& selector, long long limit, bool dry_run);

 private:
  // `change` ends with the table aliased `o`; `needs` says which privilege it takes.
  [[nodiscard]] ChangeOutcome change_dead_letters(const EventRefs& refs, bool all, const std::string& change,
                                                  const std::string& what, const std::string& needs);

  std::string schema_;
  std::string table_;
  std::string relay_application_name_;
  std::unique_ptr<PgSession> session_;
};

}  // namespace outbox::relay::pg
