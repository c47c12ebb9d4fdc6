#include "relay/core/inbox_lander.hpp"

#include <algorithm>
#include <set>
#include <utility>

#include "outbox/common/encoding.hpp"
#include "relay/core/errors.hpp"

namespace outbox::relay {
namespace {

using std::chrono::milliseconds;

void append_json_string(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 15];
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
}

DeadLetter letter(InboxMessage m, std::string reason) { return DeadLetter{std::move(m), std::move(reason)}; }

// The one value of the headers named `name`: nullopt when absent; more than one, or one
// without a value, is the caller's to refuse (count and `has_null` tell).
struct HeaderValue {
  int count = 0;
  bool has_null = false;
  std::optional<std::string> value;
};
HeaderValue header_value(const InboxMessage& m, const std::string& name) {
  HeaderValue h;
  for (const auto& [k, v] : m.headers) {
    if (k != name) continue;
    ++h.count;
    if (v)
      h.value = *v;
    else
      h.has_null = true;
  }
  return h;
}

}  // namespace

std::optional<std::string> headers_json(const std::vector<std::pair<std::string, std::optional<std::string>>>& headers) {
  std::string out = "[";
  for (const auto& [name, value] : headers) {
    if (!common::storable_utf8(name)) return std::nullopt;
    if (out.size() > 1) out += ',';
    out += "{\"name\":";
    append_json_string(out, name);
    if (value) {
      if (common::storable_utf8(*value)) {
        out += ",\"value\":";
        append_json_string(out, *value);
      } else {
        out += ",\"base64\":\"" + common::base64(*value) + "\"";
      }
    }
    out += '}';
  }
  return out + "]";
}

std::variant<InboxRow, DeadLetter> decode_message(InboxMessage m, const InboxOptions& o) {
  if (const auto n = m.bytes(); n > o.max_message_bytes)
    return letter(std::move(m), "message of " + std::to_string(n) + " bytes (key, value and headers) is over the "
                                "inbox's limit of " + std::to_string(o.max_message_bytes) + " (inbox.max_message_bytes)");
  // Exactly one id: with two, whichever were taken, the inbox could drop a real event as a
  // duplicate of another message sharing it.
  const auto id = header_value(m, o.id_header);
  std::string event_id;
  if (id.count > 1)
    return letter(std::move(m), std::to_string(id.count) + " " + o.id_header + " headers: the event id is ambiguous");
  if (id.count == 1 && id.has_null) return letter(std::move(m), "the " + o.id_header + " header has no value");
  if (id.count == 0) {
    if (o.missing_id == MissingIdRule::dead_letter)
      return letter(std::move(m), "no " + o.id_header + " header (inbox.missing_id is dead_letter)");
    event_id = "kafka:" + m.topic + "/" + std::to_string(m.partition) + "/" + std::to_string(m.offset);
  } else {
    event_id = *id.value;
  }
  if (event_id.empty()) return letter(std::move(m), "the " + o.id_header + " header is empty");
  if (event_id.size() > o.max_event_id_bytes)
    return letter(std::move(m), "the event id is " + std::to_string(event_id.size()) + " bytes, over " +
                                    std::to_string(o.max_event_id_bytes));
  if (!common::storable_utf8(event_id))
    return letter(std::move(m), "the event id is not UTF-8 text (or holds a NUL byte)");

  std::optional<std::string> event_type;
  if (!o.event_type_header.empty()) {
    const auto type = header_value(m, o.event_type_header);
    if (type.count > 1)
      return letter(std::move(m),
                    std::to_string(type.count) + " " + o.event_type_header + " headers: the event type is ambiguous");
    if (type.value && !common::storable_utf8(*type.value))
      return letter(std::move(m), "the " + o.event_type_header + " header is not UTF-8 text (or holds a NUL byte)");
    event_type = type.value;
  }
  auto headers = headers_json(m.headers);
  if (!headers) return letter(std::move(m), "a header name is not UTF-8 text (or holds a NUL byte)");
  return InboxRow{std::move(event_id), std::move(event_type), std::move(*headers), std::move(m)};
}

InboxLander::InboxLander(InboxSource& source, InboxStore& store, DeadLetterSink& dead_letters, Clock& clock,
                         Pause& pause, Logger& logger, InboxOptions options, InboxStats& stats)
    : source_(source),
      store_(store),
      dead_letters_(dead_letters),
      clock_(clock),
      pause_(pause),
      logger_(logger),
      options_(std::move(options)),
      stats_(stats) {}

void InboxLander::beat() {
  stats_.heartbeat_ns = std::chrono::nanoseconds(clock_.now().time_since_epoch()).count();
}

void InboxLander::ok(bool reached) {
  stats_.last_step_ok = reached;
  if (!reached) return;
  last_reached_ = clock_.now();
  stats_.last_ok_steady_ns = std::chrono::nanoseconds(last_reached_.time_since_epoch()).count();
}

void InboxLander::add(InboxMessage message) {
  ++stats_.received_total;
  auto& next = batch_.next_offsets[TopicPartition{message.topic, message.partition}];
  next = std::max(next, message.offset + 1);
  if (batch_.messages++ == 0) batch_.started = clock_.now();
  batch_.bytes += message.bytes();
  auto decoded = decode_message(std::move(message), options_);
  if (auto* row = std::get_if<InboxRow>(&decoded))
    batch_.rows.push_back(std::move(*row));
  else
    batch_.letters.push_back(std::move(std::get<DeadLetter>(decoded)));
}

// Waits in slices so a stop is seen; once stopping, never past `give_up`.
void InboxLander::wait(milliseconds d, Clock::time_point give_up, const std::atomic<bool>* stop) {
  for (auto until = clock_.now() + d; clock_.now() < until && clock_.now() < give_up;) {
    if (stop != nullptr && *stop) return;
    beat();
    pause_.pause(std::min<milliseconds>(milliseconds(50), std::chrono::duration_cast<milliseconds>(until - clock_.now()) + milliseconds(1)));
  }
}

void InboxLander::launch() {
  inflight_.emplace(std::move(batch_));
  batch_ = Batch{};
  if (!inflight_->rows.empty()) {
    store_.start_landing(&inflight_->rows);
    inflight_->landing = true;
  }
}

bool InboxLander::settle(Batch& b, Clock::time_point give_up, const std::atomic<bool>* stop) {
  if (!b.open()) return true;
  const auto started = clock_.now();
  // Once stopping, retries end shutdown_timeout after the stop was seen.
  auto deadline = [&] {
    if (stop != nullptr && *stop) {
      if (!stopping_since_) stopping_since_ = clock_.now();
      return std::min(give_up, *stopping_since_ + options_.shutdown_timeout);
    }
    return give_up;
  };
  int failures = 0;
  while (!b.rows.empty()) {
    beat();
    try {
      const bool started_landing = std::exchange(b.landing, false);
      auto out = started_landing ? store_.finish_landing() : store_.land(b.rows);
      ok(true);
      stats_.landed_total += out.inserted;
      stats_.duplicates_total += out.duplicates;
      stats_.refused_total += out.refused.size();
      for (auto& [index, reason] : out.refused)
        b.letters.push_back(letter(std::move(b.rows.at(index).message), "the database refused it: " + reason));
      b.rows.clear();
    } catch (const TransientError& e) {
      ++stats_.transient_errors_total;
      ok(false);
      logger_.log(LogLevel::warn, "inbox_land_failed",
                  {{"error", e.what()}, {"rows", std::to_string(b.rows.size())}, {"attempt", std::to_string(failures + 1)}});
      if (clock_.now() >= deadline()) return false;
      wait(options_.retry.delay(++failures, jitter_), deadline(), nullptr);
    }
  }
  // The letters: each acknowledged by the broker before its offset may be committed.
  failures = 0;
  while (!b.letters.empty()) {
    beat();
    const auto sent = dead_letters_.send(b.letters, std::min(deadline(), clock_.now() + milliseconds(10'000)));
    std::vector<DeadLetter> unsent;
    for (std::size_t i = 0; i < b.letters.size(); ++i) {
      if (i < sent.size() && sent[i]) {
        ++stats_.dead_lettered_total;
        const auto& m = b.letters[i].message;
        logger_.log(LogLevel::warn, "inbox_dead_lettered",
                    {{"topic", m.topic}, {"partition", std::to_string(m.partition)}, {"offset", std::to_string(m.offset)},
                     {"reason", b.letters[i].reason}});
      } else {
        unsent.push_back(std::move(b.letters[i]));
      }
    }
    b.letters = std::move(unsent);
    if (b.letters.empty()) break;
    ++stats_.transient_errors_total;
    logger_.log(LogLevel::warn, "inbox_dead_letter_failed", {{"unsent", std::to_string(b.letters.size())}});
    if (clock_.now() >= deadline()) break;
    wait(options_.retry.delay(++failures, jitter_), deadline(), nullptr);
  }
  // Offsets: a partition with an unsent letter only up to the first of them; the rest of it
  // stays in the batch for the next try.
  std::map<TopicPartition, std::int64_t> first_unsent;
  for (const auto& l : b.letters) {
    TopicPartition tp{l.message.topic, l.message.partition};
    auto [it, fresh] = first_unsent.emplace(tp, l.message.offset);
    if (!fresh) it->second = std::min(it->second, l.message.offset);
  }
  std::vector<std::pair<TopicPartition, std::int64_t>> offsets;
  std::map<TopicPartition, std::int64_t> still_open;
  for (const auto& [tp, next] : b.next_offsets) {
    if (auto it = first_unsent.find(tp); it != first_unsent.end()) {
      offsets.emplace_back(tp, it->second);
      still_open.emplace(tp, next);
    } else {
      offsets.emplace_back(tp, next);
    }
  }
  source_.store_offsets(offsets);
  b.next_offsets = std::move(still_open);
  ++stats_.batches_total;
  stats_.batch_duration.observe(clock_.now() - (b.messages > 0 ? b.started : started));
  if (!b.letters.empty()) return false;
  b.messages = 0;
  b.bytes = 0;
  return true;
}

bool InboxLander::settle_all(Clock::time_point give_up, const std::atomic<bool>* stop) {
  // In order: what is in flight holds earlier offsets of the same partitions than what fills.
  if (inflight_) {
    if (!settle(*inflight_, give_up, stop)) return false;
    inflight_.reset();
  }
  return settle(batch_, give_up, stop);
}

void InboxLander::revoked(const std::vector<TopicPartition>& partitions) {
  ++stats_.revoked_total;
  // One try: the group waits while this runs. What does not settle now is let go: the next
  // owner starts from the last commit, and the inbox absorbs what this one had landed.
  (void)settle_all(clock_.now(), nullptr);
  const std::set<TopicPartition> gone(partitions.begin(), partitions.end());
  auto of_gone = [&](const InboxMessage& m) { return gone.contains(TopicPartition{m.topic, m.partition}); };
  auto drop = [&](Batch& b) {
    const auto before = b.rows.size() + b.letters.size();
    std::erase_if(b.rows, [&](const InboxRow& r) { return of_gone(r.message); });
    std::erase_if(b.letters, [&](const DeadLetter& l) { return of_gone(l.message); });
    std::erase_if(b.next_offsets, [&](const auto& kv) { return gone.contains(kv.first); });
    stats_.dropped_on_revoke_total += before - b.rows.size() - b.letters.size();
    if (b.rows.empty() && b.letters.empty()) b.messages = 0, b.bytes = 0;
  };
  if (inflight_) {
    drop(*inflight_);
    if (!inflight_->open()) inflight_.reset();
  }
  drop(batch_);
  logger_.log(LogLevel::info, "inbox_partitions_revoked", {{"partitions", std::to_string(partitions.size())}});
}

void InboxLander::idle_ping() {
  if (clock_.now() - last_reached_ < options_.ping_every && stats_.last_step_ok) return;
  if (clock_.now() - last_ping_ < options_.ping_every) return;
  last_ping_ = clock_.now();
  bool reached = source_.ping();
  try {
    store_.ping();
  } catch (const TransientError& e) {
    reached = false;
    logger_.log(LogLevel::warn, "inbox_database_unreachable", {{"error", e.what()}});
  }
  ok(reached);
}

bool InboxLander::run(const std::atomic<bool>& stop) {
  source_.on_revoke([this](const std::vector<TopicPartition>& p) { revoked(p); });
  const auto forever = Clock::time_point::max();
  // A full batch goes to the store while the next one fills; the one before is settled first.
  auto hand_over = [&] {
    if (inflight_) {
      if (!settle(*inflight_, forever, &stop)) return;  // stopping: the rest after the loop
      inflight_.reset();
    }
    launch();
  };
  while (!stop) {
    beat();
    const bool holding = batch_.messages > 0;
    milliseconds timeout(100);
    if (holding) {
      const auto left = batch_.started + options_.linger - clock_.now();
      timeout = std::max(milliseconds(0), std::chrono::duration_cast<milliseconds>(left));
    }
    auto m = source_.poll(timeout);
    if (m) {
      add(std::move(*m));
      if (batch_.messages >= options_.batch_size || batch_.bytes >= options_.batch_max_bytes) hand_over();
      continue;
    }
    // Nothing more for now: what is in flight is settled, what filled goes next.
    if (inflight_) {
      if (settle(*inflight_, forever, &stop)) inflight_.reset();
      continue;
    }
    if (holding || batch_.open())
      hand_over();
    else
      idle_ping();
  }
  // SIGTERM: what is held lands (or is let go, redelivered later), what landed is committed.
  if (!stopping_since_) stopping_since_ = clock_.now();
  (void)settle_all(*stopping_since_ + options_.shutdown_timeout, &stop);
  return source_.commit();
}

}  // namespace outbox::relay
