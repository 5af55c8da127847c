//! Sysmon for Linux's XML form: one `<Event>` per line, `<System>` then
//! `<EventData>`, exactly the layout Sysmon for Linux writes to syslog
//! (see DESIGN.md, "Event contract"), so parsers built for it keep working.
//!
//! Layout facts (from microsoft/SysmonForLinux `outputxml.cpp` and
//! microsoft/SysmonCommon `manifest.xml`):
//! - `<System>`: Provider, EventID, Version (the event's manifest version),
//!   Level 4 (Informational), Task = the event id, Opcode 0, Keywords
//!   0x8000000000000000, TimeCreated (9 fractional digits, `Z`),
//!   EventRecordID, an empty Correlation, Execution (pid/tid of the writer),
//!   Channel, Computer (host name), Security UserId (the writer's euid).
//! - `<EventData>`: one `<Data Name="...">` per manifest field, in manifest
//!   order; an empty string is written `-`, as Sysmon's `EventSetFieldS` does.
//! - IPv6 addresses: eight groups of lowercase hex without leading zeros and
//!   without `::` compression (`0:0:0:0:0:0:0:1`), Sysmon's
//!   `IPAddressToString`.
//!
//! Where we differ on purpose: Sysmon (pugixml) writes a control character as
//! `&#NN;`, which XML 1.0 forbids, and a newline raw, which breaks the one-line
//! form. See [`escape_value`] for what we write instead.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::Write;
use std::net::Ipv6Addr;

use anyhow::{Context, Result};
use time::{format_description::FormatItem, macros::format_description, OffsetDateTime};

use crate::event::{LifecycleEvent, NetworkConnect};

pub const PROVIDER_NAME: &str = "Linux-Sysmon";
pub const PROVIDER_GUID: &str = "{ff032593-a8d3-4f13-b0d6-01fc615a0f97}";
const CHANNEL: &str = "Linux-Sysmon/Operational";
const KEYWORDS: &str = "0x8000000000000000";
/// win:Informational; every event written here is informational.
const LEVEL_INFORMATIONAL: u8 = 4;
/// win:Info.
const OPCODE_INFO: u8 = 0;

const SYSTEM_TIME: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z");

/// The per-event-type part of `<System>`, from Sysmon's manifest.
#[derive(Debug, Clone, Copy)]
struct Descriptor {
    id: u32,
    version: u32,
}

impl Descriptor {
    /// Sysmon's task number is the event id for every event.
    fn task(self) -> u32 {
        self.id
    }
}

const NETWORK_CONNECT: Descriptor = Descriptor { id: 3, version: 5 };
const SERVICE_STATE_CHANGE: Descriptor = Descriptor { id: 4, version: 3 };
const CONFIG_CHANGE: Descriptor = Descriptor { id: 16, version: 3 };
/// Sysmon for Windows' manifest: DnsQuery (22) is at version 5, task 22.
const DNS_QUERY: Descriptor = Descriptor { id: 22, version: 5 };

/// Who writes the events: the sensor process, its writing thread, its host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlContext {
    /// Host name (`<Computer>`), in src/text.rs form.
    pub computer: String,
    /// The sensor's pid (`<Execution ProcessID>`).
    pub sensor_pid: u32,
    /// The thread that writes events (`<Execution ThreadID>`).
    pub sensor_tid: u32,
    /// The sensor's effective uid (`<Security UserId>`).
    pub user_id: u32,
}

impl XmlContext {
    /// The context of the calling process and thread; call it on the thread
    /// that writes events, as Sysmon reports the writer's thread.
    pub fn current() -> Result<Self> {
        // The UTS host name, as gethostname(2) returns it.
        let raw =
            std::fs::read("/proc/sys/kernel/hostname").context("reading host name from /proc/sys/kernel/hostname")?;
        let name = raw.strip_suffix(b"\n").unwrap_or(&raw);
        Ok(Self {
            computer: crate::text::escape_bytes(name),
            sensor_pid: std::process::id(),
            sensor_tid: u32::try_from(nix::unistd::gettid().as_raw()).context("thread id out of range")?,
            user_id: nix::unistd::geteuid().as_raw(),
        })
    }
}

/// One NetworkConnect (Event ID 3) as Sysmon's one-line `<Event>`, no newline.
/// Only Sysmon's own fields are written; sockscope's extra fields are JSON-only.
pub fn render_network_connect(
    ctx: &XmlContext,
    record_id: u64,
    time_created_unix_ns: i128,
    event: &NetworkConnect,
) -> Result<String> {
    let fields = sysmon_fields(event);
    render(ctx, NETWORK_CONNECT, record_id, time_created_unix_ns, &fields)
}

/// A lifecycle event (252, 253) in the same layout: Sysmon's NetworkConnect
/// fields, then the event's own, under its own EventID (version 1).
pub fn write_lifecycle(
    ctx: &XmlContext,
    record_id: u64,
    time_created_unix_ns: i128,
    event: &LifecycleEvent,
    out: &mut dyn Write,
) -> Result<()> {
    let mut fields: Vec<(&str, Cow<'_, str>)> = sysmon_fields(&event.connect).into();
    fields.extend(event.extras.iter().map(|(name, value)| (*name, value.text())));
    let desc = Descriptor { id: event.connect.event_id, version: 1 };
    let line = render(ctx, desc, record_id, time_created_unix_ns, &fields)?;
    write_line(&line, out)
}

/// Sysmon's 18 NetworkConnect fields of `event`, in its manifest's order.
fn sysmon_fields(event: &NetworkConnect) -> [(&'static str, Cow<'_, str>); 18] {
    let source_ip = sysmon_ip(&event.source_ip, event.source_is_ipv6);
    let destination_ip = sysmon_ip(&event.destination_ip, event.destination_is_ipv6);
    [
        ("RuleName", (&*event.rule_name).into()),
        ("UtcTime", event.utc_time.as_str().into()),
        ("ProcessGuid", (&*event.process_guid).into()),
        ("ProcessId", event.process_id.to_string().into()),
        ("Image", (&*event.image).into()),
        ("User", (&*event.user).into()),
        ("Protocol", event.protocol.into()),
        ("Initiated", bool_str(event.initiated).into()),
        ("SourceIsIpv6", bool_str(event.source_is_ipv6).into()),
        ("SourceIp", source_ip),
        ("SourceHostname", (&*event.source_hostname).into()),
        ("SourcePort", event.source_port.to_string().into()),
        ("SourcePortName", (&*event.source_port_name).into()),
        ("DestinationIsIpv6", bool_str(event.destination_is_ipv6).into()),
        ("DestinationIp", destination_ip),
        ("DestinationHostname", (&*event.destination_hostname).into()),
        ("DestinationPort", event.destination_port.to_string().into()),
        ("DestinationPortName", (&*event.destination_port_name).into()),
    ]
}

/// [`render_network_connect`] followed by a newline, written to `out`.
pub fn write_network_connect(
    ctx: &XmlContext,
    record_id: u64,
    time_created_unix_ns: i128,
    event: &NetworkConnect,
    out: &mut dyn Write,
) -> Result<()> {
    let line = render_network_connect(ctx, record_id, time_created_unix_ns, event)?;
    write_line(&line, out)
}

/// The descriptor of an event written from name/value pairs: Sysmon's for the
/// events Sysmon has (4, 16, 22), version 1 for sockscope's own (250 and up).
fn own_descriptor(event_id: u32) -> Descriptor {
    match event_id {
        4 => SERVICE_STATE_CHANGE,
        16 => CONFIG_CHANGE,
        22 => DNS_QUERY,
        id => Descriptor { id, version: 1 },
    }
}

/// One of the sensor's own events (4, 16, 250, 251) as one `<Event>`, no
/// newline: `fields` after EventID, in the JSON order.
pub fn render_own_event(
    ctx: &XmlContext,
    event_id: u32,
    record_id: u64,
    time_created_unix_ns: i128,
    fields: &[(&str, String)],
) -> Result<String> {
    let fields: Vec<(&str, Cow<'_, str>)> = fields.iter().map(|(n, v)| (*n, Cow::Borrowed(v.as_str()))).collect();
    render(ctx, own_descriptor(event_id), record_id, time_created_unix_ns, &fields)
}

/// [`render_own_event`] followed by a newline, written to `out`.
pub fn write_own_event(
    ctx: &XmlContext,
    event_id: u32,
    record_id: u64,
    time_created_unix_ns: i128,
    fields: &[(&str, String)],
    out: &mut dyn Write,
) -> Result<()> {
    let line = render_own_event(ctx, event_id, record_id, time_created_unix_ns, fields)?;
    write_line(&line, out)
}

fn write_line(line: &str, out: &mut dyn Write) -> Result<()> {
    out.write_all(line.as_bytes()).context("writing XML event")?;
    out.write_all(b"\n").context("writing XML event")?;
    Ok(())
}

fn bool_str(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

/// An IPv6 address the way Sysmon for Linux prints it: `%x` for each of the
/// eight 16-bit groups, no `::`. Anything else (IPv4, or a value that does not
/// parse, e.g. `-`) is passed through unchanged.
fn sysmon_ip(ip: &str, is_ipv6: bool) -> Cow<'_, str> {
    if !is_ipv6 {
        return ip.into();
    }
    match ip.parse::<Ipv6Addr>() {
        Ok(addr) => {
            let groups: Vec<String> = addr.segments().iter().map(|g| format!("{g:x}")).collect();
            groups.join(":").into()
        }
        Err(_) => ip.into(),
    }
}

fn system_time(unix_ns: i128) -> Result<String> {
    let t = OffsetDateTime::from_unix_timestamp_nanos(unix_ns)
        .with_context(|| format!("event time {unix_ns} ns since the epoch is out of range"))?;
    t.format(SYSTEM_TIME).with_context(|| format!("formatting event time {unix_ns} ns since the epoch"))
}

fn render(
    ctx: &XmlContext,
    desc: Descriptor,
    record_id: u64,
    time_created_unix_ns: i128,
    fields: &[(&str, Cow<'_, str>)],
) -> Result<String> {
    let system_time = system_time(time_created_unix_ns)?;
    let mut s = String::with_capacity(1024);
    // Writing to a String cannot fail, hence the ignored fmt::Results below.
    let _ = write!(
        s,
        "<Event><System><Provider Name=\"{PROVIDER_NAME}\" Guid=\"{PROVIDER_GUID}\"/>\
         <EventID>{id}</EventID><Version>{version}</Version><Level>{LEVEL_INFORMATIONAL}</Level>\
         <Task>{task}</Task><Opcode>{OPCODE_INFO}</Opcode><Keywords>{KEYWORDS}</Keywords>\
         <TimeCreated SystemTime=\"{system_time}\"/><EventRecordID>{record_id}</EventRecordID>\
         <Correlation/><Execution ProcessID=\"{pid}\" ThreadID=\"{tid}\"/>\
         <Channel>{CHANNEL}</Channel><Computer>",
        id = desc.id,
        version = desc.version,
        task = desc.task(),
        pid = ctx.sensor_pid,
        tid = ctx.sensor_tid,
    );
    escape_value(&ctx.computer, &mut s);
    let _ = write!(s, "</Computer><Security UserId=\"{}\"/></System><EventData>", ctx.user_id);
    for (name, value) in fields {
        // Names are our own constants: no escaping needed.
        let _ = write!(s, "<Data Name=\"{name}\">");
        escape_value(if value.is_empty() { "-" } else { value }, &mut s);
        s.push_str("</Data>");
    }
    s.push_str("</EventData></Event>");
    Ok(s)
}

/// Appends `value` to `out` as XML character data that is well-formed XML 1.0
/// and stays on one line.
///
/// - `&`, `<`, `>`, `"`, `'` become `&amp;`, `&lt;`, `&gt;`, `&quot;`, `&apos;`.
/// - Characters XML 1.0 cannot carry at all, not even as `&#N;` (C0 controls
///   other than tab/LF/CR, U+FFFE, U+FFFF), and those that would break the
///   one-line form or that XML 1.1 and log tools treat as line breaks or
///   controls (tab, LF, CR, DEL, the C1 controls U+0080..U+009F) are written
///   as their UTF-8 bytes in the form `\xHH` (lowercase hex), e.g. a newline
///   is `\x0a` and U+0085 is `\xc2\x85`.
///
/// This is the same `\xHH` form src/text.rs uses for bytes that are not UTF-8,
/// and since that form already writes a literal backslash as `\\`, every
/// `\xHH` in the output stands for one original byte: the value's bytes can
/// still be recovered exactly. (Values that do not come from src/text.rs keep
/// their backslashes as they are, so for them this is not reversible.)
pub fn escape_value(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if needs_hex(c) => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    // Writing to a String cannot fail.
                    let _ = write!(out, "\\x{b:02x}");
                }
            }
            c => out.push(c),
        }
    }
}

fn needs_hex(c: char) -> bool {
    c.is_control() || c == '\u{FFFE}' || c == '\u{FFFF}'
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::sensor_events::{ConfigChange, ServiceState, ServiceStateChange};

    /// The example in DESIGN.md ("Event contract"), byte for byte.
    const DESIGN_EXAMPLE: &str = r#"<Event><System><Provider Name="Linux-Sysmon" Guid="{ff032593-a8d3-4f13-b0d6-01fc615a0f97}"/><EventID>3</EventID><Version>5</Version><Level>4</Level><Task>3</Task><Opcode>0</Opcode><Keywords>0x8000000000000000</Keywords><TimeCreated SystemTime="2026-11-29T16:37:54.638341000Z"/><EventRecordID>348</EventRecordID><Correlation/><Execution ProcessID="30360" ThreadID="30360"/><Channel>Linux-Sysmon/Operational</Channel><Computer>vm</Computer><Security UserId="0"/></System><EventData><Data Name="RuleName">-</Data><Data Name="UtcTime">2026-11-29 16:37:54.640</Data><Data Name="ProcessGuid">{3d1219c7-54e2-6b0c-5541-147800560000}</Data><Data Name="ProcessId">30533</Data><Data Name="Image">/usr/bin/python3.11</Data><Data Name="User">root</Data><Data Name="Protocol">tcp</Data><Data Name="Initiated">true</Data><Data Name="SourceIsIpv6">false</Data><Data Name="SourceIp">127.0.0.1</Data><Data Name="SourceHostname">-</Data><Data Name="SourcePort">60802</Data><Data Name="SourcePortName">-</Data><Data Name="DestinationIsIpv6">false</Data><Data Name="DestinationIp">127.0.0.1</Data><Data Name="DestinationHostname">-</Data><Data Name="DestinationPort">18080</Data><Data Name="DestinationPortName">-</Data></EventData></Event>"#;

    /// 2026-11-29T16:37:54.638341000Z in ns since the epoch.
    const EXAMPLE_TIME_NS: i128 = 1_795_970_274_638_341_000;

    fn ctx() -> XmlContext {
        XmlContext { computer: "vm".into(), sensor_pid: 30360, sensor_tid: 30360, user_id: 0 }
    }

    fn example_event() -> NetworkConnect {
        crate::event::design_example()
    }

    fn parse_data(xml: &str) -> Vec<(String, String)> {
        super::super::xml_check::parse_event(xml).data
    }

    #[test]
    fn design_example_byte_for_byte() {
        let xml = render_network_connect(&ctx(), 348, EXAMPLE_TIME_NS, &example_event()).expect("render");
        assert_eq!(xml, DESIGN_EXAMPLE);
    }

    #[test]
    fn write_appends_one_newline() {
        let mut buf = Vec::new();
        write_network_connect(&ctx(), 348, EXAMPLE_TIME_NS, &example_event(), &mut buf).expect("write");
        assert_eq!(buf, format!("{DESIGN_EXAMPLE}\n").into_bytes());
    }

    #[test]
    fn only_sysmon_fields_in_manifest_order() {
        let xml = render_network_connect(&ctx(), 1, EXAMPLE_TIME_NS, &example_event()).expect("render");
        let names: Vec<String> = parse_data(&xml).into_iter().map(|(n, _)| n).collect();
        let expected = crate::event::SYSMON_FIELDS;
        assert_eq!(names, expected);
        for extra in ["CommandLine", "c0ffee", "4026531840", "/usr/bin/bash"] {
            assert!(!xml.contains(extra), "{extra} leaked into {xml}");
        }
    }

    #[test]
    fn ipv6_in_sysmon_uncompressed_form() {
        let mut ev = example_event();
        ev.source_is_ipv6 = true;
        ev.source_ip = "::1".into();
        ev.destination_is_ipv6 = true;
        ev.destination_ip = "fd00:1:0:a::2".into();
        let xml = render_network_connect(&ctx(), 1, EXAMPLE_TIME_NS, &ev).expect("render");
        let data = parse_data(&xml);
        let get = |k: &str| data.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).expect(k);
        assert_eq!(get("SourceIp"), "0:0:0:0:0:0:0:1");
        assert_eq!(get("DestinationIp"), "fd00:1:0:a:0:0:0:2");
        assert_eq!(get("SourceIsIpv6"), "true");
        // IPv4 is left alone, and so is a value that is not an address.
        assert_eq!(sysmon_ip("10.0.0.1", false), "10.0.0.1");
        assert_eq!(sysmon_ip("-", true), "-");
        assert_eq!(sysmon_ip("2001:DB8::FFFF", true), "2001:db8:0:0:0:0:0:ffff");
    }

    #[test]
    fn hostile_values_stay_well_formed_and_round_trip() {
        let hostile = [
            "a<b>c&d\"e'f",
            "]]><Data Name=\"x\">y</Data>",
            "<![CDATA[x]]>",
            "&amp; &#1; &lt;",
            "tab\there\nnew\rline",
            "nul\u{0}bell\u{7}esc\u{1b}del\u{7f}",
            "c1\u{85}\u{9f} nonchar\u{FFFE}\u{FFFF} ok\u{FFFD}",
            // src/text.rs form: a doubled backslash and an invalid byte.
            "C:\\\\dir\\xff",
            "",
        ];
        for h in hostile {
            let mut ev = example_event();
            ev.image = format!("/tmp/{h}").into();
            ev.user = h.into();
            ev.rule_name = h.into();
            let mut c = ctx();
            c.computer = format!("host{h}");
            let xml = render_network_connect(&c, 7, EXAMPLE_TIME_NS, &ev).expect("render");
            let data = parse_data(&xml);
            assert_eq!(data.len(), 18, "field count for {h:?}: {xml}");
            let get = |k: &str| data.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).expect(k);
            let dash_or = |s: &str| if s.is_empty() { "-".to_string() } else { s.to_string() };
            assert_eq!(decode_text(&get("Image")), decode_text(&format!("/tmp/{h}")), "Image round trip: {xml}");
            assert_eq!(decode_text(&get("User")), decode_text(&dash_or(h)), "User round trip: {xml}");
            assert_eq!(decode_text(&get("RuleName")), decode_text(&dash_or(h)), "RuleName round trip: {xml}");
            assert_eq!(get("ProcessId"), "30533", "fields after the hostile ones intact");
        }
    }

    /// The bytes a value in src/text.rs form stands for: `\\` is one
    /// backslash, `\xHH` one byte, anything else its UTF-8 bytes. XML output
    /// must decode to the same bytes as the value that went in.
    fn decode_text(s: &str) -> Vec<u8> {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'\\' && b.get(i + 1) == Some(&b'\\') {
                out.push(b'\\');
                i += 2;
            } else if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') && i + 4 <= b.len() {
                let hex = std::str::from_utf8(&b[i + 2..i + 4]).expect("hex digits");
                out.push(u8::from_str_radix(hex, 16).expect("hex digits"));
                i += 4;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        out
    }

    #[test]
    fn control_characters_become_hex_bytes() {
        let mut s = String::new();
        escape_value("a\nb\u{1}c\u{85}d\u{FFFF}e", &mut s);
        assert_eq!(s, "a\\x0ab\\x01c\\xc2\\x85d\\xef\\xbf\\xbfe");
        let mut s = String::new();
        escape_value("<&>\"'", &mut s);
        assert_eq!(s, "&lt;&amp;&gt;&quot;&apos;");
        let mut s = String::new();
        escape_value("ünï €", &mut s);
        assert_eq!(s, "ünï €");
    }

    #[test]
    fn empty_value_is_a_dash() {
        let mut ev = example_event();
        ev.source_hostname = "".into();
        let xml = render_network_connect(&ctx(), 1, EXAMPLE_TIME_NS, &ev).expect("render");
        assert!(xml.contains("<Data Name=\"SourceHostname\">-</Data>"), "{xml}");
    }

    #[test]
    fn time_has_nanoseconds_and_out_of_range_is_an_error() {
        let xml = render_network_connect(&ctx(), 1, 1_000_000_007, &example_event()).expect("render");
        assert!(xml.contains("<TimeCreated SystemTime=\"1970-01-01T00:00:01.000000007Z\"/>"), "{xml}");
        let err = render_network_connect(&ctx(), 1, i128::MAX, &example_event()).expect_err("out of range");
        assert!(format!("{err:#}").contains("out of range"), "{err:#}");
    }

    #[test]
    fn service_state_change_layout() {
        let ev = ServiceStateChange::new("2026-11-29 16:37:54.640".into(), ServiceState::Started, "0.1.0".into());
        let xml = render_own_event(&ctx(), ev.event_id, 1, EXAMPLE_TIME_NS, &ev.fields()).expect("render");
        assert!(
            xml.starts_with(
                "<Event><System><Provider Name=\"Linux-Sysmon\" Guid=\"{ff032593-a8d3-4f13-b0d6-01fc615a0f97}\"/>\
                 <EventID>4</EventID><Version>3</Version><Level>4</Level><Task>4</Task><Opcode>0</Opcode>"
            ),
            "{xml}"
        );
        assert!(
            xml.ends_with(
                "<EventData><Data Name=\"UtcTime\">2026-11-29 16:37:54.640</Data><Data Name=\"State\">Started</Data>\
                 <Data Name=\"Version\">0.1.0</Data><Data Name=\"SchemaVersion\">4.90</Data></EventData></Event>"
            ),
            "{xml}"
        );
        assert_eq!(parse_data(&xml).len(), 4);
    }

    #[test]
    fn config_change_layout() {
        let ev = ConfigChange::new("2026-11-29 16:37:54.640".into(), "/etc/sockscope/<cfg>.xml".into(), String::new());
        let xml = render_own_event(&ctx(), ev.event_id, 9, EXAMPLE_TIME_NS, &ev.fields()).expect("render");
        assert!(xml.contains("<EventID>16</EventID><Version>3</Version><Level>4</Level><Task>16</Task>"), "{xml}");
        assert!(xml.contains("<EventRecordID>9</EventRecordID>"), "{xml}");
        assert!(
            xml.ends_with(
                "<EventData><Data Name=\"UtcTime\">2026-11-29 16:37:54.640</Data>\
                 <Data Name=\"Configuration\">/etc/sockscope/&lt;cfg&gt;.xml</Data>\
                 <Data Name=\"ConfigurationFileHash\">-</Data></EventData></Event>"
            ),
            "{xml}"
        );
        let data = parse_data(&xml);
        assert_eq!(data[1], ("Configuration".to_string(), "/etc/sockscope/<cfg>.xml".to_string()));
    }

    #[test]
    fn dns_query_layout_is_sysmons_event_22() {
        let mut ev = crate::event::dns_example();
        ev.query_name = "a<b>&\"c\\.\u{1}".into();
        let fields = ev.fields();
        let xml = render_own_event(&ctx(), 22, 5, EXAMPLE_TIME_NS, &fields[..crate::event::DNS_QUERY_SYSMON_FIELDS])
            .expect("render");
        assert!(xml.contains("<EventID>22</EventID><Version>5</Version><Level>4</Level><Task>22</Task>"), "{xml}");
        let data = parse_data(&xml);
        let names: Vec<&str> = data.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "RuleName",
                "UtcTime",
                "ProcessGuid",
                "ProcessId",
                "QueryName",
                "QueryStatus",
                "QueryResults",
                "Image",
                "User"
            ]
        );
        assert_eq!(data[6].1, "type:  5 cdn.example.test;::ffff:192.0.2.7;");
        assert!(xml.contains("<Data Name=\"QueryName\">a&lt;b&gt;&amp;&quot;c\\.\\x01</Data>"), "{xml}");
    }

    #[test]
    fn current_context_is_this_process() {
        let c = XmlContext::current().expect("context");
        assert_eq!(c.sensor_pid, std::process::id());
        assert!(!c.computer.is_empty());
    }
}
