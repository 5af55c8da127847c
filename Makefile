# Benchmark of the sensor: what it costs and what it misses (needs root; see
# src/bin/sockscope-bench.rs). `make bench BENCH_ARGS="--pairs 5"` passes flags;
# BENCH_ARGS=--probes-only measures the eBPF programs alone, BENCH_ARGS=--hooks-only
# the hook points alone (every program returns at once).

CARGO ?= cargo
# Cargo's own default (./target) unless CARGO_TARGET_DIR says otherwise.
TARGET_DIR := $(if $(CARGO_TARGET_DIR),$(CARGO_TARGET_DIR),target)
BENCH := $(TARGET_DIR)/release/sockscope-bench
BENCH_ARGS ?=
# rustup installs cargo here; root's PATH often lacks it.
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: bench bench-quick release

release:
	$(CARGO) build --release --bins

# The full benchmark: every workload, A B pairs, a table and the targets.
bench: release
	$(BENCH) $(BENCH_ARGS)

# CI smoke run: tiny counts, one pair, no timing assertion; fails if a
# sensor run misses events that no counter explains.
bench-quick: release
	$(BENCH) --quick --check-events $(BENCH_ARGS)
