// The row fuzzer: rows a producer can insert with every column at its edges (infinite and
// extreme timestamps, NULL and empty values, huge and many headers, header names the relay
// writes, unicode and invalid topics, oversized payloads and ids), each with what the relay
// must make of it: a message of a given shape, a dead letter with a reason, or nothing.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "tests/checker/history.hpp"

namespace outbox::test::checker {

// One row as a producer inserts it: every column a bind parameter (nullopt: SQL NULL, or the
// column's default where one exists: created_at).
struct RowSpec {
  std::string aggregate_type = "order";
  std::string aggregate_id;
  std::string event_type = "created";
  std::optional<std::string> payload;   // bytes
  std::string headers_json = "{}";
  std::optional<std::string> topic;
  std::optional<std::string> created_at;       // timestamptz text; nullopt: now()
  std::optional<std::string> next_attempt_at;  // timestamptz text
  int attempts = 0;
  std::optional<std::string> published_at;     // timestamptz text
  // What must come of it.
  Expect expect = Expect::delivered;
  std::string topic_expected;  // the message's topic
  Headers headers_expected;    // the row headers the message must carry
  std::string label;
};

// The INSERT for a RowSpec: parameters in RowSpec's field order, RETURNING id::text, seq.
[[nodiscard]] const std::string& insert_sql();

// A healthy event of `aggregate_id` (payload {"n":<n>}, a traceparent header now and then).
[[nodiscard]] RowSpec healthy_row(const std::string& aggregate_type, const std::string& aggregate_id, long n,
                                  std::mt19937& rng);

// `count` hostile rows, each in an aggregate of its own ("hostile-<salt>-<k>") so a dead letter
// holds back nobody else. Every kind is drawn with equal chance.
[[nodiscard]] std::vector<RowSpec> hostile_rows(int count, std::mt19937& rng, const std::string& salt);

// How many kinds the fuzzer knows (for reports).
[[nodiscard]] int hostile_kinds();

// The topic a row without its own topic goes to.
[[nodiscard]] inline std::string template_topic(const std::string& aggregate_type) {
  return "outbox.event." + aggregate_type;
}

// A second valid topic hostile rows may name; the runner creates and reads it.
inline const std::string kOtherTopic = "checker.other";

}  // namespace outbox::test::checker
