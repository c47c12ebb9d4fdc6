// In-process schedules: the relay core driven through its ports by seeded random schedules of
// producer transactions (commits out of seq order, long ones, rollbacks), store and broker
// faults, relay crashes and lease lapses and renewals landing between the relay's own checks.
// The same history checker as the runs against PostgreSQL judges each one. Thousands of
// schedules in a few seconds; a failure prints the seed and the aggregate's history.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <set>

#include "relay/core/relay.hpp"
#include "tests/checker/history.hpp"
#include "tests/unit/fakes.hpp"

using namespace outbox::relay;
using namespace outbox::relay::test;
namespace chk = outbox::test::checker;
using namespace std::chrono_literals;

namespace {

constexpr int kLanes = 4;

struct OpenTx {
  std::vector<std::int64_t> seqs;
  std::vector<std::string> aggregates;
  std::int64_t id = 0;
};

// One schedule: a world of fakes, a seeded generator of what happens next, the history.
class Simulation {
 public:
  explicit Simulation(std::uint64_t seed) : seed_(seed), rng_(seed) {
    store_.lane_of = [](const OutboxEvent& e) { return static_cast<int>(std::hash<std::string>{}(e.aggregate_id) % kLanes); };
    options_.batch_size = 1 + rng_() % 6;
    options_.max_attempts = 1000;  // broker failures here are transient or passing: nothing dead-letters
    options_.row_retry = {10ms, 40ms};
    options_.transient_retry = {5ms, 20ms};
    options_.rescan_interval = std::chrono::milliseconds(50 + rng_() % 400);
    lanes_ = rng_() % 2 == 0;
    publisher_.broker = [this](const Message&) -> std::optional<DeliveryResult> {
      if (broker_failures_ > 0 && rng_() % 3 == 0) {
        --broker_failures_;
        return rng_() % 2 ? DeliveryResult{DeliveryStatus::transient_failure, "timed out"}
                          : DeliveryResult{DeliveryStatus::permanent_failure, "refused once"};
      }
      return std::nullopt;
    };
    // The lease keeper's thread: renewals and lapses land between any two clock readings.
    clock_.on_now = [this] {
      if (lanes_ && lease_flips_ > 0 && rng_() % 7 == 0) {
        --lease_flips_;
        renew(rng_() % 3 != 0);
      }
    };
    renew(true);
    start_relay();
  }

  // Runs `steps` random steps, then lets the relay drain with no more faults.
  std::vector<chk::Violation> run(int steps) {
    for (int i = 0; i < steps; ++i) act();
    while (!open_.empty()) settle(open_.begin()->first, /*commit=*/true);
    broker_failures_ = 0;
    lease_flips_ = 0;
    store_.fail_fetches = store_.fail_marks = 0;
    renew(true);
    for (int i = 0; i < 2000 && !drained(); ++i) relay_step();
    std::vector<chk::Violation> out;
    if (!drained()) out.push_back({"stalled", "", "not drained after the schedule"});
    auto found = chk::check_history(written_, deliveries(), rows(), check_options());
    out.insert(out.end(), found.begin(), found.end());
    return out;
  }

  std::string history(const std::string& aggregate) {
    return chk::describe_aggregate(aggregate, written_, deliveries(), rows(), check_options());
  }

 private:
  static chk::CheckOptions check_options() {
    chk::CheckOptions o;
    o.publisher_header = "";
    o.check_partitioner = false;
    return o;
  }

  void start_relay() {
    relay_.reset();
    auto* ownership = lanes_ ? &ownership_ : nullptr;
    relay_ = std::make_unique<Relay>(store_, publisher_, clock_, MessageBuilder({}), options_, stats_, ownership);
  }

  void renew(bool valid) {
    std::vector<LaneLease> held;
    for (int l = 0; l < kLanes; ++l) held.push_back({l, epoch_});
    ownership_.update(held, valid ? clock_.now() + 1h : clock_.now() - 1ms, {});
  }

  double now() const { return static_cast<double>(step_); }

  void act() {
    ++step_;
    const int roll = static_cast<int>(rng_() % 100);
    if (roll < 30) begin();
    else if (roll < 50 && !open_.empty()) {
      auto it = open_.begin();
      std::advance(it, rng_() % open_.size());  // commits in any order, not seq order
      settle(it->first, rng_() % 8 != 0);
    } else if (roll < 80) relay_step();
    else if (roll < 83) store_.fail_fetches = 1;
    else if (roll < 86) {
      store_.fail_marks = 1;
      store_.commit_then_fail = rng_() % 2;
    } else if (roll < 89) broker_failures_ += 1 + rng_() % 3;
    else if (roll < 91) start_relay();  // a crash: what was acknowledged and not marked goes again
    else if (roll < 94) lease_flips_ += 2;
    else clock_.advance(std::chrono::milliseconds(rng_() % 100));
  }

  void begin() {
    const int n = 1 + static_cast<int>(rng_() % 3);
    OpenTx tx;
    tx.id = next_tx_++;
    for (int i = 0; i < n; ++i) {
      const std::string agg = "a" + std::to_string(rng_() % 6);
      // One transaction at a time per aggregate, as services write (or under a row lock).
      if (busy_.contains(agg) && std::find(tx.aggregates.begin(), tx.aggregates.end(), agg) == tx.aggregates.end())
        continue;
      if (std::find(tx.aggregates.begin(), tx.aggregates.end(), agg) == tx.aggregates.end()) tx.aggregates.push_back(agg);
      busy_.insert(agg);
      const auto seq = store_.add(agg, "order", /*visible=*/false);
      tx.seqs.push_back(seq);
      const auto& e = store_.row(seq).event;
      chk::Written w;
      w.id = e.id;
      w.aggregate_type = e.aggregate_type;
      w.aggregate_id = e.aggregate_id;
      w.tx = tx.id;
      w.index = static_cast<int>(tx.seqs.size());
      w.written_at = now();
      w.fate = chk::Fate::unknown;
      w.topic = "outbox.event.order";
      w.value = e.payload;
      w.event_type = e.event_type;
      w.label = "sim";
      index_[e.id] = written_.size();
      written_.push_back(std::move(w));
    }
    if (tx.seqs.empty()) return;
    open_.emplace(tx.id, std::move(tx));
  }

  void settle(std::int64_t tx_id, bool commit) {
    auto node = open_.extract(tx_id);
    auto& tx = node.mapped();
    for (auto seq : tx.seqs) {
      auto& w = written_[index_.at(store_.row(seq).event.id)];
      if (commit) {
        store_.row(seq).visible = true;
        w.fate = chk::Fate::committed;
        w.committed_at = now();
      } else {
        w.fate = chk::Fate::rolled_back;  // stays invisible: never fetched
      }
    }
    for (const auto& a : tx.aggregates) busy_.erase(a);
  }

  void relay_step() {
    auto r = relay_->step();
    if (r.kind == StepKind::backoff) clock_.advance(r.wait);
    clock_.advance(1ms);
  }

  bool drained() const {
    for (const auto& [seq, row] : store_.rows())
      if (row.visible && !row.published && !row.dead) return false;
    return true;
  }

  std::vector<chk::Delivery> deliveries() const {
    std::vector<chk::Delivery> out;
    std::int64_t offset = 0;
    for (const auto& m : publisher_.log) {
      chk::Delivery d;
      d.topic = m.topic;
      d.partition = 0;  // the fake broker keeps one log: offsets are its order
      d.offset = offset++;
      d.key = m.key;
      d.value = m.value;
      d.headers = m.headers;
      out.push_back(std::move(d));
    }
    return out;
  }

  std::map<std::string, chk::RowState> rows() const {
    std::map<std::string, chk::RowState> out;
    for (const auto& [seq, row] : store_.rows())
      if (row.visible) out[row.event.id] = {seq, row.published, row.dead, row.last_error};
    return out;
  }

  std::uint64_t seed_;
  std::mt19937_64 rng_;
  ManualClock clock_;
  FakeOutboxStore store_{clock_};
  FakePublisher publisher_;
  RelayStats stats_;
  RelayOptions options_;
  Ownership ownership_{"sim", kLanes};
  std::int64_t epoch_ = 1;
  bool lanes_ = false;
  int lease_flips_ = 0;
  int broker_failures_ = 0;
  std::unique_ptr<Relay> relay_;
  std::int64_t step_ = 0;
  std::int64_t next_tx_ = 1;
  std::map<std::int64_t, OpenTx> open_;
  std::set<std::string> busy_;
  std::vector<chk::Written> written_;
  std::map<std::string, std::size_t> index_;
};

}  // namespace

TEST_CASE("in-process schedules: every committed event delivered, none rolled back, first deliveries in causal order",
          "[relay][order][schedules]") {
  std::uint64_t first = std::random_device{}();
  if (const char* s = std::getenv("OUTBOX_SIM_SEED"); s != nullptr && *s != '\0') first = std::strtoull(s, nullptr, 10);
  long schedules = 3000;
  if (const char* n = std::getenv("OUTBOX_SIM_SCHEDULES"); n != nullptr && *n != '\0') schedules = std::strtol(n, nullptr, 10);
  long failed = 0;
  for (long i = 0; i < schedules && failed == 0; ++i) {
    const auto seed = first + static_cast<std::uint64_t>(i);
    Simulation sim(seed);
    auto violations = sim.run(400);
    if (violations.empty()) continue;
    ++failed;
    std::string report = "schedule " + std::to_string(i + 1) + ", seed " + std::to_string(seed) +
                         " (replay: OUTBOX_SIM_SEED=" + std::to_string(seed) + " OUTBOX_SIM_SCHEDULES=1):\n";
    for (std::size_t k = 0; k < violations.size() && k < 5; ++k)
      report += "  [" + violations[k].rule + "] " + violations[k].aggregate + ": " + violations[k].detail + "\n";
    if (!violations[0].aggregate.empty()) report += sim.history(violations[0].aggregate);
    FAIL_CHECK(report);
  }
  CHECK(failed == 0);
  std::printf("in-process schedules: %ld from seed %llu, %ld with violations\n", schedules,
              static_cast<unsigned long long>(first), failed);
}
