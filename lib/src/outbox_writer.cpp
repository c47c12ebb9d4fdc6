#include "outbox/outbox_writer.hpp"

#include <nlohmann/json.hpp>
#include <pqxx/binarystring>
#include <pqxx/result>

#include <stdexcept>

#include "outbox/sql_names.hpp"

namespace outbox {

OutboxWriter::OutboxWriter(std::string schema) : table_(qualified_table(schema, "outbox_events")) {}

std::string OutboxWriter::write(pqxx::transaction_base& tx, const NewEvent& e) const {
  if (e.aggregate_type.empty()) throw std::invalid_argument("outbox event: aggregate_type must not be empty");
  nlohmann::json headers = nlohmann::json::object();
  for (const auto& [k, v] : e.headers) headers[k] = v;
  pqxx::binarystring payload(e.payload.data(), e.payload.size());
  // An absent id or topic is sent as '' and becomes NULL: the id then defaults to a new UUID.
  auto r = tx.exec_params(
      "INSERT INTO " + table_ +
          " (id, aggregate_type, aggregate_id, event_type, payload, headers, topic)"
          " VALUES (COALESCE(NULLIF($1, '')::uuid, gen_random_uuid()), $2, $3, $4, $5, $6::jsonb, NULLIF($7, ''))"
          " RETURNING id::text",
      e.id.value_or(""), e.aggregate_type, e.aggregate_id, e.event_type, payload, headers.dump(), e.topic.value_or(""));
  return r[0][0].as<std::string>();
}

}  // namespace outbox
