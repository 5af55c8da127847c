//! The NetworkConnect event (Sysmon Event ID 3): field names and order of the
//! contract in DESIGN.md, then sockscope's own fields; and sockscope's own
//! events of a connection's life (252 failed, 253 closed), which carry the
//! same fields and then their own.

use std::sync::Arc;

use serde::Serialize;

pub const NETWORK_CONNECT: u32 = 3;

/// Text an event shares with other events (a process's image, a user name,
/// "-"): cloned by reference count, not copied, once per event.
pub type Shared = Arc<str>;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkConnect {
    #[serde(rename = "EventID")]
    pub event_id: u32,
    pub rule_name: Shared,
    pub utc_time: String,
    pub process_guid: Shared,
    pub process_id: u32,
    pub image: Shared,
    pub user: Shared,
    pub protocol: &'static str,
    pub initiated: bool,
    pub source_is_ipv6: bool,
    pub source_ip: String,
    pub source_hostname: Shared,
    pub source_port: u16,
    pub source_port_name: Shared,
    pub destination_is_ipv6: bool,
    pub destination_ip: String,
    pub destination_hostname: Shared,
    pub destination_port: u16,
    pub destination_port_name: Shared,
    // sockscope's own fields
    pub command_line: Shared,
    pub command_line_truncated: bool,
    /// The executable's path was longer than the kernel captures: `Image`
    /// holds its beginning.
    pub image_truncated: bool,
    pub parent_process_id: u32,
    pub parent_image: Shared,
    pub user_id: u32,
    pub thread_id: u32,
    /// The pid as the process sees it, when that differs from ProcessId.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_id_in_namespace: Option<u32>,
    pub container_id: Shared,
    pub net_ns: u32,
    /// Community ID v1 of the flow, to join with network sensors' logs.
    pub community_id: String,
    pub attribution: &'static str,
}

/// Sysmon's NetworkConnect fields after EventID, in its manifest's order:
/// the contract's JSON order, and all the XML form carries.
#[cfg(test)]
pub const SYSMON_FIELDS: [&str; 18] = [
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
];

/// The NetworkConnect of DESIGN.md's XML example, plus values for
/// sockscope's own fields (which the XML form must leave out).
#[cfg(test)]
pub fn design_example() -> NetworkConnect {
    NetworkConnect {
        event_id: NETWORK_CONNECT,
        rule_name: "-".into(),
        utc_time: "2026-11-29 16:37:54.640".into(),
        process_guid: "{3d1219c7-54e2-6b0c-5541-147800560000}".into(),
        process_id: 30533,
        image: "/usr/bin/python3.11".into(),
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
        command_line: "python3 -c connect".into(),
        command_line_truncated: false,
        image_truncated: false,
        parent_process_id: 1234,
        parent_image: "/usr/bin/bash".into(),
        user_id: 0,
        thread_id: 30533,
        process_id_in_namespace: Some(7),
        container_id: "c0ffee".into(),
        net_ns: 4026531840,
        community_id: "1:LQU9qZlK+B5F3KDmev6m5PMibrg=".into(),
        attribution: "connect",
    }
}

/// sockscope's own event: an outbound TCP handshake failed (or several, folded).
pub const CONNECTION_FAILED: u32 = 252;
/// sockscope's own event: a connection reported by event 3 ended (TCP), or a
/// UDP flow expired from the window.
pub const CONNECTION_CLOSED: u32 = 253;

/// A value of a lifecycle event's own field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extra {
    Num(u64),
    Text(&'static str),
}

impl Extra {
    /// As the event writes it (numbers in decimal).
    pub fn text(&self) -> std::borrow::Cow<'static, str> {
        match self {
            Extra::Num(n) => n.to_string().into(),
            Extra::Text(t) => (*t).into(),
        }
    }
}

/// Event 252 or 253: the NetworkConnect fields (its `event_id` says which,
/// `utc_time` when it failed or ended), then the event's own fields in order.
#[derive(Debug, Clone)]
pub struct LifecycleEvent {
    pub connect: NetworkConnect,
    pub extras: Vec<(&'static str, Extra)>,
}

/// Sysmon's DnsQuery.
pub const DNS_QUERY: u32 = 22;

/// A DNS query and its outcome (Sysmon Event ID 22, DnsQuery): Sysmon's
/// fields in its manifest's order, then sockscope's own.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DnsQuery {
    #[serde(rename = "EventID")]
    pub event_id: u32,
    pub rule_name: Shared,
    pub utc_time: String,
    pub process_guid: Shared,
    pub process_id: u32,
    /// The question's name, RFC 1035 presentation form (`\.`, `\\`, `\DDD` escapes).
    pub query_name: String,
    /// The response's RCODE; 1460: no response; 9502: a response that did not parse.
    pub query_status: u32,
    pub query_results: String,
    pub image: Shared,
    pub user: Shared,
    // sockscope's own fields
    pub net_ns: u32,
    pub container_id: Shared,
    pub server_ip: String,
    pub protocol: &'static str,
}

/// How many of DnsQuery's fields (after EventID) are Sysmon's: all the XML form carries.
pub const DNS_QUERY_SYSMON_FIELDS: usize = 9;

impl DnsQuery {
    /// Name/value pairs after EventID, in the JSON order; Sysmon's first.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("RuleName", self.rule_name.to_string()),
            ("UtcTime", self.utc_time.clone()),
            ("ProcessGuid", self.process_guid.to_string()),
            ("ProcessId", self.process_id.to_string()),
            ("QueryName", self.query_name.clone()),
            ("QueryStatus", self.query_status.to_string()),
            ("QueryResults", self.query_results.clone()),
            ("Image", self.image.to_string()),
            ("User", self.user.to_string()),
            ("NetNs", self.net_ns.to_string()),
            ("ContainerId", self.container_id.to_string()),
            ("ServerIp", self.server_ip.clone()),
            ("Protocol", self.protocol.to_string()),
        ]
    }
}

/// A DnsQuery with a value in every field, for tests.
#[cfg(test)]
pub fn dns_example() -> DnsQuery {
    DnsQuery {
        event_id: DNS_QUERY,
        rule_name: "-".into(),
        utc_time: "2026-11-29 16:37:54.640".into(),
        process_guid: "{3d1219c7-54e2-6b0c-5541-147800560000}".into(),
        process_id: 30533,
        query_name: "www.Example.test".into(),
        query_status: 0,
        query_results: "type:  5 cdn.example.test;::ffff:192.0.2.7;".into(),
        image: "/usr/bin/curl".into(),
        user: "root".into(),
        net_ns: 4026531840,
        container_id: "-".into(),
        server_ip: "127.0.0.53".into(),
        protocol: "udp",
    }
}

/// sockscope's own event: something was lost since the last one (deltas).
pub const SENSOR_LOSS: u32 = 250;
/// sockscope's own event: periodic health figures.
pub const SENSOR_STATS: u32 = 251;

/// A figure of the sensor's own events: a count, or a rate (3 decimals as text).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Figure {
    Count(u64),
    Rate(f64),
}

/// The sensor's loss (250) and stats (251) events: `EventID`, `UtcTime`,
/// then their figures in order (named in src/health.rs's counter table).
#[derive(Debug, Clone, PartialEq)]
pub struct SensorRecord {
    pub event_id: u32,
    pub utc_time: String,
    pub values: Vec<(&'static str, Figure)>,
}

impl SensorRecord {
    /// Name/value pairs for the XML form and string-typed JSON, in the JSON order.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![("UtcTime", self.utc_time.clone())];
        out.extend(self.values.iter().map(|(name, v)| {
            (
                *name,
                match v {
                    Figure::Count(n) => n.to_string(),
                    Figure::Rate(r) => format!("{r:.3}"),
                },
            )
        }));
        out
    }
}

impl Serialize for SensorRecord {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.values.len() + 2))?;
        map.serialize_entry("EventID", &self.event_id)?;
        map.serialize_entry("UtcTime", &self.utc_time)?;
        for (name, v) in &self.values {
            match v {
                Figure::Count(n) => map.serialize_entry(name, n)?,
                Figure::Rate(r) => map.serialize_entry(name, r)?,
            }
        }
        map.end()
    }
}

/// Sysmon's "Error report" event (ID 255): something the sensor recovered
/// from, or could not do, as Sysmon reports its own errors.
pub const SENSOR_ERROR: u32 = 255;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SensorError {
    #[serde(rename = "EventID")]
    pub event_id: u32,
    pub utc_time: String,
    /// What happened, as a short name (e.g. `StateFileCorrupt`).
    #[serde(rename = "ID")]
    pub id: String,
    pub description: String,
}

impl SensorError {
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        vec![("UtcTime", self.utc_time.clone()), ("ID", self.id.clone()), ("Description", self.description.clone())]
    }
}
