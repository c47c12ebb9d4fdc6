// What the operator commands `inbox status | dead-letters list|show|requeue|skip` read and change
// in the service's inbox_events, through the migration's own functions where it has them
// (inbox_backlog, inbox_requeue, inbox_skip), so the CLI and a service's SQL agree.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "relay/pg/pg_inbox_store.hpp"

namespace outbox::relay::pg {

class PgSession;

struct InboxStatus {
  InboxBacklog backlog;
  std::int64_t rows = 0;        // every row of the inbox, processed ones included
  std::int64_t processed = 0;
  std::optional<std::string> last_received_at;   // newest received_at
  std::optional<std::string> last_processed_at;  // newest processed_at
  struct Source {
    std::string topic;
    std::int32_t partition = 0;
    std::int64_t last_offset = 0;  // highest offset landed
    std::int64_t rows = 0;
  };
  std::vector<Source> sources;  // per topic and partition
};

struct InboxEventRow {
  std::int64_t seq = 0;
  std::string event_id, topic;
  std::int32_t partition = 0;
  std::int64_t offset = 0;
  std::optional<std::string> key, event_type, payload;  // key and payload as bytes
  std::string headers;                                  // the JSON array
  std::string received_at;
  std::optional<std::string> processed_at, next_attempt_at, last_error, dead_lettered_at;
  int attempts = 0;
};

class PgInboxAdmin {
 public:
  PgInboxAdmin(std::string conninfo, std::string schema, std::string inbox);
  ~PgInboxAdmin();

  InboxStatus status();
  // Dead letters in seq order, at most `limit` (0: all); total is the count of them all.
  std::pair<std::vector<InboxEventRow>, std::int64_t> dead_letters(std::int64_t limit);
  // By seq or event id.
  std::optional<InboxEventRow> find(const std::optional<std::int64_t>& seq, const std::optional<std::string>& event_id);
  // Dead letters pending again (nullopt: all of them), or given up on (marked processed with
  // no effect). Returns the seqs changed.
  std::vector<std::int64_t> requeue(const std::optional<std::vector<std::int64_t>>& seqs);
  std::vector<std::int64_t> skip(const std::vector<std::int64_t>& seqs);
  // The seqs of these event ids in this inbox (unknown ones left out).
  std::vector<std::int64_t> seqs_of(const std::vector<std::string>& event_ids);

 private:
  std::string schema_;  // quoted
  std::string inbox_;
  std::unique_ptr<PgSession> session_;
};

}  // namespace outbox::relay::pg
