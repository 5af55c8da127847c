//! Untrusted bytes (paths, argv) as text. Kernel data need not be UTF-8, and
//! the mapping must be reversible: valid UTF-8 passes through, a backslash is
//! written `\\`, and every byte that is not valid UTF-8 is written `\xHH`.
//! Also addresses as events write them. A leaf: every stage may use it.

use std::fmt::Write;
use std::net::IpAddr;

pub fn escape_bytes(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    for chunk in raw.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            // Writing to a String cannot fail.
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// argv as the kernel holds it (NUL separated, NUL terminated) -> one line,
/// arguments separated by a space, as Sysmon writes CommandLine.
pub fn command_line(argv: &[u8]) -> String {
    let trimmed = argv.strip_suffix(&[0]).unwrap_or(argv);
    let joined: Vec<u8> = trimmed.iter().map(|&b| if b == 0 { b' ' } else { b }).collect();
    escape_bytes(&joined)
}

/// `-` for an unknown value, as Sysmon writes it.
pub fn or_dash(raw: &[u8]) -> String {
    if raw.is_empty() {
        "-".to_string()
    } else {
        escape_bytes(raw)
    }
}

/// An address as events write it; IPv4 without the formatting machinery
/// (every event has two addresses), IPv6 in std's RFC 5952 form.
pub fn ip_text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut s = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            s.push('.');
        }
        if octet >= 100 {
            s.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            s.push(char::from(b'0' + octet / 10 % 10));
        }
        s.push(char::from(b'0' + octet % 10));
    }
    s
}

/// IPv4-mapped IPv6 (a dual-stack socket talking IPv4) is reported as IPv4.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_passes_and_invalid_bytes_are_hex() {
        assert_eq!(escape_bytes("/usr/bin/ünï".as_bytes()), "/usr/bin/ünï");
        assert_eq!(escape_bytes(b"a\xffb\xc3"), "a\\xffb\\xc3");
        assert_eq!(escape_bytes(b"back\\slash"), "back\\\\slash");
        assert_eq!(escape_bytes(b"line\nquote\""), "line\nquote\"");
    }

    #[test]
    fn argv_joins_with_spaces() {
        assert_eq!(command_line(b"curl\0-s\0http://x\0"), "curl -s http://x");
        assert_eq!(command_line(b""), "");
        assert_eq!(or_dash(b""), "-");
    }

    #[test]
    fn ip_text_is_std_display() {
        for octet in 0..=255u8 {
            for ip in [[octet, 0, 10, 255], [1, octet, 99, 100], [127, 0, octet, 1], [9, 10, 11, octet]] {
                let ip = IpAddr::from(ip);
                assert_eq!(ip_text(ip), ip.to_string());
            }
        }
        let v6: IpAddr = "fd00::1".parse().expect("ip");
        assert_eq!(ip_text(v6), "fd00::1");
    }

    #[test]
    fn mapped_ipv4_becomes_ipv4() {
        let mapped: IpAddr = "::ffff:169.254.0.1".parse().expect("ip");
        assert_eq!(canonical_ip(mapped), "169.254.0.1".parse::<IpAddr>().expect("ip"));
        let v6: IpAddr = "fd00::1".parse().expect("ip");
        assert_eq!(canonical_ip(v6), v6);
        // RFC 5952: lowercase, longest zero run compressed.
        let long: IpAddr = "FD00:0:0:0:0:0:0:1".parse().expect("ip");
        assert_eq!(long.to_string(), "fd00::1");
    }
}
