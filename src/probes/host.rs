//! What the host must give before anything loads: the privileges, tracefs
//! (syscall tracepoints need it), the cgroup2 root (cgroup hooks attach
//! there), and a route for libbpf's own log.

use std::path::Path;

use anyhow::{bail, Context, Result};

/// The cgroup v2 root, where cgroup hooks see every process on the host.
/// Mounts one (privately, under /run/sockscope) when the host has none: every
/// process is in the cgroup2 hierarchy whether or not it is mounted.
pub fn cgroup2_root() -> Result<std::path::PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    let found = mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 2 && f[2] == "cgroup2").then(|| std::path::PathBuf::from(f[1]))
    });
    if let Some(root) = found {
        return Ok(root);
    }
    let root = std::path::PathBuf::from("/run/sockscope/cgroup2");
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    nix::mount::mount(Some("cgroup2"), &root, Some("cgroup2"), nix::mount::MsFlags::empty(), None::<&str>)
        .context("no cgroup2 file system is mounted, and mounting one failed (needs CAP_SYS_ADMIN)")?;
    tracing::info!("mounted cgroup2 on {}", root.display());
    Ok(root)
}

/// Tracepoint attachment looks up ids in tracefs; mount it if the host has not.
pub fn ensure_tracefs() -> Result<()> {
    let candidates = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
    if candidates.iter().any(|p| Path::new(p).join("events").is_dir()) {
        return Ok(());
    }
    nix::mount::mount(
        Some("tracefs"),
        "/sys/kernel/tracing",
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .context("tracefs is not mounted and mounting it on /sys/kernel/tracing failed (needs CAP_SYS_ADMIN)")?;
    tracing::info!("mounted tracefs on /sys/kernel/tracing");
    Ok(())
}

/// Lifts the locked-memory limit: kernels before 5.11 (Debian 11's 5.10)
/// charge BPF maps to RLIMIT_MEMLOCK (64 KiB by default), not to the cgroup,
/// and refuse the ring buffer with EPERM. Later kernels ignore it.
pub fn lift_memlock_limit() {
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: a valid rlimit for this process.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::debug!("cannot lift RLIMIT_MEMLOCK: {}", std::io::Error::last_os_error());
    }
}

/// Routes libbpf's own log (verifier messages, refusals) to our stderr log.
pub fn route_libbpf_log() {
    fn print(level: libbpf_rs::PrintLevel, msg: String) {
        let msg = msg.trim_end();
        // Capability probes (kernel.rs) look up names a kernel may lack: not a problem.
        if msg.ends_with("is not found in vmlinux BTF") {
            tracing::debug!(target: "libbpf", "{msg}");
            return;
        }
        match level {
            libbpf_rs::PrintLevel::Warn => tracing::warn!(target: "libbpf", "{msg}"),
            libbpf_rs::PrintLevel::Info => tracing::debug!(target: "libbpf", "{msg}"),
            libbpf_rs::PrintLevel::Debug => tracing::trace!(target: "libbpf", "{msg}"),
        }
    }
    libbpf_rs::set_print(Some((libbpf_rs::PrintLevel::Debug, print)));
}

/// Root, or the capabilities loading and attaching need: CAP_BPF (maps,
/// programs), CAP_PERFMON (tracing programs), CAP_NET_ADMIN (cgroup socket
/// hooks); CAP_SYS_ADMIN stands for all three.
pub fn check_privileges() -> Result<()> {
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .context("no CapEff in /proc/self/status")?;
    let has = |cap: u32| eff & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON) && has(CAP_NET_ADMIN)) {
        return Ok(());
    }
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON"), (CAP_NET_ADMIN, "CAP_NET_ADMIN")]
        .iter()
        .filter(|(c, _)| !has(*c))
        .map(|(_, n)| *n)
        .collect();
    bail!(
        "sockscope must run as root or with the capabilities CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (missing: {})",
        missing.join(", ")
    )
}
