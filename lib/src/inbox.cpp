#include "outbox/inbox.hpp"

#include <pqxx/result>

#include <stdexcept>

#include "outbox/sql_names.hpp"

namespace outbox {

Inbox::Inbox(std::string consumer, std::string schema)
    : consumer_(std::move(consumer)), table_(qualified_table(schema, "consumer_inbox")) {
  if (consumer_.empty()) throw std::invalid_argument("inbox: consumer name must not be empty");
}

bool Inbox::claim(pqxx::transaction_base& tx, const std::string& event_id) const {
  auto r = tx.exec_params("INSERT INTO " + table_ +
                              " (consumer, event_id) VALUES ($1, $2::uuid) ON CONFLICT (consumer, event_id) DO NOTHING",
                          consumer_, event_id);
  return r.affected_rows() == 1;
}

InboxOutcome Inbox::process(pqxx::connection_base& conn, const std::string& event_id,
                            const std::function<void(pqxx::work&)>& handler) const {
  pqxx::work tx(conn);
  if (!claim(tx, event_id)) return InboxOutcome::duplicate;  // tx aborts on scope exit: nothing written
  handler(tx);
  tx.commit();
  return InboxOutcome::processed;
}

}  // namespace outbox
