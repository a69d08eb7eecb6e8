#!/usr/bin/env bash
# Installs every Debian package guard needs to build, test and benchmark.
set -euo pipefail

packages=(
  # toolchain
  build-essential g++ clang libclang-rt-14-dev pkg-config make
  # core libraries named by the design
  libfuse3-dev fuse3 libc-ares-dev android-libboringssl-dev libspdlog-dev catch2
  # YAML with line/column marks for policy errors; JSON for audit events;
  # CLI11 for sub-commands and --help; libidn2 for IDNA (punycode) domains
  libyaml-cpp-dev nlohmann-json3-dev libcli11-dev libidn2-dev
  # jail and capture
  libseccomp-dev libnftables-dev
  # benchmarks and tools the tests drive
  libbenchmark-dev binutils iproute2 git python3 procps
)

export DEBIAN_FRONTEND=noninteractive
if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
