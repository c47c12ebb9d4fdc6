#!/usr/bin/env bash
# Installs every Debian package the build, the tests and the demo need.
# Safe to run repeatedly; needs root (or sudo) on Debian 12.
set -euo pipefail

packages=(
  build-essential cmake pkg-config ninja-build
  libpqxx-dev libpq-dev librdkafka-dev libboost-dev libboost-system-dev
  libyaml-cpp-dev catch2 libcli11-dev nlohmann-json3-dev
  postgresql postgresql-client kcat util-linux procps
  systemd binutils
  python3 python3-psycopg2 nodejs
  libnats-dev nats-server
  librabbitmq-dev rabbitmq-server
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if ((${#missing[@]})); then
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "install-deps: all packages present"
fi

# npm comes with some nodejs builds and is Debian's own package with others.
if ! command -v npm >/dev/null 2>&1; then
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  echo "install-deps: installing npm"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends npm
fi

# The inbox examples' Node client (pg), into schema/examples/node_modules.
examples="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/schema/examples"
if [[ ! -f "$examples/node_modules/pg/package.json" ]]; then
  echo "install-deps: npm ci in $examples"
  npm ci --prefix "$examples" --no-audit --no-fund --loglevel=error
fi
