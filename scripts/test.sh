#!/usr/bin/env bash
# Installs what is missing and runs the whole test suite: formatting, lints,
# unit tests and the root-only tests against the real kernel.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets
# The benchmark is a tool, not a timed test: build it and smoke-run it once.
make bench-quick
# The hook floor too: every probe attached, none may report anything.
make bench-quick BENCH_ARGS=--hooks-only
# A 30-second soak: one sensor under a mixed load; fails on a duplicate report.
make bench-quick BENCH_ARGS="--soak-minutes 0.5 --soak-interval-secs 10"
