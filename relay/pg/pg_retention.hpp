// Bounded tables (contract 6), run by the relay: deletes published outbox rows older than a
// window, and, when asked, consumer_inbox rows in the same database. Small batches, each its
// own short transaction; rows not yet published (pending or dead-lettered) are never touched.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <memory>
#include <stop_token>
#include <string>

#include "relay/core/logger.hpp"

namespace pqxx {
class connection_base;
}

namespace outbox::relay::pg {

class PgSession;

struct RetentionOptions {
  std::string conninfo;
  std::string schema = "public";
  std::chrono::seconds published_window{0};  // 0: keep published rows
  std::chrono::seconds inbox_window{0};      // 0: leave consumer_inbox to the consumers
  std::size_t batch_size = 1000;
  std::size_t max_batches = 1000;  // per table and pass; the rest waits for the next pass
};

struct RetentionPass {
  std::size_t published_deleted = 0;
  std::size_t inbox_deleted = 0;
};

class PgRetention {
 public:
  explicit PgRetention(RetentionOptions options);
  ~PgRetention();

  // One pass over both tables. Throws TransientError when the database is away, FatalError
  // when the inbox window is set but the schema has no consumer_inbox table.
  RetentionPass run_once();

  // Passes every `every` until `halt`; a failed pass is logged and tried again at the next
  // one, a misconfiguration (FatalError) is logged once and ends retention, not the relay.
  // Adds what it deleted to `deleted_total`.
  void run_every(std::chrono::seconds every, std::stop_token halt, std::atomic<std::uint64_t>& deleted_total,
                 Logger& logger);

 private:
  std::size_t purge_published(pqxx::connection_base& c);
  RetentionOptions options_;
  std::string schema_;  // quoted
  std::unique_ptr<PgSession> session_;
};

}  // namespace outbox::relay::pg
