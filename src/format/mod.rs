//! Format: an event -> one line of text: JSON lines (DESIGN.md contract) or
//! Sysmon for Linux's one-line XML `<Event>`.
pub mod community_id;
pub mod json;
pub mod record_id;
pub mod service;
pub mod services;
pub mod xml;
#[cfg(test)]
pub mod xml_check;

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use clap::ValueEnum;

use crate::event::NetworkConnect;
use record_id::RecordIds;
use service::{ConfigChange, ServiceState, ServiceStateChange};
use xml::XmlContext;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One JSON object per line (DESIGN.md event contract).
    Json,
    /// Sysmon for Linux's one-line XML <Event>.
    Xml,
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
        Ok(Self { format, xml: XmlContext::current()?, record_ids })
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
                json::write_network_connect(event, out);
                Ok(())
            }
            Format::Xml => {
                let id = self.next_record_id()?;
                xml::write_network_connect(&self.xml, id, now_unix_ns, event, out)
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
            ServiceStateChange::new(crate::enrich::format_utc(now_unix_ns), state, env!("CARGO_PKG_VERSION").into());
        if let Some(schema) = schema {
            event.schema_version = schema.to_string();
        }
        match self.format {
            Format::Json => event.write_json(out),
            Format::Xml => {
                let id = self.next_record_id()?;
                xml::write_service_state_change(&self.xml, id, now_unix_ns, &event, out)
            }
        }
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
        let event = ConfigChange::new(crate::enrich::format_utc(now_unix_ns), configuration.to_string(), hash);
        match self.format {
            Format::Json => event.write_json(out),
            Format::Xml => {
                let id = self.next_record_id()?;
                xml::write_config_change(&self.xml, id, now_unix_ns, &event, out)
            }
        }
    }

    /// sockscope's own events (loss, stats): JSON as serialized, XML from `fields`.
    pub fn sensor_event(
        &mut self,
        event_id: u32,
        json: &impl serde::Serialize,
        fields: &[(&str, String)],
        now_unix_ns: i128,
        out: &mut dyn Write,
    ) -> Result<()> {
        match self.format {
            Format::Json => write_json_line(json, out),
            Format::Xml => {
                let id = self.next_record_id()?;
                xml::write_sensor_event(&self.xml, event_id, id, now_unix_ns, fields, out)
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
}
