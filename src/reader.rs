//! The reader: the sensor's main loop. It takes facts from the ring buffer
//! into the pipeline, applies backpressure (src/backpressure/: hold back for
//! a slow writer, leave a burst in the ring, yield the CPU), does the
//! periodic work (ticks, loss and stats events, the UDP flow table, packet
//! sockets, the IPsec look), answers signals, and at stop drains the ring
//! buffer before the probes are detached.
use std::cell::{Cell, RefCell};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use libbpf_rs::RingBufferBuilder;

use crate::backpressure::pace::{CpuPolicy, Watchdog};
use crate::backpressure::ring_fill::RingPositions;
use crate::backpressure::{burst, catch_up_at, Heartbeat};
use crate::clock::boot_now_ns;
use crate::format::sensor_events::ServiceState;
use crate::pipeline::Pipeline;
use crate::probes::netns::NetnsTaps;
use crate::probes::Probes;
use crate::settings::{PaceSettings, Settings};
use crate::startup::{ipsec_in_use, load_rules, push_exclusions, Started};

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
const TAPS_REFRESH_NS: u64 = 250_000_000;
/// How often `--udp-sendmsg-hook when-ipsec` looks for an IPsec policy.
const XFRM_LOOK_NS: u64 = 2_000_000_000;

/// SIGINT/SIGTERM stop, SIGUSR1 prints the stats line, SIGHUP reloads.
pub struct Signals {
    stop: Arc<AtomicBool>,
    stats: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
}

impl Signals {
    pub fn register() -> Result<Signals> {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(AtomicBool::new(false));
        let reload = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(sig, Arc::clone(&stop)).context("installing signal handlers")?;
        }
        signal_hook::flag::register(signal_hook::consts::SIGUSR1, Arc::clone(&stats))
            .context("installing signal handlers")?;
        signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reload))
            .context("installing signal handlers")?;
        Ok(Signals { stop, stats, reload })
    }
}

/// Runs the sensor until a stop signal, then drains and detaches.
pub fn run(settings: &Settings, started: Started<'_>, signals: &Signals) -> Result<()> {
    let Started { probes, pipeline, mut await_ipsec, processes_seeded, _state_lock } = started;
    let pipeline = RefCell::new(pipeline);
    let ring_bytes = settings.probes.ring_bytes();
    let mut taps = probes.udp_packet_mode().then(NetnsTaps::new);
    if let Some(t) = taps.as_mut() {
        t.refresh();
    }
    // Sweep often enough that a flow is reported again soon after its window.
    let sweep_ns = (settings.track.udp_window_ns / 10).clamp(TICK_NS, 10 * TICK_NS);

    // The ring's fill: its peak for the stats, the watchdog's first cue, and
    // how long the reader may leave facts in it.
    let ring_fill = match RingPositions::map(probes.ring_buffer().as_fd()) {
        Ok(r) => Some(Arc::new(r)),
        Err(e) => {
            tracing::warn!("{e:#}; no ring-buffer peak in the stats, normal CPU priority");
            None
        }
    };
    let ring_has_room = || ring_fill.as_ref().is_some_and(|r| r.unread() < catch_up_at(ring_bytes));
    // While the writer is behind (its queue half full, until it is down to a
    // quarter), facts wait in the ring buffer, the larger buffer, rather than
    // lines being dropped; once the ring is as full as the sensor lets it get,
    // the reader reads on and the queue sheds (counted), so a stalled output
    // never overflows the ring.
    let round = ReadRound::default();
    let mut builder = RingBufferBuilder::new();
    builder
        .add(probes.ring_buffer(), |data| {
            let mut p = pipeline.borrow_mut();
            p.handle_record(data);
            round.after_fact(|| p.sink.backed_up() && ring_has_room())
        })
        .context("setting up the ring buffer reader")?;
    let ringbuf = builder.build().context("setting up the ring buffer reader")?;

    pipeline.borrow_mut().announce_start()?;
    let reader_rounds = Heartbeat::default();
    let yielding = settings.pace.cpu_policy == CpuPolicy::Yield;
    let watchdog = match (&ring_fill, yielding) {
        (Some(ring), true) => {
            start_watchdog(&settings.pace, Arc::clone(ring), ring_bytes, &pipeline.borrow(), &reader_rounds)
        }
        _ => None,
    };
    // Bursts wait in the ring buffer only when the sensor yields the CPU.
    let mut burst_gate = match (&ring_fill, yielding) {
        (Some(_), true) => Some(burst::BurstGate::new(ring_bytes, settings.pace.max_defer_ms * 1_000_000)),
        _ => None,
    };
    if settings.host.no_seccomp {
        tracing::warn!("--no-seccomp: every system call stays allowed");
    } else {
        match crate::privilege::install_seccomp() {
            Ok(()) => tracing::info!("seccomp filter in place (other system calls fail with EPERM)"),
            Err(e) => tracing::warn!("{e:#}; no seccomp filter"),
        }
    }
    tracing::info!(probes = probes.attached(), processes = processes_seeded, "ready");

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
            hold_back = holding && unread < catch_up_at(ring_bytes);
            if let (false, Some(g)) = (hold_back, burst_gate.as_mut()) {
                gate = g.next(boot_now_ns(), r.produced(), unread);
                p.note_bursts_deferred(g.bursts);
            }
        }
        let facts_before = pipeline.borrow().facts_read();
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
        let read = p.facts_read() - facts_before;
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
        if let Some(e) = p.take_failure() {
            return Err(e);
        }
        let now = boot_now_ns();
        if now.saturating_sub(last_tick) >= TICK_NS {
            p.tick(now);
            p.report_health(now, &probes.counters())?;
            last_tick = now;
        }
        if p.udp_table_needs_room() || now.saturating_sub(last_sweep) >= sweep_ns {
            p.sweep_udp_flows(&probes, now);
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
            reload(settings, &probes, &mut p)?;
        }
        if signals.stats.swap(false, Ordering::Relaxed) {
            tracing::info!("{}", p.stats_line(&probes.counters()));
        }
    }
    if let Some(w) = watchdog {
        w.stop();
    }
    // Connections still open: the kernel writes their figures so far into
    // the ring buffer (sensor-stop), ahead of the drain.
    let closed_events = pipeline.borrow().closed_events();
    if closed_events {
        probes.report_open_tcp();
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
    p.finish_lifecycle(boot_now_ns());
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
    settings: &PaceSettings,
    ring: Arc<RingPositions>,
    ring_bytes: u64,
    p: &Pipeline,
    reader_rounds: &Heartbeat,
) -> Option<Watchdog> {
    let queue = p.sink.backlog_gauge();
    let started = Watchdog::start(
        ring,
        ring_bytes,
        move || queue.read(),
        p.sink.capacity() as u64,
        vec![reader_rounds.clone(), p.sink.writer_heartbeat()],
        Duration::from_millis(settings.max_defer_ms),
        p.cpu_boosts(),
    );
    match started {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!("{e:#}; the sensor keeps normal CPU priority");
            None
        }
    }
}

/// SIGHUP: reopen the output file (logrotate) and reload the config; a bad
/// new config keeps the old rules running.
fn reload(settings: &Settings, probes: &Probes<'_>, p: &mut Pipeline) -> Result<()> {
    p.sink.reopen();
    if let Some(path) = &settings.rules.config {
        match load_rules(Some(path)) {
            Ok(rules) => {
                push_exclusions(&settings.rules, probes, &rules);
                p.replace_rules(rules)?;
                tracing::info!("config reloaded");
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
