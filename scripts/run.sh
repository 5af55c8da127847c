#!/usr/bin/env bash
# Installs what is missing, builds, and runs the sensor with its built-in
# default configuration: every TCP connection and UDP flow, JSON lines on stdout.
# Extra arguments go to sockscope (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
cargo build --release --bin sockscope
exec ./target/release/sockscope "$@"
