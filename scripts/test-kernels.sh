#!/usr/bin/env bash
# Runs the real-kernel tests on Debian's stock kernels, each booted in QEMU.
#
#   bash scripts/test-kernels.sh [--tests LIST] [--bench] KERNEL...
#
# KERNEL: 5.10 (Debian 11, bullseye), 6.1 (Debian 12, bookworm), 6.12
# (Debian 13, trixie): the newest linux-image-*-amd64 of that release, from
# deb.debian.org. --tests: a comma-separated list of test binaries (tests/*.rs
# names; default: every root-only real-kernel one); arguments after `--` go to
# each test binary (e.g. a test name filter). --bench: `make bench`'s benchmark
# in the VM instead of the tests (release build; arguments after `--` go to
# sockscope-bench, e.g. `--bench 6.1 -- --pairs 1`).
#
# What it does: builds the test binaries and the sensor on this host (cargo);
# builds once, cached in $SOCKSCOPE_KERNELS_CACHE (default
# /var/cache/sockscope-kernels), a Debian 12 root file system (mmdebstrap)
# with what the tests run (iproute2, bpftool, rsyslog, ...), each kernel's
# modules and an initrd made for it there, and an ext4 image of it; boots
# each kernel in turn (2 vCPUs, 3 GiB; TCG unless SOCKSCOPE_KVM=1, because
# /dev/kvm here is PVM-flavoured and a stock kernel hangs under it) on that
# image (a snapshot: nothing the guest writes is kept), with this worktree
# shared read-only over 9p at the same path, so the test binaries' compiled-in
# paths hold. The guest (scripts/kernel-vm-guest.sh) runs the test binaries as
# root and writes each one's output and exit status to a second 9p share,
# then powers off. Results land in $SOCKSCOPE_KERNELS_OUT (default
# target/kernels/KERNEL/). Exit status non-zero when any test binary failed,
# a VM did not finish within SOCKSCOPE_VM_TIMEOUT seconds (default 5400), or
# a step failed; QEMU is killed on any exit.
# The whole script is one block, read before it runs: editing the file
# while a run is under way cannot change what that run does.
{
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$(pwd)

CACHE=${SOCKSCOPE_KERNELS_CACHE:-/var/cache/sockscope-kernels}
VM_TIMEOUT=${SOCKSCOPE_VM_TIMEOUT:-5400}
VM_MEM=${SOCKSCOPE_VM_MEM:-3072}
MIRROR=${SOCKSCOPE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
ALL_TESTS=cli,health,process,sysmon,syslog,tcp,udp
# Packages the tests run (ip, ss, nstat, bpftool, setpriv, rsyslogd, timeout...)
# and what boots the image (kmod, initramfs-tools).
GUEST_PACKAGES=iproute2,bpftool,util-linux,procps,rsyslog,kmod,initramfs-tools,coreutils,libelf1,zlib1g,make,findutils,mount

tests=$ALL_TESTS
bench=0
kernels=()
test_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --tests) tests=$2; shift 2 ;;
    --tests=*) tests=${1#--tests=}; shift ;;
    --bench) bench=1; shift ;;
    --) shift; test_args=("$@"); break ;;
    -h | --help) sed -n '2,/^set -e/p' "$0" | sed 's/^# \{0,1\}//' | sed '$d'; exit 0 ;;
    -*) echo "test-kernels: unknown option $1" >&2; exit 2 ;;
    *) kernels+=("$1"); shift ;;
  esac
done
[ "${#kernels[@]}" -gt 0 ] || { echo "test-kernels: name at least one kernel: 5.10, 6.1, 6.12" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "test-kernels: run as root (chroot, image build)" >&2; exit 1; }

release_of() {
  case "$1" in
    5.10) echo bullseye ;;
    6.1) echo bookworm ;;
    6.12) echo trixie ;;
    *) echo "test-kernels: unknown kernel '$1' (5.10, 6.1, 6.12)" >&2; return 1 ;;
  esac
}
for k in "${kernels[@]}"; do release_of "$k" >/dev/null || exit 2; done

log() { echo "test-kernels: $*" >&2; }

# ---- cleanup: every QEMU this script started, whatever happens ----
QEMU_PID=
cleanup() {
  if [ -n "$QEMU_PID" ] && kill -0 "$QEMU_PID" 2>/dev/null; then
    kill "$QEMU_PID" 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 "$QEMU_PID" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$QEMU_PID" 2>/dev/null || true
  fi
  for m in "${CHROOT_MOUNTS[@]:-}"; do [ -n "$m" ] && umount -l "$m" 2>/dev/null || true; done
}
CHROOT_MOUNTS=()
trap cleanup EXIT
trap 'exit 130' INT TERM

source scripts/deps.sh
for tool in qemu-system-x86_64 mmdebstrap mke2fs; do
  command -v "$tool" >/dev/null || {
    log "installing qemu-system-x86 mmdebstrap e2fsprogs"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-system-x86 mmdebstrap \
      e2fsprogs >/dev/null
    break
  }
done

# ---- build on the host ----
log "building (cargo)"
if [ "$bench" = 1 ]; then
  cargo build --release --bins
else
  cargo build --bins
  plan_json=$(cargo test --no-run --tests --message-format=json 2>/dev/null)
fi
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[ -d "$TARGET_DIR" ] || { log "cannot find cargo's target directory"; exit 1; }

# ---- the cached root file system, kernels and image ----
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock -w 3600 9 || { log "$CACHE is locked by another run"; exit 1; }
ROOTFS=$CACHE/rootfs
IMAGE=$CACHE/rootfs.img

if [ ! -e "$ROOTFS/.complete" ]; then
  log "building the Debian 12 root file system in $ROOTFS (once)"
  rm -rf "$ROOTFS"
  mmdebstrap --variant=minbase --include="$GUEST_PACKAGES" bookworm "$ROOTFS" "$MIRROR" >&2
  cat >"$ROOTFS/sbin/sockscope-vm-init" <<'EOF'
#!/bin/sh
# PID 1 in the test VM: mounts the shared worktree and hands over to its
# scripts/kernel-vm-guest.sh. Powers off on any failure.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
arg() { tr ' ' '\n' </proc/cmdline | sed -n "s/^$1=//p"; }
src=$(arg sockscope.src)
modprobe 9pnet_virtio && modprobe 9p
mkdir -p "$src"
if mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,ro sockscope_src "$src"; then
  /bin/bash "$src/scripts/kernel-vm-guest.sh"
else
  echo "sockscope-vm-init: cannot mount the shared worktree" >&2
fi
echo o >/proc/sysrq-trigger
sleep 60
EOF
  chmod 755 "$ROOTFS/sbin/sockscope-vm-init"
  printf '%s\n' virtio_pci virtio_blk ext4 >>"$ROOTFS/etc/initramfs-tools/modules"
  echo sockscope-vm >"$ROOTFS/etc/hostname"
  echo "127.0.0.1 localhost sockscope-vm" >"$ROOTFS/etc/hosts"
  : >"$ROOTFS/etc/machine-id"
  echo 0123456789abcdef0123456789abcdef >"$ROOTFS/etc/machine-id"
  touch "$ROOTFS/.complete"
fi

chroot_run() {
  mount -t proc proc "$ROOTFS/proc" && CHROOT_MOUNTS+=("$ROOTFS/proc")
  local rc=0
  chroot "$ROOTFS" /usr/bin/env PATH=/usr/sbin:/usr/bin "$@" || rc=$?
  umount "$ROOTFS/proc" && CHROOT_MOUNTS=()
  return $rc
}

# The newest linux-image-*-amd64 of a release, fetched with apt-get from its
# own lists (kept in $CACHE/apt-RELEASE) and unpacked into the root file system.
kernel_version() { cat "$CACHE/kernel-$1.version"; }
fetch_kernel() {
  local rel=$1 dir=$CACHE/apt-$1
  [ -s "$CACHE/kernel-$rel.version" ] && [ -e "$ROOTFS/boot/initrd.img-$(kernel_version "$rel")" ] && return 0
  log "fetching $rel's kernel"
  mkdir -p "$dir/lists/partial" "$dir/cache" "$dir/debs"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR $rel main" >"$dir/sources.list"
  local apt_opts=(-o "Dir::Etc::SourceList=$dir/sources.list" -o Dir::Etc::SourceParts=/nonexistent
    -o "Dir::State::Lists=$dir/lists" -o "Dir::Cache=$dir/cache" -o APT::Architecture=amd64
    -o APT::Sandbox::User=root -o Acquire::Languages=none)
  apt-get "${apt_opts[@]}" update -qq
  local pkg
  pkg=$(apt-cache "${apt_opts[@]}" depends linux-image-amd64 | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -1)
  [ -n "$pkg" ] || { log "no linux-image-*-amd64 in $rel"; return 1; }
  (cd "$dir/debs" && rm -f ./*.deb && apt-get "${apt_opts[@]}" download "$pkg")
  local ver=${pkg#linux-image-}
  # tar keeps the merged-/usr symlinks (/lib -> usr/lib); dpkg-deb -x would replace them
  dpkg-deb --fsys-tarfile "$dir"/debs/"$pkg"_*.deb | tar -x --keep-directory-symlink -C "$ROOTFS"
  [ -e "$ROOTFS/boot/vmlinuz-$ver" ] || { log "$pkg has no /boot/vmlinuz-$ver"; return 1; }
  chroot_run depmod "$ver"
  chroot_run mkinitramfs -o "/boot/initrd.img-$ver" "$ver"
  echo "$ver" >"$CACHE/kernel-$rel.version"
  rm -f "$IMAGE"
}
for k in "${kernels[@]}"; do fetch_kernel "$(release_of "$k")"; done

if [ ! -e "$IMAGE" ] || [ "$ROOTFS/.complete" -nt "$IMAGE" ]; then
  log "making the root image $IMAGE"
  size_mib=$(($(du -sm "$ROOTFS" | cut -f1) + 1024))
  rm -f "$IMAGE.tmp"
  mke2fs -q -t ext4 -L sockscope-root -d "$ROOTFS" "$IMAGE.tmp" "${size_mib}M"
  mv "$IMAGE.tmp" "$IMAGE"
fi
flock -u 9

# ---- what the guest runs ----
write_plan() {
  local plan=$1
  : >"$plan"
  if [ "$bench" = 1 ]; then
    echo "bench|$TARGET_DIR/release/sockscope-bench|${test_args[*]:-}" >>"$plan"
    return
  fi
  local name path
  for name in ${tests//,/ }; do
    path=$(echo "$plan_json" | grep '"reason":"compiler-artifact"' | grep "\"kind\":\[\"test\"\]" \
      | grep "\"name\":\"$name\"" | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | head -1)
    [ -n "$path" ] || { log "no test binary named $name"; return 1; }
    echo "$name|$path|${test_args[*]:-}" >>"$plan"
  done
}

failed=()
for k in "${kernels[@]}"; do
  rel=$(release_of "$k")
  ver=$(kernel_version "$rel")
  out=${SOCKSCOPE_KERNELS_OUT:-$TARGET_DIR/kernels}/$k
  rm -rf "$out"
  mkdir -p "$out"
  write_plan "$out/plan"
  accel=tcg,thread=multi
  cpu=max
  if [ "${SOCKSCOPE_KVM:-0}" = 1 ]; then accel=kvm; cpu=host; fi
  shares=(-virtfs "local,path=$SRC,mount_tag=sockscope_src,security_model=none,readonly=on"
    -virtfs "local,path=$out,mount_tag=sockscope_out,security_model=none")
  # The tests' waits are bounded for a real machine; TCG is several times slower.
  scale=${SOCKSCOPE_TEST_TIME_SCALE:-$([ "$accel" = kvm ] && echo 1 || echo 6)}
  cmdline="root=/dev/vda rw console=ttyS0 panic=-1 init=/sbin/sockscope-vm-init sockscope.src=$SRC sockscope.time_scale=$scale"
  case "$TARGET_DIR/" in
    "$SRC"/*) ;;
    *)
      shares+=(-virtfs "local,path=$TARGET_DIR,mount_tag=sockscope_target,security_model=none,readonly=on")
      cmdline+=" sockscope.target=$TARGET_DIR"
      ;;
  esac
  log "kernel $k: $ver ($rel), $accel; console in $out/console.log"
  start=$(date +%s)
  qemu-system-x86_64 -accel "$accel" -cpu "$cpu" -smp 2 -m "$VM_MEM" -display none -no-reboot -nic none \
    -serial "file:$out/console.log" -monitor none \
    -kernel "$ROOTFS/boot/vmlinuz-$ver" -initrd "$ROOTFS/boot/initrd.img-$ver" -append "$cmdline" \
    -drive "file=$IMAGE,if=virtio,format=raw,snapshot=on" "${shares[@]}" &
  QEMU_PID=$!
  rc=0
  for _ in $(seq 1 "$VM_TIMEOUT"); do
    kill -0 "$QEMU_PID" 2>/dev/null || break
    sleep 1
  done
  if kill -0 "$QEMU_PID" 2>/dev/null; then
    log "kernel $k: the VM did not finish within ${VM_TIMEOUT}s; killed"
    cleanup
    rc=1
  fi
  wait "$QEMU_PID" 2>/dev/null || true
  QEMU_PID=
  took=$(($(date +%s) - start))
  echo "$took" >"$out/seconds"
  if [ ! -e "$out/done" ]; then
    log "kernel $k: the guest did not finish (see $out/console.log)"
    tail -20 "$out/console.log" >&2 || true
    rc=1
  fi
  while IFS='|' read -r name _ _; do
    status=$(cat "$out/$name.rc" 2>/dev/null || echo missing)
    summary=$(grep -E '^test result:' "$out/$name.log" 2>/dev/null | tail -1 || true)
    log "kernel $k: $name: exit $status ${summary:+($summary)} $(cat "$out/$name.seconds" 2>/dev/null || echo ?)s"
    [ "$status" = 0 ] || rc=1
  done <"$out/plan"
  log "kernel $k: ${took}s in all (boot to first test: $(cat "$out/boot-seconds" 2>/dev/null || echo ?)s)"
  [ "$rc" = 0 ] || failed+=("$k")
done

if [ "${#failed[@]}" -gt 0 ]; then
  log "FAILED on: ${failed[*]}"
  exit 1
fi
log "all passed on: ${kernels[*]}"
exit 0
}
