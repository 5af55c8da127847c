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

/// sockscope's own event: something was lost since the last one (deltas).
pub const SENSOR_LOSS: u32 = 250;
/// sockscope's own event: periodic health figures.
pub const SENSOR_STATS: u32 = 251;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SensorLoss {
    #[serde(rename = "EventID")]
    pub event_id: u32,
    pub utc_time: String,
    /// Kernel facts that found the ring buffer full.
    pub ring_buffer_drops: u64,
    /// Accepted TCP connections whose socket the probes could not name.
    pub tcp_accepts_unresolved: u64,
    /// New UDP flows the kernel held back to keep the ring buffer for TCP.
    pub udp_shed_in_kernel: u64,
    /// UDP events the writer queue shed to keep room for TCP.
    pub udp_shed_in_queue: u64,
    /// Events dropped because the writer queue was full.
    pub queue_dropped: u64,
    /// Events an output gave up on (a syslog receiver gone or too slow).
    pub output_dropped: u64,
}

impl SensorLoss {
    /// Name/value pairs for the XML form, in the JSON order.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("UtcTime", self.utc_time.clone()),
            ("RingBufferDrops", self.ring_buffer_drops.to_string()),
            ("TcpAcceptsUnresolved", self.tcp_accepts_unresolved.to_string()),
            ("UdpShedInKernel", self.udp_shed_in_kernel.to_string()),
            ("UdpShedInQueue", self.udp_shed_in_queue.to_string()),
            ("QueueDropped", self.queue_dropped.to_string()),
            ("OutputDropped", self.output_dropped.to_string()),
        ]
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SensorStats {
    #[serde(rename = "EventID")]
    pub event_id: u32,
    pub utc_time: String,
    pub interval_seconds: f64,
    pub events_per_second: f64,
    pub events_written: u64,
    pub events_filtered: u64,
    /// Everything lost since start (the sum of SensorLoss's counts).
    pub lost: u64,
    pub udp_packets_suppressed: u64,
    pub udp_flows_tracked: u64,
    pub tcp_pending: u64,
    pub processes: u64,
    /// Times the sensor took normal CPU priority to catch up (since start).
    pub cpu_boosts: u64,
    /// Bursts the reader left in the ring buffer until they ended (backpressure::burst).
    pub bursts_deferred: u64,
    /// Most unread bytes seen in the ring buffer during the interval.
    pub ring_buffer_peak_bytes: u64,
}

impl SensorStats {
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("UtcTime", self.utc_time.clone()),
            ("IntervalSeconds", format!("{:.3}", self.interval_seconds)),
            ("EventsPerSecond", format!("{:.3}", self.events_per_second)),
            ("EventsWritten", self.events_written.to_string()),
            ("EventsFiltered", self.events_filtered.to_string()),
            ("Lost", self.lost.to_string()),
            ("UdpPacketsSuppressed", self.udp_packets_suppressed.to_string()),
            ("UdpFlowsTracked", self.udp_flows_tracked.to_string()),
            ("TcpPending", self.tcp_pending.to_string()),
            ("Processes", self.processes.to_string()),
            ("CpuBoosts", self.cpu_boosts.to_string()),
            ("BurstsDeferred", self.bursts_deferred.to_string()),
            ("RingBufferPeakBytes", self.ring_buffer_peak_bytes.to_string()),
        ]
    }
}
