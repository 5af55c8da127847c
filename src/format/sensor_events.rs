//! The sensor's own events, as Sysmon writes them: "Sysmon service state
//! changed" (Event ID 4) and "Sysmon config state changed" (Event ID 16).
//! Field names and order from Sysmon's manifest (microsoft/SysmonCommon
//! `manifest.xml`); as JSON lines they lead with `EventID`, like
//! NetworkConnect. The XML form is in `xml.rs`.

use serde::Serialize;

pub const SERVICE_STATE_CHANGE: u32 = 4;
pub const CONFIG_CHANGE: u32 = 16;

/// `SchemaVersion` of the state event: Sysmon writes its configuration
/// schema version ("%.2f"); 4.90 is the newest in Sysmon's manifest, the
/// schema sockscope's config support is to follow.
pub const SCHEMA_VERSION: &str = "4.90";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ServiceState {
    Started,
    Stopped,
}

impl ServiceState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Started => "Started",
            ServiceState::Stopped => "Stopped",
        }
    }
}

/// Event ID 4: the sensor started or stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceStateChange {
    #[serde(rename = "EventID")]
    pub event_id: u32,
    /// `YYYY-MM-DD HH:MM:SS.mmm`, UTC.
    pub utc_time: String,
    pub state: ServiceState,
    /// The sensor's version.
    pub version: String,
    pub schema_version: String,
}

impl ServiceStateChange {
    pub fn new(utc_time: String, state: ServiceState, version: String) -> Self {
        Self { event_id: SERVICE_STATE_CHANGE, utc_time, state, version, schema_version: SCHEMA_VERSION.to_string() }
    }

    /// Name/value pairs after EventID, in the JSON order.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("UtcTime", self.utc_time.clone()),
            ("State", self.state.as_str().to_string()),
            ("Version", self.version.clone()),
            ("SchemaVersion", self.schema_version.clone()),
        ]
    }
}

/// Event ID 16: the configuration in force changed (or was loaded at start).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConfigChange {
    #[serde(rename = "EventID")]
    pub event_id: u32,
    /// `YYYY-MM-DD HH:MM:SS.mmm`, UTC.
    pub utc_time: String,
    /// The configuration file's path, or `Defaults` / the command line when
    /// there is no file (what Sysmon writes in those cases).
    pub configuration: String,
    /// `SHA256=<hex>` of the file; `-` when there is no file.
    pub configuration_file_hash: String,
}

impl ConfigChange {
    pub fn new(utc_time: String, configuration: String, configuration_file_hash: String) -> Self {
        // No hash (no file): "-", as Sysmon writes an unknown string.
        let configuration_file_hash =
            if configuration_file_hash.is_empty() { "-".to_string() } else { configuration_file_hash };
        Self { event_id: CONFIG_CHANGE, utc_time, configuration, configuration_file_hash }
    }

    /// Name/value pairs after EventID, in the JSON order.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("UtcTime", self.utc_time.clone()),
            ("Configuration", self.configuration.clone()),
            ("ConfigurationFileHash", self.configuration_file_hash.clone()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::write_json_line;

    #[test]
    fn service_state_json_fields_in_order() {
        let ev = ServiceStateChange::new("2026-11-29 16:37:54.640".into(), ServiceState::Stopped, "0.1.0".into());
        let mut buf = Vec::new();
        write_json_line(&ev, &mut buf).expect("write");
        assert_eq!(
            String::from_utf8(buf).expect("utf8"),
            "{\"EventID\":4,\"UtcTime\":\"2026-11-29 16:37:54.640\",\"State\":\"Stopped\",\
             \"Version\":\"0.1.0\",\"SchemaVersion\":\"4.90\"}\n"
        );
    }

    #[test]
    fn config_change_json_fields_in_order() {
        let ev =
            ConfigChange::new("2026-11-29 16:37:54.640".into(), "/etc/sockscope.xml".into(), "SHA256=ab\"cd".into());
        let mut buf = Vec::new();
        write_json_line(&ev, &mut buf).expect("write");
        assert_eq!(
            String::from_utf8(buf).expect("utf8"),
            "{\"EventID\":16,\"UtcTime\":\"2026-11-29 16:37:54.640\",\"Configuration\":\"/etc/sockscope.xml\",\
             \"ConfigurationFileHash\":\"SHA256=ab\\\"cd\"}\n"
        );
    }

    #[test]
    fn config_change_without_hash_is_a_dash() {
        let ev = ConfigChange::new("2026-11-29 16:37:54.640".into(), "Defaults".into(), String::new());
        let mut buf = Vec::new();
        write_json_line(&ev, &mut buf).expect("write");
        let v: serde_json::Value = serde_json::from_slice(&buf).expect("json");
        assert_eq!(v["ConfigurationFileHash"], "-");
        assert_eq!(v["Configuration"], "Defaults");
    }
}
