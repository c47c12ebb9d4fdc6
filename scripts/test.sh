#!/usr/bin/env bash
# The test command: installs every package, builds, and runs every test with ctest.
# Usage: bash scripts/test.sh        (OUTBOX_SANITIZE=1 for an ASan/UBSan build)
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

build_dir=${BUILD_DIR:-build}
sanitize=OFF
if [[ "${OUTBOX_SANITIZE:-0}" == 1 ]]; then
  sanitize=ON
  build_dir=${BUILD_DIR:-build-sanitize}
fi

cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DOUTBOX_SANITIZE=$sanitize
cmake --build "$build_dir" -j"$(nproc)"
cd "$build_dir"
ctest --output-on-failure --timeout 600 -j"${CTEST_PARALLEL:-2}"
