//! sockscope: every network connection, with the process behind it.
//!
//! kernel probes (C) -> ring buffer -> decode -> track -> enrich -> format -> sink

mod burst;
mod config;
mod decode;
mod enrich;
mod event;
mod filter;
mod format;
mod health;
mod pace;
mod pipeline;
mod privilege;
mod probes;
mod sink;
mod text;
mod track;

use std::cell::{Cell, RefCell};
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use libbpf_rs::RingBufferBuilder;

use config::Cli;
use enrich::{boot_now_ns, read_machine_prefix, Enricher, WallClock};
use filter::RuleSet;
use format::service::ServiceState;
use format::services::Services;
use format::Formatter;
use health::Health;
use pipeline::{Pipeline, Trackers};
use probes::netns::NetnsTaps;
use probes::xfrm::Policies;
use probes::{ObjectStorage, ProbeOptions, Probes, SendmsgHook};
use sink::queue::SinkQueue;
use sink::syslog::{LocalSyslog, RemoteSyslog};
use sink::Sink;
use track::process::{read_proc, ProcessTable};
use track::tcp::TcpTracker;
use track::udp::UdpTracker;

const POLL: Duration = Duration::from_millis(100);
const TICK_NS: u64 = 1_000_000_000;
/// A poll that read fewer facts than this pauses GATHER before the next.
const BATCH_FACTS: u64 = 256;
const GATHER: Duration = Duration::from_millis(4);
/// A ring-buffer callback's "end this read round" (libbpf passes it back
/// from poll).
const END_ROUND: i32 = -libc::EAGAIN;
/// The longest the reader waits for the writer to catch up before it looks
/// again (it is woken as soon as the writer has).
const HOLD_BACK_WAIT: Duration = Duration::from_millis(10);
/// At exit, how long the reader waits for a slow writer before it reads the
/// rest of the ring buffer regardless (what the queue cannot take is counted).
const DRAIN_WAIT: Duration = Duration::from_secs(2);
const CLOCK_RESYNC_NS: u64 = 60 * 1_000_000_000;
const TAPS_REFRESH_NS: u64 = 250_000_000;
/// How often `--udp-sendmsg-hook when-ipsec` looks for an IPsec policy.
const XFRM_LOOK_NS: u64 = 2_000_000_000;
/// Messages held for a slow local syslog receiver (its socket queue is short).
const LOCAL_SYSLOG_BACKLOG: usize = 4096;

/// Ages the kernel's UDP flow table and makes room in it (policy in track::udp).
fn sweep_udp_flows(probes: &Probes<'_>, p: &mut Pipeline, now: u64) {
    let plan = p.udp.plan_sweep(probes.udp_flow_entries(), now);
    probes.udp_forget(&plan.expired);
    probes.udp_forget(&plan.evicted);
    for (key, seen) in std::mem::take(&mut p.udp.to_record) {
        if let Err(e) = probes.udp_record(&key, seen) {
            tracing::debug!("{e:#}");
        }
    }
}

fn main() -> ExitCode {
    // Bad arguments exit with code 2 here, before anything is attached.
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

    // Everything the user gave us is checked before anything is attached.
    let setup = match StartupInputs::read(&cli) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{e:#}");
            return ExitCode::from(2);
        }
    };
    match run(&cli, setup) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

struct Signals {
    stop: Arc<AtomicBool>,
    stats: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
}

fn register_signals() -> Result<Signals> {
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("installing signal handlers")?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGUSR1, Arc::clone(&stats))
        .context("installing signal handlers")?;
    let reload = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reload))
        .context("installing signal handlers")?;
    Ok(Signals { stop, stats, reload })
}

/// What comes from the user's files: read and checked up front (exit 2).
struct StartupInputs {
    /// Held for the sensor's life: one sensor per state directory (which
    /// only the XML form's EventRecordIDs use).
    _state_lock: Option<std::fs::File>,
    sinks: Vec<Sink>,
    rules: RuleSet,
    formatter: Formatter,
    services: Option<Services>,
}

impl StartupInputs {
    fn read(cli: &Cli) -> Result<Self> {
        let state_lock = match cli.format {
            format::Format::Xml => Some(lock_state_dir(&cli.state_dir)?),
            format::Format::Json => None,
        };
        let sinks = open_sinks(cli)?;
        let rules = load_rules(cli.config.as_deref())?;
        let formatter = Formatter::new(cli.format, &cli.state_dir)?;
        let services = if cli.port_names {
            let services = Services::load(&cli.services_file).context("--port-names")?;
            if services.is_empty() {
                tracing::warn!("{}: no port names found", cli.services_file.display());
            }
            tracing::info!("{} port names from {}", services.len(), cli.services_file.display());
            Some(services)
        } else {
            None
        };
        Ok(Self { _state_lock: state_lock, sinks, rules, formatter, services })
    }
}

/// Creates the state directory (0750) if needed and locks it: a second
/// sensor on the same directory would hand out the same EventRecordIDs.
fn lock_state_dir(dir: &std::path::Path) -> Result<std::fs::File> {
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
fn open_sinks(cli: &Cli) -> Result<Vec<Sink>> {
    let mut sinks = Vec::new();
    if let Some(path) = &cli.output {
        sinks.push(Sink::file(path)?);
    }
    if cli.syslog {
        let local = LocalSyslog::new(&cli.syslog_socket, &cli.syslog_ident)
            .with_context(|| format!("local syslog {}", cli.syslog_socket.display()))?
            .with_pid(cli.syslog_pid)
            .with_backlog(LOCAL_SYSLOG_BACKLOG);
        match local.socket_kind() {
            Some(kind) => tracing::info!("local syslog: {} ({kind:?})", local.path().display()),
            None => tracing::warn!("local syslog: {} not reachable yet; retrying", local.path().display()),
        }
        sinks.push(Sink::LocalSyslog(Box::new(local)));
    }
    if let Some(target) = &cli.syslog_remote {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let remote = RemoteSyslog::start(*target, &cli.syslog_ident, host.trim(), 65_536)
            .with_context(|| format!("remote syslog {target}"))?;
        tracing::info!("remote syslog: {}", remote.target());
        sinks.push(Sink::RemoteSyslog(remote));
    }
    if sinks.is_empty() {
        sinks.push(Sink::stdout()?);
    }
    Ok(sinks)
}

fn load_rules(path: Option<&std::path::Path>) -> Result<RuleSet> {
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

/// Why the sendmsg hooks are needed now, if they are: an IPsec policy
/// somewhere, or no way to tell.
fn ipsec_in_use() -> Option<String> {
    match probes::xfrm::look_for_policies() {
        Policies::None => None,
        Policies::In(netns) => Some(format!("an IPsec (xfrm) policy is in network namespace {netns}")),
        Policies::Unknown(e) => Some(format!("cannot tell whether an IPsec policy exists ({e})")),
    }
}

/// Whether to attach the UDP sendmsg hooks at start, and whether to keep
/// looking for an IPsec policy (`when-ipsec`) to attach them later.
fn sendmsg_hook_at_start(cli: &Cli) -> (bool, bool) {
    if cli.udp_mechanism == probes::UdpMechanism::Packet {
        return (false, false); // it has no such hook
    }
    let (setting, why) = cli.udp_sendmsg_hook.resolve();
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

fn run(cli: &Cli, inputs: StartupInputs) -> Result<()> {
    let StartupInputs { _state_lock, sinks, rules, formatter, services } = inputs;
    if !cli.skip_privilege_check {
        probes::check_privileges()?;
    }
    probes::ensure_tracefs()?;
    probes::route_libbpf_log();
    let signals = register_signals()?;

    let (sendmsg_hook, mut await_ipsec) = sendmsg_hook_at_start(cli);
    let mut storage = ObjectStorage::new();
    let ringbuf_bytes = cli.ringbuf_mib * 1024 * 1024;
    let ring_bytes = u64::from(ringbuf_bytes);
    let opts = ProbeOptions {
        ringbuf_bytes,
        argv_limit: cli.argv_limit,
        pretend_unresolved_accepts: cli.pretend_unresolved_accepts,
        udp: cli.udp_mechanism,
        udp_flow_capacity: cli.udp_flow_capacity,
        // UDP gives way once the ring buffer is three quarters full: TCP keeps
        // the rest. Below that, from 5/8 full, the sensor takes normal CPU
        // priority to catch up (pace.rs), so a burst the sensor deferred does
        // not cost UDP events.
        udp_shed_above: ring_bytes / 4 * 3,
        udp_sendmsg_hook: sendmsg_hook,
        hook_floor: cli.hook_floor,
    };
    if cli.hook_floor {
        tracing::warn!("--hook-floor: every probe returns at once; no event will be reported");
    }
    let probes = Probes::load(&mut storage, &opts)?;
    push_exclusions(cli, &probes, &rules);

    let mut procs =
        ProcessTable::new(usize::try_from(cli.process_capacity)?, cli.exit_grace * 1_000_000_000, read_proc);
    // After attaching: processes exec'd during the scan arrive as facts later
    // in the ring buffer and so overwrite what the scan read.
    let seeded = procs.scan_proc();
    // Everything is loaded and attached: from here on only what later work
    // needs (before the other threads start: they inherit it).
    let needs = privilege::Needs {
        enter_namespaces: probes.udp_packet_mode() || await_ipsec,
        raw_sockets: probes.udp_packet_mode(),
        set_priority: cli.cpu_policy == pace::CpuPolicy::Yield,
    };
    match privilege::drop_privileges(needs) {
        Ok(kept) => tracing::info!("privileges dropped: no new privileges, capabilities {kept:#x} kept"),
        Err(e) => tracing::warn!("{e:#}; the sensor keeps its privileges"),
    }
    let tcp = TcpTracker::new(usize::try_from(cli.pending_capacity)?, cli.pending_timeout * 1_000_000_000);
    let udp = UdpTracker::new(cli.udp_window * 1_000_000_000, cli.udp_flow_capacity as usize);
    let enrich = Enricher::new(WallClock::new(CLOCK_RESYNC_NS)?, read_machine_prefix(), services);
    let queue = SinkQueue::start(sinks, usize::try_from(cli.queue_capacity)?)?;
    let health = Health::new(cli.stats_interval * 1_000_000_000, boot_now_ns());
    let pipeline = RefCell::new(Pipeline::new(Trackers { procs, tcp, udp }, enrich, rules, formatter, queue, health));
    let mut taps = probes.udp_packet_mode().then(NetnsTaps::new);
    if let Some(t) = taps.as_mut() {
        t.refresh();
    }
    // Sweep often enough that a flow is reported again soon after its window.
    let sweep_ns = (cli.udp_window * 1_000_000_000 / 10).clamp(TICK_NS, 10 * TICK_NS);

    // The ring's fill: its peak for the stats, the watchdog's first cue, and
    // how long the reader may leave facts in it.
    let ring_fill = match probes::ring_fill::RingPositions::map(probes.tcp_state.maps.events.as_fd()) {
        Ok(r) => Some(Arc::new(r)),
        Err(e) => {
            tracing::warn!("{e:#}; no ring-buffer peak in the stats, normal CPU priority");
            None
        }
    };
    let ring_has_room = || ring_fill.as_ref().is_some_and(|r| r.unread() < pace::catch_up_at(ring_bytes));
    // While the writer is behind (its queue half full, until it is down to a
    // quarter), facts wait in the ring buffer, the larger buffer, rather than
    // lines being dropped; once the ring is as full as the sensor lets it get,
    // the reader reads on and the queue sheds (counted), so a stalled output
    // never overflows the ring.
    let round = ReadRound::default();
    let mut builder = RingBufferBuilder::new();
    builder
        .add(&probes.tcp_state.maps.events, |data| {
            let mut p = pipeline.borrow_mut();
            p.handle_record(data);
            round.after_fact(|| p.sink.backed_up() && ring_has_room())
        })
        .context("setting up the ring buffer reader")?;
    let ringbuf = builder.build().context("setting up the ring buffer reader")?;

    {
        let mut p = pipeline.borrow_mut();
        p.service_state(ServiceState::Started)?;
        p.announce_recovery()?;
        p.config_change()?;
        p.sink.commit();
    }
    let reader_rounds = pace::Heartbeat::default();
    let watchdog = match (&ring_fill, cli.cpu_policy) {
        (Some(ring), pace::CpuPolicy::Yield) => {
            let p = pipeline.borrow();
            start_watchdog(cli, Arc::clone(ring), ring_bytes, &p.sink, &reader_rounds, &p.cpu_boosts)
        }
        _ => None,
    };
    // Bursts wait in the ring buffer only when the sensor yields the CPU.
    let mut burst_gate = match (&ring_fill, cli.cpu_policy) {
        (Some(_), pace::CpuPolicy::Yield) => Some(burst::BurstGate::new(ring_bytes, cli.max_defer_ms * 1_000_000)),
        _ => None,
    };
    if cli.no_seccomp {
        tracing::warn!("--no-seccomp: every system call stays allowed");
    } else {
        match privilege::install_seccomp() {
            Ok(()) => tracing::info!("seccomp filter in place (other system calls fail with EPERM)"),
            Err(e) => tracing::warn!("{e:#}; no seccomp filter"),
        }
    }
    tracing::info!(probes = probes.attached(), processes = seeded, "ready");

    let mut holding = false;
    let mut last_tick = boot_now_ns();
    let mut last_sweep = last_tick;
    let mut last_taps = last_tick;
    // `--udp-sendmsg-hook when-ipsec`: the hooks, once a policy appears.
    let mut late_links = Vec::new();
    let mut last_xfrm_look = last_tick;
    while !signals.stop.load(Ordering::Relaxed) {
        reader_rounds.beat();
        // Read now, leave a burst in the ring buffer, or hold back for the writer.
        let mut gate = burst::Gate::Read;
        let mut hold_back = false;
        if let Some(r) = &ring_fill {
            let unread = r.unread();
            let mut p = pipeline.borrow_mut();
            p.note_ring_fill(unread);
            holding = holding && !p.sink.has_room();
            hold_back = holding && unread < pace::catch_up_at(ring_bytes);
            if let (false, Some(g)) = (hold_back, burst_gate.as_mut()) {
                gate = g.next(boot_now_ns(), r.produced(), unread);
                p.bursts_deferred = g.bursts;
            }
        }
        let facts_before = pipeline.borrow().stats.facts;
        if hold_back {
            let mut p = pipeline.borrow_mut();
            p.sink.commit();
            p.sink.wait_for_room(HOLD_BACK_WAIT);
        } else if gate == burst::Gate::Defer {
            std::thread::sleep(burst::STEP);
        } else if let Err(e) = ringbuf.poll(POLL) {
            if !round.ended_early() && e.kind() != libbpf_rs::ErrorKind::Interrupted {
                return Err(e).context("polling the ring buffer");
            }
        }
        let mut p = pipeline.borrow_mut();
        let read = p.stats.facts - facts_before;
        if round.finish() {
            p.sink.commit(); // the writer's to catch up; the next rounds wait
            holding = true;
        } else if !hold_back {
            p.sink.commit_if_due(read == 0);
            if read > 0 && read < BATCH_FACTS {
                // A trickle: let facts gather for a moment instead of waking
                // for each one (a wakeup and two context switches per fact
                // cost more than handling it). The pause is short enough that
                // the ring buffer's recent pages stay in the cache.
                std::thread::sleep(GATHER);
            }
        }
        if let Some(e) = p.fatal.take().or_else(|| p.sink.failed()) {
            return Err(e);
        }
        let now = boot_now_ns();
        if now.saturating_sub(last_tick) >= TICK_NS {
            p.tick(now);
            let kernel = probes.counters();
            p.report_health(now, &kernel)?;
            last_tick = now;
        }
        if p.udp.needs_room() || now.saturating_sub(last_sweep) >= sweep_ns {
            sweep_udp_flows(&probes, &mut p, now);
            last_sweep = now;
        }
        if let Some(t) = taps.as_mut() {
            if now.saturating_sub(last_taps) >= TAPS_REFRESH_NS {
                t.refresh();
                last_taps = now;
            }
        }
        if await_ipsec && now.saturating_sub(last_xfrm_look) >= XFRM_LOOK_NS {
            last_xfrm_look = now;
            if let Some(why) = ipsec_in_use() {
                late_links = probes.attach_sendmsg_hooks()?;
                await_ipsec = false;
                tracing::info!("UDP sendmsg hook on: {why}");
            }
        }
        if signals.reload.swap(false, Ordering::Relaxed) {
            reload(cli, &probes, &mut p)?;
        }
        if signals.stats.swap(false, Ordering::Relaxed) {
            tracing::info!("{}", p.stats_line(&probes.counters()));
        }
    }
    if let Some(w) = watchdog {
        w.stop();
    }

    // Drain what the kernel already queued, then flush before detaching: as
    // the writer takes it for a moment, then whatever the queue holds.
    let drain_until = Instant::now() + DRAIN_WAIT;
    let queued_at_stop = ring_fill.as_ref().map_or(0, |r| r.produced());
    while ring_fill.as_ref().is_some_and(|r| r.consumed() < queued_at_stop) && Instant::now() < drain_until {
        let _ = ringbuf.consume();
        let mut p = pipeline.borrow_mut();
        p.sink.commit();
        if round.finish() {
            p.sink.wait_for_room(HOLD_BACK_WAIT);
        }
    }
    round.read_to_the_end();
    let _ = ringbuf.consume();
    let mut p = pipeline.borrow_mut();
    let kernel = probes.counters();
    p.report_health(boot_now_ns(), &kernel)?;
    p.service_state(ServiceState::Stopped)?;
    tracing::info!("{}", p.stats_line(&kernel));
    tracing::info!("stopping: detaching probes");
    drop(taps);
    drop(p);
    drop(ringbuf);
    drop(late_links);
    drop(probes);
    pipeline.into_inner().close()
}

/// One round of reading the ring buffer, as the ring-buffer callback ends it:
/// early when the writer is behind (the rest waits in the ring), or after
/// burst::ROUND_FACTS facts (so the burst gate gets a look).
#[derive(Default)]
struct ReadRound {
    facts: Cell<u64>,
    held_back: Cell<bool>,
    full: Cell<bool>,
    /// The final drain: no early end.
    to_the_end: Cell<bool>,
}

impl ReadRound {
    /// The callback's answer after a fact was handled; `writer_behind` is
    /// asked only when it matters.
    fn after_fact(&self, writer_behind: impl FnOnce() -> bool) -> i32 {
        if self.to_the_end.get() {
            return 0;
        }
        if writer_behind() {
            self.held_back.set(true);
            return END_ROUND; // this fact is read; the rest waits
        }
        self.facts.set(self.facts.get() + 1);
        if self.facts.get() >= burst::ROUND_FACTS {
            self.full.set(true);
            return END_ROUND;
        }
        0
    }

    /// The callback ended the round (libbpf then returns an error).
    fn ended_early(&self) -> bool {
        self.held_back.get() || self.full.get()
    }

    /// Readies the next round; returns whether this one was held back.
    fn finish(&self) -> bool {
        self.facts.set(0);
        self.full.set(false);
        self.held_back.replace(false)
    }

    fn read_to_the_end(&self) {
        self.to_the_end.set(true);
    }
}

/// `--cpu-policy yield`; the sensor keeps normal priority if it cannot yield.
fn start_watchdog(
    cli: &Cli,
    ring: Arc<probes::ring_fill::RingPositions>,
    ring_bytes: u64,
    sink: &SinkQueue,
    reader_rounds: &pace::Heartbeat,
    boosts: &Arc<std::sync::atomic::AtomicU64>,
) -> Option<pace::Watchdog> {
    let started = pace::Watchdog::start(
        ring,
        ring_bytes,
        sink.backlog_gauge(),
        cli.queue_capacity,
        vec![reader_rounds.clone(), sink.writer_heartbeat()],
        Duration::from_millis(cli.max_defer_ms),
        Arc::clone(boosts),
    );
    match started {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!("{e:#}; the sensor keeps normal CPU priority");
            None
        }
    }
}

/// Gives the kernel the part of the rules it can apply with the same answer
/// (what its tables cannot hold stays in userspace, said once). Never fatal:
/// userspace applies every rule whatever the kernel holds.
fn push_exclusions(cli: &Cli, probes: &Probes<'_>, rules: &RuleSet) {
    let exclusions = if cli.no_kernel_filter { Default::default() } else { rules.kernel_exclusions() };
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

/// SIGHUP: reopen the output file (logrotate) and reload the config; a bad
/// new config keeps the old rules running.
fn reload(cli: &Cli, probes: &Probes<'_>, p: &mut Pipeline) -> Result<()> {
    p.sink.reopen();
    if cli.config.is_some() {
        match load_rules(cli.config.as_deref()) {
            Ok(rules) => {
                push_exclusions(cli, probes, &rules);
                p.rules = rules;
                tracing::info!("config reloaded");
                p.config_change()?;
            }
            Err(e) => tracing::error!("{e:#}; keeping the rules in force"),
        }
        trim_heap();
    }
    Ok(())
}

/// Gives the allocator's free pages back after a reload: a large config
/// parsed once need not stay in the sensor's RSS.
fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
