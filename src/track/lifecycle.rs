//! The whole life of a connection (events 252 and 253): why a handshake
//! failed, folding repeated failures of one process to one destination, and
//! the reported connections still open, keyed by socket, until their close.

use std::net::SocketAddr;

use super::table::AgeingTable;
use super::tcp::{Connection, Owner};
use crate::decode::TcpCounters;
use crate::event::Shared;

/// Which lifecycle events are reported (`--lifecycle`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LifecycleMode {
    /// Neither: event 3 only (no close facts in the kernel either).
    Off,
    /// Failed outbound handshakes (event 252).
    Failed,
    /// Ends of reported connections and expired UDP flows (event 253).
    Closed,
    /// Both.
    #[default]
    Both,
}

impl LifecycleMode {
    pub fn failed(self) -> bool {
        matches!(self, LifecycleMode::Failed | LifecycleMode::Both)
    }

    pub fn closed(self) -> bool {
        matches!(self, LifecycleMode::Closed | LifecycleMode::Both)
    }
}

/// include/net/tcp_states.h
const TCP_FIN_WAIT2: u32 = 5;
const TCP_TIME_WAIT: u32 = 6;
const TCP_LAST_ACK: u32 = 9;
const TCP_CLOSING: u32 = 11;

/// Why an outbound handshake never reached ESTABLISHED.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Failure {
    /// A RST answered the SYN (ECONNREFUSED).
    Refused,
    /// No answer: the SYNs ran out (ETIMEDOUT).
    Timeout,
    /// A RST during the handshake after a SYN came back (simultaneous open: ECONNRESET, EPIPE).
    Reset,
    /// ICMP: host or network unreachable (EHOSTUNREACH, ENETUNREACH, ...).
    Unreachable,
    /// Its own process closed it (or shut it down) before the handshake ended.
    Aborted,
}

impl Failure {
    /// From the socket's error at the transition to CLOSE.
    pub fn from_err(err: u32) -> Failure {
        match i32::try_from(err).unwrap_or(0) {
            libc::ECONNREFUSED => Failure::Refused,
            libc::ETIMEDOUT => Failure::Timeout,
            libc::ECONNRESET | libc::EPIPE | libc::ECONNABORTED => Failure::Reset,
            libc::EHOSTUNREACH
            | libc::ENETUNREACH
            | libc::EHOSTDOWN
            | libc::ENETDOWN
            | libc::ENONET
            | libc::EACCES
            | libc::EPERM
            | libc::EPROTO => Failure::Unreachable,
            _ => Failure::Aborted,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Refused => "refused",
            Failure::Timeout => "timeout",
            Failure::Reset => "reset",
            Failure::Unreachable => "unreachable",
            Failure::Aborted => "aborted",
        }
    }
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Both ends closed with FIN.
    Fin,
    /// A RST, received or sent (an abortive close, SO_LINGER 0).
    Reset,
    /// Retransmissions, keepalives or TCP_USER_TIMEOUT ran out.
    Timeout,
    /// Still open when the sensor stopped: its figures so far.
    SensorStop,
    /// UDP: idle past the window.
    Expired,
}

impl CloseReason {
    /// From the state the socket left (None: open at sensor stop) and its error.
    pub fn of(oldstate: Option<u32>, err: u32) -> CloseReason {
        let Some(state) = oldstate else {
            return CloseReason::SensorStop;
        };
        match i32::try_from(err).unwrap_or(0) {
            libc::ETIMEDOUT => return CloseReason::Timeout,
            libc::ECONNRESET | libc::EPIPE | libc::ECONNABORTED => return CloseReason::Reset,
            _ => {}
        }
        match state {
            // The orderly ends: TIME_WAIT after FIN_WAIT2 or CLOSING, the last ACK.
            TCP_FIN_WAIT2 | TCP_TIME_WAIT | TCP_LAST_ACK | TCP_CLOSING => CloseReason::Fin,
            // Straight from ESTABLISHED, CLOSE_WAIT or FIN_WAIT1 with no error:
            // this end aborted (a RST sent).
            _ => CloseReason::Reset,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Fin => "fin",
            CloseReason::Reset => "reset",
            CloseReason::Timeout => "timeout",
            CloseReason::SensorStop => "sensor-stop",
            CloseReason::Expired => "expired",
        }
    }
}

/// A failed outbound handshake (or several, folded), ready to be reported.
#[derive(Debug, Clone)]
pub struct FailedConnect {
    /// `established_ns` is when it failed (the last one, when folded).
    pub conn: Connection,
    pub failure: Failure,
    /// SYNs sent: the first and its retransmissions (summed when folded).
    pub attempts: u64,
    /// Failures this report stands for.
    pub count: u64,
}

/// What a connection carried, from the kernel's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseFigures {
    Tcp { bytes_sent: u64, bytes_received: u64, retransmitted: u64, srtt_us: u64 },
    Udp { bytes_sent: u64, bytes_received: u64, datagrams_sent: u64, datagrams_received: u64 },
}

/// A reported connection that ended, ready to be reported.
#[derive(Debug, Clone)]
pub struct ClosedConnection {
    pub conn: Connection,
    /// The RuleName its event 3 carried.
    pub rule_name: Shared,
    pub closed_ns: u64,
    pub figures: CloseFigures,
    pub reason: CloseReason,
}

impl ClosedConnection {
    pub fn duration_ms(&self) -> u64 {
        self.closed_ns.saturating_sub(self.conn.established_ns) / 1_000_000
    }
}

impl CloseFigures {
    /// TCP figures from the socket's counters. bytes_acked and
    /// bytes_received count sequence space, where a SYN and a FIN take one
    /// each: what they took is taken off (the connecting end's SYN is in its
    /// bytes_acked; an orderly close's FIN in both), so the figures are
    /// payload bytes.
    pub fn tcp(counters: &TcpCounters, reason: CloseReason, initiated: bool) -> CloseFigures {
        let fin = u64::from(reason == CloseReason::Fin);
        let syn = u64::from(initiated);
        CloseFigures::Tcp {
            bytes_sent: counters.bytes_acked.saturating_sub(fin + syn),
            bytes_received: counters.bytes_received.saturating_sub(fin),
            retransmitted: u64::from(counters.total_retrans),
            srtt_us: u64::from(counters.srtt_us),
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct LifecycleStats {
    /// Reported connections forgotten before their close (the table was full).
    pub open_evicted: u64,
    /// Close facts of sockets not in the table (their event 3 was filtered,
    /// never accepted, or evicted).
    pub closes_unmatched: u64,
    /// Connections open at sensor stop that no close fact covered (their
    /// namespace could not be iterated): reported without figures.
    pub open_at_stop_without_figures: u64,
    /// Failures folded into a later report.
    pub failures_folded: u64,
    /// Fold entries pushed out by a full table (their pending count reported early).
    pub folds_evicted: u64,
}

struct Open {
    conn: Connection,
    rule_name: Shared,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FoldKey {
    tgid: u32,
    netns: u32,
    remote: SocketAddr,
    failure: Failure,
}

struct Fold {
    last: FailedConnect,
    pending: u64,
    pending_attempts: u64,
}

/// Reported connections until their close, and the folding of failures.
pub struct LifecycleTracker {
    open: AgeingTable<u64, Open>,
    folds: AgeingTable<FoldKey, Fold>,
    fold_window_ns: u64,
    pub stats: LifecycleStats,
}

impl LifecycleTracker {
    /// `fold_window_ns` 0: every failure is reported on its own.
    pub fn new(open_capacity: usize, fold_capacity: usize, fold_window_ns: u64) -> Self {
        Self {
            open: AgeingTable::new(open_capacity),
            folds: AgeingTable::new(fold_capacity),
            fold_window_ns,
            stats: LifecycleStats::default(),
        }
    }

    pub fn open_connections(&self) -> usize {
        self.open.len()
    }

    /// A connection reported by event 3 (`rule_name` its RuleName), whose
    /// close the kernel will report by socket.
    pub fn opened(&mut self, sk: u64, conn: Connection, rule_name: Shared, now_ns: u64) {
        let d = self.open.insert(sk, Open { conn, rule_name }, now_ns);
        self.stats.open_evicted += u64::from(d.evicted.is_some()) + u64::from(d.replaced.is_some());
    }

    /// A close fact: the connection's report, if it was reported and open.
    pub fn closed(
        &mut self,
        sk: u64,
        ts_ns: u64,
        oldstate: Option<u32>,
        counters: &TcpCounters,
    ) -> Option<ClosedConnection> {
        let Some(open) = self.open.remove(&sk) else {
            self.stats.closes_unmatched += 1;
            return None;
        };
        let reason = CloseReason::of(oldstate, counters.err);
        let figures = CloseFigures::tcp(counters, reason, open.conn.initiated);
        Some(ClosedConnection { conn: open.conn, rule_name: open.rule_name, closed_ns: ts_ns, figures, reason })
    }

    /// At sensor stop, after the kernel's own report of what is open: the
    /// connections it did not cover, without figures.
    pub fn open_at_stop(&mut self, now_ns: u64) -> Vec<ClosedConnection> {
        let left = self.open.drain();
        self.stats.open_at_stop_without_figures += left.len() as u64;
        left.into_iter()
            .map(|(_, open)| ClosedConnection {
                conn: open.conn,
                rule_name: open.rule_name,
                closed_ns: now_ns,
                figures: CloseFigures::tcp(&TcpCounters::default(), CloseReason::SensorStop, false),
                reason: CloseReason::SensorStop,
            })
            .collect()
    }

    /// A failed handshake: what to report now. The first failure of a
    /// process to a destination (with one cause) is reported at once; the
    /// same again within the window is folded into one report at its end.
    pub fn failed(&mut self, failure: FailedConnect, now_ns: u64) -> Vec<FailedConnect> {
        if self.fold_window_ns == 0 {
            return vec![failure];
        }
        let Some(owner) = failure.conn.owner.as_ref() else {
            return vec![failure];
        };
        let key = fold_key(owner, &failure);
        if let Some(fold) = self.folds.get_mut(&key) {
            fold.pending += failure.count;
            fold.pending_attempts += failure.attempts;
            fold.last = failure;
            self.stats.failures_folded += 1;
            return Vec::new();
        }
        let mut report = vec![failure.clone()];
        let d = self.folds.insert(key, Fold { last: failure, pending: 0, pending_attempts: 0 }, now_ns);
        if let Some((_, evicted)) = d.evicted {
            self.stats.folds_evicted += 1;
            report.extend(folded(evicted));
        }
        report
    }

    /// Windows that ended: one report for what each folded; a destination
    /// still failing keeps folding for another window.
    pub fn expire_folds(&mut self, now_ns: u64) -> Vec<FailedConnect> {
        let mut report = Vec::new();
        for (key, fold) in self.folds.expire(now_ns, self.fold_window_ns) {
            if let Some(f) = folded(fold) {
                self.folds.insert(key, Fold { last: f.clone(), pending: 0, pending_attempts: 0 }, now_ns);
                report.push(f);
            }
        }
        report
    }

    /// At sensor stop: whatever is folded and not yet reported.
    pub fn drain_folds(&mut self) -> Vec<FailedConnect> {
        self.folds.drain().into_iter().filter_map(|(_, fold)| folded(fold)).collect()
    }
}

fn fold_key(owner: &Owner, failure: &FailedConnect) -> FoldKey {
    FoldKey {
        tgid: owner.task.tgid,
        netns: failure.conn.endpoints.netns,
        remote: failure.conn.endpoints.remote,
        failure: failure.failure,
    }
}

/// The report for what a fold holds, if it holds anything.
fn folded(fold: Fold) -> Option<FailedConnect> {
    (fold.pending > 0).then(|| FailedConnect { count: fold.pending, attempts: fold.pending_attempts, ..fold.last })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Endpoints, TaskIds};
    use crate::track::tcp::{Attribution, Protocol};

    const WINDOW: u64 = 1_000;

    fn conn(pid: u32, remote: &str, ts: u64) -> Connection {
        Connection {
            sk: 1,
            protocol: Protocol::Tcp,
            established_ns: ts,
            endpoints: Endpoints {
                netns: 1,
                local: "127.0.0.1:5000".parse().expect("addr"),
                remote: remote.parse().expect("addr"),
            },
            initiated: true,
            owner: Some(Owner { task: TaskIds { tgid: pid, tid: pid, uid: 0 }, process: None }),
            attribution: Attribution::Connect,
        }
    }

    fn failure(pid: u32, remote: &str, ts: u64, why: Failure) -> FailedConnect {
        FailedConnect { conn: conn(pid, remote, ts), failure: why, attempts: 2, count: 1 }
    }

    #[test]
    fn causes_from_the_socket_error() {
        assert_eq!(Failure::from_err(libc::ECONNREFUSED as u32), Failure::Refused);
        assert_eq!(Failure::from_err(libc::ETIMEDOUT as u32), Failure::Timeout);
        assert_eq!(Failure::from_err(libc::ECONNRESET as u32), Failure::Reset);
        assert_eq!(Failure::from_err(libc::EHOSTUNREACH as u32), Failure::Unreachable);
        assert_eq!(Failure::from_err(libc::ENETUNREACH as u32), Failure::Unreachable);
        assert_eq!(Failure::from_err(0), Failure::Aborted);
    }

    #[test]
    fn close_reasons() {
        assert_eq!(CloseReason::of(Some(TCP_FIN_WAIT2), 0), CloseReason::Fin);
        assert_eq!(CloseReason::of(Some(TCP_LAST_ACK), 0), CloseReason::Fin);
        assert_eq!(CloseReason::of(Some(TCP_CLOSING), 0), CloseReason::Fin);
        assert_eq!(CloseReason::of(Some(1), 0), CloseReason::Reset, "ESTABLISHED -> CLOSE: we sent a RST");
        assert_eq!(CloseReason::of(Some(1), libc::ECONNRESET as u32), CloseReason::Reset);
        assert_eq!(CloseReason::of(Some(8), libc::EPIPE as u32), CloseReason::Reset);
        assert_eq!(CloseReason::of(Some(1), libc::ETIMEDOUT as u32), CloseReason::Timeout);
        assert_eq!(CloseReason::of(None, 0), CloseReason::SensorStop);
    }

    #[test]
    fn fin_is_not_counted_as_payload() {
        let c = TcpCounters { bytes_acked: 101, bytes_received: 201, total_retrans: 1, srtt_us: 9, err: 0 };
        assert_eq!(
            CloseFigures::tcp(&c, CloseReason::Fin, false),
            CloseFigures::Tcp { bytes_sent: 100, bytes_received: 200, retransmitted: 1, srtt_us: 9 }
        );
        assert!(matches!(CloseFigures::tcp(&c, CloseReason::Reset, false), CloseFigures::Tcp { bytes_sent: 101, .. }));
        // The connecting end's SYN is acknowledged too.
        assert!(matches!(
            CloseFigures::tcp(&c, CloseReason::Fin, true),
            CloseFigures::Tcp { bytes_sent: 99, bytes_received: 200, .. }
        ));
    }

    #[test]
    fn open_connections_match_their_close_by_socket() {
        let mut t = LifecycleTracker::new(16, 16, WINDOW);
        t.opened(0xa, conn(1, "10.0.0.1:80", 1_000_000), "-".into(), 1);
        let c = TcpCounters { bytes_acked: 11, bytes_received: 21, ..Default::default() };
        assert!(t.closed(0xb, 5, Some(TCP_FIN_WAIT2), &c).is_none());
        assert_eq!(t.stats.closes_unmatched, 1);
        let closed = t.closed(0xa, 8_000_000, Some(TCP_FIN_WAIT2), &c).expect("matched");
        assert_eq!((closed.reason, closed.duration_ms()), (CloseReason::Fin, 7));
        assert_eq!(t.open_connections(), 0);
    }

    #[test]
    fn the_open_table_is_bounded_and_drained_at_stop() {
        let mut t = LifecycleTracker::new(2, 16, WINDOW);
        for sk in 0..3 {
            t.opened(sk, conn(1, "10.0.0.1:80", sk), "-".into(), sk);
        }
        assert_eq!((t.open_connections(), t.stats.open_evicted), (2, 1));
        let left = t.open_at_stop(10);
        assert_eq!(left.len(), 2);
        assert!(left.iter().all(|c| c.reason == CloseReason::SensorStop));
        assert_eq!(t.open_connections(), 0);
    }

    #[test]
    fn repeated_failures_fold_into_one_report_per_window() {
        let mut t = LifecycleTracker::new(16, 16, WINDOW);
        assert_eq!(t.failed(failure(1, "10.0.0.1:80", 10, Failure::Refused), 10).len(), 1, "the first at once");
        for ts in 20..25 {
            assert!(t.failed(failure(1, "10.0.0.1:80", ts, Failure::Refused), ts).is_empty());
        }
        // Another destination, cause or process is not folded with it.
        assert_eq!(t.failed(failure(1, "10.0.0.1:81", 30, Failure::Refused), 30).len(), 1);
        assert_eq!(t.failed(failure(1, "10.0.0.1:80", 30, Failure::Timeout), 30).len(), 1);
        assert_eq!(t.failed(failure(2, "10.0.0.1:80", 30, Failure::Refused), 30).len(), 1);
        assert!(t.expire_folds(500).is_empty(), "the window is not over");
        let folded = t.expire_folds(10 + WINDOW + 1);
        assert_eq!(folded.len(), 1, "{folded:?}");
        assert_eq!((folded[0].count, folded[0].attempts, folded[0].conn.established_ns), (5, 10, 24));
        // Still failing: the next window folds again, without a report at once.
        assert!(t.failed(failure(1, "10.0.0.1:80", 1_100, Failure::Refused), 1_100).is_empty());
        let folded = t.expire_folds(2 * WINDOW + 20);
        assert_eq!(folded.iter().map(|f| f.count).collect::<Vec<_>>(), vec![1]);
        // A quiet window ends the fold; the next failure is reported at once.
        assert!(t.expire_folds(4 * WINDOW).is_empty());
        assert_eq!(t.failed(failure(1, "10.0.0.1:80", 5_000, Failure::Refused), 5_000).len(), 1);
    }

    #[test]
    fn folds_are_bounded_and_flushed() {
        let mut t = LifecycleTracker::new(16, 2, WINDOW);
        t.failed(failure(1, "10.0.0.1:1", 1, Failure::Refused), 1);
        t.failed(failure(1, "10.0.0.1:1", 2, Failure::Refused), 2);
        t.failed(failure(1, "10.0.0.1:2", 3, Failure::Refused), 3);
        let out = t.failed(failure(1, "10.0.0.1:3", 4, Failure::Refused), 4);
        assert_eq!(out.len(), 2, "the new one and the evicted fold's count: {out:?}");
        assert_eq!((out[1].count, out[1].conn.endpoints.remote.port()), (1, 1));
        t.failed(failure(1, "10.0.0.1:3", 5, Failure::Refused), 5);
        let rest = t.drain_folds();
        assert_eq!(rest.iter().map(|f| f.count).collect::<Vec<_>>(), vec![1]);
        let mut off = LifecycleTracker::new(16, 16, 0);
        for ts in 0..3 {
            assert_eq!(off.failed(failure(1, "10.0.0.1:1", ts, Failure::Refused), ts).len(), 1);
        }
    }
}
