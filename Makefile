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

.PHONY: bench bench-quick release install install-files uninstall deb deb-package

release:
	$(CARGO) build --release --bins

# The full benchmark: every workload, A B pairs, a table and the targets.
bench: release
	$(BENCH) $(BENCH_ARGS)

# CI smoke run: tiny counts, one pair, no timing assertion; fails if a
# sensor run misses events that no counter explains.
bench-quick: release
	$(BENCH) --quick --check-events $(BENCH_ARGS)

# The sensor as a system service (as root): the binary in $(PREFIX)/bin, a
# systemd unit and a logrotate policy (packaging/). Then:
#   systemctl daemon-reload && systemctl enable --now sockscope
PREFIX ?= /usr/local
DESTDIR ?=
SENSOR_BIN ?= $(TARGET_DIR)/release/sockscope

install: release install-files

# Without building (SENSOR_BIN must exist): what `install` copies.
install-files:
	install -D -m 0755 $(SENSOR_BIN) $(DESTDIR)$(PREFIX)/bin/sockscope
	install -d $(DESTDIR)/etc/systemd/system $(DESTDIR)/etc/logrotate.d
	sed 's|/usr/local/bin/sockscope|$(PREFIX)/bin/sockscope|' packaging/sockscope.service \
		> $(DESTDIR)/etc/systemd/system/sockscope.service
	install -m 0644 packaging/sockscope.logrotate $(DESTDIR)/etc/logrotate.d/sockscope

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/sockscope $(DESTDIR)/etc/systemd/system/sockscope.service \
		$(DESTDIR)/etc/logrotate.d/sockscope

# The Debian package (dpkg-deb, no network): target/deb/sockscope_VERSION-1_ARCH.deb
# with the sensor in /usr/bin, the systemd unit, the logrotate policy, a
# default config (/etc/default/sockscope, /etc/sockscope/sockscope.xml) and
# sockscope(8). Then, as root: apt install ./target/deb/sockscope_*.deb
DEB_DIR ?= $(TARGET_DIR)/deb

deb: release deb-package

# Without building (SENSOR_BIN must exist): what `deb` packages.
deb-package:
	bash packaging/deb/build-deb.sh $(SENSOR_BIN) $(DEB_DIR)
