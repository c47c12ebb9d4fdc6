#include "tests/support/nats_client.hpp"

#include <nats/nats.h>

#include <cstdlib>
#include <stdexcept>

namespace outbox::test {
namespace {

void check(natsStatus s, jsErrCode code, const std::string& what) {
  if (s != NATS_OK)
    throw std::runtime_error("NatsClient: " + what + ": " + natsStatus_GetText(s) +
                             (code != 0 ? " (JetStream error " + std::to_string(code) + ")" : ""));
}

}  // namespace

NatsClient::NatsClient(const std::string& url) {
  natsOptions* o = nullptr;
  natsOptions_Create(&o);
  natsOptions_SetURL(o, url.c_str());
  natsOptions_SetTimeout(o, 5000);
  const auto s = natsConnection_Connect(&nc_, o);
  natsOptions_Destroy(o);
  check(s, static_cast<jsErrCode>(0), "connect to " + url);
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = 10'000;
  check(natsConnection_JetStream(&js_, nc_, &jo), static_cast<jsErrCode>(0), "JetStream context");
}

NatsClient::~NatsClient() {
  for (auto* sub : subscriptions_) natsSubscription_Destroy(sub);
  jsCtx_Destroy(js_);
  natsConnection_Destroy(nc_);
}

void NatsClient::add_stream(const std::string& name, const std::vector<std::string>& subjects,
                            std::chrono::milliseconds duplicate_window) {
  jsStreamConfig cfg;
  jsStreamConfig_Init(&cfg);
  cfg.Name = name.c_str();
  std::vector<const char*> subs;
  for (const auto& s : subjects) subs.push_back(s.c_str());
  cfg.Subjects = subs.data();
  cfg.SubjectsLen = static_cast<int>(subs.size());
  cfg.Storage = js_FileStorage;
  if (duplicate_window.count() > 0) cfg.Duplicates = duplicate_window.count() * 1'000'000;  // ns
  jsStreamInfo* si = nullptr;
  jsErrCode code = static_cast<jsErrCode>(0);
  const auto s = js_AddStream(&si, js_, &cfg, nullptr, &code);
  if (si != nullptr) jsStreamInfo_Destroy(si);
  check(s, code, "add stream " + name);
}

void NatsClient::delete_stream(const std::string& name) {
  jsErrCode code = static_cast<jsErrCode>(0);
  check(js_DeleteStream(js_, name.c_str(), nullptr, &code), code, "delete stream " + name);
}

void NatsClient::respond(const std::string& subject, const std::string& body) {
  bodies_.push_back(std::make_unique<std::string>(body));
  natsSubscription* sub = nullptr;
  check(natsConnection_Subscribe(
            &sub, nc_, subject.c_str(),
            [](natsConnection* nc, natsSubscription*, natsMsg* msg, void* closure) {
              if (const char* reply = natsMsg_GetReply(msg); reply != nullptr)
                natsConnection_PublishString(nc, reply, static_cast<std::string*>(closure)->c_str());
              natsMsg_Destroy(msg);
            },
            bodies_.back().get()),
        static_cast<jsErrCode>(0), "subscribe " + subject);
  natsConnection_Flush(nc_);
  subscriptions_.push_back(sub);
}

std::uint64_t NatsClient::count(const std::string& stream) {
  jsStreamInfo* si = nullptr;
  jsErrCode code = static_cast<jsErrCode>(0);
  const auto s = js_GetStreamInfo(&si, js_, stream.c_str(), nullptr, &code);
  if (s == NATS_NOT_FOUND) return 0;
  check(s, code, "stream info " + stream);
  const auto n = si->State.Msgs;
  jsStreamInfo_Destroy(si);
  return n;
}

std::vector<StreamMessage> NatsClient::read_all(const std::string& stream) {
  jsStreamInfo* si = nullptr;
  jsErrCode code = static_cast<jsErrCode>(0);
  check(js_GetStreamInfo(&si, js_, stream.c_str(), nullptr, &code), code, "stream info " + stream);
  const auto first = si->State.FirstSeq, last = si->State.LastSeq;
  jsStreamInfo_Destroy(si);
  std::vector<StreamMessage> out;
  for (auto seq = first; seq != 0 && seq <= last; ++seq) {
    natsMsg* m = nullptr;
    const auto s = js_GetMsg(&m, js_, stream.c_str(), seq, nullptr, &code);
    if (s == NATS_NOT_FOUND) continue;  // deleted
    check(s, code, "get " + stream + " #" + std::to_string(seq));
    StreamMessage sm;
    sm.sequence = seq;
    sm.subject = natsMsg_GetSubject(m);
    sm.data.assign(natsMsg_GetData(m), static_cast<std::size_t>(natsMsg_GetDataLength(m)));
    const char** keys = nullptr;
    int n = 0;
    if (natsMsgHeader_Keys(m, &keys, &n) == NATS_OK) {
      for (int i = 0; i < n; ++i) {
        const char* v = nullptr;
        if (natsMsgHeader_Get(m, keys[i], &v) == NATS_OK) sm.headers[keys[i]] = v != nullptr ? v : "";
      }
      free(static_cast<void*>(keys));
    }
    natsMsg_Destroy(m);
    out.push_back(std::move(sm));
  }
  return out;
}

}  // namespace outbox::test
