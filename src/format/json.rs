//! The JSON line of a NetworkConnect, written directly: the same bytes
//! serde_json writes for the struct (a test holds them equal), at a
//! fraction of the cost. Measured: serde_json spent ~630 ns per event, ~30%
//! of the sensor's CPU per event in a connection storm, most of it escaping
//! the 31 constant keys and running its escape loop per string.
//!
//! `--json-types sysmon` writes the same keys with every value a string, as
//! Sysmon writes its values (`"3"`, `"true"`, ports as strings): numbers and
//! booleans quoted; strings escaped as in the typed form.

use crate::event::{Extra, LifecycleEvent, NetworkConnect};

/// Appends `text` as a JSON string: quoted, with `"`, `\` and control
/// characters escaped exactly as serde_json does (short forms for \b \f \n
/// \r \t, else \u00xx in lowercase hex; everything else verbatim).
fn push_str(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    out.push(b'"');
    // Without an early exit the check vectorizes; most text needs no escape.
    let needs_escape = bytes.iter().fold(false, |any, &b| any | (b < 0x20) | (b == b'"') | (b == b'\\'));
    if !needs_escape {
        out.extend_from_slice(bytes);
    } else {
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let short = match b {
                b'"' => b'"',
                b'\\' => b'\\',
                0x08 => b'b',
                0x0c => b'f',
                b'\n' => b'n',
                b'\r' => b'r',
                b'\t' => b't',
                0x00..=0x1f => b'u',
                _ => continue,
            };
            out.extend_from_slice(&bytes[start..i]);
            out.push(b'\\');
            out.push(short);
            if short == b'u' {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(&[b'0', b'0', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
            }
            start = i + 1;
        }
        out.extend_from_slice(&bytes[start..]);
    }
    out.push(b'"');
}

/// `key` is the field's separator, quoted name and colon, as bytes. Inlined
/// so each key's length is a constant: a short copy instead of a memcpy call.
#[inline(always)]
fn str_field(out: &mut Vec<u8>, key: &[u8], text: &str) {
    out.extend_from_slice(key);
    push_str(out, text);
}

/// A number; quoted when `QUOTED` (`--json-types sysmon`).
#[inline(always)]
fn int_field<const QUOTED: bool>(out: &mut Vec<u8>, key: &[u8], n: impl itoa::Integer) {
    out.extend_from_slice(key);
    push_int::<QUOTED>(out, n);
}

/// A number, in quotes when `QUOTED` (`--json-types sysmon`).
#[inline(always)]
fn push_int<const QUOTED: bool>(out: &mut Vec<u8>, n: impl itoa::Integer) {
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(n).as_bytes();
    if QUOTED {
        out.push(b'"');
        out.extend_from_slice(digits);
        out.push(b'"');
    } else {
        out.extend_from_slice(digits);
    }
}

/// A boolean; quoted when `QUOTED` (`--json-types sysmon`).
#[inline(always)]
fn bool_field<const QUOTED: bool>(out: &mut Vec<u8>, key: &[u8], b: bool) {
    out.extend_from_slice(key);
    let text: &[u8] = match (QUOTED, b) {
        (false, true) => b"true",
        (false, false) => b"false",
        (true, true) => b"\"true\"",
        (true, false) => b"\"false\"",
    };
    out.extend_from_slice(text);
}

/// Appends the event as one JSON object and a newline, in the struct's
/// field order (the DESIGN.md contract), numbers and booleans typed.
pub fn write_network_connect(e: &NetworkConnect, out: &mut Vec<u8>) {
    write_network_connect_as::<false>(e, out);
}

/// As [`write_network_connect`] with every value a string (`--json-types sysmon`).
pub fn write_network_connect_strings(e: &NetworkConnect, out: &mut Vec<u8>) {
    write_network_connect_as::<true>(e, out);
}

/// An event of named string values as one JSON object of strings and a
/// newline: `{"EventID":"N","Name":"value",...}` (`--json-types sysmon` for
/// the sensor's own events; `fields` in the typed form's order).
pub fn write_string_fields(event_id: u32, fields: &[(&str, String)], out: &mut Vec<u8>) {
    int_field::<true>(out, b"{\"EventID\":", event_id);
    for (name, value) in fields {
        out.push(b',');
        push_str(out, name);
        out.push(b':');
        push_str(out, value);
    }
    out.extend_from_slice(b"}\n");
}

/// A lifecycle event (252, 253): the NetworkConnect fields, then its own;
/// every value a string when `Q` (`--json-types sysmon`).
pub fn write_lifecycle<const Q: bool>(e: &LifecycleEvent, out: &mut Vec<u8>) {
    write_network_connect_fields::<Q>(&e.connect, out);
    for (name, value) in &e.extras {
        out.push(b',');
        push_str(out, name);
        out.push(b':');
        match value {
            Extra::Num(n) => push_int::<Q>(out, *n),
            Extra::Text(t) => push_str(out, t),
        }
    }
    out.extend_from_slice(b"}\n");
}

#[inline(always)]
fn write_network_connect_as<const Q: bool>(e: &NetworkConnect, out: &mut Vec<u8>) {
    write_network_connect_fields::<Q>(e, out);
    out.extend_from_slice(b"}\n");
}

/// Every field of `e`, without the closing brace.
#[inline(always)]
fn write_network_connect_fields<const Q: bool>(e: &NetworkConnect, out: &mut Vec<u8>) {
    // Room for a typical line at once, not a growth step in the middle.
    out.reserve(1024);
    int_field::<Q>(out, b"{\"EventID\":", e.event_id);
    str_field(out, b",\"RuleName\":", &e.rule_name);
    str_field(out, b",\"UtcTime\":", &e.utc_time);
    str_field(out, b",\"ProcessGuid\":", &e.process_guid);
    int_field::<Q>(out, b",\"ProcessId\":", e.process_id);
    str_field(out, b",\"Image\":", &e.image);
    str_field(out, b",\"User\":", &e.user);
    str_field(out, b",\"Protocol\":", e.protocol);
    bool_field::<Q>(out, b",\"Initiated\":", e.initiated);
    bool_field::<Q>(out, b",\"SourceIsIpv6\":", e.source_is_ipv6);
    str_field(out, b",\"SourceIp\":", &e.source_ip);
    str_field(out, b",\"SourceHostname\":", &e.source_hostname);
    int_field::<Q>(out, b",\"SourcePort\":", e.source_port);
    str_field(out, b",\"SourcePortName\":", &e.source_port_name);
    bool_field::<Q>(out, b",\"DestinationIsIpv6\":", e.destination_is_ipv6);
    str_field(out, b",\"DestinationIp\":", &e.destination_ip);
    str_field(out, b",\"DestinationHostname\":", &e.destination_hostname);
    int_field::<Q>(out, b",\"DestinationPort\":", e.destination_port);
    str_field(out, b",\"DestinationPortName\":", &e.destination_port_name);
    str_field(out, b",\"CommandLine\":", &e.command_line);
    bool_field::<Q>(out, b",\"CommandLineTruncated\":", e.command_line_truncated);
    bool_field::<Q>(out, b",\"ImageTruncated\":", e.image_truncated);
    int_field::<Q>(out, b",\"ParentProcessId\":", e.parent_process_id);
    str_field(out, b",\"ParentImage\":", &e.parent_image);
    int_field::<Q>(out, b",\"UserId\":", e.user_id);
    int_field::<Q>(out, b",\"ThreadId\":", e.thread_id);
    if let Some(ns_pid) = e.process_id_in_namespace {
        int_field::<Q>(out, b",\"ProcessIdInNamespace\":", ns_pid);
    }
    str_field(out, b",\"ContainerId\":", &e.container_id);
    int_field::<Q>(out, b",\"NetNs\":", e.net_ns);
    str_field(out, b",\"CommunityId\":", &e.community_id);
    str_field(out, b",\"Attribution\":", e.attribution);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::design_example;

    fn serde_line(e: &NetworkConnect) -> Vec<u8> {
        let mut v = serde_json::to_vec(e).expect("serde_json encodes the event");
        v.push(b'\n');
        v
    }

    fn direct_line(e: &NetworkConnect) -> Vec<u8> {
        let mut v = Vec::new();
        write_network_connect(e, &mut v);
        v
    }

    #[test]
    fn same_bytes_as_serde_json_for_the_contract_example() {
        let mut e = design_example();
        assert_eq!(String::from_utf8_lossy(&direct_line(&e)), String::from_utf8_lossy(&serde_line(&e)));
        e.process_id_in_namespace = None;
        e.initiated = false;
        e.source_is_ipv6 = true;
        e.destination_is_ipv6 = true;
        e.command_line_truncated = true;
        e.image_truncated = true;
        e.protocol = "udp";
        e.source_port = u16::MAX;
        e.process_id = u32::MAX;
        assert_eq!(String::from_utf8_lossy(&direct_line(&e)), String::from_utf8_lossy(&serde_line(&e)));
    }

    /// Every byte a name or command line can hold (as the lossy UTF-8 the
    /// sensor makes of them), in every string field.
    #[test]
    fn same_escapes_as_serde_json_for_every_character() {
        let mut all: String = (0u8..0x80).map(char::from).collect();
        all.push_str("\u{80}\u{7ff}\u{800}\u{fffd}\u{10ffff} é ü 日本 \"quoted\" back\\slash </Data>&amp;");
        let samples = [all.clone(), String::new(), "\\".into(), "\"".into(), "\u{1f}".into(), "x\u{0}y".into()];
        for text in samples {
            let shared: crate::event::Shared = text.as_str().into();
            let mut e = design_example();
            e.rule_name = shared.clone();
            e.utc_time = text.clone();
            e.process_guid = shared.clone();
            e.image = shared.clone();
            e.user = shared.clone();
            e.source_ip = text.clone();
            e.source_hostname = shared.clone();
            e.source_port_name = shared.clone();
            e.destination_ip = text.clone();
            e.destination_hostname = shared.clone();
            e.destination_port_name = shared.clone();
            e.command_line = shared.clone();
            e.parent_image = shared.clone();
            e.container_id = shared.clone();
            e.community_id = text.clone();
            let direct = direct_line(&e);
            assert_eq!(String::from_utf8_lossy(&direct), String::from_utf8_lossy(&serde_line(&e)), "{text:?}");
            let parsed: serde_json::Value = serde_json::from_slice(&direct).expect("valid JSON");
            assert_eq!(parsed["CommandLine"], text.as_str());
        }
    }
}
