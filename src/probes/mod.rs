//! Probes: load the eBPF objects, make them share one ring buffer, attach
//! every program (naming any the kernel refuses, with its reason).

pub mod skel;

use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::path::Path;

use anyhow::{bail, Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, OpenObject, ProgramMut};

use skel::process::{ProcessSkel, ProcessSkelBuilder};
use skel::tcp_accept::{TcpAcceptSkel, TcpAcceptSkelBuilder};
use skel::tcp_state::{TcpStateSkel, TcpStateSkelBuilder};

pub struct ProbeOptions {
    pub ringbuf_bytes: u32,
    pub argv_limit: u32,
    pub force_address_match: bool,
}

/// Backing storage the skeletons borrow from; must outlive `Probes`.
pub struct ObjectStorage {
    tcp_state: MaybeUninit<OpenObject>,
    tcp_accept: MaybeUninit<OpenObject>,
    process: MaybeUninit<OpenObject>,
}

impl ObjectStorage {
    pub fn new() -> Self {
        Self { tcp_state: MaybeUninit::uninit(), tcp_accept: MaybeUninit::uninit(), process: MaybeUninit::uninit() }
    }
}

pub struct Probes<'obj> {
    pub tcp_state: TcpStateSkel<'obj>,
    /// Held so the objects stay loaded while their links are attached.
    _others: (TcpAcceptSkel<'obj>, ProcessSkel<'obj>),
    links: Vec<Link>,
}

fn attach(prog: &ProgramMut<'_>, links: &mut Vec<Link>) -> Result<()> {
    let link = prog.attach().with_context(|| {
        format!(
            "the kernel refused to attach probe {} ({})",
            prog.name().to_string_lossy(),
            prog.section().to_string_lossy()
        )
    })?;
    links.push(link);
    Ok(())
}

impl<'obj> Probes<'obj> {
    pub fn load(storage: &'obj mut ObjectStorage, opts: &ProbeOptions) -> Result<Self> {
        let mut open =
            TcpStateSkelBuilder::default().open(&mut storage.tcp_state).context("opening eBPF object tcp_state")?;
        open.maps.events.set_max_entries(opts.ringbuf_bytes).context("sizing the ring buffer")?;
        let tcp_state = open.load().context(
            "the kernel refused eBPF object tcp_state (tp_btf/inet_sock_set_state); see the libbpf log above",
        )?;

        let events = tcp_state.maps.events.as_fd();
        let drops = tcp_state.maps.ringbuf_drops.as_fd();

        let mut open =
            TcpAcceptSkelBuilder::default().open(&mut storage.tcp_accept).context("opening eBPF object tcp_accept")?;
        open.maps.events.reuse_fd(events).context("sharing the ring buffer")?;
        open.maps.ringbuf_drops.reuse_fd(drops).context("sharing the drop counters")?;
        if let Some(ro) = open.maps.rodata_data.as_deref_mut() {
            ro.force_address_match = opts.force_address_match;
        }
        let tcp_accept = open.load().context(
            "the kernel refused eBPF object tcp_accept (syscalls/sys_{enter,exit}_accept{,4}); see the libbpf log above",
        )?;

        let mut open =
            ProcessSkelBuilder::default().open(&mut storage.process).context("opening eBPF object process")?;
        open.maps.events.reuse_fd(events).context("sharing the ring buffer")?;
        open.maps.ringbuf_drops.reuse_fd(drops).context("sharing the drop counters")?;
        if let Some(ro) = open.maps.rodata_data.as_deref_mut() {
            ro.args_limit = opts.argv_limit;
        }
        let process = open.load().context(
            "the kernel refused eBPF object process (tp_btf/sched_process_{exec,fork,exit}); see the libbpf log above",
        )?;

        let mut links = Vec::new();
        attach(&tcp_state.progs.tcp_state_change, &mut links)?;
        attach(&tcp_accept.progs.accept_enter, &mut links)?;
        attach(&tcp_accept.progs.accept4_enter, &mut links)?;
        attach(&tcp_accept.progs.accept_exit, &mut links)?;
        attach(&tcp_accept.progs.accept4_exit, &mut links)?;
        attach(&process.progs.process_exec, &mut links)?;
        attach(&process.progs.process_fork, &mut links)?;
        attach(&process.progs.process_exit, &mut links)?;
        Ok(Self { tcp_state, _others: (tcp_accept, process), links })
    }

    pub fn attached(&self) -> usize {
        self.links.len()
    }

    /// Ring-buffer reservations the kernel side could not make, all CPUs.
    pub fn ringbuf_drops(&self) -> Result<u64> {
        let per_cpu = self
            .tcp_state
            .maps
            .ringbuf_drops
            .lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY)
            .context("reading ring-buffer drop counters")?
            .unwrap_or_default();
        Ok(per_cpu.iter().filter_map(|v| v.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_ne_bytes)).sum())
    }
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

/// Routes libbpf's own log (verifier messages, refusals) to our stderr log.
pub fn route_libbpf_log() {
    fn print(level: libbpf_rs::PrintLevel, msg: String) {
        let msg = msg.trim_end();
        match level {
            libbpf_rs::PrintLevel::Warn => tracing::warn!(target: "libbpf", "{msg}"),
            libbpf_rs::PrintLevel::Info => tracing::debug!(target: "libbpf", "{msg}"),
            libbpf_rs::PrintLevel::Debug => tracing::trace!(target: "libbpf", "{msg}"),
        }
    }
    libbpf_rs::set_print(Some((libbpf_rs::PrintLevel::Debug, print)));
}

/// Root, or the capabilities loading and attaching need.
pub fn check_privileges() -> Result<()> {
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
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .iter()
        .filter(|(c, _)| !has(*c))
        .map(|(_, n)| *n)
        .collect();
    bail!(
        "sockscope must run as root or with the capabilities CAP_BPF and CAP_PERFMON (missing: {})",
        missing.join(", ")
    )
}
