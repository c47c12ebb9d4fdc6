#include "tests/checker/history.hpp"

#include <algorithm>
#include <cstdio>
#include <regex>
#include <set>
#include <tuple>

#include "tests/support/java_partitioner.hpp"

namespace outbox::test::checker {
namespace {

std::string aggregate_of(const Written& w) { return w.aggregate_type + "/" + w.aggregate_id; }

std::string shown(const std::optional<std::string>& v) {
  if (!v) return "null";
  if (v->size() > 60) return "\"" + v->substr(0, 60) + "...\" (" + std::to_string(v->size()) + " bytes)";
  return "\"" + *v + "\"";
}

std::vector<std::optional<std::string>> named(const Headers& headers, const std::string& name) {
  std::vector<std::optional<std::string>> out;
  for (const auto& [k, v] : headers)
    if (k == name) out.push_back(v);
  return out;
}

struct First {
  const Delivery* d = nullptr;
};

std::string position(const Delivery& d) {
  return d.topic + "/" + std::to_string(d.partition) + "@" + std::to_string(d.offset);
}

// What one message must look like, given the event it carries.
void check_shape(const Delivery& d, const Written& w, const CheckOptions& o, std::vector<Violation>& out) {
  auto bad = [&](const std::string& what) {
    out.push_back({"shape", aggregate_of(w), "event " + w.id + " (" + w.label + ") at " + position(d) + ": " + what});
  };
  if (d.topic != w.topic) bad("topic " + d.topic + ", expected " + w.topic);
  if (d.null_key || d.key != w.aggregate_id) bad("key " + (d.null_key ? "null" : shown(d.key)) + ", expected " + shown(w.aggregate_id));
  if (d.value != w.value) bad("value " + shown(d.value) + ", expected " + shown(w.value));
  if (!o.event_type_header.empty()) {
    auto types = named(d.headers, o.event_type_header);
    if (types.size() != 1 || types[0] != std::optional<std::string>(w.event_type))
      bad(std::to_string(types.size()) + " " + o.event_type_header + " headers, expected one " + shown(w.event_type));
  }
  if (!o.publisher_header.empty() && named(d.headers, o.publisher_header).size() != 1)
    bad(std::to_string(named(d.headers, o.publisher_header).size()) + " " + o.publisher_header + " headers");
  for (const auto& [k, v] : w.headers) {
    auto got = named(d.headers, k);
    if (got.size() != 1 || got[0] != v)
      bad("row header " + k + ": " + std::to_string(got.size()) + " copies" +
          (got.empty() ? "" : " (first " + shown(got[0]) + ")") + ", expected one " + shown(v));
  }
  if (o.check_partitioner && !d.null_key && d.partition != java_partition(d.key, o.partitions))
    out.push_back({"partition", aggregate_of(w),
                   "key " + shown(d.key) + " on partition " + std::to_string(d.partition) +
                       "; Java's partitioner puts it on " + std::to_string(java_partition(d.key, o.partitions))});
}

struct Stamp {
  std::string instance;
  int lane = -1;
  long long epoch = -1;
};

std::optional<Stamp> stamp_of(const Delivery& d, const std::string& header) {
  static const std::regex format(R"(^(\S+) lane=(-?\d+) epoch=(\d+)$)");
  auto v = named(d.headers, header);
  std::smatch m;
  if (v.size() != 1 || !v[0] || !std::regex_match(*v[0], m, format)) return std::nullopt;
  return Stamp{m[1], std::stoi(m[2]), std::stoll(m[3])};
}

// Contract 4, from the messages alone: per aggregate, in producer-time order, lease epochs
// never go back, every (lane, epoch) belongs to one instance, and an aggregate has one lane.
void check_publishers(const std::vector<Delivery>& deliveries, const CheckOptions& o, std::vector<Violation>& out) {
  std::map<std::pair<int, long long>, std::string> epoch_owner;
  std::map<std::string, std::vector<const Delivery*>> by_key;
  for (const auto& d : deliveries) by_key[d.topic + "/" + d.key].push_back(&d);
  for (auto& [key, list] : by_key) {
    std::stable_sort(list.begin(), list.end(), [](auto* a, auto* b) { return a->timestamp_ms < b->timestamp_ms; });
    long long last_epoch = -1;
    int lane = -1;
    std::string last_instance;
    for (const auto* d : list) {
      auto s = stamp_of(*d, o.publisher_header);
      if (!s) {
        out.push_back({"publisher", key, "a message without a valid " + o.publisher_header + " header at " + position(*d)});
        break;
      }
      if (lane != -1 && s->lane != lane) {
        out.push_back({"publisher", key, "published under lanes " + std::to_string(lane) + " and " + std::to_string(s->lane)});
        break;
      }
      lane = s->lane;
      auto [it, fresh] = epoch_owner.try_emplace({s->lane, s->epoch}, s->instance);
      if (!fresh && it->second != s->instance)
        out.push_back({"publisher", key,
                       "lane " + std::to_string(s->lane) + " epoch " + std::to_string(s->epoch) + " used by " +
                           it->second + " and " + s->instance});
      if (s->epoch < last_epoch) {
        out.push_back({"publisher", key,
                       s->instance + " (epoch " + std::to_string(s->epoch) + ") produced at " +
                           std::to_string(d->timestamp_ms) + " after " + last_instance + " (epoch " +
                           std::to_string(last_epoch) + ") had taken the lane"});
        break;
      }
      last_epoch = s->epoch;
      last_instance = s->instance;
    }
  }
}

}  // namespace

std::vector<Violation> check_history(const std::vector<Written>& written, const std::vector<Delivery>& deliveries,
                                     const std::map<std::string, RowState>& rows, const CheckOptions& o) {
  std::vector<Violation> out;
  std::map<std::string, const Written*> by_id;
  for (const auto& w : written) by_id.emplace(w.id, &w);

  // Every message: one event id, one the producers wrote, shaped as its row says.
  std::map<std::string, const Delivery*> first;  // event id -> its first delivery
  std::map<std::string, std::set<std::string>> partitions_of;  // aggregate -> topic/partition
  for (const auto& d : deliveries) {
    auto ids = named(d.headers, o.id_header);
    if (ids.size() != 1 || !ids[0]) {
      out.push_back({"shape", d.topic + "/" + d.key,
                     "message at " + position(d) + " has " + std::to_string(ids.size()) + " " + o.id_header +
                         " headers (a consumer must read exactly one event id, the relay's)"});
      if (ids.empty() || !ids[0]) continue;
    }
    auto it = by_id.find(*ids[0]);
    if (it == by_id.end()) {
      out.push_back({"unknown", d.topic + "/" + d.key, "message at " + position(d) + " carries event id " +
                                                         *ids[0] + ", which no producer wrote"});
      continue;
    }
    const Written& w = *it->second;
    if (w.fate == Fate::rolled_back)
      out.push_back({"rolled back delivered", aggregate_of(w), "event " + w.id + " was rolled back, read at " + position(d)});
    if (w.expect == Expect::dead_lettered)
      out.push_back({"bad row sent", aggregate_of(w), "event " + w.id + " (" + w.label + ") should have been refused, read at " + position(d)});
    if (w.expect == Expect::not_sent)
      out.push_back({"published row sent", aggregate_of(w), "event " + w.id + " (" + w.label + ") was inserted published, read at " + position(d)});
    check_shape(d, w, o, out);
    auto [f, fresh] = first.try_emplace(w.id, &d);
    if (!fresh && d.received_at < f->second->received_at) f->second = &d;
    partitions_of[aggregate_of(w) + " on " + d.topic].insert(std::to_string(d.partition));
  }
  for (const auto& [agg, parts] : partitions_of)
    if (parts.size() > 1) {
      std::string list;
      for (const auto& p : parts) list += (list.empty() ? "" : ", ") + p;
      out.push_back({"partition", agg, "one aggregate on partitions " + list});
    }

  // Every event's fate against the table and the topic.
  for (const auto& w : written) {
    auto row = rows.find(w.id);
    const bool in_table = row != rows.end();
    const bool delivered = first.contains(w.id);
    if (w.fate == Fate::rolled_back) {
      if (in_table) out.push_back({"rolled back in table", aggregate_of(w), "event " + w.id + " was rolled back but has a row"});
      continue;
    }
    const bool committed = w.fate == Fate::committed || in_table || delivered;
    if (!committed) continue;  // outcome unknown, and it did not happen
    switch (w.expect) {
      case Expect::delivered:
        if (!delivered) {
          out.push_back({"lost", aggregate_of(w),
                         "event " + w.id + " (" + w.label + ") committed" +
                             (in_table ? (row->second.dead ? ", dead-lettered: " + row->second.last_error
                                                           : row->second.published ? ", marked published" : ", pending")
                                       : ", not in the table") +
                             ", never delivered"});
          break;
        }
        if (in_table ? !row->second.published || row->second.dead : !o.rows_deleted_when_marked)
          out.push_back({"not marked", aggregate_of(w), "event " + w.id + " delivered but its row is " +
                                                            (in_table ? (row->second.dead ? "dead-lettered" : "still pending") : "missing")});
        if (w.label == "healthy" && w.committed_at >= 0) {
          const double waited = first.at(w.id)->received_at - w.committed_at;
          if (waited > o.latency_bound_s) {
            char buf[160];
            std::snprintf(buf, sizeof buf, "event %s delivered %.2f s after its commit (bound %.2f s)", w.id.c_str(),
                          waited, o.latency_bound_s);
            out.push_back({"held back", aggregate_of(w), buf});
          }
        }
        break;
      case Expect::dead_lettered:
        if (!in_table || !row->second.dead || row->second.last_error.empty())
          out.push_back({"bad row not dead-lettered", aggregate_of(w),
                         "event " + w.id + " (" + w.label + ") is " +
                             (!in_table ? "missing" : row->second.published ? "marked published" : row->second.dead ? "dead-lettered without a reason" : "still pending")});
        break;
      case Expect::not_sent:
        break;
    }
  }

  // Contract 2: first deliveries of each aggregate follow the causal order of commits, and
  // events of one transaction go out in insertion order.
  std::map<std::string, std::vector<const Written*>> by_aggregate;
  for (const auto& w : written)
    if (first.contains(w.id) && w.fate != Fate::rolled_back) by_aggregate[aggregate_of(w)].push_back(&w);
  for (auto& [agg, events] : by_aggregate) {
    auto pos = [&](const Written* w) { return first.at(w->id); };
    auto before = [&](const Written* a, const Written* b) {
      const Delivery* da = pos(a);
      const Delivery* db = pos(b);
      if (da->topic != db->topic || da->partition != db->partition) return;  // no order across partitions
      if (db->offset < da->offset)
        out.push_back({"order", agg,
                       "event " + b->id + " (written at " + std::to_string(b->written_at) + ") first delivered at " +
                           position(*db) + ", before event " + a->id +
                           (a->tx == b->tx ? " of the same transaction, inserted before it,"
                                           : " (committed at " + std::to_string(a->committed_at) + ")") +
                           " first delivered at " + position(*da)});
    };
    // Causal: a committed before b was written. Sweep b by written_at over a by committed_at,
    // keeping the predecessor delivered last on each partition.
    std::vector<const Written*> by_commit, by_write = events;
    for (auto* w : events)
      if (w->committed_at >= 0) by_commit.push_back(w);
    std::sort(by_commit.begin(), by_commit.end(), [](auto* a, auto* b) { return a->committed_at < b->committed_at; });
    std::sort(by_write.begin(), by_write.end(), [](auto* a, auto* b) { return a->written_at < b->written_at; });
    std::map<std::string, const Written*> latest;  // topic/partition -> predecessor with the highest offset
    std::size_t next = 0;
    for (auto* b : by_write) {
      for (; next < by_commit.size() && by_commit[next]->committed_at < b->written_at; ++next) {
        const Delivery* d = pos(by_commit[next]);
        auto& slot = latest[d->topic + "/" + std::to_string(d->partition)];
        if (slot == nullptr || pos(slot)->offset < d->offset) slot = by_commit[next];
      }
      const Delivery* db = pos(b);
      auto it = latest.find(db->topic + "/" + std::to_string(db->partition));
      if (it != latest.end() && it->second != b) before(it->second, b);
    }
    // Within a transaction: insertion order.
    std::map<std::int64_t, std::vector<const Written*>> by_tx;
    for (auto* w : events) by_tx[w->tx].push_back(w);
    for (auto& [tx, list] : by_tx) {
      std::sort(list.begin(), list.end(), [](auto* a, auto* b) { return a->index < b->index; });
      for (std::size_t i = 1; i < list.size(); ++i) before(list[i - 1], list[i]);
    }
  }

  if (!o.publisher_header.empty()) check_publishers(deliveries, o, out);
  return out;
}

std::string describe_aggregate(const std::string& aggregate, const std::vector<Written>& written,
                               const std::vector<Delivery>& deliveries, const std::map<std::string, RowState>& rows,
                               const CheckOptions& o) {
  std::map<std::string, std::vector<const Delivery*>> copies;
  for (const auto& d : deliveries)
    for (const auto& v : named(d.headers, o.id_header))
      if (v) copies[*v].push_back(&d);
  std::vector<const Written*> list;
  for (const auto& w : written)
    if (aggregate_of(w) == aggregate) list.push_back(&w);
  auto seq = [&](const Written* w) {
    auto r = rows.find(w->id);
    return r == rows.end() ? std::int64_t{-1} : r->second.seq;
  };
  std::stable_sort(list.begin(), list.end(), [&](auto* a, auto* b) { return seq(a) < seq(b); });
  std::string out = "history of " + aggregate + " (seq order):\n";
  for (const auto* w : list) {
    char line[256];
    std::snprintf(line, sizeof line, "  seq %-7lld tx %-6lld #%d  written %8.3f  %-22s  ", static_cast<long long>(seq(w)),
                  static_cast<long long>(w->tx), w->index, w->written_at,
                  w->fate == Fate::committed ? ("committed " + std::to_string(w->committed_at).substr(0, 8)).c_str()
                  : w->fate == Fate::rolled_back ? "rolled back"
                                                 : "outcome unknown");
    out += line + (w->id.size() > 12 ? w->id.substr(w->id.size() - 12) : w->id) + "  deliveries:";
    for (const auto* d : copies[w->id]) out += " " + position(*d);
    if (copies[w->id].empty()) out += " none";
    out += "  (" + w->label + ")\n";
  }
  return out;
}

std::vector<Violation> check_inbox(const std::vector<Delivery>& deliveries, const std::vector<InboxRowState>& inbox,
                                   const std::set<std::string>& dead_lettered_ids) {
  std::vector<Violation> out;
  // Each delivered event's positions (a redelivery by the relay is another offset).
  std::map<std::string, std::set<std::tuple<std::string, int, std::int64_t>>> positions;
  for (const auto& d : deliveries) {
    std::optional<std::string> id;
    int ids = 0;
    for (const auto& [k, v] : d.headers)
      if (k == "id" && v) ++ids, id = *v;
    if (ids == 1) positions[*id].insert({d.topic, d.partition, d.offset});
  }
  std::map<std::string, const InboxRowState*> by_id;
  for (const auto& r : inbox) {
    if (!by_id.emplace(r.event_id, &r).second) out.push_back({"inbox twice", "", r.event_id + " has two inbox rows"});
    auto it = positions.find(r.event_id);
    if (it == positions.end()) {
      out.push_back({"inbox shape", "", r.event_id + " is in the inbox but was never delivered"});
    } else if (!it->second.contains({r.topic, r.partition, r.offset})) {
      out.push_back({"inbox shape", "", r.event_id + " landed from " + r.topic + "/" + std::to_string(r.partition) + "@" +
                                            std::to_string(r.offset) + ", a message that did not carry it"});
    }
  }
  for (const auto& [id, where] : positions) {
    if (dead_lettered_ids.contains(id))
      out.push_back({"inbox dead-lettered", "", id + " went to the sidecar's dead-letter topic (a relay message is always storable)"});
    else if (!by_id.contains(id))
      out.push_back({"inbox lost", "", id + " was delivered (" + std::get<0>(*where.begin()) + "/" +
                                           std::to_string(std::get<1>(*where.begin())) + "@" +
                                           std::to_string(std::get<2>(*where.begin())) + ") but is not in the inbox"});
  }
  // Per partition, along seq, offsets only grow.
  std::vector<const InboxRowState*> ordered;
  for (const auto& r : inbox) ordered.push_back(&r);
  std::sort(ordered.begin(), ordered.end(), [](const auto* a, const auto* b) { return a->seq < b->seq; });
  std::map<std::pair<std::string, int>, const InboxRowState*> last;
  for (const auto* r : ordered) {
    auto [it, fresh] = last.emplace(std::pair{r->topic, r->partition}, r);
    if (fresh) continue;
    if (r->offset < it->second->offset)
      out.push_back({"inbox order", "", r->topic + "/" + std::to_string(r->partition) + ": offset " +
                                            std::to_string(r->offset) + " (seq " + std::to_string(r->seq) +
                                            ") landed after offset " + std::to_string(it->second->offset) + " (seq " +
                                            std::to_string(it->second->seq) + ")"});
    it->second = r;
  }
  return out;
}

}  // namespace outbox::test::checker
