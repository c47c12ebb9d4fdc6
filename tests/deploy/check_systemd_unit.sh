#!/usr/bin/env bash
# Checks a unit under deploy/systemd (outbox-relay.service, outbox-relay-inbox.service):
# `systemd-analyze verify` finds nothing to say about it (with ExecStart pointing at the built
# binary), it keeps the directives the relay relies on, and TimeoutStopSec outlasts the
# shutdown_timeout_ms of the sample config (relay.* or inbox.*). Prints the
# `systemd-analyze security --offline=yes` exposure score (not a pass/fail criterion).
# Usage: check_systemd_unit.sh UNIT BINARY CONFIG
#
# In a container systemd is not PID 1 (and may be missing: scripts/install-deps.sh installs the
# systemd package); `verify` works offline, but may talk about the host's other units, so only
# lines naming our unit count. A deliberately broken copy must be reported, which proves the
# filter does not hide everything.
set -euo pipefail
unit=$1 binary=$2 config=$3
name=$(basename "$unit")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail=0

command -v systemd-analyze >/dev/null || { echo "systemd-analyze not found: bash scripts/install-deps.sh" >&2; exit 1; }

# verify FILE: prints the lines that concern FILE's unit; returns 1 if there are any.
verify() {
  local file=$1 out rc=0
  out=$(cd "$(dirname "$file")" && systemd-analyze verify --man=no --recursive-errors=no "$file" 2>&1) || rc=$?
  local ours
  ours=$(grep -F -e "$name" -e "$file" <<<"$out" || true)
  if [[ -n "$ours" ]]; then
    echo "$ours"
    return 1
  fi
  if ((rc != 0)); then
    echo "  (systemd-analyze exited $rc with nothing about $name; ignored host noise:)"
    sed 's/^/    /' <<<"$out"
  fi
  return 0
}

mkdir -p "$work/unit" "$work/broken"
sed "s|^ExecStart=/usr/local/bin/outbox-relay |ExecStart=$binary |" "$unit" >"$work/unit/$name"
grep -Eq "^ExecStart=$binary (inbox )?run " "$work/unit/$name" || { echo "FAIL: no ExecStart=/usr/local/bin/outbox-relay [inbox] run ... line in $unit"; exit 1; }

echo "== systemd-analyze verify $name (ExecStart=$binary)"
if verify "$work/unit/$name"; then
  echo "ok: no warning about the unit"
else
  echo "FAIL: systemd-analyze verify reported the lines above"
  fail=1
fi

sed 's/^WatchdogSec=/WatchdogSecs=/' "$work/unit/$name" >"$work/broken/$name"
if verify "$work/broken/$name" >/dev/null; then
  echo "FAIL: a copy with an unknown directive (WatchdogSecs=) was not reported: the filter hides warnings"
  fail=1
else
  echo "ok: a deliberately broken copy is reported"
fi

echo "== directives"
expect() {
  if grep -qx "$1" "$unit"; then echo "ok: $1"; else echo "FAIL: missing $1"; fail=1; fi
}
expect "Type=notify"
expect "NotifyAccess=main"
expect "WatchdogSec=30s"
expect "Restart=on-failure"
expect "RestartPreventExitStatus=77 78"
expect "LimitNOFILE=1024"
expect "DynamicUser=yes"
expect "NoNewPrivileges=yes"
expect "ProtectSystem=strict"
expect "CapabilityBoundingSet="
if grep -q '^Environment=.*PASSWORD=' "$unit"; then echo "FAIL: a password in Environment="; fail=1; fi

# TimeoutStopSec (seconds) must exceed the shutdown_timeout_ms of the sample config.
stop=$(sed -n 's/^TimeoutStopSec=\([0-9]\+\)s\?$/\1/p' "$unit")
shutdown_ms=$(sed -n 's/^ *shutdown_timeout_ms: *\([0-9]\+\).*/\1/p' "$config")
shutdown_ms=${shutdown_ms:-30000}
if [[ -n "$stop" ]] && ((stop * 1000 > shutdown_ms)); then
  echo "ok: TimeoutStopSec=$stop s > shutdown_timeout_ms=$shutdown_ms"
else
  echo "FAIL: TimeoutStopSec='$stop' must be a number of seconds above shutdown_timeout_ms=$shutdown_ms"
  fail=1
fi

echo "== systemd-analyze security --offline=yes (informational)"
if score=$(systemd-analyze security --offline=yes --no-pager "$work/unit/$name" 2>&1 | grep 'Overall exposure level'); then
  echo "$score"
else
  echo "systemd-analyze security --offline=yes is not available here"
fi

((fail == 0)) && echo "systemd unit: all checks passed"
exit "$fail"
