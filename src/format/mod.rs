//! Format: an event -> one line of text: JSON lines (DESIGN.md contract) or
//! Sysmon for Linux's one-line XML `<Event>`.
pub mod json;
pub mod record_id;
pub mod sensor_events;
pub mod xml;
pub mod xml_check;

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use clap::ValueEnum;

use crate::event::{DnsQuery, LifecycleEvent, NetworkConnect, DNS_QUERY, DNS_QUERY_SYSMON_FIELDS};
use record_id::RecordIds;
use sensor_events::{ConfigChange, ServiceState, ServiceStateChange};
use xml::XmlContext;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One JSON object per line (DESIGN.md event contract).
    Json,
    /// Sysmon for Linux's one-line XML <Event>.
    Xml,
}

/// Value types of the JSON form (`--json-types`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum JsonTypes {
    /// Numbers and booleans as JSON numbers and booleans (the DESIGN.md contract).
    #[default]
    Typed,
    /// Every value a string, as Sysmon writes it ("3", "true").
    Sysmon,
}

/// One JSON object and its newline: every event's JSON form. Generic over
/// the writer: serde_json writes many small pieces, which a `dyn Write`
/// would turn into as many indirect calls.
pub fn write_json_line<W: Write + ?Sized>(value: &impl serde::Serialize, out: &mut W) -> Result<()> {
    serde_json::to_writer(&mut *out, value).context("encoding event as JSON")?;
    out.write_all(b"\n").context("writing event")?;
    Ok(())
}

/// The format stage: the chosen form plus what the XML form needs (the
/// writer's context and EventRecordIDs that survive restarts).
pub struct Formatter {
    format: Format,
    json_types: JsonTypes,
    xml: XmlContext,
    record_ids: Option<RecordIds>,
}

impl Formatter {
    /// `state_dir` holds the EventRecordID store (XML only).
    pub fn new(format: Format, state_dir: &Path) -> Result<Self> {
        let record_ids = match format {
            Format::Json => None,
            Format::Xml => {
                std::fs::create_dir_all(state_dir)
                    .with_context(|| format!("creating state directory {}", state_dir.display()))?;
                Some(RecordIds::open(state_dir.join("event-record-id"), record_id::DEFAULT_BLOCK)?)
            }
        };
        Ok(Self { format, json_types: JsonTypes::Typed, xml: XmlContext::current()?, record_ids })
    }

    /// The JSON form's value types (typed by default).
    pub fn with_json_types(mut self, types: JsonTypes) -> Self {
        self.json_types = types;
        self
    }

    /// `event_id` and `fields` as one JSON object of strings (`--json-types sysmon`).
    fn write_strings(event_id: u32, fields: &[(&str, String)], out: &mut dyn Write) -> Result<()> {
        let mut line = Vec::with_capacity(512);
        json::write_string_fields(event_id, fields, &mut line);
        out.write_all(&line).context("writing event")
    }

    fn next_record_id(&mut self) -> Result<u64> {
        match self.record_ids.as_mut() {
            Some(ids) => ids.next_id(),
            None => Ok(0),
        }
    }

    pub fn network_connect(&mut self, event: &NetworkConnect, now_unix_ns: i128, out: &mut Vec<u8>) -> Result<()> {
        match self.format {
            Format::Json => {
                match self.json_types {
                    JsonTypes::Typed => json::write_network_connect(event, out),
                    JsonTypes::Sysmon => json::write_network_connect_strings(event, out),
                }
                Ok(())
            }
            Format::Xml => {
                let id = self.next_record_id()?;
                xml::write_network_connect(&self.xml, id, now_unix_ns, event, out)
            }
        }
    }

    /// A lifecycle event (252 failed, 253 closed).
    pub fn lifecycle(&mut self, event: &LifecycleEvent, now_unix_ns: i128, out: &mut Vec<u8>) -> Result<()> {
        match self.format {
            Format::Json => {
                match self.json_types {
                    JsonTypes::Typed => json::write_lifecycle::<false>(event, out),
                    JsonTypes::Sysmon => json::write_lifecycle::<true>(event, out),
                }
                Ok(())
            }
            Format::Xml => {
                let id = self.next_record_id()?;
                xml::write_lifecycle(&self.xml, id, now_unix_ns, event, out)
            }
        }
    }

    /// A DnsQuery (event 22): typed JSON, Sysmon's strings, or the XML form
    /// with Sysmon's fields only (as for NetworkConnect).
    pub fn dns_query(&mut self, event: &DnsQuery, now_unix_ns: i128, out: &mut Vec<u8>) -> Result<()> {
        let fields = event.fields();
        match self.format {
            Format::Json if self.json_types == JsonTypes::Sysmon => Self::write_strings(DNS_QUERY, &fields, out),
            Format::Json => write_json_line(event, out),
            Format::Xml => {
                let id = self.next_record_id()?;
                xml::write_own_event(&self.xml, DNS_QUERY, id, now_unix_ns, &fields[..DNS_QUERY_SYSMON_FIELDS], out)
            }
        }
    }

    /// `schema`: the config's schemaversion, when there is a config.
    pub fn service_state(
        &mut self,
        state: ServiceState,
        schema: Option<&str>,
        now_unix_ns: i128,
        out: &mut dyn Write,
    ) -> Result<()> {
        let mut event =
            ServiceStateChange::new(crate::clock::format_utc(now_unix_ns), state, env!("CARGO_PKG_VERSION").into());
        if let Some(schema) = schema {
            event.schema_version = schema.to_string();
        }
        self.own_event(event.event_id, &event, &event.fields(), now_unix_ns, out)
    }

    /// `configuration`: the config file, or "Defaults"; `sha256`: of its bytes.
    pub fn config_change(
        &mut self,
        configuration: &str,
        sha256: Option<&str>,
        now_unix_ns: i128,
        out: &mut dyn Write,
    ) -> Result<()> {
        let hash = sha256.map_or_else(String::new, |h| format!("SHA256={h}"));
        let event = ConfigChange::new(crate::clock::format_utc(now_unix_ns), configuration.to_string(), hash);
        self.own_event(event.event_id, &event, &event.fields(), now_unix_ns, out)
    }

    /// sockscope's own events (loss, stats): JSON as serialized (strings:
    /// `fields`, the values the XML form carries), XML from `fields`.
    pub fn own_event(
        &mut self,
        event_id: u32,
        json: &impl serde::Serialize,
        fields: &[(&str, String)],
        now_unix_ns: i128,
        out: &mut dyn Write,
    ) -> Result<()> {
        match self.format {
            Format::Json if self.json_types == JsonTypes::Sysmon => Self::write_strings(event_id, fields, out),
            Format::Json => write_json_line(json, out),
            Format::Xml => {
                let id = self.next_record_id()?;
                xml::write_own_event(&self.xml, event_id, id, now_unix_ns, fields, out)
            }
        }
    }

    /// What was done about a corrupt state file, once (for an event).
    pub fn take_recovery_notice(&mut self) -> Option<String> {
        self.record_ids.as_mut().and_then(|ids| ids.recovered.take())
    }

    /// Persists the EventRecordID so the next run continues after it.
    pub fn close(self) -> Result<()> {
        match self.record_ids {
            Some(ids) => ids.close(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NetworkConnect {
        NetworkConnect { image: "/tmp/we\"ird\n\u{1}name".into(), ..crate::event::design_example() }
    }

    #[test]
    fn json_has_contract_order_and_types() {
        let mut buf = Vec::new();
        json::write_network_connect(&sample(), &mut buf);
        let line = String::from_utf8(buf).expect("utf8");
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1, "one line: {line:?}");
        let order: Vec<&str> =
            std::iter::once("EventID").chain(crate::event::SYSMON_FIELDS).chain(["CommandLine"]).collect();
        let positions: Vec<usize> =
            order.iter().map(|k| line.find(&format!("\"{k}\":")).unwrap_or(usize::MAX)).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "field order {positions:?} in {line}");
        let v: serde_json::Value = serde_json::from_str(&line).expect("valid json");
        assert_eq!(v["EventID"], 3);
        assert_eq!(v["Initiated"], true);
        assert_eq!(v["SourcePort"], 60802);
        assert_eq!(v["Image"], "/tmp/we\"ird\n\u{1}name");
    }

    /// A JSON object's members in the order written.
    struct Ordered(Vec<(String, serde_json::Value)>);

    impl<'de> serde::Deserialize<'de> for Ordered {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            struct Members;
            impl<'de> serde::de::Visitor<'de> for Members {
                type Value = Ordered;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> std::result::Result<Ordered, A::Error> {
                    let mut members = Vec::new();
                    while let Some(member) = m.next_entry()? {
                        members.push(member);
                    }
                    Ok(Ordered(members))
                }
            }
            d.deserialize_map(Members)
        }
    }

    /// Every event type the sensor writes, as JSON lines of `types`.
    fn every_event_type(types: JsonTypes) -> Vec<String> {
        use crate::event::{SENSOR_LOSS, SENSOR_STATS};
        const NOW: i128 = 1_764_434_274_638_341_000;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut f = Formatter::new(Format::Json, dir.path()).expect("formatter").with_json_types(types);
        let mut out = Vec::new();
        f.network_connect(&sample(), NOW, &mut out).expect("event 3");
        let mut udp = sample();
        (udp.protocol, udp.initiated, udp.source_is_ipv6, udp.destination_is_ipv6) = ("udp", false, true, true);
        udp.process_id_in_namespace = None;
        f.network_connect(&udp, NOW, &mut out).expect("event 3");
        f.dns_query(&crate::event::dns_example(), NOW, &mut out).expect("event 22");
        f.service_state(ServiceState::Started, Some("4.90"), NOW, &mut out).expect("event 4");
        f.service_state(ServiceState::Stopped, None, NOW, &mut out).expect("event 4");
        f.config_change("/etc/a \"b\"\n\\c.xml", Some("ab12"), NOW, &mut out).expect("event 16");
        f.config_change("Defaults", None, NOW, &mut out).expect("event 16");
        use crate::health::{stats_event, Counter, Counters};
        let mut c = Counters::default();
        for (counter, v) in [
            (Counter::RingBufferDrops, 1),
            (Counter::TcpAcceptsUnresolved, 2),
            (Counter::UdpShedInKernel, 3),
            (Counter::UdpShedInQueue, 4),
            (Counter::QueueDropped, u64::MAX - 10),
            (Counter::EventsWritten, 750),
            (Counter::EventsFiltered, 3),
            (Counter::Processes, 300),
            (Counter::RingBufferPeakInterval, 4096),
        ] {
            c.set(counter, v);
        }
        let loss = c.loss().event("2026-11-29 16:37:54.640".into());
        f.own_event(SENSOR_LOSS, &loss, &loss.fields(), NOW, &mut out).expect("event 250");
        let stats = stats_event("2026-11-29 16:37:54.640".into(), 60.0004, 12.5, &c);
        f.own_event(SENSOR_STATS, &stats, &stats.fields(), NOW, &mut out).expect("event 251");
        for e in lifecycle_samples() {
            f.lifecycle(&e, NOW, &mut out).expect("lifecycle event");
        }
        String::from_utf8(out).expect("utf8").lines().map(str::to_owned).collect()
    }

    /// One event 252 and one 253, with every own field.
    fn lifecycle_samples() -> Vec<LifecycleEvent> {
        use crate::event::{Extra, CONNECTION_CLOSED, CONNECTION_FAILED};
        let mut failed = sample();
        failed.event_id = CONNECTION_FAILED;
        let mut closed = sample();
        closed.event_id = CONNECTION_CLOSED;
        vec![
            LifecycleEvent {
                connect: failed,
                extras: vec![
                    ("Failure", Extra::Text("refused")),
                    ("Attempts", Extra::Num(2)),
                    ("Count", Extra::Num(7)),
                ],
            },
            LifecycleEvent {
                connect: closed,
                extras: vec![
                    ("Duration", Extra::Num(1500)),
                    ("BytesSent", Extra::Num(1000)),
                    ("BytesReceived", Extra::Num(u64::MAX)),
                    ("SegmentsRetransmitted", Extra::Num(0)),
                    ("SmoothedRttUs", Extra::Num(42)),
                    ("CloseReason", Extra::Text("fin")),
                ],
            },
        ]
    }

    /// Lifecycle events: the NetworkConnect line with the event's id and its
    /// own fields after; in XML, Sysmon's 18 fields then its own.
    #[test]
    fn lifecycle_events_extend_the_network_connect_line() {
        const NOW: i128 = 1_764_434_274_638_341_000;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut f = Formatter::new(Format::Json, dir.path()).expect("formatter");
        let samples = lifecycle_samples();
        let mut line = Vec::new();
        f.lifecycle(&samples[1], NOW, &mut line).expect("253");
        let mut base = Vec::new();
        let mut as_connect = samples[1].connect.clone();
        as_connect.event_id = 3;
        json::write_network_connect(&as_connect, &mut base);
        let line = String::from_utf8(line).expect("utf8");
        let base = String::from_utf8(base).expect("utf8");
        assert_eq!(
            line,
            format!(
                "{}{}",
                base.trim_end().trim_end_matches('}').replacen("\"EventID\":3", "\"EventID\":253", 1),
                ",\"Duration\":1500,\"BytesSent\":1000,\"BytesReceived\":18446744073709551615,\
                 \"SegmentsRetransmitted\":0,\"SmoothedRttUs\":42,\"CloseReason\":\"fin\"}\n"
            )
        );
        let mut x = Formatter::new(Format::Xml, dir.path()).expect("formatter");
        let mut xml_line = Vec::new();
        x.lifecycle(&samples[0], NOW, &mut xml_line).expect("252");
        let xml_line = String::from_utf8(xml_line).expect("utf8");
        assert!(
            xml_line.contains("<EventID>252</EventID><Version>1</Version><Level>4</Level><Task>252</Task>"),
            "{xml_line}"
        );
        assert!(
            xml_line.contains(
                "<Data Name=\"DestinationPortName\">-</Data><Data Name=\"Failure\">refused</Data>\
                 <Data Name=\"Attempts\">2</Data><Data Name=\"Count\">7</Data></EventData></Event>\n"
            ),
            "{xml_line}"
        );
        assert!(!xml_line.contains("CommandLine"), "only Sysmon's fields and the event's own: {xml_line}");
        let parsed = xml_check::parse_event(xml_line.trim_end());
        assert_eq!((parsed.data("Failure"), parsed.data("Count")), (Some("refused"), Some("7")));
    }

    /// `--json-types sysmon`: for every event type, the typed line's members
    /// in the same order, every value a string that says what the typed one
    /// says (`3` -> "3", `true` -> "true"; stats rates with the XML form's 3
    /// decimals).
    #[test]
    fn sysmon_json_types_are_strings_for_every_event_type() {
        let typed = every_event_type(JsonTypes::Typed);
        let strings = every_event_type(JsonTypes::Sysmon);
        assert_eq!(typed.len(), 11);
        assert_eq!(strings.len(), typed.len());
        let mut ids = Vec::new();
        for (t, s) in typed.iter().zip(&strings) {
            let Ordered(t_members) = serde_json::from_str(t).unwrap_or_else(|e| panic!("{e}: {t}"));
            let Ordered(s_members) = serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"));
            let names = |m: &[(String, serde_json::Value)]| m.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
            assert_eq!(names(&t_members), names(&s_members), "member order\n{t}\n{s}");
            for ((name, tv), (_, sv)) in t_members.iter().zip(&s_members) {
                let serde_json::Value::String(sv) = sv else { panic!("{name} is not a string: {s}") };
                match tv {
                    serde_json::Value::String(tv) => assert_eq!(tv, sv, "{name}"),
                    serde_json::Value::Bool(b) => assert_eq!(&b.to_string(), sv, "{name}"),
                    serde_json::Value::Number(n) if n.is_f64() => {
                        let parsed: f64 = sv.parse().unwrap_or_else(|e| panic!("{name} {sv:?}: {e}"));
                        assert!((parsed - n.as_f64().unwrap_or(f64::NAN)).abs() < 0.001, "{name}: {n} vs {sv}");
                    }
                    serde_json::Value::Number(n) => assert_eq!(&n.to_string(), sv, "{name}"),
                    other => panic!("{name}: unexpected {other}"),
                }
            }
            ids.push(s_members[0].1.as_str().unwrap_or_default().to_owned());
        }
        assert_eq!(ids, ["3", "3", "22", "4", "4", "16", "16", "250", "251", "252", "253"]);
        // What Sigma rules compare against, byte for byte.
        assert!(strings[0].contains("\"Initiated\":\"true\",\"SourceIsIpv6\":\"false\""), "{}", strings[0]);
        assert!(strings[0].contains("\"SourcePort\":\"60802\""), "{}", strings[0]);
        assert!(strings[1].contains("\"Initiated\":\"false\""), "{}", strings[1]);
        assert!(strings[0].starts_with("{\"EventID\":\"3\",\"RuleName\":\"-\""), "{}", strings[0]);
    }

    /// Untrusted text is escaped the same way in both forms.
    #[test]
    fn sysmon_json_types_escape_strings_as_the_typed_form() {
        let mut all: String = (0u8..0x80).map(char::from).collect();
        all.push_str("\u{fffd}\u{10ffff} é \"q\" \\ </Data>&amp;");
        let mut e = sample();
        e.image = all.as_str().into();
        e.command_line = all.as_str().into();
        let (mut typed, mut strings) = (Vec::new(), Vec::new());
        json::write_network_connect(&e, &mut typed);
        json::write_network_connect_strings(&e, &mut strings);
        let t: serde_json::Value = serde_json::from_slice(&typed).expect("typed JSON");
        let s: serde_json::Value = serde_json::from_slice(&strings).expect("strings JSON");
        assert_eq!(s["Image"], all.as_str());
        assert_eq!(s["CommandLine"], t["CommandLine"]);
        assert_eq!(strings.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
        let mut line = Vec::new();
        json::write_string_fields(250, &[("Name\"", all.clone())], &mut line);
        let v: serde_json::Value = serde_json::from_slice(&line).expect("valid JSON");
        assert_eq!(v["Name\""], all.as_str());
        assert_eq!(v["EventID"], "250");
    }
}
