#!/usr/bin/env bash
# Installs what building and testing sockscope needs on Debian 12, if missing.
set -euo pipefail

# systemd and logrotate: the service packaging tests (systemd-analyze verify, logrotate -d);
# dpkg-dev (dpkg-shlibdeps), binutils (strip), man-db: make deb and its test.
packages=(clang llvm libelf-dev zlib1g-dev pkg-config make iproute2 bpftool util-linux procps rsyslog systemd logrotate
  dpkg-dev binutils man-db)

if [ "$(id -u)" -ne 0 ]; then
  echo "sockscope: run as root (it installs packages and loads eBPF programs)" >&2
  exit 1
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "sockscope: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || {
  echo "sockscope: a Rust toolchain (cargo, stable >= 1.82) is required; install it with rustup" >&2
  exit 1
}
