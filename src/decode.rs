//! Ring-buffer records -> typed kernel facts. Layouts and constants come from
//! `src/bpf/facts.h` through the generated contract (src/contract.rs).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use thiserror::Error;

use crate::contract as c;

// SAFETY: generated #[repr(C)] structs made only of integers and integer
// arrays: every bit pattern is a valid value.
unsafe impl plain::Plain for c::fact_header {}
unsafe impl plain::Plain for c::tcp_connect_fact {}
unsafe impl plain::Plain for c::tcp_established_fact {}
unsafe impl plain::Plain for c::tcp_aborted_fact {}
unsafe impl plain::Plain for c::tcp_accept_fact {}
unsafe impl plain::Plain for c::tcp_closed_fact {}
unsafe impl plain::Plain for c::proc_fork_fact {}
unsafe impl plain::Plain for c::proc_exit_fact {}
unsafe impl plain::Plain for c::proc_cgroup_fact {}
unsafe impl plain::Plain for c::proc_identity {}
unsafe impl plain::Plain for c::udp_flow_fact {}
unsafe impl plain::Plain for c::udp_flow_key {}
unsafe impl plain::Plain for c::dns_fact {}

unsafe impl plain::Plain for c::proc_exec_fact {}

// Named for match patterns; the values are the contract's.
const FACT_TCP_CONNECT: u32 = c::fact_kind::FACT_TCP_CONNECT.0;
const FACT_TCP_ESTABLISHED: u32 = c::fact_kind::FACT_TCP_ESTABLISHED.0;
const FACT_TCP_ABORTED: u32 = c::fact_kind::FACT_TCP_ABORTED.0;
const FACT_TCP_ACCEPT: u32 = c::fact_kind::FACT_TCP_ACCEPT.0;
const FACT_PROC_EXEC: u32 = c::fact_kind::FACT_PROC_EXEC.0;
const FACT_PROC_FORK: u32 = c::fact_kind::FACT_PROC_FORK.0;
const FACT_PROC_EXIT: u32 = c::fact_kind::FACT_PROC_EXIT.0;
const FACT_UDP_FLOW: u32 = c::fact_kind::FACT_UDP_FLOW.0;
const FACT_PROC_CGROUP: u32 = c::fact_kind::FACT_PROC_CGROUP.0;
const FACT_TCP_CLOSED: u32 = c::fact_kind::FACT_TCP_CLOSED.0;
const CLOSED_SENSOR_STOP: u32 = c::closed_detail::CLOSED_SENSOR_STOP.0;
const FACT_DNS: u32 = c::fact_kind::FACT_DNS.0;
const DNS_OUTBOUND: u32 = c::dns_flags::DNS_OUTBOUND.0;
const DNS_TCP: u32 = c::dns_flags::DNS_TCP.0;
const UDP_SEEN_SEND: u32 = c::udp_seen_by::UDP_SEEN_SEND.0;
const UDP_SEEN_PACKET: u32 = c::udp_seen_by::UDP_SEEN_PACKET.0;
const EXEC_PATH_TRUNCATED: u32 = c::exec_flags::EXEC_PATH_TRUNCATED.0;
const EXEC_ARGS_TRUNCATED: u32 = c::exec_flags::EXEC_ARGS_TRUNCATED.0;
const ENDPOINTS_V4_SPARE: usize = c::endpoints_layout::ENDPOINTS_V4_SPARE.0 as usize;

// The kernel's own ABI (not the contract's).
const AF_INET: u16 = libc::AF_INET as u16;
const AF_INET6: u16 = libc::AF_INET6 as u16;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {len} bytes is too short for fact kind {kind}")]
    Short { kind: u32, len: usize },
    #[error("unknown fact kind {0}")]
    UnknownKind(u32),
    #[error("unknown address family {0}")]
    Family(u16),
    #[error("exec record lengths ({path} + {args}) exceed its {len} bytes")]
    ExecLengths { path: usize, args: usize, len: usize },
}

/// The task a fact was captured in. Ids are in the host's namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskIds {
    pub tgid: u32,
    pub tid: u32,
    pub uid: u32,
}

/// What a process keeps for its life: its pid in its own pid namespace and
/// its cgroup v2 path ("/system.slice/docker-<id>.scope"; "/" for the root).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    pub ns_tgid: u32,
    pub cgroup: Vec<u8>,
}

fn identity(id: &c::proc_identity) -> Identity {
    let used = (id.cgroup_len as usize).min(id.cgroup.len());
    Identity { ns_tgid: id.ns_tgid, cgroup: join_leaf_first(&id.cgroup[..used]) }
}

/// Which kernel mechanism saw a UDP flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpSeenBy {
    /// sock_send_length / cgroup sendmsg, in the sender's context.
    Send,
    /// consume_skb behind a raw packet socket (the seed's mechanism).
    Packet,
    /// sock_recv_length with the datagram's addresses.
    Recv,
}

/// A UDP flow as the kernel keyed it (the de-duplication key).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UdpFlowKey {
    pub netns: u32,
    pub tgid: u32,
    pub outbound: bool,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The key exactly as the kernel map holds it.
    pub raw: Vec<u8>,
}

/// ::ffff:a.b.c.d (how the kernel side stores IPv4) -> a.b.c.d.
fn ip_from_mapped(raw: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(raw);
    v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
}

/// Both ends of a TCP socket and the network namespace it lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoints {
    pub netns: u32,
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

/// A TCP connection's own counters (tcp_sock), read at its close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpCounters {
    pub bytes_acked: u64,
    pub bytes_received: u64,
    pub total_retrans: u32,
    pub srtt_us: u32,
    /// sk_err (ECONNRESET, ETIMEDOUT, ...); 0 for none.
    pub err: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    TcpConnect {
        ts_ns: u64,
        sk: u64,
        task: TaskIds,
    },
    TcpEstablished {
        ts_ns: u64,
        sk: u64,
        outbound: bool,
        endpoints: Endpoints,
    },
    /// A handshake that never ended ESTABLISHED.
    TcpAborted {
        ts_ns: u64,
        sk: u64,
        /// The state it left (include/net/tcp_states.h): SYN_SENT or SYN_RECV.
        oldstate: u32,
        /// sk_err at that moment (0: closed by its own process).
        err: u32,
        /// SYN retransmissions.
        syn_retrans: u32,
        endpoints: Endpoints,
    },
    /// A reported connection ended (or is still open as the sensor stops).
    TcpClosed {
        ts_ns: u64,
        sk: u64,
        /// The state it left; None: still open at sensor stop.
        oldstate: Option<u32>,
        counters: TcpCounters,
    },
    TcpAccept {
        ts_ns: u64,
        sk: u64,
        task: TaskIds,
        endpoints: Endpoints,
        /// False for a TCP Fast Open child accepted in SYN_RECV.
        handshake_done: bool,
    },
    ProcExec {
        ts_ns: u64,
        task: TaskIds,
        ppid: u32,
        start_boot_ns: u64,
        identity: Identity,
        /// Absolute path, raw bytes.
        path: Vec<u8>,
        path_truncated: bool,
        /// argv, NUL separated, as the kernel holds it.
        argv: Vec<u8>,
        argv_truncated: bool,
    },
    ProcFork {
        ts_ns: u64,
        parent_tgid: u32,
        child_tgid: u32,
        start_boot_ns: u64,
        uid: u32,
        identity: Identity,
    },
    ProcExit {
        ts_ns: u64,
        tgid: u32,
    },
    /// The process moved to another cgroup; `identity` is after the move.
    ProcCgroup {
        tgid: u32,
        identity: Identity,
    },
    UdpFlow {
        ts_ns: u64,
        key: UdpFlowKey,
        task: TaskIds,
        /// False when the kernel's flow table was full.
        recorded: bool,
        seen_by: UdpSeenBy,
    },
    /// A DNS message on port 53: a query leaving (with its sender) or a
    /// response arriving (no task: softirq).
    Dns(DnsPacket),
}

/// One DNS packet as the kernel copied it (dns_capture.bpf.h).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsPacket {
    pub ts_ns: u64,
    /// The sender, for an outbound packet.
    pub task: Option<TaskIds>,
    pub netns: u32,
    pub outbound: bool,
    pub tcp: bool,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// TCP: the segment's sequence number.
    pub tcp_seq: u32,
    /// Message bytes the packet carried; more than `bytes` when the copy was cut.
    pub payload_len: u32,
    pub bytes: Vec<u8>,
}

fn read<T: plain::Plain + Default>(data: &[u8], kind: u32) -> Result<T, DecodeError> {
    let mut value = T::default();
    plain::copy_from_bytes(&mut value, data).map_err(|_| DecodeError::Short { kind, len: data.len() })?;
    Ok(value)
}

fn task_ids(t: &c::task_ids) -> TaskIds {
    TaskIds { tgid: t.tgid, tid: t.tid, uid: t.uid }
}

/// include/net/tcp_states.h
const TCP_SYN_RECV: u32 = 3;

/// A `struct tcp_endpoints` as Endpoints.
fn endpoints(ep: &c::tcp_endpoints) -> Result<Endpoints, DecodeError> {
    let (local, remote) = addrs(ep.family, &ep.addrs)?;
    Ok(Endpoints {
        netns: ep.netns,
        local: SocketAddr::new(local, ep.local_port),
        remote: SocketAddr::new(remote, ep.remote_port),
    })
}

/// The local and remote address of a `struct tcp_endpoints`, packed by
/// family (facts.h).
fn addrs(family: u16, raw: &[u8; 32]) -> Result<(IpAddr, IpAddr), DecodeError> {
    let v4 = |b: &[u8]| IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]));
    let v6 = |b: &[u8]| {
        let mut a = [0u8; 16];
        a.copy_from_slice(b);
        IpAddr::V6(Ipv6Addr::from(a))
    };
    match family {
        AF_INET => Ok((v4(&raw[0..4]), v4(&raw[4..8]))),
        AF_INET6 => Ok((v6(&raw[0..16]), v6(&raw[16..32]))),
        other => Err(DecodeError::Family(other)),
    }
}

/// A fact that ends in `struct tcp_endpoints`: the kernel writes it
/// ENDPOINTS_V4_SPARE bytes shorter for IPv4; the missing tail reads as zeros
/// (the family says which bytes count).
fn read_with_endpoints<T: plain::Plain + Default>(data: &[u8], kind: u32) -> Result<T, DecodeError> {
    let size = std::mem::size_of::<T>();
    if data.len() + ENDPOINTS_V4_SPARE < size {
        return Err(DecodeError::Short { kind, len: data.len() });
    }
    let mut value = T::default();
    // SAFETY: T is Plain (repr(C) integers and arrays): any bytes are a value.
    let bytes = unsafe { plain::as_mut_bytes(&mut value) };
    let n = data.len().min(size);
    bytes[..n].copy_from_slice(&data[..n]);
    Ok(value)
}

pub fn decode(data: &[u8]) -> Result<Fact, DecodeError> {
    let hdr: c::fact_header = read(data, 0)?;
    let kind = hdr.kind;
    let ts_ns = hdr.ts_boot_ns;
    match kind {
        FACT_TCP_CONNECT => {
            let f: c::tcp_connect_fact = read(data, kind)?;
            Ok(Fact::TcpConnect { ts_ns, sk: f.sk, task: task_ids(&f.task) })
        }
        FACT_TCP_ESTABLISHED => {
            let f: c::tcp_established_fact = read_with_endpoints(data, kind)?;
            let endpoints = endpoints(&f.ep)?;
            Ok(Fact::TcpEstablished { ts_ns, sk: f.sk, outbound: hdr.detail != 0, endpoints })
        }
        FACT_TCP_ABORTED => {
            let f: c::tcp_aborted_fact = read_with_endpoints(data, kind)?;
            let endpoints = endpoints(&f.ep)?;
            Ok(Fact::TcpAborted {
                ts_ns,
                sk: f.sk,
                oldstate: f.oldstate,
                err: f.err,
                syn_retrans: f.syn_retrans,
                endpoints,
            })
        }
        FACT_TCP_CLOSED => {
            let f: c::tcp_closed_fact = read(data, kind)?;
            let oldstate = (hdr.detail != CLOSED_SENSOR_STOP).then_some(hdr.detail);
            let counters = TcpCounters {
                bytes_acked: f.bytes_acked,
                bytes_received: f.bytes_received,
                total_retrans: f.total_retrans,
                srtt_us: f.srtt_us,
                err: f.err,
            };
            Ok(Fact::TcpClosed { ts_ns, sk: f.sk, oldstate, counters })
        }
        FACT_TCP_ACCEPT => {
            let f: c::tcp_accept_fact = read_with_endpoints(data, kind)?;
            let task = TaskIds { tgid: f.task.tgid, tid: f.task.tid, uid: f.task.uid };
            let endpoints = endpoints(&f.ep)?;
            Ok(Fact::TcpAccept { ts_ns, sk: f.sk, task, endpoints, handshake_done: hdr.detail != TCP_SYN_RECV })
        }
        FACT_PROC_EXEC => decode_exec(data, ts_ns),
        FACT_PROC_FORK => {
            let f: c::proc_fork_fact = read(data, kind)?;
            Ok(Fact::ProcFork {
                ts_ns,
                parent_tgid: f.parent_tgid,
                child_tgid: f.child_tgid,
                start_boot_ns: f.start_boot_ns,
                uid: f.uid,
                identity: identity(&f.id),
            })
        }
        FACT_PROC_EXIT => {
            let f: c::proc_exit_fact = read(data, kind)?;
            Ok(Fact::ProcExit { ts_ns, tgid: f.tgid })
        }
        FACT_PROC_CGROUP => {
            let f: c::proc_cgroup_fact = read(data, kind)?;
            Ok(Fact::ProcCgroup { tgid: f.tgid, identity: identity(&f.id) })
        }
        FACT_DNS => {
            let f: c::dns_fact = read(data, kind)?;
            let cap = (hdr.detail as usize).min(f.msg.len());
            let outbound = f.flags & DNS_OUTBOUND != 0;
            let t = task_ids(&f.task);
            Ok(Fact::Dns(DnsPacket {
                ts_ns,
                task: (outbound && t.tgid != 0).then_some(t),
                netns: f.netns,
                outbound,
                tcp: f.flags & DNS_TCP != 0,
                local: SocketAddr::new(ip_from_mapped(f.local_addr), f.local_port),
                remote: SocketAddr::new(ip_from_mapped(f.remote_addr), f.remote_port),
                tcp_seq: f.tcp_seq,
                payload_len: f.payload_len,
                bytes: f.msg[..cap].to_vec(),
            }))
        }
        FACT_UDP_FLOW => {
            let f: c::udp_flow_fact = read(data, kind)?;
            let k = &f.key;
            // SAFETY: udp_flow_key is a repr(C) struct of integers without padding.
            let raw = unsafe { plain::as_bytes(k) }.to_vec();
            let key = UdpFlowKey {
                netns: k.netns,
                tgid: k.tgid,
                outbound: k.outbound != 0,
                local: SocketAddr::new(ip_from_mapped(k.local_addr), k.local_port),
                remote: SocketAddr::new(ip_from_mapped(k.remote_addr), k.remote_port),
                raw,
            };
            let seen_by = match f.seen_by {
                UDP_SEEN_SEND => UdpSeenBy::Send,
                UDP_SEEN_PACKET => UdpSeenBy::Packet,
                _ => UdpSeenBy::Recv,
            };
            let task = TaskIds { tgid: k.tgid, tid: f.tid, uid: f.uid };
            Ok(Fact::UdpFlow { ts_ns, key, task, recorded: f.recorded != 0, seen_by })
        }
        other => Err(DecodeError::UnknownKind(other)),
    }
}

fn decode_exec(data: &[u8], ts_ns: u64) -> Result<Fact, DecodeError> {
    // The kernel writes the fixed part and as much of `data` as it used.
    let head_len = std::mem::offset_of!(c::proc_exec_fact, data);
    if data.len() < head_len {
        return Err(DecodeError::Short { kind: FACT_PROC_EXEC, len: data.len() });
    }
    let mut head = c::proc_exec_fact::default();
    // SAFETY: proc_exec_fact is Plain (repr(C) integers and arrays): any bytes are a value.
    let bytes = unsafe { plain::as_mut_bytes(&mut head) };
    bytes[..head_len].copy_from_slice(&data[..head_len]);
    let body = &data[head_len..];
    let (path_len, args_len) = (head.path_len as usize, head.args_len as usize);
    if path_len + args_len > body.len() {
        return Err(DecodeError::ExecLengths { path: path_len, args: args_len, len: body.len() });
    }
    let path = join_leaf_first(&body[..path_len]);
    let argv = body[path_len..path_len + args_len].to_vec();
    Ok(Fact::ProcExec {
        ts_ns,
        task: task_ids(&head.task),
        ppid: head.ppid,
        start_boot_ns: head.start_boot_ns,
        identity: identity(&head.id),
        path,
        path_truncated: head.flags & EXEC_PATH_TRUNCATED != 0,
        argv,
        argv_truncated: head.flags & EXEC_ARGS_TRUNCATED != 0,
    })
}

/// "python3.11\0bin\0usr\0" -> "/usr/bin/python3.11".
fn join_leaf_first(raw: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = raw.split(|&b| b == 0).filter(|p| !p.is_empty()).collect();
    parts.reverse();
    let mut path = Vec::with_capacity(raw.len() + 1);
    for part in parts {
        path.push(b'/');
        path.extend_from_slice(part);
    }
    if path.is_empty() {
        path.push(b'/');
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_components_are_reversed() {
        assert_eq!(join_leaf_first(b"python3.11\0bin\0usr\0"), b"/usr/bin/python3.11");
        assert_eq!(join_leaf_first(b""), b"/");
        assert_eq!(join_leaf_first(b"a b\xff\0dir\0"), b"/dir/a b\xff");
    }

    pub(super) fn bytes_of<T: plain::Plain>(v: &T) -> Vec<u8> {
        // SAFETY: T is Plain (repr(C), no padding-dependent invariants).
        unsafe { plain::as_bytes(v) }.to_vec()
    }

    /// A fact ending in IPv4 endpoints as the kernel writes it: without the
    /// unused address tail (sizeof rounds the struct up to 8; the kernel
    /// reserves sizeof - 24).
    fn as_written_for_ipv4<T: plain::Plain>(f: &T) -> Vec<u8> {
        let mut rec = bytes_of(f);
        rec.truncate(rec.len() - ENDPOINTS_V4_SPARE);
        rec
    }

    /// IPv4 endpoints into a `struct tcp_endpoints`.
    fn set_ipv4(ep: &mut c::tcp_endpoints, local: [u8; 4], lport: u16, remote: [u8; 4], rport: u16) {
        ep.family = AF_INET;
        ep.local_port = lport;
        ep.remote_port = rport;
        ep.addrs[..4].copy_from_slice(&local);
        ep.addrs[4..8].copy_from_slice(&remote);
    }

    #[test]
    fn decodes_established_ipv6() {
        let mut f = c::tcp_established_fact::default();
        f.hdr.kind = FACT_TCP_ESTABLISHED;
        f.hdr.ts_boot_ns = 42;
        f.sk = 0xffff_8888_0000_1000;
        f.hdr.detail = 1;
        f.ep.family = AF_INET6;
        f.ep.netns = 4026531840;
        f.ep.local_port = 40000;
        f.ep.remote_port = 80;
        f.ep.addrs[..16].copy_from_slice(&Ipv6Addr::LOCALHOST.octets());
        let remote: Ipv6Addr = "fd00::2".parse().expect("addr");
        f.ep.addrs[16..].copy_from_slice(&remote.octets());
        let fact = decode(&bytes_of(&f)).expect("decodes");
        let Fact::TcpEstablished { ts_ns, sk, outbound, endpoints } = fact else {
            panic!("wrong kind: {fact:?}");
        };
        assert_eq!((ts_ns, sk, outbound), (42, 0xffff_8888_0000_1000, true));
        assert_eq!(endpoints.remote, "[fd00::2]:80".parse().expect("addr"));
        assert_eq!(endpoints.local.port(), 40000);
    }

    #[test]
    fn decodes_accept_and_its_handshake_state() {
        let mut f = c::tcp_accept_fact::default();
        f.hdr.kind = FACT_TCP_ACCEPT;
        f.hdr.ts_boot_ns = 9;
        f.hdr.detail = 1; // TCP_ESTABLISHED
        f.sk = 0xffff_8888_0000_2000;
        f.task = c::task_ids { tgid: 30, tid: 31, uid: 1000, gid: 1000 };
        f.fd = 5;
        set_ipv4(&mut f.ep, [169, 254, 0, 2], 8080, [169, 254, 0, 1], 51000);
        let mut rec = as_written_for_ipv4(&f);
        let fact = decode(&rec).expect("decodes");
        let Fact::TcpAccept { ts_ns, sk, task, endpoints, handshake_done } = fact else {
            panic!("wrong kind: {fact:?}");
        };
        assert_eq!((ts_ns, sk, task.tgid, task.tid, task.uid), (9, 0xffff_8888_0000_2000, 30, 31, 1000));
        assert_eq!(endpoints.local, "169.254.0.2:8080".parse().expect("addr"));
        assert_eq!(endpoints.remote, "169.254.0.1:51000".parse().expect("addr"));
        assert!(handshake_done);
        f.hdr.detail = TCP_SYN_RECV;
        let fact = decode(&bytes_of(&f)).expect("decodes");
        assert!(matches!(fact, Fact::TcpAccept { handshake_done: false, .. }), "{fact:?}");
        // Shorter than even IPv4 endpoints need: rejected.
        rec.truncate(rec.len() - 1);
        assert!(matches!(decode(&rec), Err(DecodeError::Short { .. })));
    }

    #[test]
    fn established_ipv4_is_written_short() {
        let mut f = c::tcp_established_fact::default();
        f.hdr.kind = FACT_TCP_ESTABLISHED;
        set_ipv4(&mut f.ep, [127, 0, 0, 1], 40000, [127, 0, 0, 2], 443);
        let rec = as_written_for_ipv4(&f);
        let Ok(Fact::TcpEstablished { outbound, endpoints, .. }) = decode(&rec) else {
            panic!("established not decoded");
        };
        assert!(!outbound);
        assert_eq!(endpoints.local, "127.0.0.1:40000".parse().expect("addr"));
        assert_eq!(endpoints.remote, "127.0.0.2:443".parse().expect("addr"));
    }

    #[test]
    fn decodes_aborted_with_its_cause_and_endpoints() {
        let mut f = c::tcp_aborted_fact::default();
        f.hdr.kind = FACT_TCP_ABORTED;
        f.hdr.ts_boot_ns = 3;
        f.sk = 0xabc;
        f.oldstate = 2;
        f.err = libc::ECONNREFUSED as u32;
        f.syn_retrans = 1;
        set_ipv4(&mut f.ep, [169, 254, 1, 1], 40000, [169, 254, 1, 2], 80);
        let fact = decode(&as_written_for_ipv4(&f)).expect("decodes");
        let Fact::TcpAborted { sk, oldstate, err, syn_retrans, endpoints, .. } = fact else {
            panic!("wrong kind: {fact:?}");
        };
        assert_eq!((sk, oldstate, err, syn_retrans), (0xabc, 2, libc::ECONNREFUSED as u32, 1));
        assert_eq!(endpoints.remote, "169.254.1.2:80".parse().expect("addr"));
    }

    #[test]
    fn decodes_closed_and_sensor_stop() {
        let mut f = c::tcp_closed_fact::default();
        f.hdr.kind = FACT_TCP_CLOSED;
        f.hdr.detail = 5; // FIN_WAIT2
        f.sk = 0xdef;
        f.bytes_acked = 1000;
        f.bytes_received = 2000;
        f.total_retrans = 3;
        f.srtt_us = 40;
        let fact = decode(&bytes_of(&f)).expect("decodes");
        let Fact::TcpClosed { oldstate, counters, .. } = fact else { panic!("wrong kind: {fact:?}") };
        assert_eq!(oldstate, Some(5));
        assert_eq!(
            (counters.bytes_acked, counters.bytes_received, counters.total_retrans, counters.srtt_us),
            (1000, 2000, 3, 40)
        );
        f.hdr.detail = CLOSED_SENSOR_STOP;
        assert!(matches!(decode(&bytes_of(&f)), Ok(Fact::TcpClosed { oldstate: None, .. })));
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        assert!(matches!(decode(&[1, 0, 0]), Err(DecodeError::Short { .. })));
        let mut h = c::fact_header { kind: 99, ..Default::default() };
        assert_eq!(decode(&bytes_of(&h)), Err(DecodeError::UnknownKind(99)));
        h.kind = FACT_TCP_ESTABLISHED;
        assert!(matches!(decode(&bytes_of(&h)), Err(DecodeError::Short { .. })));
    }

    #[test]
    fn decodes_exec_with_path_and_argv() {
        let f = c::proc_exec_fact {
            hdr: c::fact_header { kind: FACT_PROC_EXEC, detail: 0, ts_boot_ns: 7 },
            task: c::task_ids { tgid: 10, tid: 10, uid: 0, gid: 0 },
            ppid: 1,
            flags: EXEC_ARGS_TRUNCATED,
            start_boot_ns: 5,
            id: c::proc_identity { ns_tgid: 3, cgroup_len: 12, ..Default::default() },
            path_len: 9,
            args_len: 6,
            ..Default::default()
        };
        // As the kernel writes it: the fixed part, then the bytes used.
        let mut rec = bytes_of(&f);
        rec.truncate(std::mem::offset_of!(c::proc_exec_fact, data));
        rec.extend_from_slice(b"curl\0bin\0ab\0cd\0");
        let Ok(Fact::ProcExec { path, argv, argv_truncated, path_truncated, identity, .. }) = decode(&rec) else {
            panic!("exec not decoded");
        };
        assert_eq!(identity.ns_tgid, 3);
        assert_eq!(identity.cgroup, b"/", "no cgroup names: the root");
        assert_eq!(path, b"/bin/curl");
        assert_eq!(argv, b"ab\0cd\0");
        assert!(argv_truncated && !path_truncated);
        rec.truncate(rec.len() - 1);
        assert!(matches!(decode(&rec), Err(DecodeError::ExecLengths { .. })));
    }
}

#[cfg(test)]
mod contract_tests {
    use super::tests::bytes_of;
    use super::*;

    #[test]
    fn decodes_a_dns_query_and_bounds_its_copy() {
        let mut f = c::dns_fact::default();
        f.hdr.kind = FACT_DNS;
        f.hdr.detail = 3;
        f.hdr.ts_boot_ns = 9;
        f.task = c::task_ids { tgid: 42, tid: 43, uid: 0, gid: 0 };
        f.netns = 7;
        f.flags = DNS_OUTBOUND | DNS_TCP;
        f.payload_len = 700;
        f.local_port = 40000;
        f.remote_port = 53;
        f.local_addr[10..16].copy_from_slice(&[0xff, 0xff, 169, 254, 1, 1]);
        f.remote_addr[10..16].copy_from_slice(&[0xff, 0xff, 169, 254, 1, 2]);
        f.msg[..3].copy_from_slice(b"abc");
        let Ok(Fact::Dns(p)) = decode(&bytes_of(&f)) else { panic!("not a DNS fact") };
        assert_eq!((p.ts_ns, p.netns, p.outbound, p.tcp, p.payload_len), (9, 7, true, true, 700));
        assert_eq!(p.task.map(|t| t.tgid), Some(42));
        assert_eq!(p.local, "169.254.1.1:40000".parse().expect("addr"));
        assert_eq!(p.remote, "169.254.1.2:53".parse().expect("addr"));
        assert_eq!(p.bytes, b"abc");
        // A length past the buffer is cut to it; an inbound fact has no task.
        f.hdr.detail = u32::MAX;
        f.flags = 0;
        let Ok(Fact::Dns(p)) = decode(&bytes_of(&f)) else { panic!("not a DNS fact") };
        assert_eq!(p.bytes.len(), f.msg.len());
        assert_eq!(p.task, None);
    }

    /// Every fact kind facts.h declares (read from the header itself) is
    /// decoded: a kind added on the kernel side without its decoder, or a
    /// number changed on one side only, fails here.
    #[test]
    fn every_fact_kind_in_facts_h_is_decoded() {
        let header = include_str!("bpf/facts.h");
        let body = header.split("enum fact_kind {").nth(1).and_then(|b| b.split("};").next()).expect("enum fact_kind");
        let kinds: Vec<(String, u32)> = body
            .lines()
            .filter_map(|l| {
                let (name, rest) = l.trim().split_once('=')?;
                let value = rest.trim().trim_end_matches(|ch: char| !ch.is_ascii_digit()).split(',').next()?;
                Some((name.trim().to_string(), value.trim().parse().ok()?))
            })
            .collect();
        assert!(kinds.len() >= 9, "kinds read from facts.h: {kinds:?}");
        // A record as long as the longest fact, zeroed but for its kind.
        let longest = std::mem::size_of::<c::proc_exec_fact>();
        for (name, kind) in kinds {
            let mut rec = vec![0u8; longest];
            rec[..4].copy_from_slice(&kind.to_ne_bytes());
            match decode(&rec) {
                Err(DecodeError::UnknownKind(k)) => panic!("{name} ({k}) in facts.h is not decoded"),
                // Zeroed endpoints have no address family: the kind was recognised.
                Ok(_) | Err(DecodeError::Family(0)) => {}
                Err(e) => panic!("{name}: {e}"),
            }
        }
    }
}
