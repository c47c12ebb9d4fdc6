#include "tests/bench/bench_instances.hpp"

#include <algorithm>
#include <stdexcept>

#include "tests/e2e/delivery_check.hpp"

namespace outbox::bench {

std::string bench_conninfo(const std::string& url) { return pg::harden_conninfo(url, "outbox-relay-bench", 60'000); }

RelayOptions relay_options(std::size_t batch) {
  RelayOptions o;
  o.batch_size = batch;
  return o;
}

void warm_up(Publisher& publisher) {
  Message m{"outbox.event.order", "warm", "x", {}};
  (void)publisher.send(m);
  (void)publisher.await();
}

LeaseOptions lease_options() {
  LeaseOptions o;
  o.ttl = kLeaseTtl;
  o.renew_interval = 2s;
  o.safety_margin = kLeaseTtl / 10;
  return o;
}

pg::PgStoreOptions Member::store_options(const std::string& url, pg::MarkMode mode, const std::string& owner) {
  pg::PgStoreOptions o{bench_conninfo(url), "public", mode};
  o.owner = owner;
  return o;
}

std::vector<std::unique_ptr<Member>> join_lanes(const std::string& url, pg::MarkMode mode, int n) {
  std::vector<std::unique_ptr<Member>> members;
  std::vector<std::string> live;
  for (int i = 1; i <= n; ++i) {
    members.push_back(std::make_unique<Member>(url, mode, "bench-" + std::to_string(i)));
    live.push_back(members.back()->id());
  }
  for (auto& m : members) m->start_keeper();
  // Two ttls: an instance of an earlier run that could not leave has expired by then.
  if (!test::eventually([&] { return std::all_of(members.begin(), members.end(), [&](const auto& m) { return m->settled(live); }); },
                        2 * kLeaseTtl, 5ms))
    throw std::runtime_error("the lanes were not shared out within two lease ttls");
  return members;
}

}  // namespace outbox::bench
