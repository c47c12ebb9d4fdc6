// The inbox's operator subcommands, under `outbox-relay inbox`: status, and dead-letters
// list | show | requeue | skip. Tables for people, --json for scripts, like the outbox's.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

#include "relay/config/config.hpp"

namespace outbox::relay::cli {

class InboxCommands {
 public:
  // Adds the subcommands to `inbox` (the `outbox-relay inbox` command); `common` adds the
  // config options every subcommand takes.
  InboxCommands(CLI::App& inbox, const std::function<void(CLI::App*)>& common);

  [[nodiscard]] bool selected() const;
  // Returns the exit code: 0; kExitUsage (a bad seq, selectors that do not go together);
  // kExitConfig; kExitFailure (database unreachable, nothing matched). Never throws.
  [[nodiscard]] int run(const config::Config& config) const;

 private:
  CLI::App* status_ = nullptr;
  CLI::App* dead_letters_ = nullptr;
  CLI::App* list_ = nullptr;
  CLI::App* show_ = nullptr;
  CLI::App* requeue_ = nullptr;
  CLI::App* skip_ = nullptr;
  bool json_ = false;
  bool all_ = false;
  long long limit_ = 100;
  std::vector<std::string> events_;
};

}  // namespace outbox::relay::cli
