#!/usr/bin/env bash
# Regenerates the configuration table in README.md from `outbox-relay config-reference`.
set -euo pipefail
cd "$(dirname "$0")/.."
binary=${1:-build/relay/outbox-relay}
table=$("$binary" config-reference)
awk -v table="$table" '
  /<!-- config-reference:begin/ { print; print table; skip = 1; next }
  /<!-- config-reference:end/   { skip = 0 }
  !skip { print }' README.md >README.md.tmp
mv README.md.tmp README.md
