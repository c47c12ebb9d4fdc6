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

# Warnings are errors here (the CI build); a plain cmake configure leaves them warnings.
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DOUTBOX_SANITIZE=$sanitize -DOUTBOX_WERROR=ON
cmake --build "$build_dir" -j"$(nproc)"

# The unit tests again under AddressSanitizer and UndefinedBehaviorSanitizer (quick: no
# services). The full suite under sanitizers: OUTBOX_SANITIZE=1 bash scripts/test.sh
if [[ $sanitize == OFF && "${OUTBOX_SKIP_SANITIZER_UNITS:-0}" != 1 ]]; then
  cmake -S . -B build-sanitize-units -G Ninja -DCMAKE_BUILD_TYPE=Debug -DOUTBOX_SANITIZE=ON -DOUTBOX_WERROR=ON >/dev/null
  cmake --build build-sanitize-units -j"$(nproc)" --target core_test adapter_test
  ./build-sanitize-units/tests/core_test
  ./build-sanitize-units/tests/adapter_test
fi

cd "$build_dir"
ctest --output-on-failure --timeout 600 -j"${CTEST_PARALLEL:-2}"
