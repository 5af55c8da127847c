//! TCP connection tracking: pairs the fact that names the process with the
//! fact that proves the connection, both keyed by the kernel socket pointer.
//!
//! Outbound: CLOSE->SYN_SENT (connecting task) + SYN_SENT->ESTABLISHED.
//! Inbound: SYN_RECV->ESTABLISHED + accept() returning that socket. The
//! accept may come first (a TCP Fast Open child is accepted in SYN_RECV).

use std::net::SocketAddr;
use std::sync::Arc;

use super::process::ProcessInfo;
use super::table::AgeingTable;
use crate::decode::{Endpoints, TaskIds};

/// How the process of a connection was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attribution {
    /// The task that moved the socket to SYN_SENT.
    Connect,
    /// The task whose accept() returned the socket, matched by socket.
    Accept,
    /// The task whose accept() wrote this peer address (fallback).
    AddressMatch,
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
            Attribution::AddressMatch => "address-match",
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
            Protocol::Tcp => crate::format::community_id::PROTO_TCP,
            Protocol::Udp => crate::format::community_id::PROTO_UDP,
        }
    }
}

/// A connection (TCP) or new flow (UDP), ready to be reported.
#[derive(Debug, Clone)]
pub struct Connection {
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
    /// Inbound connections established but never accept()ed (aged off or evicted).
    pub inbound_never_accepted: u64,
    pub pending_connects_expired: u64,
    pub accepts_unmatched: u64,
}

struct PendingInbound {
    established_ns: u64,
    endpoints: Endpoints,
}

/// accept() returned it before it was ESTABLISHED (a TCP Fast Open child).
struct EarlyAccept {
    owner: Owner,
    accepted_ns: u64,
    endpoints: Option<Endpoints>,
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
    /// a connection it took, and is reported.
    pub fn on_aborted(&mut self, sk: u64) -> Option<Connection> {
        if self.connecting.remove(&sk).is_some() {
            self.stats.handshakes_failed += 1;
        }
        let early = self.accepted_early.remove(&sk)?;
        self.report_early(early)
    }

    fn report_early(&mut self, early: EarlyAccept) -> Option<Connection> {
        match early.endpoints {
            Some(endpoints) => {
                self.stats.inbound_reported += 1;
                Some(inbound(early.accepted_ns, endpoints, early.owner, Attribution::Accept))
            }
            None => {
                self.stats.accepts_unmatched += 1;
                None
            }
        }
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
            return Some(inbound(ts_ns, endpoints, early.owner, Attribution::Accept));
        }
        let d = self.established_inbound.insert(sk, PendingInbound { established_ns: ts_ns, endpoints }, ts_ns);
        self.stats.inbound_never_accepted += u64::from(d.replaced.is_some()) + u64::from(d.evicted.is_some());
        None
    }

    /// An accept() returned a TCP socket. `sk` is None when the kernel could
    /// not resolve it; then `peer` (the caller's sockaddr) is matched instead.
    pub fn on_accept(
        &mut self,
        sk: Option<u64>,
        peer: Option<SocketAddr>,
        endpoints: Option<Endpoints>,
        owner: Owner,
        now_ns: u64,
    ) -> Option<Connection> {
        let (key, attribution) = match (sk, peer) {
            (Some(sk), _) => (Some(sk), Attribution::Accept),
            (None, Some(peer)) => {
                let key = self.established_inbound.find(|p| same_peer(&p.endpoints.remote, &peer));
                (key, Attribution::AddressMatch)
            }
            (None, None) => (None, Attribution::AddressMatch),
        };
        if let Some(p) = key.and_then(|k| self.established_inbound.remove(&k)) {
            self.stats.inbound_reported += 1;
            return Some(inbound(p.established_ns, p.endpoints, owner, attribution));
        }
        match sk {
            Some(sk) => {
                let early = EarlyAccept { owner, accepted_ns: now_ns, endpoints };
                if let Some((_, evicted)) = self.accepted_early.insert(sk, early, now_ns).evicted {
                    return self.report_early(evicted);
                }
            }
            None => self.stats.accepts_unmatched += 1,
        }
        None
    }

    /// Ages off entries whose other half never came; accepted sockets that
    /// never became ESTABLISHED are reported (returned) rather than lost.
    pub fn expire(&mut self, now_ns: u64) -> Vec<Connection> {
        self.stats.pending_connects_expired += self.connecting.expire(now_ns, self.max_age_ns).len() as u64;
        self.stats.inbound_never_accepted += self.established_inbound.expire(now_ns, self.max_age_ns).len() as u64;
        let early = self.accepted_early.expire(now_ns, self.max_age_ns);
        early.into_iter().filter_map(|(_, e)| self.report_early(e)).collect()
    }
}

fn inbound(established_ns: u64, endpoints: Endpoints, owner: Owner, attribution: Attribution) -> Connection {
    Connection { protocol: Protocol::Tcp, established_ns, endpoints, initiated: false, owner: Some(owner), attribution }
}

/// A dual-stack socket reports an IPv4 peer as ::ffff:a.b.c.d on one side
/// and a.b.c.d on the other: compare them as the same address.
fn same_peer(a: &SocketAddr, b: &SocketAddr) -> bool {
    a.port() == b.port() && crate::enrich::canonical_ip(a.ip()) == crate::enrich::canonical_ip(b.ip())
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
        assert!(t.on_aborted(0xa).is_none());
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
    fn inbound_matches_accept_by_socket_either_order() {
        let mut t = TcpTracker::new(16, AGE);
        assert!(t.on_established(5, 0xa, false, ep("10.0.0.1:999")).is_none());
        let c = t.on_accept(Some(0xa), None, None, owner(20), 6).expect("matched");
        assert!(!c.initiated);
        assert_eq!((c.established_ns, c.attribution), (5, Attribution::Accept));

        assert!(t.on_accept(Some(0xb), None, None, owner(21), 7).is_none());
        let c = t.on_established(8, 0xb, false, ep("10.0.0.2:999")).expect("matched late");
        assert_eq!(c.owner.map(|o| o.task.tgid), Some(21));
        assert_eq!(t.pending(), (0, 0, 0));
    }

    #[test]
    fn accepted_before_established_is_reported_even_if_it_never_is() {
        let mut t = TcpTracker::new(16, AGE);
        assert!(t.on_accept(Some(0xa), None, Some(ep("10.0.0.1:999")), owner(20), 5).is_none());
        let c = t.on_aborted(0xa).expect("an accepted TFO child that closed in SYN_RECV");
        assert_eq!((c.established_ns, c.owner.map(|o| o.task.tgid)), (5, Some(20)));
        t.on_accept(Some(0xb), None, Some(ep("10.0.0.2:999")), owner(21), 6);
        let aged = t.expire(6 + AGE + 1);
        assert_eq!(aged.len(), 1, "reported when it ages off, not lost");
        assert_eq!(t.stats.inbound_reported, 2);
    }

    #[test]
    fn never_accepted_is_counted_not_reported() {
        let mut t = TcpTracker::new(16, AGE);
        assert!(t.on_established(5, 0xa, false, ep("10.0.0.1:999")).is_none());
        assert!(t.expire(5 + AGE + 1).is_empty());
        assert_eq!(t.stats.inbound_never_accepted, 1);
        assert_eq!(t.stats.inbound_reported, 0);
    }

    #[test]
    fn address_match_fallback_handles_mapped_ipv4() {
        let mut t = TcpTracker::new(16, AGE);
        t.on_established(5, 0xa, false, ep("[::ffff:169.254.1.2]:4000"));
        t.on_established(6, 0xb, false, ep("169.254.1.3:4000"));
        let c =
            t.on_accept(None, Some("169.254.1.2:4000".parse().expect("addr")), None, owner(30), 7).expect("matched");
        assert_eq!(c.attribution, Attribution::AddressMatch);
        assert_eq!(c.established_ns, 5);
        assert!(t.on_accept(None, Some("169.254.1.9:4000".parse().expect("addr")), None, owner(30), 8).is_none());
        assert_eq!(t.stats.accepts_unmatched, 1);
    }
}
