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
