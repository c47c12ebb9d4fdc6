#include "outbox/inbox.hpp"

#include <pqxx/result>

#include <cctype>
#include <stdexcept>

#include "outbox/common/text_checks.hpp"
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

namespace {

// {id,id}: UUIDs need no quoting inside an array literal.
std::string uuid_array(const std::vector<std::string>& ids) {
  std::string s = "{";
  for (const auto& id : ids) {
    if (s.size() > 1) s += ',';
    s += id;
  }
  return s + "}";
}

}  // namespace

std::string Inbox::canonical_event_id(const std::string& event_id) {
  std::string s = event_id;
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::unordered_set<std::string> Inbox::claim_all(pqxx::transaction_base& tx, const std::vector<std::string>& event_ids) const {
  std::unordered_set<std::string> fresh;
  if (event_ids.empty()) return fresh;
  for (const auto& id : event_ids)
    if (!common::looks_like_uuid(id)) throw pqxx::data_exception("inbox: event id \"" + id + "\" is not a UUID");
  auto r = tx.exec_params("INSERT INTO " + table_ +
                              " (consumer, event_id) SELECT $1, u FROM (SELECT DISTINCT unnest($2::uuid[]) AS u) d "
                              "ORDER BY u ON CONFLICT (consumer, event_id) DO NOTHING RETURNING event_id::text",
                          consumer_, uuid_array(event_ids));
  fresh.reserve(r.size());
  for (const auto& row : r) fresh.emplace(row[0].c_str());
  return fresh;
}

void Inbox::unclaim(pqxx::transaction_base& tx, const std::vector<std::string>& event_ids) const {
  if (event_ids.empty()) return;
  for (const auto& id : event_ids)
    if (!common::looks_like_uuid(id)) throw pqxx::data_exception("inbox: event id \"" + id + "\" is not a UUID");
  tx.exec_params("DELETE FROM " + table_ + " WHERE consumer = $1 AND event_id = ANY ($2::uuid[])", consumer_,
                 uuid_array(event_ids));
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
