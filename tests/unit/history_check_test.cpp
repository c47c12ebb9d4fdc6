// The schedule checker itself: hand-made histories that keep every contract pass, and each
// kind of violation is reported (a checker that cannot fail proves nothing).
#include <catch2/catch.hpp>

#include <algorithm>

#include "tests/checker/history.hpp"
#include "tests/support/java_partitioner.hpp"

namespace chk = outbox::test::checker;

namespace {

struct History {
  std::vector<chk::Written> written;
  std::vector<chk::Delivery> deliveries;
  std::map<std::string, chk::RowState> rows;
  chk::CheckOptions options;
  std::int64_t next_offset = 0;

  History() {
    options.publisher_header = "relay";
    options.latency_bound_s = 5;
  }

  chk::Written& write(const std::string& id, const std::string& agg, std::int64_t tx, double written_at,
                      double committed_at, chk::Fate fate = chk::Fate::committed) {
    chk::Written w;
    w.id = id;
    w.aggregate_type = "order";
    w.aggregate_id = agg;
    w.tx = tx;
    w.written_at = written_at;
    w.committed_at = fate == chk::Fate::committed ? committed_at : -1;
    w.fate = fate;
    w.topic = "outbox.event.order";
    w.value = "{}";
    w.event_type = "created";
    w.label = "healthy";
    written.push_back(w);
    if (fate != chk::Fate::rolled_back) rows[id] = {static_cast<std::int64_t>(written.size()), true, false, ""};
    return written.back();
  }

  chk::Delivery& deliver(const std::string& id, const std::string& agg, double at, long long epoch = 1,
                         const std::string& instance = "r1") {
    chk::Delivery d;
    d.topic = "outbox.event.order";
    d.key = agg;
    d.partition = outbox::test::java_partition(agg, 4);
    d.offset = next_offset++;
    d.timestamp_ms = static_cast<std::int64_t>(at * 1000);
    d.received_at = at;
    d.value = "{}";
    d.headers = {{"id", id}, {"eventType", "created"}, {"relay", instance + " lane=3 epoch=" + std::to_string(epoch)}};
    deliveries.push_back(d);
    return deliveries.back();
  }

  std::vector<std::string> rules() const {
    std::vector<std::string> out;
    for (const auto& v : chk::check_history(written, deliveries, rows, options)) out.push_back(v.rule);
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
  }
};

using Rules = std::vector<std::string>;

}  // namespace

TEST_CASE("a history that keeps every contract has no violation, duplicates included", "[checker]") {
  History h;
  h.write("e1", "x", 1, 0.0, 0.1);
  h.write("e2", "x", 2, 0.2, 0.3);
  h.write("e3", "x", 2, 0.2, 0.3).index = 1;
  h.write("r1", "x", 3, 0.4, -1, chk::Fate::rolled_back);
  h.write("u1", "y", 4, 0.4, -1, chk::Fate::unknown);  // its commit never answered, and did not happen
  h.rows.erase("u1");
  h.deliver("e1", "x", 0.5);
  h.deliver("e1", "x", 0.6);  // a duplicate, after a crash, say
  h.deliver("e2", "x", 0.7, 2, "r2");
  h.deliver("e3", "x", 0.8, 2, "r2");
  CHECK(h.rules() == Rules{});
}

TEST_CASE("the checker reports a committed event never delivered and a rolled-back one delivered", "[checker]") {
  History h;
  h.write("e1", "x", 1, 0.0, 0.1);
  h.write("r1", "y", 2, 0.0, -1, chk::Fate::rolled_back);
  h.deliver("r1", "y", 0.5);
  CHECK(h.rules() == Rules{"lost", "rolled back delivered"});
}

TEST_CASE("the checker reports an event first delivered before one that committed before it was written",
          "[checker]") {
  History h;
  h.write("first", "x", 1, 0.0, 0.4);   // a late commit
  h.write("second", "x", 2, 0.5, 0.6);  // written after it committed
  h.deliver("second", "x", 0.7);
  h.deliver("first", "x", 0.8);
  CHECK(h.rules() == Rules{"order"});
  // Overlapping transactions have no order: either way is fine.
  History c;
  c.write("a", "x", 1, 0.0, 0.4);
  c.write("b", "x", 2, 0.3, 0.35);
  c.deliver("b", "x", 0.5);
  c.deliver("a", "x", 0.6);
  CHECK(c.rules() == Rules{});
}

TEST_CASE("the checker holds events of one transaction to their insertion order", "[checker]") {
  History h;
  h.write("a", "x", 1, 0.0, 0.1).index = 0;
  h.write("b", "x", 1, 0.0, 0.1).index = 1;
  h.deliver("b", "x", 0.2);
  h.deliver("a", "x", 0.3);
  CHECK(h.rules() == Rules{"order"});
}

TEST_CASE("the checker reports a message with two event ids, a wrong shape and a foreign id", "[checker]") {
  History h;
  h.write("e1", "x", 1, 0.0, 0.1);
  h.write("e2", "y", 2, 0.0, 0.1);
  h.deliver("e1", "x", 0.2).headers.emplace_back("id", "e2");
  h.deliver("e2", "y", 0.3).value.reset();  // a tombstone where the row had a payload
  h.deliver("nobody-wrote-this", "z", 0.4);
  CHECK(h.rules() == Rules{"shape", "unknown"});
}

TEST_CASE("the checker reports keys off Java's partition and one aggregate on two partitions", "[checker]") {
  History h;
  h.write("e1", "x", 1, 0.0, 0.1);
  h.write("e2", "x", 2, 0.2, 0.3);
  h.deliver("e1", "x", 0.4);
  h.deliver("e2", "x", 0.5).partition = (outbox::test::java_partition("x", 4) + 1) % 4;
  CHECK(h.rules() == Rules{"partition"});
}

TEST_CASE("the checker reports an older lease epoch publishing after a newer one took the aggregate", "[checker]") {
  History h;
  h.write("e1", "x", 1, 0.0, 0.1);
  h.write("e2", "x", 2, 0.2, 0.3);
  h.deliver("e1", "x", 0.4, 5, "new");
  h.deliver("e2", "x", 0.5, 4, "old");
  CHECK(h.rules() == Rules{"publisher"});
  History same;
  same.write("e1", "x", 1, 0.0, 0.1);
  same.write("e2", "x", 2, 0.2, 0.3);
  same.deliver("e1", "x", 0.4, 5, "a");
  same.deliver("e2", "x", 0.5, 5, "b");  // one epoch, two instances
  CHECK(same.rules() == Rules{"publisher"});
}

TEST_CASE("the checker reports a healthy event held back past the bound and bad rows that were not refused",
          "[checker]") {
  History h;
  h.write("slow", "x", 1, 0.0, 0.1);
  h.deliver("slow", "x", 9.0);
  auto& bad = h.write("bad", "hostile-1", 2, 0.0, 0.1);
  bad.expect = chk::Expect::dead_lettered;
  bad.label = "hostile: header id";
  h.rows["bad"] = {2, false, false, ""};  // still pending: never refused
  CHECK(h.rules() == Rules{"bad row not dead-lettered", "held back"});
  h.rows["bad"] = {2, false, true, "bad row: header \"id\" is written by the relay"};
  h.deliver("bad", "hostile-1", 1.0);
  CHECK(h.rules() == Rules{"bad row sent", "held back"});
}

TEST_CASE("an event whose commit outcome is unknown counts as committed when its row exists", "[checker]") {
  History h;
  h.write("u", "x", 1, 0.0, -1, chk::Fate::unknown);  // the row is there: it committed
  CHECK(h.rules() == Rules{"lost"});
  h.deliver("u", "x", 0.5);
  CHECK(h.rules() == Rules{});
}

TEST_CASE("the inbox checker: every delivered event once, from its own message, each partition in offset order",
          "[checker][inbox]") {
  History h;
  h.deliver("a", "o1", 0.1);
  h.deliver("b", "o1", 0.2);
  h.deliver("a", "o1", 0.3);  // the relay's duplicate, another offset
  h.deliver("c", "o2", 0.4);
  auto row = [&](const chk::Delivery& d, std::int64_t seq) {
    return chk::InboxRowState{*d.headers[0].second, d.topic, d.partition, d.offset, seq};
  };
  auto rules = [](const std::vector<chk::Violation>& vs) {
    std::vector<std::string> out;
    for (const auto& v : vs) out.push_back(v.rule);
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
  };
  const auto& d = h.deliveries;
  // Kept: a, b, c once each (a from its first delivery), in offset order per partition.
  CHECK(chk::check_inbox(d, {row(d[0], 1), row(d[1], 2), row(d[3], 3)}, {}).empty());
  // Landed from the duplicate only: still fine (it carried the id).
  CHECK(chk::check_inbox(d, {row(d[1], 1), row(d[2], 2), row(d[3], 3)}, {}).empty());
  // Lost: c missing.
  CHECK(rules(chk::check_inbox(d, {row(d[0], 1), row(d[1], 2)}, {})) == Rules{"inbox lost"});
  // Out of order within the partition of o1: b (offset 1) landed before a (offset 0).
  if (d[0].partition == d[1].partition)
    CHECK(rules(chk::check_inbox(d, {row(d[1], 1), row(d[0], 2), row(d[3], 3)}, {})) == Rules{"inbox order"});
  // From a message that did not carry the id.
  auto wrong = row(d[0], 3);
  wrong.offset = 100;  // last in seq and offset: only its origin is wrong
  CHECK(rules(chk::check_inbox(d, {row(d[1], 1), row(d[3], 2), wrong}, {})) == Rules{"inbox shape"});
  // A relay message on the sidecar's dead-letter topic.
  CHECK(rules(chk::check_inbox(d, {row(d[0], 1), row(d[1], 2)}, {"c"})) == Rules{"inbox dead-lettered"});
}
