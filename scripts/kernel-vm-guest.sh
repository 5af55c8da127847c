#!/bin/bash
# Runs inside the test VM (scripts/test-kernels.sh), started by the image's
# /sbin/sockscope-vm-init with the worktree mounted read-only at its host
# path. Mounts what the sensor and the tests need, runs each line of the plan
# (NAME|BINARY|ARGS) as root and writes NAME.log, NAME.rc and NAME.seconds to
# the output share, then `done`. The caller powers off.
set -u
arg() { tr ' ' '\n' </proc/cmdline | sed -n "s/^$1=//p"; }
boot_seconds=$(cut -d' ' -f1 /proc/uptime)
out=/run/sockscope-out

mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs tmpfs /run
mkdir -p /dev/pts /dev/shm "$out"
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 sockscope_out "$out" || exit 1
target=$(arg sockscope.target)
if [ -n "$target" ]; then
  mkdir -p "$target"
  mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,ro sockscope_target "$target" || exit 1
fi
hostname sockscope-vm
ip link set lo up
echo "$boot_seconds" >"$out/boot-seconds"
uname -r >"$out/kernel"
{
  echo "kernel: $(uname -r)"
  echo "lockdown: $(cat /sys/kernel/security/lockdown 2>/dev/null || echo none)"
  for f in /sys/kernel/btf/vmlinux /sys/kernel/tracing/events/sock/sock_send_length \
    /sys/kernel/tracing/events/sock/sock_recv_length /sys/kernel/tracing/events/io_uring/io_uring_submit_req \
    /sys/kernel/tracing/events/io_uring/io_uring_submit_sqe; do
    [ -e "$f" ] && echo "present: $f" || echo "absent: $f"
  done
} >"$out/host-facts"

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin RUST_BACKTRACE=1 HOME=/root
# The tests' bounds (waits on conditions) stretched for the emulator.
export SOCKSCOPE_TEST_TIME_SCALE=${SOCKSCOPE_TEST_TIME_SCALE:-$(arg sockscope.time_scale)}
cd /tmp
while IFS='|' read -r name bin args; do
  [ -n "$name" ] || continue
  start=$(date +%s)
  # shellcheck disable=SC2086 # ARGS are words
  timeout 3000 "$bin" $args >"$out/$name.log" 2>&1 </dev/null
  echo $? >"$out/$name.rc"
  echo $(($(date +%s) - start)) >"$out/$name.seconds"
  dmesg >"$out/dmesg"
done <"$out/plan"
touch "$out/done"
sync
