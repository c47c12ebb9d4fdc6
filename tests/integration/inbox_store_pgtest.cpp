// PgInboxStore against a real PostgreSQL cluster. A batch lands by COPY when none of it is in
// the inbox yet, and by INSERT ... ON CONFLICT when some of it is (a redelivery) or a row is
// refused: whichever way, every byte lands as it came, each event once, in the batch's order.
#include <catch2/catch.hpp>

#include <thread>

#include "outbox/common/encoding.hpp"
#include "relay/core/inbox_lander.hpp"
#include "relay/pg/pg_inbox_store.hpp"
#include "tests/integration/pg_fixture.hpp"

using namespace outbox;
using namespace outbox::relay;
using namespace outbox::relay::pg;

namespace {

InboxRow row(std::string id, std::int32_t partition, std::int64_t offset, std::optional<std::string> key,
             std::optional<std::string> value,
             std::vector<std::pair<std::string, std::optional<std::string>>> headers = {},
             std::optional<std::string> type = "Moved") {
  InboxMessage m;
  m.topic = "inbox.store";
  m.partition = partition;
  m.offset = offset;
  m.key = std::move(key);
  m.value = std::move(value);
  m.headers = std::move(headers);
  auto json = headers_json(m.headers);
  REQUIRE(json);
  return InboxRow{std::move(id), std::move(type), std::move(*json), std::move(m)};
}

std::vector<InboxRow> numbered(int from, int to) {
  std::vector<InboxRow> rows;
  for (int i = from; i <= to; ++i) rows.push_back(row("ev-" + std::to_string(i), i % 3, i, "k" + std::to_string(i % 4), "v"));
  return rows;
}

std::string all_bytes() {
  std::string s;
  for (int i = 0; i < 256; ++i) s += static_cast<char>(i);
  return s;
}

// The event ids in seq order.
std::vector<std::string> ids_in_order(const std::string& url) {
  pqxx::connection c(url);
  pqxx::nontransaction tx(c);
  std::vector<std::string> ids;
  for (const auto& r : tx.exec("SELECT event_id FROM inbox_events ORDER BY seq")) ids.push_back(r[0].c_str());
  return ids;
}

}  // namespace

TEST_CASE("inbox store: every byte lands as sent, whatever COPY's text format would make of it", "[pg][inbox]") {
  const auto url = test::fresh_database();
  PgInboxStore store({url, "public", "hostile\tinbox\\N"});
  const std::string bytes = all_bytes();
  // Values that mean something to COPY's text format: tab, newline, carriage return,
  // backslash, the NULL marker \N and the end marker \. ; empty next to NULL; every byte.
  std::vector<InboxRow> rows;
  rows.push_back(row("tab\there", 0, 0, bytes, bytes, {{"h\tname", "line\nbreak"}, {"bin", std::string("\xff\x00\x01", 3)}}));
  rows.push_back(row("\\N", 0, 1, std::string(), std::string(), {{"empty", std::string()}, {"null", std::nullopt}}, ""));
  rows.push_back(row("\\.", 1, 2147483647, std::nullopt, std::nullopt, {}, std::nullopt));
  rows.push_back(row("cr\r\nlf \\ back\\slash \"quote\" \xc3\xa9\xe2\x82\xac", 2147483647, 9223372036854775807LL,
                     std::string("\\N\t\n\r\\.", 8), std::string("\\.\n", 3),
                     {{"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}, {"\\N", "\\."}}));
  const auto out = store.land(rows);
  CHECK(out.inserted == rows.size());
  CHECK(out.duplicates == 0);
  CHECK(out.refused.empty());
  CHECK(store.copies() == 1);  // it went by COPY

  pqxx::connection c(url);
  pqxx::nontransaction tx(c);
  auto got = tx.exec(
      "SELECT inbox, event_id, topic, partition, \"offset\", encode(key, 'hex'), key IS NULL, event_type, "
      "event_type IS NULL, encode(payload, 'hex'), payload IS NULL, headers::text FROM inbox_events ORDER BY seq");
  REQUIRE(got.size() == rows.size());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const auto& want = rows[i];
    const auto& r = got[static_cast<int>(i)];
    INFO("row " << i);
    CHECK(r[0].as<std::string>() == "hostile\tinbox\\N");
    CHECK(r[1].as<std::string>() == want.event_id);
    CHECK(r[2].as<std::string>() == want.message.topic);
    CHECK(r[3].as<std::int64_t>() == want.message.partition);
    CHECK(r[4].as<std::int64_t>() == want.message.offset);
    CHECK(r[6].as<bool>() == !want.message.key);
    if (want.message.key) CHECK(r[5].as<std::string>() == common::hex(*want.message.key));
    CHECK(r[8].as<bool>() == !want.event_type);
    if (want.event_type) CHECK(r[7].as<std::string>() == *want.event_type);
    CHECK(r[10].as<bool>() == !want.message.value);
    if (want.message.value) CHECK(r[9].as<std::string>() == common::hex(*want.message.value));
    // The same JSON value as the one built (jsonb normalises spacing; compare as jsonb).
    CHECK(tx.exec_params("SELECT $1::jsonb = $2::jsonb", r[11].as<std::string>(), want.headers_json)[0][0].as<bool>());
  }
}

TEST_CASE("inbox store: a batch partly in the inbox lands its new rows in order and counts the rest as duplicates",
          "[pg][inbox]") {
  const auto url = test::fresh_database();
  PgInboxStore store({url, "public", "orders"});
  CHECK(store.land(numbered(1, 10)).inserted == 10);
  CHECK(store.copies() == 1);

  // A redelivery overlapping the last batch: COPY fails on ev-6, the INSERT lands 11..15.
  auto again = store.land(numbered(6, 15));
  CHECK(again.inserted == 5);
  CHECK(again.duplicates == 5);
  CHECK(store.copies() == 1);
  // Right after duplicates the next batch goes straight to the INSERT; once one finds none,
  // COPY again.
  CHECK(store.land(numbered(16, 20)).inserted == 5);
  CHECK(store.copies() == 1);
  CHECK(store.land(numbered(21, 25)).inserted == 5);
  CHECK(store.copies() == 2);
  // All of a batch redelivered: nothing new, nothing twice.
  auto all_dup = store.land(numbered(21, 25));
  CHECK(all_dup.inserted == 0);
  CHECK(all_dup.duplicates == 5);

  std::vector<std::string> want;
  for (int i = 1; i <= 25; ++i) want.push_back("ev-" + std::to_string(i));
  CHECK(ids_in_order(url) == want);
  CHECK(test::scalar(url, "SELECT count(DISTINCT event_id) FROM inbox_events") == 25);
}

TEST_CASE("inbox store: a row PostgreSQL refuses fails the COPY, then only that row is refused", "[pg][inbox]") {
  const auto url = test::fresh_database();
  PgInboxStore store({url, "public", "orders"});
  auto rows = numbered(1, 6);
  rows[2].headers_json = "[not json";                   // refused by jsonb
  rows[4].event_id = std::string("nul\0inside", 10);    // refused as text (a NUL byte)
  auto out = store.land(rows);
  CHECK(out.inserted == 4);
  REQUIRE(out.refused.size() == 2);
  CHECK(out.refused[0].first == 2);
  CHECK(out.refused[1].first == 4);
  CHECK(store.copies() == 0);
  CHECK(ids_in_order(url) == std::vector<std::string>{"ev-1", "ev-2", "ev-4", "ev-6"});
}

TEST_CASE("inbox store: two sidecars landing the same events at once store each one once", "[pg][inbox]") {
  const auto url = test::fresh_database();
  PgInboxStore a({url, "public", "orders"});
  PgInboxStore b({url, "public", "orders"});
  const auto rows = numbered(1, 2000);
  for (int round = 0; round < 5; ++round) {
    test::exec(url, "TRUNCATE inbox_events");
    LandOutcome oa, ob;
    std::thread ta([&] { oa = a.land(rows); });
    std::thread tb([&] { ob = b.land(rows); });
    ta.join();
    tb.join();
    INFO("round " << round);
    CHECK(oa.inserted + ob.inserted == rows.size());
    CHECK(oa.duplicates + ob.duplicates == rows.size());
    CHECK(test::scalar(url, "SELECT count(*) FROM inbox_events") == 2000);
    CHECK(test::scalar(url, "SELECT count(DISTINCT event_id) FROM inbox_events") == 2000);
  }
}
