#!/usr/bin/env bash
# Installs what is missing and runs the whole test suite: formatting, lints,
# unit tests and the root-only tests against the real kernel, and the
# benchmark's smoke runs. Every step runs even when one before it failed, so
# one red test does not hide the others; the exit status is non-zero if any
# step failed, and the failed steps are listed at the end.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh || exit 1
set +e # deps.sh sets -e; here every step runs

failed=()
step() {
  echo "==> $*" >&2
  "$@" || failed+=("$*")
}

step cargo fmt --all -- --check
step cargo clippy --all-targets -- -D warnings
# Every test binary, also after one failed.
step cargo test --all-targets --no-fail-fast
# The benchmark is a tool, not a timed test: build it and smoke-run it once.
step make bench-quick
# The hook floor too: every probe attached, none may report anything.
step make bench-quick BENCH_ARGS=--hooks-only
# A 30-second soak: one sensor under a mixed load; fails on a duplicate report.
step make bench-quick BENCH_ARGS="--soak-minutes 0.5 --soak-interval-secs 10"

if [ "${#failed[@]}" -gt 0 ]; then
  echo "sockscope: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "sockscope: all steps passed" >&2
