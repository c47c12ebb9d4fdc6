#include "tests/checker/relay_fleet.hpp"

#include <signal.h>

#include <cctype>

namespace outbox::test::checker {

using namespace std::chrono_literals;

std::string property_env(const std::string& name) {
  std::string e = "OUTBOX_RELAY_KAFKA_PROPERTY_";
  for (char ch : name) e += ch == '.' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  return e;
}

Relays::Instance& Relays::start(const std::map<std::string, std::string>& extra) {
  auto env = env_;
  for (const auto& [k, v] : extra) env[k] = v;
  auto& in = all_.emplace_back();
  in.name = (kind_ == "relay" ? "r" : "s") + std::to_string(all_.size());
  in.process = std::make_unique<ChildProcess>(binary_, args_, env,
                                              log_prefix_ + in.name + ".log");
  return in;
}

std::vector<Relays::Instance*> Relays::live() {
  std::vector<Instance*> out;
  for (auto& in : all_)
    if (!in.killed && !in.terminated && !in.stopped && !in.refused && in.process->running()) out.push_back(&in);
  return out;
}

void Relays::kill(Instance& in) {
  in.process->signal(SIGKILL);
  in.killed = true;
  (void)in.process->wait(10s);
  in.log = last_lines(in.process->output(), 15);
}
void Relays::stop_for(Instance& in, std::chrono::milliseconds span) {
  in.process->signal(SIGSTOP);
  in.stopped = true;
  in.resume_at = Clock::now() + span;
}
void Relays::terminate(Instance& in) {
  if (in.stopped) resume(in);
  in.process->signal(SIGTERM);
  in.terminated = true;
}
void Relays::resume(Instance& in) {
  in.process->signal(SIGCONT);
  in.stopped = false;
}

void Relays::tick(std::vector<Violation>& violations) {
  for (auto& in : all_) {
    if (in.stopped && Clock::now() >= in.resume_at) resume(in);
    if (in.refused && !in.process->running()) {
      const auto code = in.process->wait(0ms);
      if (code != std::optional<int>(78))
        violations.push_back({"config", "", "a relay with " + *in.refused + " exited " +
                                                (code ? std::to_string(*code) : "?") + ", expected 78: " +
                                                last_lines(in.process->output(), 3)});
      in.refused.reset();
      in.killed = true;  // gone, judged
    } else if (in.refused && Clock::now() >= in.probe_deadline) {
      violations.push_back({"config", "", "a relay started with " + *in.refused +
                                              " is still running after 5 s: the property was accepted"});
      in.refused.reset();  // it runs on as a relay, and the history shows what it does
    }
  }
}

void Relays::stop_all(std::vector<Violation>& violations) {
  tick(violations);
  for (auto& in : all_) {
    if (in.refused && in.process->running()) {
      violations.push_back({"config", "", "a relay started with " + *in.refused +
                                              " was still running when the schedule ended: the property was accepted"});
      in.refused.reset();
    }
    if (in.killed) continue;
    if (in.process->running() && !in.terminated) terminate(in);
  }
  for (auto& in : all_) {
    if (in.killed) continue;
    const auto code = in.process->wait(20s);
    in.log = last_lines(in.process->output(), 15);
    if (code != std::optional<int>(0))
      violations.push_back({kind_ + " exit", "", in.name + " exited " + (code ? std::to_string(*code) : "(still running)") +
                                                  " after SIGTERM: " + last_lines(in.log, 3)});
  }
}

std::string Relays::logs() {
  std::string out;
  for (auto& in : all_) {
    if (in.log.empty()) in.log = last_lines(in.process->output(), 15);
    out += "--- " + in.name + " log tail\n" + in.log + "\n";
  }
  return out;
}

}  // namespace outbox::test::checker
