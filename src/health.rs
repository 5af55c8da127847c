//! Loss is never silent: the counters of everything that can lose an event,
//! turned into a loss event whenever they moved, and a periodic stats event.

/// Totals since start of everything that loses events.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Loss {
    pub ring_buffer_drops: u64,
    pub tcp_accepts_unresolved: u64,
    pub udp_shed_in_kernel: u64,
    pub udp_shed_in_queue: u64,
    pub queue_dropped: u64,
    pub sink_dropped: u64,
}

impl Loss {
    pub fn total(&self) -> u64 {
        self.ring_buffer_drops
            + self.tcp_accepts_unresolved
            + self.udp_shed_in_kernel
            + self.udp_shed_in_queue
            + self.queue_dropped
            + self.sink_dropped
    }

    fn since(&self, earlier: &Loss) -> Loss {
        Loss {
            ring_buffer_drops: self.ring_buffer_drops.saturating_sub(earlier.ring_buffer_drops),
            tcp_accepts_unresolved: self.tcp_accepts_unresolved.saturating_sub(earlier.tcp_accepts_unresolved),
            udp_shed_in_kernel: self.udp_shed_in_kernel.saturating_sub(earlier.udp_shed_in_kernel),
            udp_shed_in_queue: self.udp_shed_in_queue.saturating_sub(earlier.udp_shed_in_queue),
            queue_dropped: self.queue_dropped.saturating_sub(earlier.queue_dropped),
            sink_dropped: self.sink_dropped.saturating_sub(earlier.sink_dropped),
        }
    }
}

pub struct Health {
    announced: Loss,
    stats_every_ns: u64,
    last_stats_ns: u64,
    last_events: u64,
}

impl Health {
    /// `stats_every_ns` 0: no stats events.
    pub fn new(stats_every_ns: u64, now_ns: u64) -> Self {
        Self { announced: Loss::default(), stats_every_ns, last_stats_ns: now_ns, last_events: 0 }
    }

    /// The loss not yet announced, if there is any; it counts as announced now.
    pub fn unannounced(&mut self, totals: Loss) -> Option<Loss> {
        let new = totals.since(&self.announced);
        if new.total() == 0 {
            return None;
        }
        self.announced = totals;
        Some(new)
    }

    /// When a stats event is due: (seconds since the last one, events/s).
    pub fn stats_due(&mut self, now_ns: u64, events_written: u64) -> Option<(f64, f64)> {
        if self.stats_every_ns == 0 || now_ns.saturating_sub(self.last_stats_ns) < self.stats_every_ns {
            return None;
        }
        let secs = now_ns.saturating_sub(self.last_stats_ns) as f64 / 1e9;
        let rate = events_written.saturating_sub(self.last_events) as f64 / secs.max(1e-9);
        self.last_stats_ns = now_ns;
        self.last_events = events_written;
        Some((secs, rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_is_announced_once_as_a_delta() {
        let mut h = Health::new(0, 0);
        assert_eq!(h.unannounced(Loss::default()), None);
        let first = Loss { ring_buffer_drops: 5, queue_dropped: 1, ..Loss::default() };
        assert_eq!(h.unannounced(first), Some(first));
        assert_eq!(h.unannounced(first), None, "nothing new");
        let later = Loss { ring_buffer_drops: 7, udp_shed_in_kernel: 3, queue_dropped: 1, ..Loss::default() };
        let delta = h.unannounced(later).expect("new loss");
        assert_eq!((delta.ring_buffer_drops, delta.udp_shed_in_kernel, delta.queue_dropped), (2, 3, 0));
    }

    #[test]
    fn stats_every_interval_with_rate() {
        let mut h = Health::new(10_000_000_000, 0);
        assert_eq!(h.stats_due(5_000_000_000, 50), None);
        let (secs, rate) = h.stats_due(10_000_000_000, 100).expect("due");
        assert!((secs - 10.0).abs() < 1e-9 && (rate - 10.0).abs() < 1e-9);
        assert_eq!(h.stats_due(12_000_000_000, 120), None);
        assert_eq!(Health::new(0, 0).stats_due(u64::MAX, 1), None, "disabled");
    }
}
