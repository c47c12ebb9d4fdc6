// The schedule checker's view of one run, taken from outside the relay: what producers wrote
// (and when, and whether it committed), what a consumer read back from the broker, and the
// outbox rows at the end. check_history() holds it against the contracts, Jepsen-style: a
// pure function, so the same checker judges runs against PostgreSQL and the real binary and
// runs of the core against fakes, and its own tests can feed it histories that break a rule.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace outbox::test::checker {

using Headers = std::vector<std::pair<std::string, std::optional<std::string>>>;

enum class Fate {
  committed,    // the producer heard COMMIT succeed
  rolled_back,  // the producer rolled it back (or the statement failed before COMMIT)
  unknown,      // COMMIT was sent and no answer came (session killed, database restarted)
};

enum class Expect {
  delivered,      // a publishable row: at least once on the broker, then marked
  dead_lettered,  // a bad row: never sent, dead-lettered with a reason
  not_sent,       // inserted as already published: never sent
};

// One event a producer wrote. Times are seconds since the run started, on one monotonic clock.
struct Written {
  std::string id;
  std::string aggregate_type;
  std::string aggregate_id;
  std::int64_t tx = 0;  // the producer transaction that wrote it
  int index = 0;        // insertion order within that transaction
  double written_at = 0;    // before the INSERT was sent (after any lock on the aggregate)
  double committed_at = -1; // when COMMIT returned; -1 unless fate is committed
  Fate fate = Fate::committed;
  Expect expect = Expect::delivered;
  // The message the relay must make of it.
  std::string topic;
  std::optional<std::string> value;  // nullopt: a null value
  std::string event_type;
  Headers headers;             // the row's headers as the message must carry them
  std::string label;           // what kind of row this is (for reports): "healthy", "hostile: ..."
};

// One message read back, in the order of its partition.
struct Delivery {
  std::string topic;
  int partition = 0;
  std::int64_t offset = 0;
  std::int64_t timestamp_ms = -1;  // producer CreateTime
  double received_at = 0;          // when the checker's consumer got it
  bool null_key = false;
  std::string key;
  std::optional<std::string> value;
  Headers headers;
};

// An outbox row at the end of the run.
struct RowState {
  std::int64_t seq = 0;
  bool published = false;
  bool dead = false;
  std::string last_error;
};

struct CheckOptions {
  std::string id_header = "id";
  std::string event_type_header = "eventType";
  std::string publisher_header = "relay";  // "<instance> lane=<n> epoch=<e>"; empty: not checked
  int partitions = 4;                      // of every topic
  bool check_partitioner = true;           // keys on Java's murmur2 partition
  // Rows are deleted when marked (relay.mark_mode delete): a missing row is a marked one.
  bool rows_deleted_when_marked = false;
  // Longest a healthy event may take from its commit to its first delivery (a bad row or a
  // stalled relay holding everything back shows here).
  double latency_bound_s = 10;
};

struct Violation {
  std::string rule;       // lost, rolled back delivered, order, shape, partition, publisher, ...
  std::string aggregate;  // type/id, when the rule is about one
  std::string detail;
};

// Every violation found (empty: the run kept every contract). `rows` by event id.
[[nodiscard]] std::vector<Violation> check_history(const std::vector<Written>& written,
                                                   const std::vector<Delivery>& deliveries,
                                                   const std::map<std::string, RowState>& rows,
                                                   const CheckOptions& options);

// The inbox stage: a row of inbox_events at the end of the run.
struct InboxRowState {
  std::string event_id;
  std::string topic;
  int partition = 0;
  std::int64_t offset = 0;
  std::int64_t seq = 0;
};

// The inbox against what the relays delivered: every delivered event in the inbox (none lost,
// none refused onto the sidecar's dead-letter topic: the relay's messages are all storable),
// each row landed from a message that carried its id, and each partition's rows in offset
// order along the inbox's seq. `dead_lettered_ids`: ids read from the dead-letter topics.
[[nodiscard]] std::vector<Violation> check_inbox(const std::vector<Delivery>& deliveries,
                                                 const std::vector<InboxRowState>& inbox,
                                                 const std::set<std::string>& dead_lettered_ids);

// A minimal history for a report: the written events of one aggregate with their fate, times,
// seq and first delivery, in seq order.
[[nodiscard]] std::string describe_aggregate(const std::string& aggregate, const std::vector<Written>& written,
                                             const std::vector<Delivery>& deliveries,
                                             const std::map<std::string, RowState>& rows,
                                             const CheckOptions& options);

}  // namespace outbox::test::checker
