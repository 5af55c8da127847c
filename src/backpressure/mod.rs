//! Backpressure: how the sensor keeps up with the kernel without ever making
//! it wait, and without taking the CPU from the host's own work.
//!
//! Facts queue in the ring buffer (the kernel never waits), lines in the
//! output queue (src/sink/queue.rs). This module owns the decisions about
//! both: the fill levels that matter (`catch_up_at`, `udp_shed_at`), the
//! gauges other threads read (`Backlog`, `Heartbeat`, `ring_fill`), the CPU
//! priority watchdog (`pace`) and the burst gate (`burst`). The reader loop
//! (src/reader.rs) applies them.

pub mod burst;
pub mod pace;
pub mod ring_fill;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Work waiting in one stage: `done` counts what left it since start,
/// `pending` what is still in it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    pub done: u64,
    pub pending: u64,
}

/// Rounds of a thread's loop, bumped by the thread, watched by the watchdog.
#[derive(Debug, Clone, Default)]
pub struct Heartbeat(Arc<AtomicU64>);

impl Heartbeat {
    pub fn beat(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn rounds(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Unread ring-buffer bytes from which the sensor takes normal priority.
pub fn catch_up_at(ring_bytes: u64) -> u64 {
    ring_bytes / 8 * 5
}

/// Unread ring-buffer bytes from which the kernel stops reporting new UDP
/// flows, keeping the rest of the ring for TCP. Below it, from
/// `catch_up_at`, the sensor takes normal priority to catch up, so a burst
/// the sensor deferred does not cost UDP events.
pub fn udp_shed_at(ring_bytes: u64) -> u64 {
    ring_bytes / 4 * 3
}
