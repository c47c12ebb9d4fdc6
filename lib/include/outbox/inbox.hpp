// Consumer side: process each event inside a database transaction that also records
// (consumer, event_id) in consumer_inbox. A redelivered event finds its row and is skipped,
// so the effect happens once. The database decides, even between concurrent consumers.
#pragma once

#include <functional>
#include <string>
#include <unordered_set>
#include <vector>

#include <pqxx/connection_base>
#include <pqxx/transaction>

namespace outbox {

enum class InboxOutcome {
  processed,  // first time: the handler ran and its transaction committed with the inbox row
  duplicate,  // seen before (or by a concurrent instance that committed first): skipped
};

class Inbox {
 public:
  // `consumer` names the effect (not the process): instances sharing the name share dedup.
  explicit Inbox(std::string consumer, std::string schema = "public");

  // In the caller's transaction: records the event; true when it is new and the caller
  // should apply its effect, false when it was processed already. A concurrent transaction
  // claiming the same event blocks here until that one commits (then false) or rolls back
  // (then true). Throws pqxx::data_exception when event_id is not a UUID.
  [[nodiscard]] bool claim(pqxx::transaction_base& tx, const std::string& event_id) const;

  // claim for many events in one statement (in id order, so two instances claiming overlapping
  // sets take their locks in the same order). Returns the ids it recorded, in canonical form
  // (lower case, as canonical_event_id): an id absent from it was processed before, or appears
  // twice in `event_ids`. Every id must be a UUID (pqxx::data_exception otherwise).
  [[nodiscard]] std::unordered_set<std::string> claim_all(pqxx::transaction_base& tx,
                                                          const std::vector<std::string>& event_ids) const;
  // Takes back claims of this transaction whose effect did not happen (the handler failed, or
  // its turn did not come), so a later delivery processes them.
  void unclaim(pqxx::transaction_base& tx, const std::vector<std::string>& event_ids) const;
  // A UUID the way PostgreSQL prints it: what claim_all returns for it.
  [[nodiscard]] static std::string canonical_event_id(const std::string& event_id);

  // Opens a transaction on `conn`, claims the event, runs `handler` in that transaction if
  // new, and commits. Any exception from the handler rolls everything back (the claim too,
  // so a retry processes the event) and propagates.
  [[nodiscard]] InboxOutcome process(pqxx::connection_base& conn, const std::string& event_id,
                                     const std::function<void(pqxx::work&)>& handler) const;

  [[nodiscard]] const std::string& consumer() const { return consumer_; }

 private:
  std::string consumer_;
  std::string table_;
};

}  // namespace outbox
