//! Loss is never silent, and health is visible. Every counter the sensor
//! keeps is named once, in `COUNTERS`: its key in the stats line, its field
//! in the stats event (251) and, for what loses events, its field in the
//! loss event (250) and its words in the warning. The pipeline fills one
//! `Counters` snapshot from the kernel's maps, the trackers and the queue
//! (src/pipeline.rs); the line and both events are made from it here.

use crate::event::{Figure, SensorRecord, SENSOR_LOSS, SENSOR_STATS};

/// Every counter, in the order the stats event writes its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    EventsWritten,
    EventsFiltered,
    Lost,
    UdpPacketsSuppressed,
    UdpFlowsTracked,
    TcpPending,
    Processes,
    CpuBoosts,
    BurstsDeferred,
    RingBufferPeakInterval,
    ExcludedInKernel,
    Facts,
    DecodeErrors,
    RingBufferDrops,
    TcpAcceptsUnresolved,
    UdpShedInKernel,
    UdpShedInQueue,
    QueueDropped,
    OutputDropped,
    TcpOutbound,
    TcpInbound,
    TcpOutboundUnattributed,
    TcpHandshakesFailed,
    TcpInboundHandshakes,
    TcpInboundNeverAccepted,
    TcpPendingConnectsExpired,
    PendingConnecting,
    PendingUnaccepted,
    PendingEarlyAccepts,
    ProcessLookupsProc,
    ProcessUnknown,
    UdpFlowsReported,
    UdpFlowsExpired,
    UdpFlowsEvicted,
    UdpReportedWhileFull,
    UdpRepeatsSuppressed,
    UdpFlowsWalkedPeak,
    UdpRecvPeerUnknown,
    UdpSendDestUnknown,
    DnsQueries,
    DnsResponses,
    DnsAnswered,
    DnsTimedOut,
    DnsUnmatched,
    DnsMalformed,
    DnsCut,
    DnsPending,
    DnsPendingEvicted,
    DnsTcpGaps,
    DnsNamesLearned,
    DnsNamesCached,
    DnsNamesExpired,
    DnsNamesEvicted,
    QueueWritten,
    RingBufferPeak,
    FailedWritten,
    FailuresFolded,
    FailFoldsEvicted,
    ClosedWritten,
    LifecycleFiltered,
    TcpOpen,
    TcpOpenEvicted,
    TcpClosesUnmatched,
    TcpOpenAtStopWithoutFigures,
}

/// A counter's names.
#[derive(Debug)]
pub struct CounterName {
    pub counter: Counter,
    /// `key=value` in the stats line (SIGUSR1, at stop).
    pub key: Option<&'static str>,
    /// Its field in the stats event (251).
    pub stats_field: Option<&'static str>,
    /// What loses events: its field in the loss event (250) and its words in
    /// the warning on stderr.
    pub loss: Option<(&'static str, &'static str)>,
}

const fn named(counter: Counter, key: &'static str) -> CounterName {
    CounterName { counter, key: Some(key), stats_field: None, loss: None }
}

const fn shown(counter: Counter, key: &'static str, field: &'static str) -> CounterName {
    CounterName { counter, key: Some(key), stats_field: Some(field), loss: None }
}

const fn lost(counter: Counter, key: &'static str, field: &'static str, words: &'static str) -> CounterName {
    CounterName { counter, key: Some(key), stats_field: None, loss: Some((field, words)) }
}

/// The table, in `Counter`'s order (a test checks).
pub const COUNTERS: &[CounterName] = &[
    shown(Counter::EventsWritten, "events_written", "EventsWritten"),
    shown(Counter::EventsFiltered, "events_filtered", "EventsFiltered"),
    // Everything lost since start: the sum of the losses below.
    shown(Counter::Lost, "lost", "Lost"),
    shown(Counter::UdpPacketsSuppressed, "udp_packets_suppressed", "UdpPacketsSuppressed"),
    shown(Counter::UdpFlowsTracked, "udp_flows_tracked", "UdpFlowsTracked"),
    // pending_connecting + pending_unaccepted + pending_early_accepts.
    shown(Counter::TcpPending, "tcp_pending", "TcpPending"),
    shown(Counter::Processes, "processes", "Processes"),
    // Times the sensor took normal CPU priority to catch up (since start).
    shown(Counter::CpuBoosts, "cpu_boosts", "CpuBoosts"),
    // Bursts the reader left in the ring buffer until they ended.
    shown(Counter::BurstsDeferred, "bursts_deferred", "BurstsDeferred"),
    // Most unread bytes seen in the ring buffer during the stats interval.
    CounterName {
        counter: Counter::RingBufferPeakInterval,
        key: None,
        stats_field: Some("RingBufferPeakBytes"),
        loss: None,
    },
    named(Counter::ExcludedInKernel, "excluded_in_kernel"),
    named(Counter::Facts, "facts"),
    named(Counter::DecodeErrors, "decode_errors"),
    lost(Counter::RingBufferDrops, "ringbuf_drops", "RingBufferDrops", "ring buffer"),
    lost(Counter::TcpAcceptsUnresolved, "tcp_accepts_unresolved", "TcpAcceptsUnresolved", "TCP accepts unresolved"),
    lost(Counter::UdpShedInKernel, "udp_shed", "UdpShedInKernel", "UDP shed in kernel"),
    lost(Counter::UdpShedInQueue, "queue_udp_shed", "UdpShedInQueue", "UDP shed in queue"),
    lost(Counter::QueueDropped, "queue_dropped", "QueueDropped", "queue full"),
    lost(Counter::OutputDropped, "output_dropped", "OutputDropped", "output"),
    named(Counter::TcpOutbound, "tcp_outbound"),
    named(Counter::TcpInbound, "tcp_inbound"),
    named(Counter::TcpOutboundUnattributed, "tcp_outbound_unattributed"),
    named(Counter::TcpHandshakesFailed, "tcp_handshakes_failed"),
    named(Counter::TcpInboundHandshakes, "tcp_inbound_handshakes"),
    named(Counter::TcpInboundNeverAccepted, "tcp_inbound_never_accepted"),
    named(Counter::TcpPendingConnectsExpired, "tcp_pending_connects_expired"),
    named(Counter::PendingConnecting, "pending_connecting"),
    named(Counter::PendingUnaccepted, "pending_unaccepted"),
    named(Counter::PendingEarlyAccepts, "pending_early_accepts"),
    named(Counter::ProcessLookupsProc, "process_lookups_proc"),
    named(Counter::ProcessUnknown, "process_unknown"),
    named(Counter::UdpFlowsReported, "udp_flows_reported"),
    named(Counter::UdpFlowsExpired, "udp_flows_expired"),
    named(Counter::UdpFlowsEvicted, "udp_flows_evicted"),
    named(Counter::UdpReportedWhileFull, "udp_reported_while_full"),
    named(Counter::UdpRepeatsSuppressed, "udp_repeats_suppressed"),
    // Most entries one sweep found in the kernel's UDP flow table.
    named(Counter::UdpFlowsWalkedPeak, "udp_flows_walked_peak"),
    named(Counter::UdpRecvPeerUnknown, "udp_recv_peer_unknown"),
    named(Counter::UdpSendDestUnknown, "udp_send_dest_unknown"),
    // DNS (src/dns): queries seen leaving, responses arriving, queries answered
    // or timed out (both reported), responses no query matched, messages that
    // did not parse (whole or in part) or were longer than the kernel's copy.
    named(Counter::DnsQueries, "dns_queries"),
    named(Counter::DnsResponses, "dns_responses"),
    named(Counter::DnsAnswered, "dns_answered"),
    named(Counter::DnsTimedOut, "dns_timed_out"),
    named(Counter::DnsUnmatched, "dns_unmatched"),
    named(Counter::DnsMalformed, "dns_malformed"),
    named(Counter::DnsCut, "dns_cut"),
    named(Counter::DnsPending, "dns_pending"),
    // Pending queries dropped unreported: the table was full.
    named(Counter::DnsPendingEvicted, "dns_pending_evicted"),
    named(Counter::DnsTcpGaps, "dns_tcp_gaps"),
    // The host-name cache: addresses learned, held now, aged off, pushed out when full.
    named(Counter::DnsNamesLearned, "dns_names_learned"),
    named(Counter::DnsNamesCached, "dns_names_cached"),
    named(Counter::DnsNamesExpired, "dns_names_expired"),
    named(Counter::DnsNamesEvicted, "dns_names_evicted"),
    named(Counter::QueueWritten, "queue_written"),
    // Most unread bytes seen in the ring buffer since start.
    named(Counter::RingBufferPeak, "ringbuf_peak_bytes"),
    // Lifecycle events (252, 253; src/track/lifecycle.rs): failures written,
    // folded into one, and folds reported early because the table was full.
    named(Counter::FailedWritten, "failed_written"),
    named(Counter::FailuresFolded, "failures_folded"),
    named(Counter::FailFoldsEvicted, "fail_folds_evicted"),
    // Closes written; 252 and 253 events the config excluded.
    named(Counter::ClosedWritten, "closed_written"),
    named(Counter::LifecycleFiltered, "lifecycle_filtered"),
    // Reported TCP connections held for their close, held now; forgotten when
    // full (their close goes unreported); closes of no held connection; those
    // open at stop whose figures could not be read.
    named(Counter::TcpOpen, "tcp_open"),
    named(Counter::TcpOpenEvicted, "tcp_open_evicted"),
    named(Counter::TcpClosesUnmatched, "tcp_closes_unmatched"),
    named(Counter::TcpOpenAtStopWithoutFigures, "tcp_open_at_stop_without_figures"),
];

/// Every counter's value at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counters([u64; COUNTERS.len()]);

impl Default for Counters {
    fn default() -> Self {
        Self([0; COUNTERS.len()])
    }
}

impl Counters {
    pub fn get(&self, c: Counter) -> u64 {
        self.0[c as usize]
    }

    pub fn set(&mut self, c: Counter, value: u64) {
        self.0[c as usize] = value;
        if COUNTERS[c as usize].loss.is_some() {
            self.0[Counter::Lost as usize] =
                losses().fold(0u64, |sum, n| sum.saturating_add(self.0[n.counter as usize]));
        }
    }

    /// The losses, as totals since start.
    pub fn loss(&self) -> Loss {
        Loss(losses().map(|n| self.get(n.counter)).collect())
    }

    /// `stats: key=value ...`, every counter that has a key.
    pub fn stats_line(&self) -> String {
        let mut line = String::from("stats:");
        for n in COUNTERS {
            if let Some(key) = n.key {
                line.push_str(&format!(" {key}={}", self.get(n.counter)));
            }
        }
        line
    }
}

fn losses() -> impl Iterator<Item = &'static CounterName> {
    COUNTERS.iter().filter(|n| n.loss.is_some())
}

/// The loss counters (in table order) at one moment, or a delta of them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Loss(Vec<u64>);

impl Loss {
    pub fn total(&self) -> u64 {
        self.0.iter().fold(0u64, |sum, v| sum.saturating_add(*v))
    }

    fn since(&self, earlier: &Loss) -> Loss {
        Loss(self.0.iter().enumerate().map(|(i, v)| v.saturating_sub(earlier.0.get(i).copied().unwrap_or(0))).collect())
    }

    /// Event 250's fields, each with its count.
    pub fn figures(&self) -> impl Iterator<Item = (&'static str, &'static str, u64)> + '_ {
        losses().zip(&self.0).filter_map(|(n, v)| n.loss.map(|(field, words)| (field, words, *v)))
    }

    /// The warning for stderr: "ring buffer 1, TCP accepts unresolved 0, ...".
    pub fn words(&self) -> String {
        self.figures().map(|(_, words, v)| format!("{words} {v}")).collect::<Vec<_>>().join(", ")
    }

    /// Event 250 (`SENSOR_LOSS`) of this delta.
    pub fn event(&self, utc_time: String) -> SensorRecord {
        let values = self.figures().map(|(field, _, v)| (field, Figure::Count(v))).collect();
        SensorRecord { event_id: SENSOR_LOSS, utc_time, values }
    }
}

/// Event 251 (`SENSOR_STATS`): the interval, the rate, and every counter
/// the table shows there.
pub fn stats_event(utc_time: String, interval_seconds: f64, events_per_second: f64, c: &Counters) -> SensorRecord {
    let mut values =
        vec![("IntervalSeconds", Figure::Rate(interval_seconds)), ("EventsPerSecond", Figure::Rate(events_per_second))];
    values.extend(COUNTERS.iter().filter_map(|n| Some((n.stats_field?, Figure::Count(c.get(n.counter))))));
    SensorRecord { event_id: SENSOR_STATS, utc_time, values }
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

    fn totals(pairs: &[(Counter, u64)]) -> Counters {
        let mut c = Counters::default();
        for (counter, v) in pairs {
            c.set(*counter, *v);
        }
        c
    }

    #[test]
    fn loss_is_announced_once_as_a_delta() {
        let mut h = Health::new(0, 0);
        assert_eq!(h.unannounced(Counters::default().loss()), None);
        let first = totals(&[(Counter::RingBufferDrops, 5), (Counter::QueueDropped, 1)]);
        assert_eq!(first.get(Counter::Lost), 6, "Lost is the sum");
        assert_eq!(h.unannounced(first.loss()), Some(first.loss()));
        assert_eq!(h.unannounced(first.loss()), None, "nothing new");
        let later = totals(&[(Counter::RingBufferDrops, 7), (Counter::UdpShedInKernel, 3), (Counter::QueueDropped, 1)]);
        let delta = h.unannounced(later.loss()).expect("new loss");
        let got: Vec<(&str, u64)> = delta.figures().map(|(f, _, v)| (f, v)).collect();
        assert_eq!(
            got,
            [
                ("RingBufferDrops", 2),
                ("TcpAcceptsUnresolved", 0),
                ("UdpShedInKernel", 3),
                ("UdpShedInQueue", 0),
                ("QueueDropped", 0),
                ("OutputDropped", 0)
            ]
        );
        assert_eq!(
            delta.words(),
            "ring buffer 2, TCP accepts unresolved 0, UDP shed in kernel 3, UDP shed in queue 0, queue full 0, output 0"
        );
    }

    /// One name per counter, in `Counter`'s order; the stats event's fields
    /// in Sysmon-stable order; every key of the stats line unique.
    #[test]
    fn the_table_names_each_counter_once() {
        for (i, n) in COUNTERS.iter().enumerate() {
            assert_eq!(n.counter as usize, i, "{:?} out of place", n.counter);
        }
        let keys: Vec<&str> = COUNTERS.iter().filter_map(|n| n.key).collect();
        let unique: std::collections::BTreeSet<&&str> = keys.iter().collect();
        assert_eq!(unique.len(), keys.len(), "a key twice: {keys:?}");
        let stats = stats_event("t".into(), 1.0, 2.0, &Counters::default());
        let fields: Vec<&str> = stats.values.iter().map(|(f, _)| *f).collect();
        assert_eq!(
            fields,
            [
                "IntervalSeconds",
                "EventsPerSecond",
                "EventsWritten",
                "EventsFiltered",
                "Lost",
                "UdpPacketsSuppressed",
                "UdpFlowsTracked",
                "TcpPending",
                "Processes",
                "CpuBoosts",
                "BurstsDeferred",
                "RingBufferPeakBytes"
            ]
        );
        let line = totals(&[(Counter::Facts, 3), (Counter::OutputDropped, 2)]).stats_line();
        assert!(line.starts_with("stats: events_written=0 ") && line.contains(" facts=3 "), "{line}");
        assert!(line.contains(" lost=2 ") && line.contains(" output_dropped=2 "), "{line}");
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
