//! The NetworkConnect event (Sysmon Event ID 3): field names and order of the
//! contract in DESIGN.md, then sockscope's own fields.

use serde::Serialize;

pub const NETWORK_CONNECT: u32 = 3;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkConnect {
    #[serde(rename = "EventID")]
    pub event_id: u32,
    pub rule_name: String,
    pub utc_time: String,
    pub process_guid: String,
    pub process_id: u32,
    pub image: String,
    pub user: String,
    pub protocol: &'static str,
    pub initiated: bool,
    pub source_is_ipv6: bool,
    pub source_ip: String,
    pub source_hostname: String,
    pub source_port: u16,
    pub source_port_name: String,
    pub destination_is_ipv6: bool,
    pub destination_ip: String,
    pub destination_hostname: String,
    pub destination_port: u16,
    pub destination_port_name: String,
    // sockscope's own fields
    pub command_line: String,
    pub command_line_truncated: bool,
    pub parent_process_id: u32,
    pub parent_image: String,
    pub user_id: u32,
    pub thread_id: u32,
    /// The pid as the process sees it, when that differs from ProcessId.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_id_in_namespace: Option<u32>,
    pub container_id: String,
    pub net_ns: u32,
    /// Community ID v1 of the flow, to join with network sensors' logs.
    pub community_id: String,
    pub attribution: &'static str,
}
