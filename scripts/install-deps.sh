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
  libseccomp-dev libnftnl-dev libmnl-dev
  # benchmarks and tools the tests drive
  libbenchmark-dev binutils iproute2 git python3 procps bubblewrap hyperfine time cpio
  # the host-mode tests: real tools run inside sessions, a static helper, an unprivileged user
  libc6-dev nodejs strace util-linux passwd
  # the network tests: a test origin (nginx) with a test PKI (openssl), real
  # clients (curl, dig); the proxy benchmark's peers (squid with ssl-bump, mitmproxy);
  # nft, which lists a session's rules against its reference text (nft_test.cc)
  nginx openssl curl bind9-dnsutils ca-certificates squid-openssl mitmproxy openssh-server openssh-client
  nftables
  # VM mode (guard --vm): QEMU's microvm and virtiofsd (qemu-system-common,
  # /usr/lib/qemu/virtiofsd); lz4 and cpio for scripts/vm-prepare.sh, which
  # unpacks Debian's cloud kernel and builds the initramfs (make check runs it)
  qemu-system-x86 qemu-system-common lz4 cpio
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
else
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Unprivileged sessions need /dev/fuse open to every user, as Debian's fuse3
# package leaves it (mode 0666); some containers ship it 0600.
if [ -c /dev/fuse ] && [ "$(stat -c %a /dev/fuse)" != "666" ]; then
  echo "install-deps: making /dev/fuse 0666 (Debian's default) for unprivileged sessions"
  $SUDO chmod 0666 /dev/fuse
fi

# The MCP tests drive real MCP servers and clients from the npm registry
# (tests/mcp/package-lock.json pins them). npm ci runs again only when the
# lock file changed since the last install.
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mcp_dir="$repo_root/tests/mcp"
mcp_stamp="$mcp_dir/node_modules/.guard-lock.sha256"
mcp_lock_sum="$(sha256sum "$mcp_dir/package-lock.json" | cut -d' ' -f1)"
if [ -f "$mcp_stamp" ] && [ "$(cat "$mcp_stamp")" = "$mcp_lock_sum" ]; then
  echo "install-deps: tests/mcp node_modules up to date"
else
  command -v npm >/dev/null || { echo "install-deps: npm is missing (it comes with the nodejs package)" >&2; exit 1; }
  echo "install-deps: npm ci in tests/mcp"
  npm ci --prefix "$mcp_dir" --no-audit --no-fund --ignore-scripts
  echo "$mcp_lock_sum" > "$mcp_stamp"
fi
