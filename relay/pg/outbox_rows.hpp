// The outbox rows as the store reads and writes them: the fetch and sampling statements,
// the fence on marks, and decoding a fetched row into the core's event. Every statement holds
// for any value the table's columns can hold (contract 9).
#pragma once

#include <pqxx/pqxx>

#include <cstdint>
#include <string>

#include "relay/core/outbox_event.hpp"

namespace outbox::relay::pg::detail {

// $1 cursor, $2 limit, $3 lanes, $4 payload limit, $5 headers limit, $6 settled prefix, $7
// reopen count at the head scan, $8/$9 excluded aggregates (types, ids) when `excluding`.
[[nodiscard]] std::string fetch_sql(const std::string& schema, bool excluding);
// The rows fetch_sql would return, by seq only, for when a fetch fails on a row's content.
[[nodiscard]] std::string fetch_seqs_sql(const std::string& schema, bool excluding);
// One row as fetch_sql reads it ($6 its seq).
[[nodiscard]] std::string fetch_one_sql(const std::string& schema);
// The sequence's last value, the snapshot's xmax and the transaction ids in use.
[[nodiscard]] std::string sample_sql(const std::string& sequence);
// A 32-bit transaction id in use now as a 64-bit one, given the snapshot's 64-bit xmax.
[[nodiscard]] std::int64_t widen_xid(std::uint32_t xid, std::int64_t xmax8);
// The statement failed on a value it computed on (classes 22 and 54): a row's problem.
[[nodiscard]] bool row_content_error(const pqxx::sql_error& e);
// " AND <the row's lane is held by owner_param>" for marks and failures.
[[nodiscard]] std::string fence(const std::string& schema, const std::string& owner_param);
// At most `max` bytes of `text`, cut at a character boundary, invalid UTF-8 replaced.
[[nodiscard]] std::string utf8_prefix(const std::string& text, std::size_t max);
// One fetched row as the core's event; a NULL where the schema forbids one makes a bad row.
[[nodiscard]] OutboxEvent decode_row(const pqxx::row& row);

}  // namespace outbox::relay::pg::detail
