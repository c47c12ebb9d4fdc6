#!/usr/bin/env bash
# Fails when the README's configuration table differs from what the binary generates, so
# the reference stays true with the code. Fix with: bash scripts/update-readme-reference.sh
set -euo pipefail
binary=$1 readme=$2
expected=$("$binary" config-reference)
actual=$(sed -n '/<!-- config-reference:begin/,/<!-- config-reference:end/p' "$readme" | sed '1d;$d')
if [[ "$expected" != "$actual" ]]; then
  echo "README.md configuration reference is out of date:" >&2
  diff <(echo "$actual") <(echo "$expected") >&2 || true
  exit 1
fi
echo "README configuration reference matches the binary"
