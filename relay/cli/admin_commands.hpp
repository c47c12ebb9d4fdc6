// The operator subcommands of outbox-relay (status, dead-letters, replay): tables for people,
// --json for scripts, so on-call people never write SQL against the outbox.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

#include "relay/app/exit_codes.hpp"
#include "relay/config/config.hpp"

namespace outbox::relay::cli {

class AdminCommands {
 public:
  // Adds the subcommands to `cli`; `common` adds the config options `run` takes, so every
  // subcommand reads the same YAML file, environment and flags.
  AdminCommands(CLI::App& cli, const std::function<void(CLI::App*)>& common);

  // One of these subcommands was named on the command line (also after a parse error).
  [[nodiscard]] bool selected() const;

  // Runs the selected subcommand; returns the exit code: 0, kExitUsage (a bad seq or UUID, selectors that do
  // not go together, --all without --yes), kExitConfig, or
  // kExitFailure (database unreachable, nothing matched). Never throws.
  [[nodiscard]] int run(const config::Config& config) const;

 private:
  struct Flags {
    bool json = false;
    long long list_limit = 100;
    long long replay_limit = 100'000;
    std::string aggregate;
    std::vector<std::string> events;
    bool all = false;
    bool yes = false;
    std::string from_seq, to_seq, since, until;
    bool dry_run = false;
  };

  CLI::App* status_ = nullptr;
  CLI::App* dead_letters_ = nullptr;
  CLI::App* list_ = nullptr;
  CLI::App* show_ = nullptr;
  CLI::App* requeue_ = nullptr;
  CLI::App* purge_ = nullptr;
  CLI::App* replay_ = nullptr;
  Flags flags_;
};

}  // namespace outbox::relay::cli
