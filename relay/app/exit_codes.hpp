// The process exit codes, so systemd's RestartPreventExitStatus can tell them apart.
#pragma once

namespace outbox::relay::app {

constexpr int kExitFailure = 1;
// sysexits.h: EX_USAGE, bad arguments to an operator command.
constexpr int kExitUsage = 64;
// sysexits.h: EX_UNAVAILABLE. The outbox table is missing or lacks columns (run `migrate`).
// Unlike 78 it should be restarted: a migration may still be running.
constexpr int kExitSchemaUnavailable = 69;
// sysexits.h: EX_NOPERM. The database refused the role (authentication, a missing grant).
constexpr int kExitAccessDenied = 77;
// sysexits.h: EX_CONFIG. A bad configuration; restarting cannot fix it.
constexpr int kExitConfig = 78;

}  // namespace outbox::relay::app
