#include "tests/checker/hostile_rows.hpp"

#include <functional>
#include <utility>

namespace outbox::test::checker {
namespace {

struct Kind {
  const char* name;
  std::function<void(RowSpec&)> apply;
};

void dead(RowSpec& r) { r.expect = Expect::dead_lettered; }

// Every kind of hostile row, with what the relay must make of it (README "Messages").
const std::vector<Kind>& kinds() {
  static const std::vector<Kind> all{
      // Timestamps: any value is fine, none may stall the fetch.
      {"created_at infinity", [](RowSpec& r) { r.created_at = "infinity"; }},
      {"created_at -infinity", [](RowSpec& r) { r.created_at = "-infinity"; }},
      {"created_at 294276 AD", [](RowSpec& r) { r.created_at = "294276-12-31 23:59:59+00"; }},
      {"created_at 4713 BC", [](RowSpec& r) { r.created_at = "4713-01-01 00:00:00+00 BC"; }},
      {"next_attempt_at infinity", [](RowSpec& r) { r.next_attempt_at = "infinity"; }},
      {"next_attempt_at -infinity", [](RowSpec& r) { r.next_attempt_at = "-infinity"; }},
      {"next_attempt_at year 3000", [](RowSpec& r) { r.next_attempt_at = "3000-01-01 00:00:00+00"; }},
      {"attempts at int max", [](RowSpec& r) { r.attempts = 2147483647; }},
      {"attempts at int min", [](RowSpec& r) { r.attempts = -2147483647 - 1; }},
      // Payloads.
      {"payload NULL (tombstone)", [](RowSpec& r) { r.payload.reset(); }},
      {"payload empty", [](RowSpec& r) { r.payload = ""; }},
      {"payload binary 100 KB", [](RowSpec& r) {
         std::string p(100 * 1024, '\0');
         for (std::size_t i = 0; i < p.size(); ++i) p[i] = static_cast<char>(i * 7919 % 256);
         r.payload = p;
       }},
      {"payload 2 MB (over message.max.bytes)", [](RowSpec& r) {
         r.payload = std::string(2 * 1024 * 1024, 'x');
         dead(r);
       }},
      // Headers the relay writes.
      {"header id", [](RowSpec& r) {
         r.headers_json = R"({"id": "6f1c1f9e-8c1b-4c1e-9a53-000000000099"})";
         dead(r);
       }},
      {"header eventType", [](RowSpec& r) {
         r.headers_json = R"({"eventType": "Forged"})";
         dead(r);
       }},
      {"header named like the publisher header", [](RowSpec& r) {
         r.headers_json = R"({"relay": "forged lane=0 epoch=999"})";
         dead(r);
       }},
      {"header Id (case differs: the row's own)", [](RowSpec& r) {
         r.headers_json = R"({"Id": "x"})";
         r.headers_expected = {{"Id", "x"}};
       }},
      // Header values and names.
      {"headers of every JSON type", [](RowSpec& r) {
         r.headers_json = R"({"n": 5, "b": true, "z": null, "o": {"a": [1, 2]}, "s": "\u00e9t\u00e9"})";
         r.headers_expected = {{"n", "5"}, {"b", "true"}, {"z", std::nullopt}, {"o", R"({"a":[1,2]})"},
                               {"s", "\xc3\xa9t\xc3\xa9"}};
       }},
      {"unicode header name and value", [](RowSpec& r) {
         r.headers_json = R"({"ключ": "значение 😀"})";
         r.headers_expected = {{"ключ", "значение 😀"}};
       }},
      {"61 headers (the limit)", [](RowSpec& r) {
         std::string j = "{";
         for (int i = 0; i < 61; ++i) {
           j += (i ? ", " : "") + std::string("\"h") + std::to_string(i) + "\": \"v\"";
           r.headers_expected.emplace_back("h" + std::to_string(i), "v");
         }
         r.headers_json = j + "}";
       }},
      {"70 headers", [](RowSpec& r) {
         std::string j = "{";
         for (int i = 0; i < 70; ++i) j += (i ? ", " : "") + std::string("\"h") + std::to_string(i) + "\": \"v\"";
         r.headers_json = j + "}";
         dead(r);
       }},
      {"header of 20 KB", [](RowSpec& r) {
         r.headers_json = "{\"big\": \"" + std::string(20'000, 'y') + "\"}";
         dead(r);
       }},
      {"empty header name", [](RowSpec& r) {
         r.headers_json = R"({"": "x"})";
         dead(r);
       }},
      {"control character in a header name", [](RowSpec& r) {
         r.headers_json = R"({"bad\u0001key": "x"})";
         dead(r);
       }},
      // Topics.
      {"row topic valid", [](RowSpec& r) {
         r.topic = kOtherTopic;
         r.topic_expected = kOtherTopic;
       }},
      {"row topic empty (the template's)", [](RowSpec& r) { r.topic = ""; }},
      {"row topic with a space", [](RowSpec& r) {
         r.topic = "has space";
         dead(r);
       }},
      {"row topic unicode", [](RowSpec& r) {
         r.topic = "t\xc3\xb6pic";
         dead(r);
       }},
      {"row topic of 250 characters", [](RowSpec& r) {
         r.topic = std::string(250, 'a');
         dead(r);
       }},
      {"row topic internal (__consumer_offsets)", [](RowSpec& r) {
         r.topic = "__consumer_offsets";
         dead(r);
       }},
      {"row topic '.'", [](RowSpec& r) {
         r.topic = ".";
         dead(r);
       }},
      // Identity columns.
      {"aggregate id empty", [](RowSpec& r) { r.aggregate_id = ""; }},
      {"aggregate id unicode", [](RowSpec& r) { r.aggregate_id += "-\xc3\xa4\xf0\x9f\x98\x80"; }},
      {"aggregate id of 10 KB", [](RowSpec& r) { r.aggregate_id += std::string(10'000, 'k'); }},
      {"aggregate id of 70 KB", [](RowSpec& r) {
         r.aggregate_id += std::string(70'000, 'k');
         dead(r);
       }},
      {"aggregate type unicode (no valid topic)", [](RowSpec& r) {
         r.aggregate_type = "\xc3\xb6rder";
         dead(r);
       }},
      {"event type empty", [](RowSpec& r) { r.event_type = ""; }},
      {"event type unicode and 20 KB", [](RowSpec& r) { r.event_type = "\xc3\xa9v\xc3\xa9nement" + std::string(20'000, 'e'); }},
      // Rows a producer wrote as already published: never sent.
      {"inserted published", [](RowSpec& r) {
         r.published_at = "2020-01-01 00:00:00+00";
         r.expect = Expect::not_sent;
       }},
  };
  return all;
}

}  // namespace

const std::string& insert_sql() {
  static const std::string sql =
      "INSERT INTO outbox_events (aggregate_type, aggregate_id, event_type, payload, headers, topic, created_at, "
      "next_attempt_at, attempts, published_at) VALUES ($1, $2, $3, "
      "CASE WHEN $4::text IS NULL THEN NULL ELSE decode($4::text, 'hex') END, $5::jsonb, $6, "
      "coalesce($7::timestamptz, now()), $8::timestamptz, $9, $10::timestamptz) RETURNING id::text, seq";
  return sql;
}

RowSpec healthy_row(const std::string& aggregate_type, const std::string& aggregate_id, long n, std::mt19937& rng) {
  RowSpec r;
  r.aggregate_type = aggregate_type;
  r.aggregate_id = aggregate_id;
  r.event_type = "Changed";
  r.payload = "{\"n\":" + std::to_string(n) + "}";
  if (rng() % 4 == 0) {
    const std::string tp = "00-" + std::to_string(n) + "-01";
    r.headers_json = "{\"traceparent\": \"" + tp + "\"}";
    r.headers_expected = {{"traceparent", tp}};
  }
  r.topic_expected = template_topic(aggregate_type);
  r.label = "healthy";
  return r;
}

std::vector<RowSpec> hostile_rows(int count, std::mt19937& rng, const std::string& salt) {
  std::vector<RowSpec> out;
  for (int k = 0; k < count; ++k) {
    const auto& kind = kinds()[rng() % kinds().size()];
    RowSpec r;
    r.aggregate_id = "hostile-" + salt + "-" + std::to_string(k);
    r.payload = "{\"hostile\":" + std::to_string(k) + "}";
    kind.apply(r);
    if (r.topic_expected.empty()) r.topic_expected = template_topic(r.aggregate_type);
    r.label = std::string("hostile: ") + kind.name;
    out.push_back(std::move(r));
  }
  return out;
}

int hostile_kinds() { return static_cast<int>(kinds().size()); }

}  // namespace outbox::test::checker
