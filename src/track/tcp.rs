//! TCP connection tracking: pairs the fact that names the process with the
//! fact that proves the connection, both keyed by the kernel socket pointer.
//!
//! Outbound: CLOSE->SYN_SENT (connecting task) + SYN_SENT->ESTABLISHED.
//! Inbound: accept() returning the socket, alone (the kernel writes no fact
//! when an inbound handshake ends, only counts it). A TCP Fast Open child is
//! accepted in SYN_RECV: its SYN_RECV->ESTABLISHED fact is then written, and
//! may come before or after the accept.

use std::sync::Arc;

use super::process::ProcessInfo;
use super::table::AgeingTable;
use crate::decode::{Endpoints, TaskIds};

/// How the process of a connection was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attribution {
    /// The task that moved the socket to SYN_SENT.
    Connect,
    /// The task whose accept() returned the socket.
    Accept,
    /// No process fact was seen for this socket.
    Unattributed,
    /// UDP: the sending task (sock_send_length / cgroup sendmsg).
    Send,
    /// UDP: the sending task, seen through a raw packet socket (the seed's way).
    Packet,
    /// UDP: the receiving task (sock_recv_length).
    Receive,
}

impl Attribution {
    pub fn as_str(self) -> &'static str {
        match self {
            Attribution::Connect => "connect",
            Attribution::Accept => "accept",
            Attribution::Unattributed => "unattributed",
            Attribution::Send => "send",
            Attribution::Packet => "packet",
            Attribution::Receive => "receive",
        }
    }
}

/// The process side of a connection, as known when its fact was handled.
#[derive(Debug, Clone)]
pub struct Owner {
    pub task: TaskIds,
    pub process: Option<Arc<ProcessInfo>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    /// The IP protocol number (for Community ID).
    pub fn ip_protocol(self) -> u8 {
        match self {
            Protocol::Tcp => libc::IPPROTO_TCP as u8,
            Protocol::Udp => libc::IPPROTO_UDP as u8,
        }
    }
}

/// A connection (TCP) or new flow (UDP), ready to be reported.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The kernel socket (TCP; 0 for UDP): how its close is matched.
    pub sk: u64,
    pub protocol: Protocol,
    /// TCP: when it was established; UDP: the flow's first packet.
    pub established_ns: u64,
    pub endpoints: Endpoints,
    pub initiated: bool,
    pub owner: Option<Owner>,
    pub attribution: Attribution,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct TcpStats {
    pub outbound_reported: u64,
    pub inbound_reported: u64,
    pub outbound_unattributed: u64,
    pub handshakes_failed: u64,
    /// Fast Open children established while being accepted whose accept
    /// never came (aged off or evicted).
    pub inbound_never_accepted: u64,
    pub pending_connects_expired: u64,
}

struct PendingInbound {
    established_ns: u64,
    endpoints: Endpoints,
}

/// accept() returned it before it was ESTABLISHED (a TCP Fast Open child).
struct EarlyAccept {
    owner: Owner,
    accepted_ns: u64,
    endpoints: Endpoints,
}

pub struct TcpTracker {
    connecting: AgeingTable<u64, Owner>,
    established_inbound: AgeingTable<u64, PendingInbound>,
    accepted_early: AgeingTable<u64, EarlyAccept>,
    max_age_ns: u64,
    pub stats: TcpStats,
}

impl TcpTracker {
    pub fn new(capacity: usize, max_age_ns: u64) -> Self {
        Self {
            connecting: AgeingTable::new(capacity),
            established_inbound: AgeingTable::new(capacity),
            accepted_early: AgeingTable::new(capacity),
            max_age_ns,
            stats: TcpStats::default(),
        }
    }

    pub fn pending(&self) -> (usize, usize, usize) {
        (self.connecting.len(), self.established_inbound.len(), self.accepted_early.len())
    }

    pub fn on_connect(&mut self, sk: u64, owner: Owner, now_ns: u64) {
        let d = self.connecting.insert(sk, owner, now_ns);
        // A reused socket pointer without a CLOSE we saw, or a full table.
        self.stats.pending_connects_expired += u64::from(d.replaced.is_some()) + u64::from(d.evicted.is_some());
    }

    /// The handshake ended without ESTABLISHED. A socket the process had
    /// already accepted (TCP Fast Open: data may have been exchanged) is still
    /// a connection it took, and is reported (the first value). The second
    /// is the process of a failed outbound attempt (event 252).
    pub fn on_aborted(&mut self, sk: u64) -> (Option<Connection>, Option<Owner>) {
        let failed = self.connecting.remove(&sk);
        if failed.is_some() {
            self.stats.handshakes_failed += 1;
        }
        let early = self.accepted_early.remove(&sk).map(|early| self.report_early(sk, early));
        (early, failed)
    }

    fn report_early(&mut self, sk: u64, early: EarlyAccept) -> Connection {
        self.stats.inbound_reported += 1;
        inbound(sk, early.accepted_ns, early.endpoints, early.owner, Attribution::Accept)
    }

    pub fn on_established(&mut self, ts_ns: u64, sk: u64, outbound: bool, endpoints: Endpoints) -> Option<Connection> {
        // A socket seen connecting that arrives from SYN_RECV made a
        // simultaneous open (SYN_SENT -> SYN_RECV -> ESTABLISHED): it is still
        // the connecting process's outbound connection, and nobody accepts it.
        let owner = self.connecting.remove(&sk);
        if outbound || owner.is_some() {
            self.stats.outbound_reported += 1;
            if owner.is_none() {
                self.stats.outbound_unattributed += 1;
            }
            let attribution = if owner.is_some() { Attribution::Connect } else { Attribution::Unattributed };
            return Some(Connection {
                sk,
                protocol: Protocol::Tcp,
                established_ns: ts_ns,
                endpoints,
                initiated: true,
                owner,
                attribution,
            });
        }
        if let Some(early) = self.accepted_early.remove(&sk) {
            self.stats.inbound_reported += 1;
            return Some(inbound(sk, ts_ns, endpoints, early.owner, Attribution::Accept));
        }
        let d = self.established_inbound.insert(sk, PendingInbound { established_ns: ts_ns, endpoints }, ts_ns);
        self.stats.inbound_never_accepted += u64::from(d.replaced.is_some()) + u64::from(d.evicted.is_some());
        None
    }

    /// An accept() returned a TCP socket: the report of the connection,
    /// unless it is a Fast Open child still in SYN_RECV (its ESTABLISHED or
    /// its abort follows, and reports it).
    pub fn on_accept(
        &mut self,
        sk: u64,
        endpoints: Endpoints,
        handshake_done: bool,
        owner: Owner,
        now_ns: u64,
    ) -> Option<Connection> {
        // A Fast Open child that became ESTABLISHED while being accepted.
        if let Some(p) = self.established_inbound.remove(&sk) {
            self.stats.inbound_reported += 1;
            return Some(inbound(sk, p.established_ns, p.endpoints, owner, Attribution::Accept));
        }
        if handshake_done {
            self.stats.inbound_reported += 1;
            return Some(inbound(sk, now_ns, endpoints, owner, Attribution::Accept));
        }
        let early = EarlyAccept { owner, accepted_ns: now_ns, endpoints };
        let (evicted_sk, evicted) = self.accepted_early.insert(sk, early, now_ns).evicted?;
        Some(self.report_early(evicted_sk, evicted))
    }

    /// Ages off entries whose other half never came; accepted sockets that
    /// never became ESTABLISHED are reported (returned) rather than lost.
    pub fn expire(&mut self, now_ns: u64) -> Vec<Connection> {
        self.stats.pending_connects_expired += self.connecting.expire(now_ns, self.max_age_ns).len() as u64;
        self.stats.inbound_never_accepted += self.established_inbound.expire(now_ns, self.max_age_ns).len() as u64;
        let early = self.accepted_early.expire(now_ns, self.max_age_ns);
        early.into_iter().map(|(sk, e)| self.report_early(sk, e)).collect()
    }
}

fn inbound(sk: u64, established_ns: u64, endpoints: Endpoints, owner: Owner, attribution: Attribution) -> Connection {
    Connection {
        sk,
        protocol: Protocol::Tcp,
        established_ns,
        endpoints,
        initiated: false,
        owner: Some(owner),
        attribution,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGE: u64 = 1_000;

    fn ep(remote: &str) -> Endpoints {
        Endpoints { netns: 1, local: "127.0.0.1:5000".parse().expect("addr"), remote: remote.parse().expect("addr") }
    }

    fn owner(pid: u32) -> Owner {
        Owner { task: TaskIds { tgid: pid, tid: pid, uid: 0 }, process: None }
    }

    #[test]
    fn outbound_matches_connect_by_socket() {
        let mut t = TcpTracker::new(16, AGE);
        t.on_connect(0xa, owner(10), 1);
        t.on_connect(0xb, owner(11), 2);
        let c = t.on_established(5, 0xb, true, ep("127.0.0.1:80")).expect("reported");
        assert_eq!(c.owner.map(|o| o.task.tgid), Some(11));
        assert!(c.initiated);
        assert_eq!(c.attribution, Attribution::Connect);
        assert_eq!(t.pending().0, 1);
    }

    #[test]
    fn simultaneous_open_is_the_connecting_process_outbound() {
        let mut t = TcpTracker::new(16, AGE);
        t.on_connect(0xa, owner(10), 1);
        // SYN_SENT -> SYN_RECV -> ESTABLISHED: the kernel fact says "from SYN_RECV".
        let c = t.on_established(5, 0xa, false, ep("127.0.0.1:80")).expect("reported at once");
        assert!(c.initiated);
        assert_eq!((c.owner.map(|o| o.task.tgid), c.attribution), (Some(10), Attribution::Connect));
        assert_eq!(t.pending(), (0, 0, 0), "not waiting for an accept");
        assert_eq!((t.stats.outbound_reported, t.stats.inbound_never_accepted), (1, 0));
    }

    #[test]
    fn refused_connect_is_dropped_and_counted() {
        let mut t = TcpTracker::new(16, AGE);
        t.on_connect(0xa, owner(10), 1);
        let (report, failed) = t.on_aborted(0xa);
        assert!(report.is_none());
        assert_eq!(failed.map(|o| o.task.tgid), Some(10), "the failed attempt's process");
        assert_eq!(t.stats.handshakes_failed, 1);
        assert_eq!(t.pending(), (0, 0, 0));
    }

    #[test]
    fn established_without_connect_is_reported_unattributed() {
        let mut t = TcpTracker::new(16, AGE);
        let c = t.on_established(5, 0xa, true, ep("127.0.0.1:80")).expect("reported");
        assert_eq!(c.attribution, Attribution::Unattributed);
        assert_eq!(t.stats.outbound_unattributed, 1);
    }

    #[test]
    fn pending_connect_ages_off() {
        let mut t = TcpTracker::new(16, AGE);
        t.on_connect(0xa, owner(10), 100);
        t.on_connect(0xb, owner(11), 900);
        t.expire(1500);
        assert_eq!(t.pending().0, 1);
        assert_eq!(t.stats.pending_connects_expired, 1);
        assert!(t.on_established(1600, 0xb, true, ep("127.0.0.1:80")).is_some_and(|c| c.owner.is_some()));
    }

    #[test]
    fn pending_table_is_bounded() {
        let mut t = TcpTracker::new(4, AGE);
        for sk in 0..10u64 {
            t.on_connect(sk, owner(sk as u32), sk);
        }
        assert_eq!(t.pending().0, 4);
        assert_eq!(t.stats.pending_connects_expired, 6);
        let c = t.on_established(20, 9, true, ep("127.0.0.1:80")).expect("reported");
        assert_eq!(c.owner.map(|o| o.task.tgid), Some(9), "the newest survive");
    }

    #[test]
    fn an_accept_after_the_handshake_is_the_report() {
        let mut t = TcpTracker::new(16, AGE);
        let c = t.on_accept(0xa, ep("10.0.0.1:999"), true, owner(20), 6).expect("reported at once");
        assert!(!c.initiated);
        assert_eq!((c.established_ns, c.attribution), (6, Attribution::Accept));
        assert_eq!(c.owner.map(|o| o.task.tgid), Some(20));
        assert_eq!(c.endpoints.remote, "10.0.0.1:999".parse().expect("addr"));
        assert_eq!(t.pending(), (0, 0, 0), "nothing left waiting");
        assert_eq!(t.stats.inbound_reported, 1);
    }

    #[test]
    fn fast_open_child_matches_its_established_either_order() {
        let mut t = TcpTracker::new(16, AGE);
        // Accepted in SYN_RECV, ESTABLISHED later.
        assert!(t.on_accept(0xb, ep("10.0.0.2:999"), false, owner(21), 7).is_none());
        let c = t.on_established(8, 0xb, false, ep("10.0.0.2:999")).expect("matched late");
        assert_eq!((c.owner.map(|o| o.task.tgid), c.established_ns), (Some(21), 8));
        // ESTABLISHED while being accepted: its fact comes first.
        assert!(t.on_established(9, 0xc, false, ep("10.0.0.3:999")).is_none());
        let c = t.on_accept(0xc, ep("10.0.0.3:999"), true, owner(22), 10).expect("matched");
        assert_eq!((c.owner.map(|o| o.task.tgid), c.established_ns), (Some(22), 9));
        assert_eq!(t.pending(), (0, 0, 0));
        assert_eq!(t.stats.inbound_reported, 2);
    }

    #[test]
    fn accepted_before_established_is_reported_even_if_it_never_is() {
        let mut t = TcpTracker::new(16, AGE);
        assert!(t.on_accept(0xa, ep("10.0.0.1:999"), false, owner(20), 5).is_none());
        let c = t.on_aborted(0xa).0.expect("an accepted TFO child that closed in SYN_RECV");
        assert_eq!((c.established_ns, c.owner.map(|o| o.task.tgid)), (5, Some(20)));
        t.on_accept(0xb, ep("10.0.0.2:999"), false, owner(21), 6);
        let aged = t.expire(6 + AGE + 1);
        assert_eq!(aged.len(), 1, "reported when it ages off, not lost");
        assert_eq!(t.stats.inbound_reported, 2);
    }

    #[test]
    fn early_accepts_are_bounded_and_the_evicted_reported() {
        let mut t = TcpTracker::new(2, AGE);
        assert!(t.on_accept(1, ep("10.0.0.1:1"), false, owner(20), 1).is_none());
        assert!(t.on_accept(2, ep("10.0.0.1:2"), false, owner(20), 2).is_none());
        let c = t.on_accept(3, ep("10.0.0.1:3"), false, owner(20), 3).expect("the oldest, evicted");
        assert_eq!(c.endpoints.remote.port(), 1);
        assert_eq!(t.pending().2, 2);
    }

    #[test]
    fn never_accepted_is_counted_not_reported() {
        let mut t = TcpTracker::new(16, AGE);
        assert!(t.on_established(5, 0xa, false, ep("10.0.0.1:999")).is_none());
        assert!(t.expire(5 + AGE + 1).is_empty());
        assert_eq!(t.stats.inbound_never_accepted, 1);
        assert_eq!(t.stats.inbound_reported, 0);
    }
}
