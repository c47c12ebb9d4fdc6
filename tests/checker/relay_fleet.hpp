// The relay processes of one schedule: started, killed, stopped and resumed, terminated, and
// judged on how they exit (0 after SIGTERM, 78 for a property they must refuse).
#pragma once

#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tests/checker/history.hpp"
#include "tests/checker/producers.hpp"
#include "tests/e2e/child_process.hpp"
#include "tests/support/text_tail.hpp"

namespace outbox::test::checker {

// The environment variable that sets librdkafka property `name`.
[[nodiscard]] std::string property_env(const std::string& name);

class Relays {
 public:
  // `args`: the subcommand, `run` for relays and `inbox run` for inbox sidecars; `kind` names
  // them in violations and logs ("relay", "sidecar").
  Relays(std::string binary, std::map<std::string, std::string> env, std::string log_prefix,
         std::vector<std::string> args = {"run"}, std::string kind = "relay")
      : binary_(std::move(binary)),
        env_(std::move(env)),
        log_prefix_(std::move(log_prefix)),
        args_(std::move(args)),
        kind_(std::move(kind)) {}

  struct Instance {
    std::string name;
    std::unique_ptr<ChildProcess> process;
    bool stopped = false;
    Clock::time_point resume_at{};
    bool terminated = false;  // SIGTERM sent: must exit 0
    bool killed = false;
    // Started with a property it must refuse: must exit 78 before probe_deadline.
    std::optional<std::string> refused;
    Clock::time_point probe_deadline{};
    std::string log;  // the tail, kept once it exited
  };

  Instance& start(const std::map<std::string, std::string>& extra = {});
  // The running, not stopped, not stopping instances that are relays in earnest.
  [[nodiscard]] std::vector<Instance*> live();
  void kill(Instance& in);
  void stop_for(Instance& in, std::chrono::milliseconds span);
  void terminate(Instance& in);
  void resume(Instance& in);
  // Time-driven duties: resume stopped instances, judge refused-property probes.
  void tick(std::vector<Violation>& violations);
  // SIGTERM everything still running; every clean stop must exit 0. A relay started with a
  // property it must refuse and still running was not refused, however short the run.
  void stop_all(std::vector<Violation>& violations);
  [[nodiscard]] std::string logs();
  std::deque<Instance>& all() { return all_; }

 private:
  std::string binary_;
  std::map<std::string, std::string> env_;
  std::string log_prefix_;
  std::vector<std::string> args_;
  std::string kind_;
  std::deque<Instance> all_;
};

}  // namespace outbox::test::checker
