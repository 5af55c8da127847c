//! Burst deferral: while the kernel writes facts fast, the reader leaves them
//! in the ring buffer and handles them once the burst is over.
//!
//! Measured on tcp_storm (2 cores): a sensor that reads during a burst costs
//! the burst about 15% of its throughput even at SCHED_IDLE (it runs in every
//! idle gap, is preempted at every wakeup, and each fact written to a ring it
//! has drained wakes it again); one that reads after the burst costs it what
//! the probes cost. So while the producers write faster than `BURST_RATE`
//! (measured between two looks of the reader, one read round of at most
//! `ROUND_FACTS` apart), the reader sleeps in short steps instead of reading,
//! for as long as
//! - the producers keep writing that fast (the burst goes on),
//! - the ring buffer is less than five eighths full (there the watchdog in
//!   pace.rs takes normal priority to catch up; the kernel sheds UDP from
//!   three quarters), and
//! - the deferral is younger than half of `--max-defer-ms` (events stay
//!   within that bound).
//!
//! A deferral that ends at a bound while the producers go on leaves the reader
//! reading as facts come until the producers slow down, so a sustained storm
//! is deferred once, not again and again (each time up to the bound, followed
//! by a catch-up at normal priority). A sustained storm gains nothing from
//! deferral (400,000 tcp_storm cycles, ~3 s: 93-96k cycles/s with the sensor
//! against 120-134k without, and 90-93k before deferral existed). A steady
//! trickle is read as it comes. Only with `--cpu-policy yield`: `normal` reads as facts come.

use std::time::Duration;

use super::catch_up_at;

/// A read round ends after this many facts, so the reader can tell a burst
/// from a backlog (libbpf's read goes on for as long as facts keep coming).
pub const ROUND_FACTS: u64 = 1024;
/// How long the reader sleeps between looks while it defers.
pub const STEP: Duration = Duration::from_millis(5);
/// The producers are in a burst while they write at least this fast (8 MiB/s:
/// some 35,000 TCP connections a second)...
const BURST_RATE: u64 = 8 << 20;
/// ...measured over at least this long (a shorter interval between two looks
/// keeps the last verdict: a handful of facts within microseconds is no burst,
/// and a fast read round no pause in one).
const RATE_WINDOW_NS: u64 = 5_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Read,
    Defer,
}

/// The decisions, apart from the clock and the ring (unit-tested).
#[derive(Debug)]
pub struct BurstGate {
    ring_bytes: u64,
    max_age_ns: u64,
    /// The producer position and time where the current rate window began.
    window: Option<(u64, u64)>,
    /// The verdict of the last complete window.
    burst: bool,
    /// When the deferral in progress began.
    deferring_since: Option<u64>,
    /// A deferral ended at a bound and the burst goes on: no other until the
    /// producers slow down.
    spent: bool,
    /// Bursts left in the ring buffer until they ended (or hit a bound).
    pub bursts: u64,
}

impl BurstGate {
    pub fn new(ring_bytes: u64, max_defer_ns: u64) -> Self {
        Self {
            ring_bytes,
            max_age_ns: max_defer_ns / 2,
            window: None,
            burst: false,
            deferring_since: None,
            spent: false,
            bursts: 0,
        }
    }

    /// Called before each read round with the ring's producer position and
    /// the bytes waiting in it.
    pub fn next(&mut self, now_ns: u64, produced: u64, unread: u64) -> Gate {
        match self.window {
            None => self.window = Some((produced, now_ns)),
            Some((before, since)) if now_ns.saturating_sub(since) >= RATE_WINDOW_NS => {
                let written = u128::from(produced.saturating_sub(before));
                let elapsed = u128::from(now_ns - since);
                self.burst = written * 1_000_000_000 >= u128::from(BURST_RATE) * elapsed;
                self.window = Some((produced, now_ns));
            }
            Some(_) => {}
        }
        let burst = self.burst;
        self.spent &= burst;
        let room = unread < catch_up_at(self.ring_bytes);
        let since = match self.deferring_since {
            Some(since) => since,
            None if burst && room && !self.spent => {
                self.bursts += 1;
                now_ns
            }
            None => return Gate::Read,
        };
        if burst && room && now_ns.saturating_sub(since) < self.max_age_ns {
            self.deferring_since = Some(since);
            return Gate::Defer;
        }
        // Ended by a bound while the burst goes on: read it as it comes.
        self.spent = burst;
        self.deferring_since = None;
        Gate::Read
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const RING: u64 = 8 << 20;

    /// A gate that looked at t=0 (producer at 0), then at 5 ms with 200 kB
    /// written (40 MB/s): deferring.
    fn deferring() -> BurstGate {
        let mut g = BurstGate::new(RING, 1000 * MS);
        assert_eq!(g.next(0, 0, 0), Gate::Read, "a first look has nothing to compare");
        assert_eq!(g.next(5 * MS, 200_000, 200_000), Gate::Defer);
        g
    }

    #[test]
    fn a_trickle_is_read_as_it_comes() {
        let mut g = BurstGate::new(RING, 1000 * MS);
        let mut produced = 0;
        for step in 0..100 {
            produced += 4_000; // 4 kB per 4 ms: 1 MB/s
            assert_eq!(g.next(step * 4 * MS, produced, 4_000), Gate::Read);
        }
        assert_eq!(g.bursts, 0);
    }

    #[test]
    fn a_few_facts_at_once_are_no_burst() {
        let mut g = BurstGate::new(RING, 1000 * MS);
        g.next(0, 0, 0);
        // 8 kB within 10 µs is fast, but too short a time to tell.
        assert_eq!(g.next(10_000, 8_000, 8_000), Gate::Read);
        // Over the window: 8 kB in 5 ms.
        assert_eq!(g.next(5 * MS, 8_000, 8_000), Gate::Read);
    }

    #[test]
    fn fast_read_rounds_within_a_burst_do_not_end_it() {
        let mut g = deferring();
        // Rounds of the reader 1 ms apart, 40 kB written in each: the window
        // spans several; the verdict holds in between.
        let mut produced = 200_000;
        for ms in 6..=20 {
            produced += 40_000;
            assert_eq!(g.next(ms * MS, produced, produced), Gate::Defer, "at {ms} ms");
        }
    }

    #[test]
    fn a_backlog_without_new_facts_is_read() {
        let mut g = BurstGate::new(RING, 1000 * MS);
        g.next(0, 4_000_000, 4_000_000);
        // Rounds of the catch-up: lots waiting, nothing new.
        assert_eq!(g.next(3 * MS, 4_000_000, 3_900_000), Gate::Read);
        assert_eq!(g.next(6 * MS, 4_000_000, 3_800_000), Gate::Read);
    }

    #[test]
    fn a_burst_is_left_in_the_ring_until_it_ends() {
        let mut g = deferring();
        // 5 ms steps at 40 MB/s: 200 kB each.
        let mut produced = 200_000;
        for step in 2..=20 {
            produced += 200_000;
            assert_eq!(g.next(step * 5 * MS, produced, produced), Gate::Defer, "step {step}");
        }
        // The producers stopped: read.
        assert_eq!(g.next(105 * MS, produced, produced), Gate::Read);
        assert_eq!(g.bursts, 1);
    }

    #[test]
    fn a_slowing_burst_is_read() {
        let mut g = deferring();
        // 8 MiB/s is about 42 kB per 5 ms.
        assert_eq!(g.next(10 * MS, 250_000, 250_000), Gate::Defer);
        assert_eq!(g.next(15 * MS, 280_000, 280_000), Gate::Read);
    }

    #[test]
    fn a_burst_fills_the_ring_only_up_to_where_the_sensor_catches_up() {
        let full = catch_up_at(RING);
        let mut g = deferring();
        assert_eq!(g.next(10 * MS, 1_200_000, full - 1), Gate::Defer);
        assert_eq!(g.next(15 * MS, 2_200_000, full), Gate::Read);
        // A look that finds the ring that full does not start a deferral.
        assert_eq!(g.next(20 * MS, 3_200_000, full), Gate::Read);
        assert_eq!(g.bursts, 1);
    }

    #[test]
    fn a_deferral_ends_at_half_the_defer_bound() {
        let mut g = deferring(); // since 5 ms
        let mut t = 5 * MS;
        let mut produced = 200_000;
        loop {
            t += 5 * MS;
            produced += 1_000_000;
            if g.next(t, produced, 1000) == Gate::Read {
                break;
            }
            assert!(t < 505 * MS, "still deferring at {t} ns");
        }
        assert_eq!(t, 505 * MS);
        // The burst goes on: read as it comes, no second deferral...
        for _ in 0..10 {
            t += 5 * MS;
            produced += 1_000_000;
            assert_eq!(g.next(t, produced, 1000), Gate::Read);
        }
        // ...until the producers slow down; the next burst is deferred again.
        t += 5 * MS;
        assert_eq!(g.next(t, produced, 1000), Gate::Read);
        t += 5 * MS;
        produced += 1_000_000;
        assert_eq!(g.next(t, produced, 1000), Gate::Defer);
        assert_eq!(g.bursts, 2);
    }

    #[test]
    fn a_storm_that_fills_the_ring_is_deferred_once() {
        let full = catch_up_at(RING);
        let mut g = deferring();
        assert_eq!(g.next(10 * MS, 1_200_000, full), Gate::Read, "the bound");
        // Read back down while the storm goes on: still read as it comes.
        assert_eq!(g.next(15 * MS, 2_200_000, 1000), Gate::Read);
        assert_eq!(g.next(20 * MS, 3_200_000, 1000), Gate::Read);
        assert_eq!(g.bursts, 1);
    }

    #[test]
    fn the_same_instant_twice_is_not_a_division_by_zero() {
        let mut g = deferring();
        assert_eq!(g.next(5 * MS, 300_000, 300_000), Gate::Defer, "no time passed: any growth is fast");
    }
}
