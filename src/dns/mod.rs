//! DNS: the queries a host's processes make and the answers they get, from the
//! messages the kernel copies on port 53 (dns_capture.bpf.h). A query is taken
//! leaving, with its sender; the response arriving is matched to it by
//! (network namespace, client ip:port, server ip:port, transport, DNS id,
//! question type) and the pair becomes one DnsQuery (event 22). A query with
//! no response within the timeout is reported too (status 1460). Pending
//! queries are bounded (the oldest go, counted). The parser is `parse`, TCP's
//! framing `tcp`, the per-namespace name cache `names`.

pub mod names;
pub mod parse;
pub mod tcp;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use crate::decode::{DnsPacket, TaskIds};
use parse::{Message, Record};
use tcp::{StreamKey, Streams};

/// QueryStatus of a query no response came for: Windows' ERROR_TIMEOUT.
pub const STATUS_TIMEOUT: u32 = 1460;
/// QueryStatus of a response that did not parse: Windows' DNS_ERROR_BAD_PACKET.
pub const STATUS_BAD_PACKET: u32 = 9502;

/// `--dns`: what DNS gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DnsMode {
    /// No capture at all (nothing is loaded for it).
    Off,
    /// DnsQuery events (22) only.
    Events,
    /// Host names on NetworkConnect only.
    Names,
    /// Both.
    Both,
}

impl DnsMode {
    pub fn capture(self) -> bool {
        self != DnsMode::Off
    }
    pub fn events(self) -> bool {
        matches!(self, DnsMode::Events | DnsMode::Both)
    }
    pub fn names(self) -> bool {
        matches!(self, DnsMode::Names | DnsMode::Both)
    }
}

/// The DNS stage's settings.
#[derive(Debug, Clone, Copy)]
pub struct DnsSettings {
    pub mode: DnsMode,
    pub timeout_ns: u64,
    pub pending_capacity: usize,
    pub cache_capacity: usize,
    pub ttl_cap_s: u32,
}

/// TCP connections followed at most.
const TCP_STREAMS: usize = 1024;

/// A query as it left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    pub ts_ns: u64,
    pub task: Option<TaskIds>,
    pub netns: u32,
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub tcp: bool,
    pub name: String,
    pub qtype: u16,
}

/// A query and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered {
    pub asked: Asked,
    /// The RCODE; STATUS_TIMEOUT, STATUS_BAD_PACKET otherwise.
    pub status: u32,
    pub answers: Vec<Record>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct DnsStats {
    pub queries: u64,
    pub responses: u64,
    pub answered: u64,
    pub timed_out: u64,
    /// Responses no pending query matched (asked before the sensor started,
    /// its query not seen, or already timed out).
    pub unmatched: u64,
    /// Messages that did not parse (whole or in part).
    pub malformed: u64,
    /// Messages longer than the kernel's copy: parsed as far as copied.
    pub cut: u64,
    pub pending_evicted: u64,
}

type Key = (u32, SocketAddr, SocketAddr, bool, u16, u16);

pub struct DnsTracker {
    pending: HashMap<Key, Asked>,
    order: VecDeque<(u64, Key)>,
    timeout_ns: u64,
    capacity: usize,
    streams: Streams,
    pub stats: DnsStats,
}

/// What one packet gave: queries finished, and responses whose answers the
/// name cache learns from (matched or not).
#[derive(Debug, Default)]
pub struct Seen {
    pub done: Vec<Answered>,
    pub responses: Vec<(u32, Message)>,
}

impl DnsTracker {
    pub fn new(timeout_ns: u64, capacity: usize) -> Self {
        Self {
            pending: HashMap::new(),
            order: VecDeque::new(),
            timeout_ns,
            capacity: capacity.max(1),
            streams: Streams::new(TCP_STREAMS),
            stats: DnsStats::default(),
        }
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// TCP streams whose segments were missed (restarted at a later one).
    pub fn tcp_gaps(&self) -> u64 {
        self.streams.stats.gaps
    }

    pub fn on_packet(&mut self, p: DnsPacket) -> Seen {
        let mut seen = Seen::default();
        let messages = if p.tcp {
            let key = StreamKey { netns: p.netns, local: p.local, remote: p.remote, outbound: p.outbound };
            self.streams.push(key, p.tcp_seq, p.payload_len, &p.bytes).into_iter().map(|m| (m.bytes, m.cut)).collect()
        } else {
            let cut = (p.bytes.len() as u64) < u64::from(p.payload_len);
            vec![(p.bytes.clone(), cut)]
        };
        for (bytes, cut) in messages {
            if cut {
                self.stats.cut += 1;
            }
            let msg = match parse::parse(&bytes) {
                Ok(m) => m,
                Err(e) => {
                    self.stats.malformed += 1;
                    tracing::debug!("DNS message from {} not parsed: {e}", p.remote);
                    continue;
                }
            };
            if msg.error.is_some() && !cut {
                self.stats.malformed += 1;
                tracing::debug!(
                    "DNS message from {}: {}",
                    p.remote,
                    msg.error.map(|e| e.to_string()).unwrap_or_default()
                );
            }
            if p.outbound {
                self.on_query(&p, msg);
            } else if let Some(done) = self.on_response(&p, &msg, cut) {
                seen.done.push(done);
                seen.responses.push((p.netns, msg));
            } else {
                seen.responses.push((p.netns, msg));
            }
        }
        seen
    }

    fn on_query(&mut self, p: &DnsPacket, msg: Message) {
        if msg.response || msg.opcode != 0 {
            return;
        }
        let Some(q) = msg.questions.into_iter().next() else { return };
        self.stats.queries += 1;
        let key = (p.netns, p.local, p.remote, p.tcp, msg.id, q.qtype);
        if self.pending.contains_key(&key) {
            return; // a retry of a query still pending: the first one is the query
        }
        while self.pending.len() >= self.capacity {
            let Some((ts, old)) = self.order.pop_front() else { break };
            if self.pending.get(&old).is_some_and(|a| a.ts_ns == ts) {
                self.pending.remove(&old);
                self.stats.pending_evicted += 1;
            }
        }
        let asked = Asked {
            ts_ns: p.ts_ns,
            task: p.task,
            netns: p.netns,
            client: p.local,
            server: p.remote,
            tcp: p.tcp,
            name: q.name,
            qtype: q.qtype,
        };
        self.order.push_back((p.ts_ns, key));
        self.pending.insert(key, asked);
    }

    fn on_response(&mut self, p: &DnsPacket, msg: &Message, cut: bool) -> Option<Answered> {
        if !msg.response {
            return None;
        }
        self.stats.responses += 1;
        let asked = match msg.questions.first() {
            Some(q) => self.pending.remove(&(p.netns, p.local, p.remote, p.tcp, msg.id, q.qtype)),
            None => {
                // No question to tell A from AAAA: the id alone.
                let key = self
                    .pending
                    .keys()
                    .find(|k| k.0 == p.netns && k.1 == p.local && k.2 == p.remote && k.3 == p.tcp && k.4 == msg.id);
                key.copied().and_then(|k| self.pending.remove(&k))
            }
        };
        let Some(asked) = asked else {
            self.stats.unmatched += 1;
            return None;
        };
        self.stats.answered += 1;
        let status = if msg.error.is_some() && !cut { STATUS_BAD_PACKET } else { u32::from(msg.rcode) };
        Some(Answered { asked, status, answers: msg.answers.clone() })
    }

    /// Queries that waited past the timeout by `now_ns`, oldest first.
    pub fn expire(&mut self, now_ns: u64) -> Vec<Answered> {
        let mut out = Vec::new();
        while let Some(&(ts, key)) = self.order.front() {
            if now_ns.saturating_sub(ts) < self.timeout_ns {
                break;
            }
            self.order.pop_front();
            if self.pending.get(&key).is_some_and(|a| a.ts_ns == ts) {
                if let Some(asked) = self.pending.remove(&key) {
                    self.stats.timed_out += 1;
                    out.push(Answered { asked, status: STATUS_TIMEOUT, answers: Vec::new() });
                }
            }
        }
        out
    }
}

/// Sysmon's QueryResults: `type:  5 NAME;` for a CNAME, the address for A
/// (`::ffff:a.b.c.d;`, as Sysmon for Windows writes IPv4) and AAAA, in answer
/// order; other types are left out; `-` when nothing is left.
pub fn query_results(answers: &[Record]) -> String {
    use parse::RData;
    let mut out = String::new();
    for a in answers {
        match &a.data {
            RData::Cname(n) => {
                out.push_str("type:  5 ");
                out.push_str(n);
            }
            RData::A(v4) => {
                out.push_str("::ffff:");
                out.push_str(&v4.to_string());
            }
            RData::Aaaa(v6) => out.push_str(&v6.to_string()),
            RData::Other => continue,
        }
        out.push(';');
    }
    if out.is_empty() {
        out.push('-');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::parse::build::*;
    use super::parse::{TYPE_A, TYPE_AAAA, TYPE_CNAME};
    use super::*;

    const S: u64 = 1_000_000_000;

    fn packet(ts_ns: u64, outbound: bool, bytes: Vec<u8>) -> DnsPacket {
        DnsPacket {
            ts_ns,
            task: outbound.then_some(TaskIds { tgid: 42, tid: 43, uid: 0 }),
            netns: 7,
            outbound,
            tcp: false,
            local: "169.254.1.1:40000".parse().expect("addr"),
            remote: "169.254.1.2:53".parse().expect("addr"),
            tcp_seq: 0,
            payload_len: bytes.len() as u32,
            bytes,
        }
    }

    #[test]
    fn a_response_completes_its_query_and_results_are_sysmons_form() {
        let mut t = DnsTracker::new(5 * S, 16);
        let q = query(77, "www.example.test", TYPE_A);
        assert!(t.on_packet(packet(1, true, q.clone())).done.is_empty());
        let r = response(
            &q,
            0,
            false,
            &[
                record(None, TYPE_CNAME, 60, &name("cdn.example.test")),
                record(Some("cdn.example.test"), TYPE_A, 60, &[192, 0, 2, 7]),
                record(
                    Some("cdn.example.test"),
                    TYPE_AAAA,
                    60,
                    &"fd00::7".parse::<std::net::Ipv6Addr>().expect("a").octets(),
                ),
            ],
        );
        let seen = t.on_packet(packet(2, false, r));
        assert_eq!(seen.done.len(), 1);
        let d = &seen.done[0];
        assert_eq!((d.asked.ts_ns, d.asked.name.as_str(), d.status), (1, "www.example.test", 0));
        assert_eq!(d.asked.task.map(|t| t.tgid), Some(42));
        assert_eq!(query_results(&d.answers), "type:  5 cdn.example.test;::ffff:192.0.2.7;fd00::7;");
        assert_eq!(t.pending(), 0);
        assert!(t.expire(100 * S).is_empty());
    }

    #[test]
    fn timeout_on_a_synthetic_clock_and_unmatched_responses() {
        let mut t = DnsTracker::new(5 * S, 16);
        let q = query(1, "slow.test", TYPE_A);
        t.on_packet(packet(10 * S, true, q.clone()));
        assert!(t.expire(15 * S - 1).is_empty());
        let out = t.expire(15 * S);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].status, query_results(&out[0].answers).as_str()), (STATUS_TIMEOUT, "-"));
        // Its response, late: unmatched, still learned from.
        let seen = t.on_packet(packet(16 * S, false, response(&q, 0, false, &[])));
        assert!(seen.done.is_empty());
        assert_eq!(seen.responses.len(), 1);
        assert_eq!((t.stats.timed_out, t.stats.unmatched), (1, 1));
    }

    #[test]
    fn nxdomain_malformed_and_bounded_pending() {
        let mut t = DnsTracker::new(5 * S, 2);
        let q = query(5, "nx.test", TYPE_A);
        t.on_packet(packet(1, true, q.clone()));
        let seen = t.on_packet(packet(2, false, response(&q, 3, false, &[])));
        assert_eq!(seen.done[0].status, 3);
        t.on_packet(packet(3, true, q.clone()));
        let mut bad = response(&q, 0, false, &[]);
        bad[7] = 1; // one answer, none there
        let seen = t.on_packet(packet(4, false, bad));
        assert_eq!(seen.done[0].status, STATUS_BAD_PACKET);
        assert_eq!(t.stats.malformed, 1);
        for id in 0..5 {
            t.on_packet(packet(10 + u64::from(id), true, query(100 + id, "many.test", TYPE_A)));
        }
        assert_eq!(t.pending(), 2);
        assert_eq!(t.stats.pending_evicted, 3);
    }

    #[test]
    fn a_cut_copy_is_parsed_as_far_as_it_goes() {
        let mut t = DnsTracker::new(5 * S, 4);
        let q = query(9, "big.test", TYPE_A);
        t.on_packet(packet(1, true, q.clone()));
        let r = response(
            &q,
            0,
            false,
            &[record(None, TYPE_A, 60, &[192, 0, 2, 1]), record(None, TYPE_A, 60, &[192, 0, 2, 2])],
        );
        let mut p = packet(2, false, r.clone());
        p.bytes.truncate(r.len() - 3);
        let seen = t.on_packet(p);
        assert_eq!(seen.done[0].status, 0);
        assert_eq!(query_results(&seen.done[0].answers), "::ffff:192.0.2.1;");
        assert_eq!((t.stats.cut, t.stats.malformed), (1, 0));
    }
}
