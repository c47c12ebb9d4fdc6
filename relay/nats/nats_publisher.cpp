#include "relay/nats/nats_publisher.hpp"

#include <nats/nats.h>

#include <algorithm>
#include <cctype>
#include <regex>
#include <thread>

#include "relay/core/errors.hpp"

namespace outbox::relay::nats {
namespace {

using Clock = std::chrono::steady_clock;

std::string text_of(natsStatus s) { return std::string("NATS ") + natsStatus_GetText(s); }

// Anywhere in a header name, "nats-" is the server's (a row's "X-Nats-Msg-Id" could be
// mistaken for the real one by a header scan).
bool has_nats_part(const std::string& name) {
  std::string lower(name);
  for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return lower.find("nats-") != std::string::npos;
}

// A value spelling out a JetStream header line.
bool has_nats_line(const std::string& value) {
  std::string lower(value);
  for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return lower.find("nats-msg-id:") != std::string::npos || lower.find("nats-expected-") != std::string::npos;
}

bool same_name(const std::string& a, const std::string& b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

// Header names are printable ASCII without ':'; values carry no CR, LF or NUL.
bool header_name_ok(const std::string& name) {
  return !name.empty() && std::all_of(name.begin(), name.end(), [](char c) { return c > 32 && c < 127 && c != ':'; });
}
bool header_value_ok(const std::string& v) { return v.find_first_of(std::string("\r\n\0", 3)) == std::string::npos; }

// A subject one can publish to: dot-separated non-empty tokens of printable non-space
// characters, no wildcard tokens.
bool publish_subject_ok(const std::string& s) {
  if (s.empty() || s.front() == '.' || s.back() == '.' || s.find("..") != std::string::npos) return false;
  for (char c : s)
    if (static_cast<unsigned char>(c) <= 32 || c == 127 || c == '*' || c == '>') return false;
  return true;
}

DeliveryResult classify(natsStatus s, int js_code, const char* text) {
  std::string detail = text_of(s);
  if (js_code != 0) detail += " (JetStream error " + std::to_string(js_code) + (text ? std::string(": ") + text : "") + ")";
  switch (s) {
    case NATS_MAX_PAYLOAD:
    case NATS_INVALID_SUBJECT:
    case NATS_INVALID_ARG:
      return {DeliveryStatus::permanent_failure, detail};
    default:
      break;
  }
  // The stream refuses the message as it is (over its max_msg_size): no retry fixes it.
  if (js_code == JSStreamMessageExceedsMaximumErr) return {DeliveryStatus::permanent_failure, detail};
  return {DeliveryStatus::transient_failure, detail};
}

}  // namespace

void check_urls(const std::string& urls) {
  static const std::regex one(R"(^(nats|tls)://([^@/\s]+@)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?)(:[0-9]{1,5})?$)",
                              std::regex::icase);
  if (urls.empty()) throw ConfigError("nats.url: required with sink.type nats (e.g. nats://127.0.0.1:4222)");
  std::size_t start = 0;
  for (;;) {
    const auto comma = urls.find(',', start);
    auto url = urls.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    url.erase(0, url.find_first_not_of(' '));
    url.erase(url.find_last_not_of(' ') + 1);
    if (!std::regex_match(url, one))
      throw ConfigError("nats.url: \"" + url + "\" is not nats://host:port (or tls://host:port)");
    if (comma == std::string::npos) return;
    start = comma + 1;
  }
}

void check_header_name(const std::string& name, const std::string& setting) {
  if (has_nats_part(name) || same_name(name, "Status") || same_name(name, "Description"))
    throw ConfigError(setting + ": \"" + name + "\" is a header NATS itself reads (Nats-..., Status, Description); "
                      "pick another name");
  if (!header_name_ok(name))
    throw ConfigError(setting + ": \"" + name + "\" is not a NATS header name (printable ASCII, no ':' or spaces)");
}

NatsPublisher::NatsPublisher(NatsOptions options, Logger& logger) : options_(std::move(options)), logger_(logger) {
  natsOptions* opts = nullptr;
  if (natsOptions_Create(&opts) != NATS_OK) throw ConfigError("nats: cannot create connection options");
  struct Free {
    natsOptions* o;
    ~Free() { natsOptions_Destroy(o); }
  } free_opts{opts};
  auto check = [](natsStatus s, const std::string& what) {
    if (s != NATS_OK) throw ConfigError(what + ": " + text_of(s));
  };
  check(natsOptions_SetURL(opts, options_.url.c_str()), "nats.url " + options_.url);
  check(natsOptions_SetName(opts, options_.name.c_str()), "nats.name");
  check(natsOptions_SetTimeout(opts, options_.connect_timeout.count()), "nats.connect_timeout_ms");
  check(natsOptions_SetMaxReconnect(opts, -1), "nats: reconnect forever");
  check(natsOptions_SetReconnectWait(opts, 250), "nats: reconnect wait");
  // Down at start is a broker outage like any other: connect in the background, and what is
  // published meanwhile times out (transient) unless the server comes back in time.
  // (With a callback, or libnats would block here until it connects.)
  gate_ = new Gate{};
  gate_->self = this;
  check(natsOptions_SetRetryOnFailedConnect(
            opts, true,
            [](natsConnection*, void* closure) {
              auto* gate = static_cast<Gate*>(closure);
              std::lock_guard lock(gate->mutex);
              if (gate->self != nullptr) gate->self->logger_.log(LogLevel::info, "nats_connected", {});
            },
            gate_),
        "nats: retry on failed connect");
  if (!options_.credentials_file.empty())
    check(natsOptions_SetUserCredentialsFromFiles(opts, options_.credentials_file.c_str(), nullptr),
          "nats.credentials_file " + options_.credentials_file);
  if (!options_.user.empty())
    check(natsOptions_SetUserInfo(opts, options_.user.c_str(), options_.password.c_str()), "nats.user");
  if (!options_.token.empty()) check(natsOptions_SetToken(opts, options_.token.c_str()), "nats.token");
  const auto s = natsConnection_Connect(&nc_, opts);
  if (s != NATS_OK && s != NATS_NOT_YET_CONNECTED)
    throw ConfigError("nats.url " + options_.url + ": cannot connect: " + text_of(s));
  if (s == NATS_NOT_YET_CONNECTED)
    logger_.log(LogLevel::warn, "nats_not_connected", {{"url", options_.url}, {"note", "connecting in the background"}});
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = options_.ack_timeout.count();
  jo.PublishAsync.MaxPending = 1 << 20;  // the relay bounds its batches; never stall a publish
  jo.PublishAsync.AckHandler = &NatsPublisher::on_ack;
  jo.PublishAsync.AckHandlerClosure = gate_;
  if (const auto j = natsConnection_JetStream(&js_, nc_, &jo); j != NATS_OK) {
    natsConnection_Destroy(nc_);
    throw ConfigError("nats: cannot create a JetStream context: " + text_of(j));
  }
}

NatsPublisher::~NatsPublisher() {
  abandon();
  {
    std::lock_guard lock(mutex_);
    for (auto& slot : slots_)
      if (slot.msg != nullptr) natsMsg_Destroy(slot.msg), slot.msg = nullptr;
    in_flight_.clear();
    ++generation_;
  }
  // Closing stops new callbacks; one already running holds the gate, so `this` goes only
  // after it, and one that starts later finds no publisher.
  natsConnection_Close(nc_);
  {
    std::lock_guard lock(gate_->mutex);
    gate_->self = nullptr;
  }
  jsCtx_Destroy(js_);
  natsConnection_Destroy(nc_);
}

void NatsPublisher::abandon() {
  abandoned_ = true;
  changed_.notify_all();
}

std::optional<DeliveryResult> NatsPublisher::refused(const Message& m) const {
  auto bad = [](std::string why) { return DeliveryResult{DeliveryStatus::permanent_failure, std::move(why)}; };
  if (!publish_subject_ok(m.topic))
    return bad("subject \"" + m.topic + "\" is not one NATS can publish to (dot-separated tokens, no spaces, no "
               "* or > wildcards, no empty token)");
  if (!header_value_ok(m.key)) return bad("the key (aggregate id) holds CR, LF or NUL: a NATS header cannot carry it");
  // Data, the headers the relay adds (Nats-Msg-Id, key, null payload) and the header block's
  // framing; libnats checks the exact size again when connected.
  std::size_t bytes = (m.value ? m.value->size() : 0) + m.key.size() + options_.key_header.size() + 96;
  for (const auto& [k, v] : m.headers) {
    if (has_nats_part(k))
      return bad("header " + k + ": NATS reserves Nats- headers (Nats-Msg-Id, Nats-Expected-*) for the server; "
                 "a row cannot set them");
    // An empty message with a Status header is a status message to libnats consumers: they
    // would drop it (a NULL payload is sent empty).
    if (same_name(k, "Status") || same_name(k, "Description"))
      return bad("header " + k + ": NATS clients read Status and Description as a server status, not an event's");
    if (v && has_nats_line(*v)) return bad("header " + k + ": its value spells a JetStream header (Nats-...)");
    if (same_name(k, options_.key_header) || same_name(k, options_.null_payload_header))
      return bad("header " + k + " is the one the relay writes (nats.key_header or the null payload header)");
    if (!header_name_ok(k))
      return bad("header name \"" + k + "\" cannot be carried by NATS (printable ASCII, no ':' or spaces)");
    if (v && !header_value_ok(*v)) return bad("header " + k + ": its value holds CR, LF or NUL, which NATS cannot carry");
    bytes += k.size() + (v ? v->size() : 0) + 4;
  }
  if (const auto max = natsConnection_GetMaxPayload(nc_); max > 0 && static_cast<std::int64_t>(bytes) > max)
    return bad("message of about " + std::to_string(bytes) + " bytes is over the server's max_payload of " +
               std::to_string(max));
  return std::nullopt;
}

std::optional<DeliveryResult> NatsPublisher::send(const Message& m) {
  if (abandoned_) return DeliveryResult{DeliveryStatus::transient_failure, "abandoned at shutdown"};
  if (auto r = refused(m)) return r;
  natsMsg* msg = nullptr;
  const char* data = m.value ? m.value->data() : "";
  const int size = m.value ? static_cast<int>(m.value->size()) : 0;
  if (const auto s = natsMsg_Create(&msg, m.topic.c_str(), nullptr, data, size); s != NATS_OK)
    return classify(s, 0, nullptr);
  natsStatus s = NATS_OK;
  for (const auto& [k, v] : m.headers) {
    if (s == NATS_OK) s = natsMsgHeader_Add(msg, k.c_str(), v ? v->c_str() : "");
    if (s == NATS_OK && k == options_.id_header && v) s = natsMsgHeader_Set(msg, "Nats-Msg-Id", v->c_str());
  }
  if (s == NATS_OK) s = natsMsgHeader_Set(msg, options_.key_header.c_str(), m.key.c_str());
  if (s == NATS_OK && !m.value) s = natsMsgHeader_Set(msg, options_.null_payload_header.c_str(), "true");
  if (s != NATS_OK) {
    natsMsg_Destroy(msg);
    return classify(s, 0, nullptr);
  }
  std::optional<std::size_t> now;
  std::uint64_t generation = 0;
  {
    std::lock_guard lock(mutex_);
    generation = generation_;
    const auto index = slots_.size();
    if (failed_keys_.contains(m.key)) {
      // Its key already failed in this batch: sent now, it could be stored before the one
      // that failed, which goes again later.
      natsMsg_Destroy(msg);
      slots_.push_back(Slot{m.key, m.topic, nullptr,
                            DeliveryResult{DeliveryStatus::transient_failure,
                                           "held back: an earlier message of its key failed in this batch"}});
      return std::nullopt;
    }
    slots_.push_back(Slot{m.key, m.topic, msg, std::nullopt});
    ++unsettled_;
    if (busy_keys_.insert(m.key).second)
      now = index;
    else
      waiting_[m.key].push_back(index);
  }
  if (now) publish(*now, generation);
  return std::nullopt;
}

void NatsPublisher::publish(std::size_t index, std::uint64_t generation) {
  natsMsg* msg = nullptr;
  {
    std::lock_guard lock(mutex_);
    // A batch given up on (abandoned, or acknowledgements missing) is gone: its index means
    // nothing in the next one.
    if (generation != generation_ || index >= slots_.size() || abandoned_) return;
    if (slots_[index].msg == nullptr) return;  // settled meanwhile
    in_flight_[slots_[index].msg] = index;
    msg = std::exchange(slots_[index].msg, nullptr);
  }
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MaxWait = options_.ack_timeout.count();
  natsMsg* handed = msg;
  const auto s = js_PublishMsgAsync(js_, &handed, &po);
  if (s == NATS_OK) return;  // libnats owns it; on_ack reports it
  std::optional<std::size_t> next;
  {
    std::lock_guard lock(mutex_);
    if (auto it = in_flight_.find(msg); it != in_flight_.end()) {
      in_flight_.erase(it);
      next = settle_locked(index, classify(s, 0, nullptr));
    }
  }
  if (handed != nullptr) natsMsg_Destroy(handed);
  if (next) publish(*next, generation);
}

void NatsPublisher::on_ack(jsCtx*, natsMsg* msg, jsPubAck* pa, jsPubAckErr* pae, void* closure) {
  auto* gate = static_cast<Gate*>(closure);
  try {
    std::lock_guard lock(gate->mutex);
    if (auto* self = gate->self) {
      if (pa != nullptr && (pa->Stream == nullptr || *pa->Stream == '\0' || pa->Sequence == 0)) {
        // libnats takes any JSON reply without an "error" for an acknowledgement; only one
        // naming a stream and a sequence says the message was stored.
        const char* subject = natsMsg_GetSubject(msg);
        self->acknowledged(msg,
                           DeliveryResult{DeliveryStatus::permanent_failure,
                                          std::string("the reply on subject ") + (subject ? subject : "?") +
                                              " is not a JetStream acknowledgement (no stream, no sequence): a core "
                                              "NATS service answers there, and no stream stored the message"},
                           false, false);
      } else if (pa != nullptr) {
        self->acknowledged(msg, DeliveryResult{DeliveryStatus::delivered, {}}, pa->Duplicate, false);
      } else if (pae != nullptr) {
        self->acknowledged(msg, classify(pae->Err, pae->ErrCode, pae->ErrText), false, pae->Err == NATS_NO_RESPONDERS);
      }
    }
  } catch (...) {
    // Nothing may unwind into libnats; the message stays unsettled and await() gives it up.
  }
  natsMsg_Destroy(msg);
}

void NatsPublisher::acknowledged(natsMsg* msg, std::optional<DeliveryResult> result, bool duplicate,
                                 bool no_responders) {
  std::optional<std::size_t> next;
  std::uint64_t generation = 0;
  {
    std::lock_guard lock(mutex_);
    generation = generation_;
    auto it = in_flight_.find(msg);
    if (it == in_flight_.end()) return;  // a batch given up on (abandoned) already reported it
    const auto index = it->second;
    in_flight_.erase(it);
    if (duplicate) ++duplicates_;
    if (no_responders) no_responders_.push_back(index);
    next = settle_locked(index, std::move(*result));
  }
  if (next) publish(*next, generation);
}

std::optional<std::size_t> NatsPublisher::settle_locked(std::size_t index, DeliveryResult result) {
  auto& slot = slots_[index];
  const bool ok = result.delivered();
  const std::string why = result.detail;
  if (!slot.result) --unsettled_;
  slot.result = std::move(result);
  std::optional<std::size_t> next;
  auto queued = waiting_.find(slot.key);
  if (ok && queued != waiting_.end() && !queued->second.empty()) {
    next = queued->second.front();
    queued->second.pop_front();
  } else {
    if (queued != waiting_.end()) {
      // What follows a failure of its key stays unsent: sending it could put it ahead of the
      // failed one, which is sent again later.
      for (auto i : queued->second) {
        if (slots_[i].msg != nullptr) natsMsg_Destroy(std::exchange(slots_[i].msg, nullptr));
        if (!slots_[i].result) --unsettled_;
        slots_[i].result =
            DeliveryResult{DeliveryStatus::transient_failure, "held back: an earlier message of its key failed (" + why + ")"};
      }
      waiting_.erase(queued);
    }
    busy_keys_.erase(slot.key);
    if (!ok) failed_keys_.insert(slot.key);
  }
  changed_.notify_all();
  return next;
}

DeliveryResult NatsPublisher::no_stream_verdict(const std::string& subject) {
  jsOptions o;
  jsOptions_Init(&o);
  o.Wait = std::min<std::int64_t>(options_.ack_timeout.count(), 2'000);
  o.Stream.Info.SubjectsFilter = subject.c_str();
  jsStreamNamesList* list = nullptr;
  jsErrCode code = static_cast<jsErrCode>(0);
  const auto s = js_StreamNames(&list, js_, &o, &code);
  const int count = list != nullptr ? list->Count : 0;
  if (list != nullptr) jsStreamNamesList_Destroy(list);
  if ((s == NATS_OK && count == 0) || s == NATS_NOT_FOUND)
    return {DeliveryStatus::permanent_failure,
            "no JetStream stream captures subject " + subject + " (the server's JetStream answered: add the subject to a "
            "stream, then requeue)"};
  if (s == NATS_OK)
    return {DeliveryStatus::transient_failure, "no responders for " + subject + ", though a stream captures it now"};
  return {DeliveryStatus::transient_failure,
          "no responders for " + subject + ", and JetStream did not answer either (" + text_of(s) + ")"};
}

std::vector<DeliveryResult> NatsPublisher::await() {
  std::unique_lock lock(mutex_);
  // Each message in flight has an outcome within ack_timeout (libnats times it out), and the
  // next one of its key is only sent after; this bound is a guard against a lost callback.
  auto last_progress = Clock::now();
  auto seen = unsettled_;
  while (unsettled_ > 0 && !abandoned_) {
    changed_.wait_for(lock, std::chrono::milliseconds(50));
    if (unsettled_ != seen) {
      seen = unsettled_;
      last_progress = Clock::now();
    } else if (Clock::now() - last_progress > options_.ack_timeout + std::chrono::seconds(5)) {
      logger_.log(LogLevel::warn, "nats_acks_missing", {{"unsettled", std::to_string(unsettled_)}});
      break;
    }
  }
  // Given up on (abandoned, or no callback): what has no outcome is transient; a late
  // acknowledgement finds nothing and is dropped (the row is sent again: a duplicate that
  // Nats-Msg-Id absorbs within the stream's window).
  for (auto& slot : slots_) {
    if (slot.msg != nullptr) natsMsg_Destroy(std::exchange(slot.msg, nullptr));
    if (!slot.result)
      slot.result = DeliveryResult{DeliveryStatus::transient_failure,
                                   abandoned_ ? "abandoned at shutdown" : "no acknowledgement from JetStream"};
  }
  in_flight_.clear();
  waiting_.clear();
  busy_keys_.clear();
  failed_keys_.clear();
  unsettled_ = 0;
  ++generation_;
  auto pending_checks = std::move(no_responders_);
  no_responders_.clear();
  std::vector<Slot> done = std::move(slots_);
  slots_.clear();
  lock.unlock();

  std::unordered_map<std::string, DeliveryResult> verdicts;
  std::optional<DeliveryResult> unanswered;
  for (auto i : pending_checks) {
    auto [it, fresh] = verdicts.try_emplace(done[i].subject);
    if (fresh) {
      // One JetStream that does not answer is asked once per batch, not once per subject.
      if (abandoned_)
        it->second = DeliveryResult{DeliveryStatus::transient_failure, "abandoned at shutdown"};
      else if (unanswered)
        it->second = *unanswered;
      else
        it->second = no_stream_verdict(done[i].subject);
      if (it->second.detail.find("JetStream did not answer") != std::string::npos) unanswered = it->second;
    }
    done[i].result = it->second;
  }
  std::vector<DeliveryResult> out;
  out.reserve(done.size());
  for (auto& slot : done) out.push_back(std::move(*slot.result));
  return out;
}

}  // namespace outbox::relay::nats
