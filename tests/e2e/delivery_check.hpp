// What end-to-end tests and drills check from the outside: every outbox row's event id read
// back from the broker at least once, first deliveries in seq order per topic and key,
// duplicates counted. Plus the polling helpers: tests wait for a condition with a deadline.
#pragma once

#include <pqxx/pqxx>

#include <chrono>
#include <cstdint>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "tests/support/eventually.hpp"
#include "tests/support/mock_kafka.hpp"

namespace outbox::test {

// Polls `done` until it holds or the deadline passes, consuming the topic meanwhile (the mock
// cluster keeps a bounded log per partition, so the verifier reads while the relay writes).
template <class Pred>
bool poll_reading(TopicReader& reader, Pred done, std::chrono::milliseconds deadline) {
  for (auto until = std::chrono::steady_clock::now() + deadline; std::chrono::steady_clock::now() < until;) {
    if (done()) return true;
    reader.poll_for(std::chrono::milliseconds(100));
  }
  return done();
}

struct DeliveryVerdict {
  std::size_t rows = 0;          // rows in the outbox
  std::size_t distinct = 0;      // event ids of those rows read at least once
  std::size_t missing = 0;       // rows whose event id was never read: lost
  std::size_t duplicates = 0;    // deliveries of a row's id beyond its first
  std::size_t out_of_order = 0;  // first deliveries behind a later seq of the same topic and key
  std::string first_problem;     // a missing or out-of-order seq, for failure messages
  [[nodiscard]] bool ordered() const { return out_of_order == 0; }
};

// Compares what was read (from one or several topics, each in partition order) with every row
// of outbox_events. Messages whose id is no row's are ignored.
inline DeliveryVerdict check_deliveries(const std::string& url, const std::vector<ConsumedMessage>& messages,
                                        const std::string& id_header = "id") {
  std::map<std::string, std::int64_t> seq;
  {
    pqxx::connection c(url);
    pqxx::nontransaction tx(c);
    for (const auto& row : tx.exec("SELECT id::text, seq FROM outbox_events"))
      seq[row[0].c_str()] = row[1].as<std::int64_t>();
  }
  DeliveryVerdict v;
  v.rows = seq.size();
  std::set<std::string> seen;
  std::map<std::pair<std::string, std::string>, std::int64_t> last;  // (topic, key) -> seq
  for (const auto& m : messages) {
    auto id = header(m, id_header);
    if (!id || !seq.contains(*id)) continue;
    if (!seen.insert(*id).second) {
      ++v.duplicates;
      continue;
    }
    const std::int64_t s = seq[*id];
    auto [it, fresh] = last.try_emplace({m.topic, m.key}, s);
    if (fresh) continue;
    if (s < it->second) {
      if (v.out_of_order++ == 0)
        v.first_problem = "seq " + std::to_string(s) + " first delivered after seq " + std::to_string(it->second) +
                          " (topic " + m.topic + ", key " + m.key + ")";
    }
    it->second = std::max(it->second, s);
  }
  v.distinct = seen.size();
  v.missing = v.rows - v.distinct;
  if (v.missing > 0) {
    std::int64_t lowest = std::numeric_limits<std::int64_t>::max();
    for (const auto& [id, s] : seq)
      if (!seen.contains(id)) lowest = std::min(lowest, s);
    v.first_problem = "seq " + std::to_string(lowest) + " never read (" + std::to_string(v.missing) + " missing)";
  }
  return v;
}

}  // namespace outbox::test
