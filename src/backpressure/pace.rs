//! CPU priority: the sensor yields the CPU to the host's own work and takes
//! it back when it falls behind.
//!
//! The kernel side never waits for userspace: facts queue in the ring buffer.
//! So the sensor's threads can run SCHED_IDLE (they get a CPU only when
//! nothing else wants it) and handle a burst after it, instead of taking a
//! share of the CPUs from the work that causes it. A watchdog thread at normal
//! priority looks at the backlog every `CHECK_EVERY` and puts the sensor back
//! to normal priority (SCHED_OTHER) until it has caught up when
//! - the ring buffer is five eighths full (UDP is shed from three quarters), or
//! - the output queue is a quarter full, or
//! - something has waited `max_defer` (a host whose CPUs stay busy would
//!   otherwise delay events without bound): a fact in the ring buffer, a line
//!   in the queue, or a round of the reader's or the writer's loop (each comes
//!   around at least every 100 ms when it gets the CPU; a late round means
//!   signals, ticks, flushes and loss reports wait too).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};

use super::ring_fill::RingPositions;
use super::{catch_up_at, Backlog, Heartbeat};
use crate::clock::boot_now_ns;

const CHECK_EVERY: Duration = Duration::from_millis(10);

/// Who gets the CPU first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CpuPolicy {
    /// SCHED_IDLE while the sensor keeps up; normal priority while it catches up.
    Yield,
    /// Always normal priority (SCHED_OTHER).
    Normal,
}

/// The oldest work still waiting: it arrived no later than `since_ns`, and is
/// gone once `done` reaches `until`.
#[derive(Debug, Clone, Copy)]
struct Waiting {
    since_ns: u64,
    until: u64,
}

fn track(waiting: &mut Option<Waiting>, b: Backlog, now_ns: u64) {
    if waiting.is_some_and(|w| b.done >= w.until) {
        *waiting = None;
    }
    if waiting.is_none() && b.pending > 0 {
        *waiting = Some(Waiting { since_ns: now_ns, until: b.done + b.pending });
    }
}

/// A loop's rounds as a backlog: the next round is always awaited.
fn next_round(rounds: u64) -> Backlog {
    Backlog { done: rounds, pending: 1 }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Yielding,
    CatchingUp,
}

/// The decisions, apart from the clock and the scheduler (unit-tested).
#[derive(Debug)]
pub struct Pacer {
    ring_bytes: u64,
    queue_lines: u64,
    max_defer_ns: u64,
    mode: Mode,
    ring: Option<Waiting>,
    queue: Option<Waiting>,
    loops: Vec<Option<Waiting>>,
}

impl Pacer {
    pub fn new(ring_bytes: u64, queue_lines: u64, max_defer_ns: u64) -> Self {
        Self { ring_bytes, queue_lines, max_defer_ns, mode: Mode::Yielding, ring: None, queue: None, loops: Vec::new() }
    }

    /// Takes one look at the backlogs and at the rounds of the watched loops;
    /// returns the new mode if it changes.
    pub fn observe(&mut self, now_ns: u64, ring: Backlog, queue: Backlog, loop_rounds: &[u64]) -> Option<Mode> {
        track(&mut self.ring, ring, now_ns);
        track(&mut self.queue, queue, now_ns);
        self.loops.resize(loop_rounds.len(), None);
        for (waiting, rounds) in self.loops.iter_mut().zip(loop_rounds) {
            track(waiting, next_round(*rounds), now_ns);
        }
        let overdue = [self.ring, self.queue]
            .iter()
            .chain(self.loops.iter())
            .flatten()
            .any(|w| now_ns.saturating_sub(w.since_ns) >= self.max_defer_ns);
        let next = match self.mode {
            Mode::Yielding
                if overdue || ring.pending >= catch_up_at(self.ring_bytes) || queue.pending >= self.queue_lines / 4 =>
            {
                Mode::CatchingUp
            }
            Mode::CatchingUp
                if !overdue && ring.pending <= self.ring_bytes / 16 && queue.pending <= self.queue_lines / 16 =>
            {
                Mode::Yielding
            }
            same => same,
        };
        (next != self.mode).then(|| {
            self.mode = next;
            next
        })
    }
}

/// Sets the scheduling policy of every thread of this process but `except`.
fn set_policy(mode: Mode, except: libc::pid_t) -> Result<()> {
    let policy = match mode {
        Mode::Yielding => libc::SCHED_IDLE,
        Mode::CatchingUp => libc::SCHED_OTHER,
    };
    let param = libc::sched_param { sched_priority: 0 };
    for entry in std::fs::read_dir("/proc/self/task").context("listing the sensor's threads")? {
        let Some(tid) = entry.ok().and_then(|e| e.file_name().to_str().and_then(|s| s.parse::<libc::pid_t>().ok()))
        else {
            continue;
        };
        if tid == except {
            continue;
        }
        // SAFETY: plain syscall on a thread id with a valid parameter block.
        if unsafe { libc::sched_setscheduler(tid, policy, &param) } != 0 {
            let err = std::io::Error::last_os_error();
            // A thread that ended since the listing is fine.
            if err.raw_os_error() != Some(libc::ESRCH) {
                return Err(err).with_context(|| format!("setting the scheduling policy of thread {tid}"));
            }
        }
    }
    Ok(())
}

/// Leaving SCHED_IDLE needs CAP_SYS_NICE (or RLIMIT_NICE): tried on the
/// calling thread, so the sensor never yields what it could not take back.
fn can_take_the_cpu_back() -> Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    for policy in [libc::SCHED_IDLE, libc::SCHED_OTHER] {
        // SAFETY: plain syscall on the calling thread with a valid parameter block.
        if unsafe { libc::sched_setscheduler(0, policy, &param) } != 0 {
            return Err(std::io::Error::last_os_error())
                .context("trying SCHED_IDLE and back (taking the CPU back needs CAP_SYS_NICE)");
        }
    }
    Ok(())
}

/// The running watchdog.
pub struct Watchdog {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Puts the sensor's threads at SCHED_IDLE and starts watching; `boosts`
    /// counts the times the sensor took normal priority to catch up.
    pub fn start(
        ring: Arc<RingPositions>,
        ring_bytes: u64,
        queue: impl Fn() -> Backlog + Send + 'static,
        queue_lines: u64,
        loops: Vec<Heartbeat>,
        max_defer: Duration,
        boosts: Arc<AtomicU64>,
    ) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, b) = (Arc::clone(&stop), boosts);
        let max_defer_ns = u64::try_from(max_defer.as_nanos()).unwrap_or(u64::MAX);
        let (started_tx, started_rx) = std::sync::mpsc::sync_channel::<Result<()>>(1);
        let thread = std::thread::Builder::new()
            .name("sockscope-pace".into())
            .spawn(move || {
                // SAFETY: gettid has no preconditions.
                let me = unsafe { libc::gettid() };
                let first = can_take_the_cpu_back().and_then(|()| set_policy(Mode::Yielding, me));
                let failed = first.is_err();
                let _ = started_tx.send(first);
                if failed {
                    return;
                }
                let mut pacer = Pacer::new(ring_bytes, queue_lines, max_defer_ns);
                // No allocation or lock in the loop that a yielded thread could
                // hold (the log line only while the sensor runs at normal priority).
                let mut rounds = vec![0u64; loops.len()];
                while !s.load(Ordering::Relaxed) {
                    std::thread::sleep(CHECK_EVERY);
                    let consumed = ring.consumed();
                    let ring_now = Backlog { done: consumed, pending: ring.produced().saturating_sub(consumed) };
                    for (r, l) in rounds.iter_mut().zip(&loops) {
                        *r = l.rounds();
                    }
                    let Some(mode) = pacer.observe(boot_now_ns(), ring_now, queue(), &rounds) else {
                        continue;
                    };
                    if mode == Mode::Yielding {
                        tracing::debug!(?mode, ring_pending = ring_now.pending, "CPU priority");
                    }
                    if let Err(e) = set_policy(mode, me) {
                        tracing::warn!("{e:#}");
                    }
                    if mode == Mode::CatchingUp {
                        b.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(?mode, ring_pending = ring_now.pending, "CPU priority");
                    }
                }
                // The final drain runs at normal priority.
                if let Err(e) = set_policy(Mode::CatchingUp, me) {
                    tracing::warn!("{e:#}");
                }
            })
            .context("starting the CPU priority watchdog")?;
        let started = started_rx
            .recv()
            .context("the CPU priority watchdog ended early")
            .and_then(|first| first.context("yielding the CPU"));
        if let Err(e) = started {
            // It is ending (at SCHED_IDLE when only the way back was
            // refused): gone before the sensor says it is ready.
            let _ = thread.join();
            return Err(e);
        }
        Ok(Self { stop, thread: Some(thread) })
    }

    /// Back to normal priority, for the final drain.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Watchdog {
    /// Also on an early return: the sensor is not left yielding unwatched.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn pacer() -> Pacer {
        Pacer::new(8 << 20, 16_384, 1000 * MS)
    }

    fn b(done: u64, pending: u64) -> Backlog {
        Backlog { done, pending }
    }

    #[test]
    fn a_small_backlog_that_clears_keeps_yielding() {
        let mut p = pacer();
        for i in 0..200u64 {
            // 100 ms of 1 KiB bursts, each read within 10 ms.
            assert_eq!(p.observe(i * 10 * MS, b(i * 1024, 1024), b(i, 1), &[]), None);
        }
    }

    #[test]
    fn five_eighths_of_the_ring_buffer_catches_up_until_nearly_empty() {
        let mut p = pacer();
        assert_eq!(p.observe(0, b(0, 5 << 20), b(0, 0), &[]), Some(Mode::CatchingUp));
        assert_eq!(p.observe(10 * MS, b(3 << 20, 2 << 20), b(0, 0), &[]), None, "still a quarter full");
        assert_eq!(p.observe(20 * MS, b(5 << 20, 512 << 10), b(0, 0), &[]), Some(Mode::Yielding));
    }

    #[test]
    fn just_under_five_eighths_keeps_yielding() {
        let mut p = pacer();
        assert_eq!(p.observe(0, b(0, (5 << 20) - 1), b(0, 0), &[]), None);
    }

    #[test]
    fn a_quarter_full_queue_catches_up() {
        let mut p = pacer();
        assert_eq!(p.observe(0, b(0, 0), b(0, 4095), &[]), None);
        assert_eq!(p.observe(10 * MS, b(0, 0), b(0, 4096), &[]), Some(Mode::CatchingUp));
        assert_eq!(p.observe(20 * MS, b(0, 0), b(4096, 0), &[]), Some(Mode::Yielding));
    }

    #[test]
    fn one_fact_left_waiting_too_long_catches_up() {
        let mut p = pacer();
        // A busy host: the reader does not run, the fact stays.
        assert_eq!(p.observe(0, b(0, 64), b(0, 0), &[]), None);
        assert_eq!(p.observe(999 * MS, b(0, 64), b(0, 0), &[]), None);
        assert_eq!(p.observe(1000 * MS, b(0, 64), b(0, 0), &[]), Some(Mode::CatchingUp));
        assert_eq!(p.observe(1010 * MS, b(64, 0), b(0, 0), &[]), Some(Mode::Yielding));
    }

    #[test]
    fn a_reader_that_creeps_along_is_still_overdue() {
        // New facts keep coming and the reader keeps consuming a little, but
        // what was there at first is not all read after max_defer.
        let mut p = pacer();
        for i in 0..100u64 {
            assert_eq!(p.observe(i * 10 * MS, b(i, 1000), b(0, 0), &[]), None, "at {i}");
        }
        assert_eq!(p.observe(1000 * MS, b(100, 1000), b(0, 0), &[]), Some(Mode::CatchingUp));
    }

    #[test]
    fn a_loop_that_comes_around_keeps_yielding_and_a_stalled_one_catches_up() {
        let mut p = pacer();
        // Rounds every 100 ms (a reader idle in its poll): never late.
        for i in 0..30u64 {
            assert_eq!(p.observe(i * 100 * MS, b(0, 0), b(0, 0), &[i, i / 2]), None, "at {i}");
        }
        // The first loop stops coming around (no CPU for it): late after max_defer.
        let t = 29 * 100 * MS;
        assert_eq!(p.observe(t + 999 * MS, b(0, 0), b(0, 0), &[29, 15]), None);
        assert_eq!(p.observe(t + 1000 * MS, b(0, 0), b(0, 0), &[29, 15]), Some(Mode::CatchingUp));
        assert_eq!(p.observe(t + 1010 * MS, b(0, 0), b(0, 0), &[30, 15]), Some(Mode::Yielding));
    }

    #[test]
    fn lines_stuck_in_the_queue_are_overdue_too() {
        let mut p = pacer();
        assert_eq!(p.observe(0, b(0, 0), b(0, 3), &[]), None);
        assert_eq!(p.observe(1000 * MS, b(0, 0), b(0, 3), &[]), Some(Mode::CatchingUp));
    }
}
