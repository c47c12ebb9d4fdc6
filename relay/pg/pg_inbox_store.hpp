// The inbox sidecar's PostgreSQL adapter: lands a batch of consumed messages in the service's
// inbox_events (migration 0009) in one transaction, in the batch's order: by COPY when none of
// it is there yet, else (a redelivery, a refused row) by one INSERT ... ON CONFLICT (inbox,
// event_id) DO NOTHING; and reads what the operators and metrics need.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <stop_token>
#include <thread>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "relay/core/inbox_ports.hpp"

namespace pqxx {
class connection_base;
}

namespace outbox::relay::pg {

class PgSession;

struct PgInboxOptions {
  std::string conninfo;
  std::string schema = "public";
  std::string inbox = "default";
};

struct InboxBacklog {
  std::int64_t pending = 0, retrying = 0, dead_lettered = 0, held_back = 0;
  double oldest_age_s = 0;
};

class PgInboxStore final : public InboxStore {
 public:
  explicit PgInboxStore(PgInboxOptions options);
  ~PgInboxStore() override;

  // A statement that fails on one row's content (SQLSTATE classes 22 and 54) lands the rows one
  // by one: the others land, the failing ones come back refused.
  LandOutcome land(const std::vector<InboxRow>& rows) override;
  void ping() override;
  // On a thread of the store's own (one session, never two statements at once): the caller
  // consumes the next batch while this one's transaction runs.
  void start_landing(const std::vector<InboxRow>* rows) override;
  LandOutcome finish_landing() override;
  // Throws SchemaError when inbox_events or one of its columns is missing (not migrated).
  void verify_schema();
  [[nodiscard]] InboxBacklog backlog();
  // Deletes processed rows older than `older_than`, `batch` per transaction, at most
  // `max_batches` batches; returns how many.
  std::size_t purge_processed(std::chrono::seconds older_than, int batch, int max_batches);
  [[nodiscard]] std::uint64_t reconnects() const;
  [[nodiscard]] std::uint64_t isolations() const { return isolations_; }
  // Batches landed by COPY (the others went through the INSERT: redeliveries, refused rows).
  [[nodiscard]] std::uint64_t copies() const { return copies_; }

 private:
  bool copy(const std::vector<InboxRow>& rows);
  LandOutcome insert(const std::vector<InboxRow>& rows);
  LandOutcome land_one_by_one(pqxx::connection_base& c, const std::vector<InboxRow>& rows);
  void worker_loop(std::stop_token halt);

  PgInboxOptions options_;
  std::string table_;
  std::string insert_sql_;
  bool insert_next_ = false;
  std::atomic<std::uint64_t> copies_{0};
  std::unique_ptr<PgSession> session_;
  std::atomic<std::uint64_t> isolations_{0};
  // The landing handed to the worker, and its outcome.
  std::mutex mutex_;
  std::condition_variable_any changed_;
  const std::vector<InboxRow>* job_ = nullptr;
  bool done_ = false;
  LandOutcome outcome_;
  std::exception_ptr failure_;
  std::jthread worker_;  // last: joined first
};

}  // namespace outbox::relay::pg
