//! Least privilege once every probe is loaded and attached: no new
//! privileges, only the capabilities later work needs (permitted, effective
//! and bounding sets), and a seccomp filter that allows only the system
//! calls the sensor makes.
//!
//! What needs a capability after start, and keeps it:
//! - CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN: the cgroup sendmsg hooks attached
//!   when an IPsec policy appears (`--udp-sendmsg-hook when-ipsec`), the
//!   xfrm netlink dump, map updates at reload;
//! - CAP_SYS_PTRACE: /proc/PID/exe and /proc/PID/ns/net of other users'
//!   processes (process lookups, namespaces to watch);
//! - CAP_SYS_ADMIN, CAP_NET_RAW: only for the packet-socket UDP mechanism
//!   (setns and a raw socket in each new namespace); CAP_SYS_ADMIN alone for
//!   the xfrm look into other namespaces and the report of connections open
//!   at stop (close events on: the TCP iterator runs in each namespace; setns);
//! - CAP_SYS_NICE: only with `--cpu-policy yield` (leaving SCHED_IDLE).
//!
//! Everything else (CAP_DAC_OVERRIDE, CAP_SYS_MODULE, CAP_SETUID, ...) goes.
//!
//! Capabilities are per thread: this runs on the main thread before the
//! other threads start (threads spawned later inherit its sets); a thread
//! started earlier drops its own (`drop_all_in_this_thread`). The seccomp
//! filter is put on every thread at once (TSYNC).
//!
//! The filter's answer to a system call not on the list is EPERM, not a
//! kill: a call missed here then fails where it is made (and is reported
//! there as an error the sensor survives) instead of killing a production
//! sensor. The list was built by running the sensor under strace through
//! its tests (both UDP mechanisms, SIGHUP, reloads, syslog, output faults).

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};

const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_SETPCAP: u32 = 8;
const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_SYS_NICE: u32 = 23;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// What the running sensor will still do.
#[derive(Debug, Clone, Copy, Default)]
pub struct Needs {
    /// Namespaces entered later: packet-socket taps, the xfrm look.
    pub enter_namespaces: bool,
    /// Raw packet sockets (packet-socket UDP mechanism).
    pub raw_sockets: bool,
    /// Leaving SCHED_IDLE (`--cpu-policy yield`).
    pub set_priority: bool,
}

impl Needs {
    fn capabilities(self) -> u64 {
        let mut keep = [CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH]
            .iter()
            .fold(0u64, |m, c| m | 1 << c);
        if self.enter_namespaces {
            keep |= 1 << CAP_SYS_ADMIN;
        }
        if self.raw_sockets {
            keep |= 1 << CAP_NET_RAW | 1 << CAP_SYS_ADMIN;
        }
        if self.set_priority {
            keep |= 1 << CAP_SYS_NICE;
        }
        keep
    }
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_VERSION_3: u32 = 0x2008_0522;

/// (effective, permitted) of the calling thread.
fn capget() -> Result<(u64, u64)> {
    let mut header = CapHeader { version: CAP_VERSION_3, pid: 0 };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and two data structs, as capget(2) with version 3 wants.
    if unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error()).context("capget");
    }
    let join = |lo: u32, hi: u32| u64::from(lo) | u64::from(hi) << 32;
    Ok((join(data[0].effective, data[1].effective), join(data[0].permitted, data[1].permitted)))
}

fn capset(keep: u64) -> Result<()> {
    let header = CapHeader { version: CAP_VERSION_3, pid: 0 };
    let lo = keep as u32;
    let hi = (keep >> 32) as u32;
    let data = [
        CapData { effective: lo, permitted: lo, inheritable: 0 },
        CapData { effective: hi, permitted: hi, inheritable: 0 },
    ];
    // SAFETY: as in capget; the kernel only reads `data`.
    if unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error()).context("capset");
    }
    Ok(())
}

fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
        .min(63)
}

/// A thread that needs no capability at all (e.g. a network sender).
pub fn drop_all_in_this_thread() {
    if let Err(e) = capset(0) {
        tracing::debug!("{e:#}");
    }
}

/// No new privileges, and only the capabilities `needs` asks for, in the
/// calling thread (and every thread it starts from now on) and the
/// bounding set. Returns the capabilities kept.
pub fn drop_privileges(needs: Needs) -> Result<u64> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error()).context("prctl(PR_SET_NO_NEW_PRIVS)");
    }
    let (_, permitted) = capget()?;
    let keep = needs.capabilities() & permitted;
    // The bounding set first: that needs CAP_SETPCAP, which goes after.
    if permitted & 1 << CAP_SETPCAP != 0 {
        for cap in 0..=last_cap() {
            if keep & 1 << cap == 0 {
                // SAFETY: as above.
                unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            }
        }
    }
    // SAFETY: as above.
    unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong, 0, 0, 0) };
    capset(keep)?;
    let (effective, _) = capget()?;
    if effective & !keep != 0 {
        bail!("capabilities still effective after dropping: {effective:#x}");
    }
    Ok(keep)
}

/// The system calls the running sensor makes (see the module comment).
fn allowed_syscalls() -> Vec<libc::c_long> {
    use libc::*;
    #[cfg(target_arch = "x86_64")]
    let legacy = [
        SYS_open,
        SYS_stat,
        SYS_lstat,
        SYS_access,
        SYS_rename,
        SYS_unlink,
        SYS_mkdir,
        SYS_readlink,
        SYS_poll,
        SYS_epoll_wait,
    ];
    #[cfg(not(target_arch = "x86_64"))]
    let legacy: [c_long; 0] = [];
    let mut calls = vec![
        // files, the output, /proc, the state file
        SYS_read,
        SYS_write,
        SYS_readv,
        SYS_writev,
        SYS_pread64,
        SYS_pwrite64,
        SYS_close,
        SYS_openat,
        SYS_newfstatat,
        SYS_fstat,
        SYS_statx,
        SYS_lseek,
        SYS_getdents64,
        SYS_readlinkat,
        SYS_fcntl,
        SYS_dup,
        SYS_dup3,
        SYS_ioctl,
        SYS_fsync,
        SYS_fdatasync,
        SYS_ftruncate,
        SYS_fstatfs,
        SYS_statfs,
        SYS_renameat,
        SYS_renameat2,
        SYS_unlinkat,
        SYS_mkdirat,
        SYS_faccessat,
        SYS_faccessat2,
        SYS_flock,
        SYS_fchmod,
        SYS_getcwd,
        SYS_pipe2,
        SYS_eventfd2,
        // memory
        SYS_mmap,
        SYS_munmap,
        SYS_mprotect,
        SYS_mremap,
        SYS_madvise,
        SYS_brk,
        SYS_memfd_create,
        SYS_membarrier,
        // threads, time, signals
        SYS_futex,
        SYS_clock_nanosleep,
        SYS_nanosleep,
        SYS_clock_gettime,
        SYS_gettimeofday,
        SYS_clone,
        SYS_clone3,
        SYS_exit,
        SYS_exit_group,
        SYS_set_robust_list,
        SYS_rseq,
        SYS_set_tid_address,
        SYS_rt_sigprocmask,
        SYS_rt_sigaction,
        SYS_rt_sigreturn,
        SYS_sigaltstack,
        SYS_restart_syscall,
        SYS_tgkill,
        SYS_gettid,
        SYS_getpid,
        SYS_getppid,
        SYS_getuid,
        SYS_geteuid,
        SYS_getgid,
        SYS_getegid,
        SYS_prctl,
        SYS_prlimit64,
        SYS_getrandom,
        SYS_uname,
        SYS_sysinfo,
        SYS_sched_yield,
        SYS_sched_getaffinity,
        SYS_sched_setscheduler,
        SYS_sched_getscheduler,
        SYS_sched_setattr,
        SYS_sched_getattr,
        SYS_sched_getparam,
        SYS_sched_setparam,
        SYS_getpriority,
        SYS_setpriority,
        SYS_capget,
        // the ring buffer and maps, hooks attached later
        SYS_bpf,
        SYS_epoll_pwait,
        SYS_epoll_ctl,
        SYS_epoll_create1,
        SYS_ppoll,
        // sockets: syslog, xfrm netlink, packet taps; namespaces
        SYS_socket,
        SYS_connect,
        SYS_bind,
        SYS_setsockopt,
        SYS_getsockopt,
        SYS_getsockname,
        SYS_getpeername,
        SYS_shutdown,
        SYS_sendto,
        SYS_recvfrom,
        SYS_sendmsg,
        SYS_recvmsg,
        SYS_sendmmsg,
        SYS_setns,
    ];
    calls.extend_from_slice(&legacy);
    calls
}

/// Puts the seccomp filter on every thread of the process (and so on every
/// thread started later). Needs NO_NEW_PRIVS (drop_privileges) first.
pub fn install_seccomp() -> Result<()> {
    use seccompiler::{SeccompAction, SeccompFilter, TargetArch};
    let arch = TargetArch::try_from(std::env::consts::ARCH).context("seccomp: this architecture")?;
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> =
        allowed_syscalls().into_iter().map(|n| (n, Vec::new())).collect();
    let filter = SeccompFilter::new(rules, SeccompAction::Errno(libc::EPERM as u32), SeccompAction::Allow, arch)
        .context("building the seccomp filter")?;
    let program: seccompiler::BpfProgram = filter.try_into().context("compiling the seccomp filter")?;
    seccompiler::apply_filter_all_threads(&program).context("installing the seccomp filter")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_capabilities_follow_what_is_needed() {
        let base = Needs::default().capabilities();
        for cap in [CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, CAP_SYS_PTRACE] {
            assert_ne!(base & 1 << cap, 0, "{cap}");
        }
        for cap in
            [CAP_SYS_ADMIN, CAP_NET_RAW, CAP_SYS_NICE, CAP_SETPCAP, 1 /* DAC_OVERRIDE */, 16 /* SYS_MODULE */]
        {
            assert_eq!(base & 1 << cap, 0, "{cap}");
        }
        let packet = Needs { enter_namespaces: true, raw_sockets: true, set_priority: true }.capabilities();
        for cap in [CAP_SYS_ADMIN, CAP_NET_RAW, CAP_SYS_NICE] {
            assert_ne!(packet & 1 << cap, 0, "{cap}");
        }
    }

    #[test]
    fn the_allow_list_has_no_dangerous_calls() {
        let allowed = allowed_syscalls();
        for bad in [
            libc::SYS_execve,
            libc::SYS_execveat,
            libc::SYS_ptrace,
            libc::SYS_init_module,
            libc::SYS_finit_module,
            libc::SYS_mount,
            libc::SYS_kexec_load,
            libc::SYS_process_vm_writev,
            libc::SYS_perf_event_open,
            libc::SYS_setuid,
            libc::SYS_capset,
        ] {
            assert!(!allowed.contains(&bad), "{bad}");
        }
    }
}
