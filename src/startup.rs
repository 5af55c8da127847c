//! Startup: everything between the command line and the first fact read.
//! The user's files first (a bad one exits 2 before anything is attached),
//! then the host (privileges, tracefs, libbpf's log), then the probes (load,
//! share maps, attach, the config's kernel exclusions), then the pipeline.
use std::path::Path;

use anyhow::{Context, Result};

use crate::backpressure::pace::CpuPolicy;
use crate::clock::{boot_now_ns, WallClock};
use crate::enrich::port_names::Services;
use crate::enrich::{read_machine_prefix, Enricher};
use crate::filter::RuleSet;
use crate::format::{Format, Formatter};
use crate::health::Health;
use crate::pipeline::{Pipeline, Trackers};
use crate::privilege;
use crate::probes::kernel::{Capabilities, Plan};
use crate::probes::xfrm::Policies;
use crate::probes::{host, ObjectStorage, ProbeOptions, Probes, SendmsgHook, UdpMechanism};
use crate::settings::{HostSettings, OutputSettings, ProbeSettings, RuleSettings, Settings};
use crate::sink::queue::SinkQueue;
use crate::sink::syslog::{LocalSyslog, Proto, RemoteConfig, RemoteSyslog};
use crate::sink::Sink;
use crate::track::lifecycle::LifecycleTracker;
use crate::track::process::{read_proc, ProcessTable};
use crate::track::tcp::TcpTracker;
use crate::track::udp::UdpTracker;

/// Messages held for a slow local syslog receiver (its socket queue is short).
const LOCAL_SYSLOG_BACKLOG: usize = 4096;
/// Remote syslog messages held while the receiver is away.
const REMOTE_SYSLOG_BACKLOG: usize = 65_536;
const CLOCK_RESYNC_NS: u64 = 60 * 1_000_000_000;

/// What comes from the user's files: read and checked up front (exit 2).
pub struct Inputs {
    /// Held for the sensor's life: one sensor per state directory (which
    /// only the XML form's EventRecordIDs use).
    _state_lock: Option<std::fs::File>,
    sinks: Vec<Sink>,
    rules: RuleSet,
    formatter: Formatter,
    services: Option<Services>,
}

impl Inputs {
    pub fn read(settings: &Settings) -> Result<Self> {
        let out = &settings.output;
        let state_lock = match out.format {
            Format::Xml => Some(lock_state_dir(&out.state_dir)?),
            Format::Json => None,
        };
        let sinks = open_sinks(out)?;
        let rules = load_rules(settings.rules.config.as_deref())?;
        let formatter = Formatter::new(out.format, &out.state_dir)?.with_json_types(out.json_types);
        let services = match &out.port_names {
            Some(path) => {
                let services = Services::load(path).context("--port-names")?;
                if services.is_empty() {
                    tracing::warn!("{}: no port names found", path.display());
                }
                tracing::info!("{} port names from {}", services.len(), path.display());
                Some(services)
            }
            None => None,
        };
        Ok(Self { _state_lock: state_lock, sinks, rules, formatter, services })
    }
}

/// Creates the state directory (0750) if needed and locks it: a second
/// sensor on the same directory would hand out the same EventRecordIDs.
fn lock_state_dir(dir: &Path) -> Result<std::fs::File> {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
        .with_context(|| format!("creating state directory {}", dir.display()))?;
    let path = dir.join("lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        anyhow::bail!(
            "state directory {} is in use by another sensor (pid {}); give each sensor its own --state-dir",
            dir.display(),
            holder.trim()
        );
    }
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = writeln!(file, "{}", std::process::id());
    Ok(file)
}

/// The outputs asked for; stdout when none is.
fn open_sinks(out: &OutputSettings) -> Result<Vec<Sink>> {
    let mut sinks = Vec::new();
    if let Some(path) = &out.file {
        sinks.push(Sink::file(path)?);
    }
    if let Some(syslog) = &out.syslog {
        let local = LocalSyslog::new(&syslog.socket, &out.syslog_ident)
            .with_context(|| format!("local syslog {}", syslog.socket.display()))?
            .with_pid(syslog.with_pid)
            .with_backlog(LOCAL_SYSLOG_BACKLOG);
        match local.socket_kind() {
            Some(kind) => tracing::info!("local syslog: {} ({kind:?})", local.path().display()),
            None => tracing::warn!("local syslog: {} not reachable yet; retrying", local.path().display()),
        }
        sinks.push(Sink::LocalSyslog(Box::new(local)));
    }
    if let Some(remote) = &out.syslog_remote {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let mut cfg = RemoteConfig::new(remote.target, &out.syslog_ident, host.trim());
        cfg.format = remote.format;
        cfg.framing = remote.framing;
        cfg.pid = remote.with_pid;
        cfg.queue_len = REMOTE_SYSLOG_BACKLOG;
        let sink = RemoteSyslog::start_with(cfg).with_context(|| format!("remote syslog {}", remote.target))?;
        match remote.target.proto {
            Proto::Tcp => {
                tracing::info!("remote syslog: {} ({:?}, {:?} framing)", sink.target(), remote.format, sink.framing())
            }
            Proto::Udp => tracing::info!("remote syslog: {} ({:?})", sink.target(), remote.format),
        }
        sinks.push(Sink::RemoteSyslog(sink));
    }
    if sinks.is_empty() {
        sinks.push(Sink::stdout()?);
    }
    Ok(sinks)
}

/// The config's rules (at start and at each reload); none: report everything.
pub fn load_rules(path: Option<&Path>) -> Result<RuleSet> {
    let Some(path) = path else {
        return Ok(RuleSet::allow_all());
    };
    let (rules, notices) = RuleSet::from_file(path).map_err(|e| anyhow::anyhow!("bad config: {e}"))?;
    for notice in notices {
        tracing::warn!("{}: {notice}", path.display());
    }
    if !rules.may_report() {
        tracing::warn!("{}: this config reports no NetworkConnect events", path.display());
    }
    Ok(rules)
}

/// The host, before anything is loaded: privileges, tracefs, libbpf's log.
pub fn prepare_host(settings: &HostSettings) -> Result<()> {
    if !settings.skip_privilege_check {
        host::check_privileges()?;
    }
    host::ensure_tracefs()?;
    host::lift_memlock_limit();
    host::route_libbpf_log();
    Ok(())
}

/// The running sensor: its probes and the pipeline their facts go through.
pub struct Started<'obj> {
    pub probes: Probes<'obj>,
    pub pipeline: Pipeline,
    /// `--udp-sendmsg-hook when-ipsec`: attach the hooks once a policy appears.
    pub await_ipsec: bool,
    pub processes_seeded: usize,
    /// The state directory's lock, held while the sensor runs.
    pub _state_lock: Option<std::fs::File>,
}

/// Loads and attaches the probes, gives the kernel its exclusions and builds
/// the pipeline.
pub fn start<'obj>(storage: &'obj mut ObjectStorage, settings: &Settings, inputs: Inputs) -> Result<Started<'obj>> {
    let Inputs { _state_lock, sinks, rules, formatter, services } = inputs;
    let (sendmsg_hook, await_ipsec) = sendmsg_hook_at_start(&settings.probes);
    let probes = load_probes(storage, &settings.probes, sendmsg_hook)?;
    push_exclusions(&settings.rules, &probes, &rules);

    let track = &settings.track;
    let mut procs = ProcessTable::new(track.process_capacity, track.exit_grace_ns, read_proc);
    // After attaching: processes exec'd during the scan arrive as facts later
    // in the ring buffer and so overwrite what the scan read.
    let processes_seeded = procs.scan_proc();
    // Everything is loaded and attached: from here on only what later work
    // needs (before the other threads start: they inherit it).
    let needs = privilege::Needs {
        // The TCP iterator run at stop walks the namespace of the thread
        // that opens it: it enters each one (setns).
        enter_namespaces: probes.udp_packet_mode() || await_ipsec || probes.has_tcp_stop(),
        raw_sockets: probes.udp_packet_mode(),
        set_priority: settings.pace.cpu_policy == CpuPolicy::Yield,
    };
    match privilege::drop_privileges(needs) {
        Ok(kept) => tracing::info!("privileges dropped: no new privileges, capabilities {kept:#x} kept"),
        Err(e) => tracing::warn!("{e:#}; the sensor keeps its privileges"),
    }
    let tcp = TcpTracker::new(track.pending_capacity, track.pending_timeout_ns);
    let udp = UdpTracker::new(track.udp_window_ns, track.udp_flow_capacity);
    let dns_settings = track.dns;
    let names = dns_settings
        .mode
        .names()
        .then(|| crate::dns::names::NameCache::new(dns_settings.cache_capacity, dns_settings.ttl_cap_s));
    let dns = dns_settings
        .mode
        .capture()
        .then(|| crate::dns::DnsTracker::new(dns_settings.timeout_ns, dns_settings.pending_capacity));
    let enrich = Enricher::new(WallClock::new(CLOCK_RESYNC_NS)?, read_machine_prefix(), services).with_names(names);
    let queue = SinkQueue::start(sinks, settings.output.queue_capacity)?;
    let health = Health::new(settings.stats_interval_ns, boot_now_ns());
    let lifecycle = LifecycleTracker::new(track.open_capacity, track.failed_fold_capacity, track.failed_window_ns);
    let pipeline = Pipeline::new(
        Trackers { procs, tcp, udp, lifecycle, mode: track.lifecycle, dns, dns_events: dns_settings.mode.events() },
        enrich,
        rules,
        formatter,
        queue,
        health,
    );
    Ok(Started { probes, pipeline, await_ipsec, processes_seeded, _state_lock })
}

fn load_probes<'obj>(
    storage: &'obj mut ObjectStorage,
    settings: &ProbeSettings,
    sendmsg_hook: bool,
) -> Result<Probes<'obj>> {
    let plan = kernel_plan(settings.udp_mechanism);
    tracing::info!("probes for this kernel ({}):\n{plan}", kernel_release());
    let opts = ProbeOptions {
        ringbuf_bytes: settings.ringbuf_bytes,
        argv_limit: settings.argv_limit,
        pretend_unresolved_accepts: settings.pretend_unresolved_accepts,
        plan,
        udp_asked: settings.udp_mechanism,
        udp_flow_capacity: settings.udp_flow_capacity,
        udp_shed_above: crate::backpressure::udp_shed_at(settings.ring_bytes()),
        udp_sendmsg_hook: sendmsg_hook,
        hook_floor: settings.hook_floor,
        lifecycle_closed: settings.lifecycle_closed,
        dns_capture: settings.dns_capture,
    };
    if settings.hook_floor {
        tracing::warn!("--hook-floor: every probe returns at once; no event will be reported");
    }
    Probes::load(storage, &opts)
}

/// What the kernel allows, and the mechanism chosen for each kind of event.
pub fn kernel_plan(udp: UdpMechanism) -> Plan {
    Plan::choose(&Capabilities::detect(), udp)
}

/// The running kernel's release (uname -r).
pub fn kernel_release() -> String {
    nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_else(|_| "?".into())
}

/// `--check`: prints the report, loads and attaches every chosen probe and
/// removes them again. Ok(None): full coverage; Ok(Some(reason)): partial.
pub fn check(storage: &mut ObjectStorage, settings: &Settings) -> Result<Option<String>> {
    let plan = kernel_plan(settings.probes.udp_mechanism);
    println!("sockscope --check on {}:\n{plan}", kernel_release());
    let probes = load_probes(storage, &settings.probes, false)?;
    println!("  loaded and attached {} probes; removed", probes.attached());
    drop(probes);
    Ok((!plan.full_coverage()).then(|| plan.gaps.join("; ")))
}

/// Gives the kernel the part of the rules it can apply with the same answer
/// (what its tables cannot hold stays in userspace, said once). Never fatal:
/// userspace applies every rule whatever the kernel holds.
pub fn push_exclusions(settings: &RuleSettings, probes: &Probes<'_>, rules: &RuleSet) {
    let exclusions = if settings.kernel_filter { rules.kernel_exclusions() } else { Default::default() };
    match probes.set_exclusions(&exclusions) {
        Ok((ports, addrs)) => {
            let applied = ports + addrs;
            if !exclusions.is_empty() && applied < exclusions.len() {
                tracing::warn!(
                    "{applied} of {} config exclusions applied in the kernel (its tables are full); \
                     the other {} in userspace",
                    exclusions.len(),
                    exclusions.len() - applied
                );
            } else if applied > 0 {
                tracing::info!("{applied} config exclusions applied in the kernel");
            }
        }
        Err(e) => tracing::warn!("{e:#}; config exclusions applied in userspace only"),
    }
}

/// Why the sendmsg hooks are needed now, if they are: an IPsec policy
/// somewhere, or no way to tell.
pub fn ipsec_in_use() -> Option<String> {
    match crate::probes::xfrm::look_for_policies() {
        Policies::None => None,
        Policies::In(netns) => Some(format!("an IPsec (xfrm) policy is in network namespace {netns}")),
        Policies::Unknown(e) => Some(format!("cannot tell whether an IPsec policy exists ({e})")),
    }
}

/// Whether to attach the UDP sendmsg hooks at start, and whether to keep
/// looking for an IPsec policy (`when-ipsec`) to attach them later.
fn sendmsg_hook_at_start(settings: &ProbeSettings) -> (bool, bool) {
    if settings.udp_mechanism == UdpMechanism::Packet {
        return (false, false); // it has no such hook
    }
    let (setting, why) = settings.udp_sendmsg_hook.resolve();
    let (attach, wait, why) = match setting {
        SendmsgHook::On => (true, false, why.to_string()),
        SendmsgHook::Off => (false, false, why.to_string()),
        _ => match ipsec_in_use() {
            Some(found) => (true, false, format!("{why}, and {found}")),
            None => (false, true, why.to_string()),
        },
    };
    let state = match (attach, wait) {
        (true, _) => "on",
        (false, true) => "off until an IPsec policy appears",
        (false, false) => "off",
    };
    tracing::info!("UDP sendmsg hook {state}: {why}");
    (attach, wait)
}
