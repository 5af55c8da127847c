//! Format: an event -> one line of text. JSON lines today; the Sysmon XML
//! form is a later step.
pub mod community_id;
pub mod record_id;
pub mod service;
pub mod services;
pub mod xml;

use std::io::Write;

use anyhow::{Context, Result};
use clap::ValueEnum;

use crate::event::NetworkConnect;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One JSON object per line (DESIGN.md event contract).
    Json,
}

pub fn write_event(format: Format, event: &NetworkConnect, out: &mut dyn Write) -> Result<()> {
    match format {
        Format::Json => {
            serde_json::to_writer(&mut *out, event).context("encoding event as JSON")?;
            out.write_all(b"\n").context("writing event")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NetworkConnect {
        NetworkConnect {
            event_id: 3,
            rule_name: "-".into(),
            utc_time: "2026-11-29 16:37:54.640".into(),
            process_guid: "{3d1219c7-54e2-6b0c-5541-147800560000}".into(),
            process_id: 30533,
            image: "/tmp/we\"ird\n\u{1}name".into(),
            user: "root".into(),
            protocol: "tcp",
            initiated: true,
            source_is_ipv6: false,
            source_ip: "127.0.0.1".into(),
            source_hostname: "-".into(),
            source_port: 60802,
            source_port_name: "-".into(),
            destination_is_ipv6: false,
            destination_ip: "127.0.0.1".into(),
            destination_hostname: "-".into(),
            destination_port: 18080,
            destination_port_name: "-".into(),
            command_line: "-".into(),
            command_line_truncated: false,
            parent_process_id: 1,
            parent_image: "/sbin/init".into(),
            user_id: 0,
            thread_id: 30533,
            process_id_in_namespace: None,
            container_id: "-".into(),
            net_ns: 4026531840,
            attribution: "connect",
        }
    }

    #[test]
    fn json_has_contract_order_and_types() {
        let mut buf = Vec::new();
        write_event(Format::Json, &sample(), &mut buf).expect("format");
        let line = String::from_utf8(buf).expect("utf8");
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1, "one line: {line:?}");
        let order = [
            "EventID",
            "RuleName",
            "UtcTime",
            "ProcessGuid",
            "ProcessId",
            "Image",
            "User",
            "Protocol",
            "Initiated",
            "SourceIsIpv6",
            "SourceIp",
            "SourceHostname",
            "SourcePort",
            "SourcePortName",
            "DestinationIsIpv6",
            "DestinationIp",
            "DestinationHostname",
            "DestinationPort",
            "DestinationPortName",
            "CommandLine",
        ];
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
