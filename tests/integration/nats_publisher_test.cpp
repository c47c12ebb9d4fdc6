// The NATS JetStream publisher against a real nats-server (the Debian package, started by the
// harness as `nobody` on a free port): acknowledgements from the stream, the duplicate window,
// per-key order through a server crash, and rows NATS cannot carry refused by name.
#include <catch2/catch.hpp>

#include <map>
#include <random>
#include <set>

#include "relay/nats/nats_publisher.hpp"
#include "tests/support/eventually.hpp"
#include "tests/support/nats_client.hpp"
#include "tests/support/server_process.hpp"

using namespace outbox;
using namespace outbox::relay;
using namespace std::chrono_literals;

namespace {

Message message(const std::string& subject, const std::string& key, const std::string& id,
                std::optional<std::string> value, std::vector<Header> extra = {}) {
  Message m;
  m.topic = subject;
  m.key = key;
  m.value = std::move(value);
  m.headers = {{"id", id}, {"eventType", std::string("Moved")}};
  for (auto& h : extra) m.headers.push_back(std::move(h));
  return m;
}

nats::NatsOptions options(const test::NatsServer& server, std::chrono::milliseconds ack_timeout = 2s) {
  nats::NatsOptions o;
  o.url = server.url();
  o.ack_timeout = ack_timeout;
  return o;
}

// Sends every message, awaits, and returns the outcomes in send order (refusals included).
std::vector<DeliveryResult> publish(nats::NatsPublisher& p, const std::vector<Message>& batch) {
  std::vector<std::optional<DeliveryResult>> refused;
  for (const auto& m : batch) refused.push_back(p.send(m));
  auto acked = p.await();
  std::vector<DeliveryResult> out;
  std::size_t next = 0;
  for (auto& r : refused) out.push_back(r ? *r : acked.at(next++));
  REQUIRE(next == acked.size());
  return out;
}

}  // namespace

TEST_CASE("a batch over many keys is acknowledged by the stream, stored in order per key, headers and bytes intact",
          "[nats]") {
  test::NatsServer server;
  test::NatsClient client(server.url());
  client.add_stream("OUTBOX", {"outbox.>"});
  NullLogger log;
  nats::NatsPublisher publisher(options(server), log);
  std::vector<Message> batch;
  for (int i = 0; i < 2000; ++i)
    batch.push_back(message("outbox.event.order", "order-" + std::to_string(i % 37), "ev-" + std::to_string(i),
                            std::string("{\"n\":") + std::to_string(i) + "}"));
  batch.push_back(message("outbox.event.blob", "blob", "ev-bin", std::string("\0\xff\x01 \r\n", 6),
                          {{"traceparent", std::string("00-abc-01")}}));
  batch.push_back(message("outbox.event.blob", "blob", "ev-null", std::nullopt));
  for (const auto& r : publish(publisher, batch)) REQUIRE(r.status == DeliveryStatus::delivered);

  const auto stored = client.read_all("OUTBOX");
  REQUIRE(stored.size() == batch.size());
  std::map<std::string, int> last_n;
  for (const auto& m : stored) {
    if (m.subject != "outbox.event.order") continue;
    const int n = std::stoi(m.headers.at("id").substr(3));
    CHECK(m.headers.at("Nats-Msg-Id") == m.headers.at("id"));
    CHECK(m.headers.at("key") == "order-" + std::to_string(n % 37));
    CHECK(m.headers.at("eventType") == "Moved");
    CHECK(m.data == "{\"n\":" + std::to_string(n) + "}");
    auto [it, fresh] = last_n.try_emplace(m.headers.at("key"), n);
    if (!fresh) CHECK(n > it->second);  // per key, in send order
    it->second = n;
  }
  CHECK(last_n.size() == 37);
  // Keys pipeline, so the stream interleaves them; these two are found by id.
  auto by_id = [&](const std::string& id) {
    auto it = std::find_if(stored.begin(), stored.end(), [&](const auto& m) { return m.headers.at("id") == id; });
    REQUIRE(it != stored.end());
    return *it;
  };
  const auto bin = by_id("ev-bin");
  CHECK(bin.data == std::string("\0\xff\x01 \r\n", 6));
  CHECK(bin.headers.at("traceparent") == "00-abc-01");
  CHECK(bin.headers.count("Outbox-Null-Payload") == 0);
  const auto null = by_id("ev-null");
  CHECK(null.data.empty());
  CHECK(null.headers.at("Outbox-Null-Payload") == "true");
}

TEST_CASE("a re-send of the same event ids is absorbed by the duplicate window, acknowledged, not stored again",
          "[nats]") {
  test::NatsServer server;
  test::NatsClient client(server.url());
  client.add_stream("OUTBOX", {"outbox.>"}, 120s);
  NullLogger log;
  nats::NatsPublisher publisher(options(server), log);
  std::vector<Message> batch;
  for (int i = 0; i < 300; ++i) batch.push_back(message("outbox.a", "k" + std::to_string(i % 5), "id-" + std::to_string(i), "x"));
  for (const auto& r : publish(publisher, batch)) REQUIRE(r.delivered());
  for (const auto& r : publish(publisher, batch)) REQUIRE(r.delivered());  // the relay's retry after a crash
  CHECK(client.count("OUTBOX") == 300);
  CHECK(publisher.duplicates() == 300);
}

TEST_CASE("what NATS cannot carry, or no stream captures, fails permanently with the reason", "[nats]") {
  test::NatsServer server;
  test::NatsClient client(server.url());
  client.add_stream("OUTBOX", {"outbox.>"});
  NullLogger log;
  nats::NatsPublisher publisher(options(server), log);
  const std::vector<Message> batch{
      message("nowhere.event.x", "k", "1", "no stream"),
      message("outbox.a", "k2", "2", "v", {{"Nats-Msg-Id", std::string("forged")}}),
      message("outbox.a", "k3", "3", "v", {{"NATS-Expected-Stream", std::string("OTHER")}}),
      message("outbox.a", "k4", "4", "v", {{"note", std::string("two\r\nlines")}}),
      message("outbox.a", "k5", "5", "v", {{"bad name", std::string("v")}}),
      message("outbox.*", "k6", "6", "v"),
      message("outbox..a", "k7", "7", "v"),
      message("outbox a", "k8", "8", "v"),
      message("outbox.a", "line\nbreak", "9", "v"),
      message("outbox.a", "k10", "10", std::string(2 << 20, 'x')),  // over the default max_payload (1 MB)
      message("outbox.a", "k11", "11", "v", {{"X-Nats-Msg-Id", std::string("forged")}}),
      message("outbox.a", "k12", "12", "v", {{"status", std::string("404")}}),  // a consumer would drop it
      message("outbox.a", "k13", "13", "v", {{"note", std::string("Nats-Msg-Id: forged")}}),
      message("outbox.a", "k14", "14", "fine"),
  };
  const auto out = publish(publisher, batch);
  REQUIRE(out.size() == batch.size());
  for (std::size_t i = 0; i + 1 < out.size(); ++i) {
    INFO("message " << i << ": " << out[i].detail);
    CHECK(out[i].status == DeliveryStatus::permanent_failure);
  }
  CHECK_THAT(out[0].detail, Catch::Contains("no JetStream stream captures subject nowhere.event.x"));
  CHECK_THAT(out[1].detail, Catch::Contains("NATS reserves Nats- headers"));
  CHECK_THAT(out[2].detail, Catch::Contains("NATS reserves Nats- headers"));
  CHECK_THAT(out[3].detail, Catch::Contains("CR, LF or NUL"));
  CHECK_THAT(out[9].detail, Catch::Contains("max_payload"));
  CHECK_THAT(out[10].detail, Catch::Contains("NATS reserves Nats- headers"));
  CHECK_THAT(out[11].detail, Catch::Contains("Status and Description"));
  CHECK_THAT(out[12].detail, Catch::Contains("spells a JetStream header"));
  CHECK(out.back().delivered());
  CHECK(client.count("OUTBOX") == 1);  // the forged Nats-Msg-Id never reached the stream
}

TEST_CASE("the server SIGKILLed mid-batch: nothing of a key acknowledged after its failure, re-sent in order after",
          "[nats]") {
  const auto seed = static_cast<unsigned>(std::random_device{}());
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  test::NatsServer server;
  {
    test::NatsClient client(server.url());
    client.add_stream("OUTBOX", {"outbox.>"}, 300s);
  }
  NullLogger log;
  nats::NatsPublisher publisher(options(server, 1500ms), log);
  constexpr int kKeys = 50, kEvents = 6000;
  std::vector<Message> all;
  for (int i = 0; i < kEvents; ++i)
    all.push_back(message("outbox.e", "agg-" + std::to_string(i % kKeys), "e-" + std::to_string(i), std::to_string(i)));
  // The relay's loop in small: send what is not acknowledged yet, per key in order, and a
  // failure holds the rest of its key until the next round.
  std::vector<bool> done(all.size(), false);
  int rounds = 0, failed_rounds = 0;
  const int kill_round = std::uniform_int_distribution<int>(1, 2)(rng);
  std::uint64_t stored_before = 0;
  while (std::find(done.begin(), done.end(), false) != done.end()) {
    REQUIRE(++rounds < 60);
    std::vector<std::size_t> picked;
    std::map<std::string, int> per_key;
    for (std::size_t i = 0; i < all.size() && picked.size() < 3000; ++i)
      if (!done[i]) picked.push_back(i);
    std::vector<Message> batch;
    for (auto i : picked) batch.push_back(all[i]);
    std::jthread killer;
    if (rounds == kill_round) {
      // Killed once the stream holds a seeded number of this round's messages: mid-batch.
      const auto threshold = stored_before + std::uniform_int_distribution<std::uint64_t>(100, 2000)(rng);
      killer = std::jthread([&, threshold] {
        test::NatsClient watcher(server.url());
        (void)test::eventually([&] { return watcher.count("OUTBOX") >= threshold; }, 20s, 0ms);
        server.process().kill();
      });
    }
    const auto out = publish(publisher, batch);
    if (killer.joinable()) killer.join();
    std::set<std::string> failed_keys;
    bool any_failed = false;
    for (std::size_t j = 0; j < out.size(); ++j) {
      CHECK(out[j].status != DeliveryStatus::permanent_failure);
      if (!out[j].delivered()) {
        failed_keys.insert(batch[j].key);
        any_failed = true;
      } else {
        INFO(batch[j].key << " acknowledged after a failure of its key in the same batch");
        CHECK(failed_keys.count(batch[j].key) == 0);
        done[picked[j]] = true;
      }
    }
    failed_rounds += any_failed ? 1 : 0;
    if (!server.process().running()) server.process().start();
    stored_before = test::NatsClient(server.url()).count("OUTBOX");
  }
  CHECK(failed_rounds >= 1);
  test::NatsClient client(server.url());
  const auto stored = client.read_all("OUTBOX");
  std::map<std::string, int> last;
  std::set<std::string> ids;
  for (const auto& m : stored) {
    const auto id = m.headers.at("id");
    if (!ids.insert(id).second) continue;  // a duplicate outside the window would show here
    const int n = std::stoi(m.data);
    auto [it, fresh] = last.try_emplace(m.headers.at("key"), n);
    INFO("key " << m.headers.at("key") << ": " << n << " stored after " << it->second);
    if (!fresh) CHECK(n > it->second);
    it->second = n;
  }
  CHECK(ids.size() == static_cast<std::size_t>(kEvents));
  CHECK(stored.size() == static_cast<std::size_t>(kEvents));  // the window absorbed every re-send
}

TEST_CASE("no server at start is transient, and the next batch is delivered once it is up", "[nats]") {
  auto server = std::make_unique<test::ServerProcess>("nats", [](const std::string& dir, int port) {
    return std::vector<std::string>{"nats-server", "-js", "-a", "127.0.0.1", "-p", std::to_string(port), "-sd", dir + "/js"};
  });
  nats::NatsOptions o;
  o.url = "nats://127.0.0.1:" + std::to_string(server->port());
  o.ack_timeout = 1s;
  NullLogger log;
  nats::NatsPublisher publisher(o, log);
  const auto down = publish(publisher, {message("outbox.a", "k", "1", "v")});
  CHECK(down.at(0).status == DeliveryStatus::transient_failure);
  server->start();
  {
    test::NatsClient client(o.url);
    client.add_stream("OUTBOX", {"outbox.>"});
  }
  REQUIRE(test::eventually([&] { return publish(publisher, {message("outbox.a", "k", "1", "v")}).at(0).delivered(); }, 30s));
}

TEST_CASE("abandon() mid-batch returns at once, the unacknowledged rest transient, order per key kept", "[nats]") {
  test::NatsServer server;
  test::NatsClient client(server.url());
  client.add_stream("OUTBOX", {"outbox.>"});
  NullLogger log;
  std::vector<DeliveryResult> out;
  std::vector<Message> batch;
  for (int i = 0; i < 6000; ++i)  // three long chains: one round trip per message of a key
    batch.push_back(message("outbox.a", "k" + std::to_string(i % 3), "id-" + std::to_string(i), std::to_string(i)));
  {
    nats::NatsPublisher publisher(options(server, 5s), log);
    for (const auto& m : batch) REQUIRE_FALSE(publisher.send(m).has_value());
    std::jthread stopper([&] {
      (void)test::eventually([&] { return client.count("OUTBOX") >= 300; }, 20s, 0ms);
      publisher.abandon();
    });
    const auto started = std::chrono::steady_clock::now();
    out = publisher.await();
    CHECK(std::chrono::steady_clock::now() - started < 10s);
    stopper.join();
    CHECK(publisher.send(batch[0]).value().status == DeliveryStatus::transient_failure);
  }  // destroyed with acknowledgements of the abandoned batch still arriving
  REQUIRE(out.size() == batch.size());
  std::set<std::string> failed;
  std::size_t delivered = 0;
  for (std::size_t i = 0; i < out.size(); ++i) {
    if (!out[i].delivered()) {
      CHECK(out[i].status == DeliveryStatus::transient_failure);
      failed.insert(batch[i].key);
    } else {
      ++delivered;
      CHECK(failed.count(batch[i].key) == 0);
    }
  }
  CHECK(delivered >= 297);  // stored ones, but the last of each key whose ack came too late
  CHECK(delivered < batch.size());
}

TEST_CASE("a reply that is not a JetStream acknowledgement (a core NATS service) is no delivery", "[nats]") {
  test::NatsServer server;
  test::NatsClient client(server.url());
  client.add_stream("OUTBOX", {"outbox.>"});
  client.respond("svc.echo", "{}");  // libnats takes "{}" for a positive acknowledgement
  NullLogger log;
  nats::NatsPublisher publisher(options(server), log);
  const auto out = publish(publisher, {message("svc.echo", "k", "1", "lost if called delivered"),
                                       message("outbox.a", "k2", "2", "stored")});
  INFO(out[0].detail);
  CHECK(out[0].status == DeliveryStatus::permanent_failure);
  CHECK_THAT(out[0].detail, Catch::Contains("is not a JetStream acknowledgement"));
  CHECK(out[1].delivered());
}

TEST_CASE("a key whose message failed sends nothing more in that batch, even what is sent after the failure came back",
          "[nats]") {
  test::NatsServer server;
  test::NatsClient client(server.url());
  client.add_stream("OUTBOX", {"outbox.>"});
  NullLogger log;
  nats::NatsPublisher publisher(options(server), log);
  REQUIRE_FALSE(publisher.send(message("nowhere.a", "k", "1", "fails: no stream")).has_value());
  REQUIRE(test::eventually([&] { return publisher.unsettled() == 0; }, 10s, 1ms));  // its failure is in
  const auto later = publisher.send(message("outbox.a", "k", "2", "must wait for 1"));
  CHECK_FALSE(later.has_value());
  CHECK_FALSE(publisher.send(message("outbox.a", "other", "3", "another key")).has_value());
  const auto out = publisher.await();
  REQUIRE(out.size() == 3);
  CHECK(out[0].status == DeliveryStatus::permanent_failure);
  CHECK(out[1].status == DeliveryStatus::transient_failure);
  CHECK_THAT(out[1].detail, Catch::Contains("held back"));
  CHECK(out[2].delivered());
  CHECK(client.count("OUTBOX") == 1);  // only the other key's
  // The next batch starts clean: the key is sent again.
  const auto next = publish(publisher, {message("outbox.a", "k", "2", "now")});
  CHECK(next.at(0).delivered());
}
