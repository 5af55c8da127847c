//! Community ID v1 (Corelight's community-id-spec): one flow hash that
//! network sensors (Zeek, Suricata) and host sensors compute alike, so a
//! connection event can be joined with the network logs of the same flow.
//!
//! SHA1 over: seed (2 bytes, big endian), the lower endpoint's address, the
//! other address, protocol (1 byte), a zero byte, then the two ports (2 bytes
//! big endian each) in the same order; "lower" is by address bytes, then by
//! port, so both directions of a flow get the same id. Base64, prefixed "1:".
//!
//! Ports are hashed as given: right for TCP, UDP and SCTP. (ICMP would need
//! the spec's type/code mapping; sockscope reports no ICMP.)

use std::net::{IpAddr, SocketAddr};

use base64::Engine;
use sha1::{Digest, Sha1};

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Community ID v1 with the default seed 0.
pub fn community_id_v1(proto: u8, src: SocketAddr, dst: SocketAddr) -> String {
    community_id_v1_seeded(0, proto, src, dst)
}

/// Community ID v1 with an explicit seed (deployments may agree on another).
pub fn community_id_v1_seeded(seed: u16, proto: u8, src: SocketAddr, dst: SocketAddr) -> String {
    let (mut a, mut b) = (wire_addr(src.ip()), wire_addr(dst.ip()));
    // A real flow has one address family; mixed input can only come from a
    // caller that mapped one side, so hash both as IPv6 to stay deterministic.
    if a.is_ipv4() != b.is_ipv4() {
        a = IpAddr::V6(as_v6(a));
        b = IpAddr::V6(as_v6(b));
    }
    let ((a_bytes, a_len), (b_bytes, b_len)) = (addr_bytes(a), addr_bytes(b));
    let (ab, bb) = (&a_bytes[..a_len], &b_bytes[..b_len]);
    let (sp, dp) = (src.port(), dst.port());
    let ordered = (ab, sp) <= (bb, dp);
    let ((ip1, p1), (ip2, p2)) = if ordered { ((ab, sp), (bb, dp)) } else { ((bb, dp), (ab, sp)) };

    let mut h = Sha1::new();
    h.update(seed.to_be_bytes());
    h.update(ip1);
    h.update(ip2);
    h.update([proto, 0]);
    h.update(p1.to_be_bytes());
    h.update(p2.to_be_bytes());
    let mut id = String::with_capacity(30);
    id.push_str("1:");
    base64::engine::general_purpose::STANDARD.encode_string(h.finalize(), &mut id);
    id
}

/// The address as it is on the wire: a dual-stack socket's IPv4-mapped IPv6
/// address (`::ffff:a.b.c.d`) travels as IPv4, and network sensors hash it so.
fn wire_addr(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn as_v6(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// The address's bytes: 4 or 16 of the array.
fn addr_bytes(ip: IpAddr) -> ([u8; 16], usize) {
    let mut out = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => {
            out[..4].copy_from_slice(&v4.octets());
            (out, 4)
        }
        IpAddr::V6(v6) => (v6.octets(), 16),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    /// (proto, src, dst, expected) from corelight/community-id-spec
    /// `baseline/README.md` (default seed) and `baseline/baseline_deflt.json`.
    const DEFAULT_SEED: &[(u8, &str, &str, &str)] = &[
        (6, "1.2.3.4:1122", "5.6.7.8:3344", "1:wCb3OG7yAFWelaUydu0D+125CLM="),
        (6, "5.6.7.8:3344", "1.2.3.4:1122", "1:wCb3OG7yAFWelaUydu0D+125CLM="),
        (17, "1.2.3.4:1122", "5.6.7.8:3344", "1:0Mu9InQx6z4ZiCZM/7HXi2WMhOg="),
        (17, "5.6.7.8:3344", "1.2.3.4:1122", "1:0Mu9InQx6z4ZiCZM/7HXi2WMhOg="),
        (132, "1.2.3.4:1122", "5.6.7.8:3344", "1:EKt4MsxuyaE6mL+hmrEkQ9csDD8="),
        (6, "128.232.110.120:34855", "66.35.250.204:80", "1:LQU9qZlK+B5F3KDmev6m5PMibrg="),
        (6, "66.35.250.204:80", "128.232.110.120:34855", "1:LQU9qZlK+B5F3KDmev6m5PMibrg="),
        (17, "192.168.1.52:54585", "8.8.8.8:53", "1:d/FP5EW3wiY1vCndhwleRRKHowQ="),
        (17, "8.8.8.8:53", "192.168.1.52:54585", "1:d/FP5EW3wiY1vCndhwleRRKHowQ="),
        (
            6,
            "[2001:470:e5bf:dead:4957:2174:e82c:4887]:63943",
            "[2607:f8b0:400c:c03::1a]:25",
            "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4=",
        ),
        (
            6,
            "[2607:f8b0:400c:c03::1a]:25",
            "[2001:470:e5bf:dead:4957:2174:e82c:4887]:63943",
            "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4=",
        ),
        // Same address both ends: the port decides the order.
        (132, "192.168.170.8:7", "192.168.170.56:7", "1:MP2EtRCAUIZvTw6MxJHLV7N7JDs="),
    ];

    #[test]
    fn spec_baseline_default_seed() {
        for &(proto, src, dst, want) in DEFAULT_SEED {
            assert_eq!(community_id_v1(proto, sa(src), sa(dst)), want, "{proto} {src} -> {dst}");
        }
    }

    #[test]
    fn spec_baseline_seed_1() {
        let cases = [
            (6, "1.2.3.4:1122", "5.6.7.8:3344", "1:HhA1B+6CoLbiKPEs5nhNYN4XWfk="),
            (17, "5.6.7.8:3344", "1.2.3.4:1122", "1:OShq+iKDAMVouh/4bMxB9Sz4amw="),
        ];
        for (proto, src, dst, want) in cases {
            assert_eq!(community_id_v1_seeded(1, proto, sa(src), sa(dst)), want, "{proto} {src} -> {dst}");
        }
    }

    #[test]
    fn ipv4_mapped_hashes_as_ipv4() {
        let v4 = community_id_v1(PROTO_TCP, sa("1.2.3.4:1122"), sa("5.6.7.8:3344"));
        let mapped = community_id_v1(PROTO_TCP, sa("[::ffff:1.2.3.4]:1122"), sa("[::ffff:5.6.7.8]:3344"));
        assert_eq!(mapped, v4);
    }

    #[test]
    fn equal_addresses_order_by_port() {
        let a = community_id_v1(PROTO_TCP, sa("127.0.0.1:40000"), sa("127.0.0.1:80"));
        let b = community_id_v1(PROTO_TCP, sa("127.0.0.1:80"), sa("127.0.0.1:40000"));
        assert_eq!(a, b);
        assert_ne!(a, community_id_v1(PROTO_UDP, sa("127.0.0.1:40000"), sa("127.0.0.1:80")));
    }
}
