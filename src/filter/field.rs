//! The fields a rule can test, by their names in the event: NetworkConnect's,
//! and the own fields of sockscope's lifecycle events (252, 253).
//!
//! Field names are case-sensitive, as in Sysmon: it finds a field with a plain
//! `strcmp` (SysmonCommon `xml.cpp`, `GetFieldIndex`), so `<image>` is not `<Image>`.

use std::borrow::Cow;

use crate::event::{DnsQuery, NetworkConnect};

/// How a field's value is written, which decides which rule values make sense.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    Text,
    /// An unsigned integer written in decimal.
    Number,
    /// `true` or `false`.
    Bool,
}

macro_rules! fields {
    ($($variant:ident: $kind:ident),+ $(,)?) => {
        /// A NetworkConnect field, named as in the JSON and XML event.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Field {
            $($variant),+
        }

        impl Field {
            pub const ALL: &'static [Field] = &[$(Field::$variant),+];

            pub fn name(self) -> &'static str {
                match self {
                    $(Field::$variant => stringify!($variant)),+
                }
            }

            pub fn kind(self) -> ValueKind {
                match self {
                    $(Field::$variant => ValueKind::$kind),+
                }
            }
        }
    };
}

fields! {
    RuleName: Text,
    UtcTime: Text,
    ProcessGuid: Text,
    ProcessId: Number,
    Image: Text,
    User: Text,
    Protocol: Text,
    Initiated: Bool,
    SourceIsIpv6: Bool,
    SourceIp: Text,
    SourceHostname: Text,
    SourcePort: Number,
    SourcePortName: Text,
    DestinationIsIpv6: Bool,
    DestinationIp: Text,
    DestinationHostname: Text,
    DestinationPort: Number,
    DestinationPortName: Text,
    // sockscope's own fields
    CommandLine: Text,
    CommandLineTruncated: Bool,
    ImageTruncated: Bool,
    ParentProcessId: Number,
    ParentImage: Text,
    UserId: Number,
    ThreadId: Number,
    ProcessIdInNamespace: Number,
    ContainerId: Text,
    NetNs: Number,
    CommunityId: Text,
    Attribution: Text,
    // DnsQuery's own (its other fields are NetworkConnect's names)
    QueryName: Text,
    QueryStatus: Number,
    QueryResults: Text,
    ServerIp: Text,
    // ConnectionFailed's own (252; its others are NetworkConnect's)
    Failure: Text,
    Attempts: Number,
    Count: Number,
    // ConnectionClosed's own (253; its others are NetworkConnect's)
    Duration: Number,
    BytesSent: Number,
    BytesReceived: Number,
    SegmentsRetransmitted: Number,
    SmoothedRttUs: Number,
    DatagramsSent: Number,
    DatagramsReceived: Number,
    CloseReason: Text,
}

/// The event types a config filters, by their element names: each has its
/// own fields, and a rule naming a field of another type is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    NetworkConnect,
    /// Sysmon's event 22.
    DnsQuery,
    /// sockscope's event 252.
    ConnectionFailed,
    /// sockscope's event 253.
    ConnectionClosed,
}

impl EventType {
    pub const ALL: &'static [EventType] =
        &[EventType::NetworkConnect, EventType::DnsQuery, EventType::ConnectionFailed, EventType::ConnectionClosed];

    pub fn name(self) -> &'static str {
        match self {
            EventType::NetworkConnect => "NetworkConnect",
            EventType::DnsQuery => "DnsQuery",
            EventType::ConnectionFailed => "ConnectionFailed",
            EventType::ConnectionClosed => "ConnectionClosed",
        }
    }

    pub fn from_name(name: &str) -> Option<EventType> {
        EventType::ALL.iter().copied().find(|t| t.name() == name)
    }

    /// This type's fields, in the order its events write them.
    pub fn fields(self) -> &'static [Field] {
        match self {
            EventType::NetworkConnect => Field::NETWORK_CONNECT,
            EventType::DnsQuery => Field::DNS_QUERY,
            EventType::ConnectionFailed => Field::CONNECTION_FAILED,
            EventType::ConnectionClosed => Field::CONNECTION_CLOSED,
        }
    }

    /// Whether events of this type have `field`.
    pub fn has(self, field: Field) -> bool {
        self.fields().contains(&field)
    }
}

/// `a` then `b`, as an array of `N` (checked when compiled).
const fn concat<const N: usize>(a: &[Field], b: &[Field]) -> [Field; N] {
    assert!(a.len() + b.len() == N);
    let mut out = [Field::RuleName; N];
    let mut i = 0;
    while i < a.len() {
        out[i] = a[i];
        i += 1;
    }
    let mut j = 0;
    while j < b.len() {
        out[i + j] = b[j];
        j += 1;
    }
    out
}

impl Field {
    /// NetworkConnect's fields, in its order.
    pub const NETWORK_CONNECT: &'static [Field] = &[
        Field::RuleName,
        Field::UtcTime,
        Field::ProcessGuid,
        Field::ProcessId,
        Field::Image,
        Field::User,
        Field::Protocol,
        Field::Initiated,
        Field::SourceIsIpv6,
        Field::SourceIp,
        Field::SourceHostname,
        Field::SourcePort,
        Field::SourcePortName,
        Field::DestinationIsIpv6,
        Field::DestinationIp,
        Field::DestinationHostname,
        Field::DestinationPort,
        Field::DestinationPortName,
        Field::CommandLine,
        Field::CommandLineTruncated,
        Field::ImageTruncated,
        Field::ParentProcessId,
        Field::ParentImage,
        Field::UserId,
        Field::ThreadId,
        Field::ProcessIdInNamespace,
        Field::ContainerId,
        Field::NetNs,
        Field::CommunityId,
        Field::Attribution,
    ];

    /// DnsQuery's fields, in its order.
    pub const DNS_QUERY: &'static [Field] = &[
        Field::RuleName,
        Field::UtcTime,
        Field::ProcessGuid,
        Field::ProcessId,
        Field::QueryName,
        Field::QueryStatus,
        Field::QueryResults,
        Field::Image,
        Field::User,
        Field::NetNs,
        Field::ContainerId,
        Field::ServerIp,
        Field::Protocol,
    ];

    /// ConnectionFailed's fields (252): NetworkConnect's, then its own.
    pub const CONNECTION_FAILED: &'static [Field] = &concat::<{ Field::NETWORK_CONNECT.len() + 3 }>(
        Field::NETWORK_CONNECT,
        &[Field::Failure, Field::Attempts, Field::Count],
    );

    /// ConnectionClosed's fields (253): NetworkConnect's, then its own (a TCP
    /// close has the segment and RTT figures, a UDP flow's the datagrams).
    pub const CONNECTION_CLOSED: &'static [Field] = &concat::<{ Field::NETWORK_CONNECT.len() + 8 }>(
        Field::NETWORK_CONNECT,
        &[
            Field::Duration,
            Field::BytesSent,
            Field::BytesReceived,
            Field::SegmentsRetransmitted,
            Field::SmoothedRttUs,
            Field::DatagramsSent,
            Field::DatagramsReceived,
            Field::CloseReason,
        ],
    );

    /// The lifecycle event a field is the own field of; None for the others.
    pub fn lifecycle_event(self) -> Option<EventType> {
        [EventType::ConnectionFailed, EventType::ConnectionClosed]
            .into_iter()
            .find(|t| t.has(self) && !EventType::NetworkConnect.has(self))
    }

    /// Number of fields; a `Field as usize` indexes arrays of this length.
    pub const COUNT: usize = Field::ALL.len();

    /// The NetworkConnect field with exactly this name (case-sensitive, as Sysmon).
    pub fn from_name(name: &str) -> Option<Field> {
        Field::from_name_in(Field::NETWORK_CONNECT, name)
    }

    /// The field of `fields` (an event type's) with exactly this name.
    pub fn from_name_in(fields: &[Field], name: &str) -> Option<Field> {
        fields.iter().copied().find(|field| field.name() == name)
    }

    /// The NetworkConnect field whose name differs from `name` only in case, to suggest a fix.
    pub fn from_name_ignoring_case(name: &str) -> Option<Field> {
        Field::from_name_ignoring_case_in(Field::NETWORK_CONNECT, name)
    }

    /// The field of `fields` whose name differs from `name` only in case.
    pub fn from_name_ignoring_case_in(fields: &[Field], name: &str) -> Option<Field> {
        fields.iter().copied().find(|field| field.name().eq_ignore_ascii_case(name))
    }
}

/// The value a rule compares for `field`: text as the event carries it, booleans
/// as `true`/`false`, numbers in decimal — the same text the event is written with.
pub fn field_value(event: &NetworkConnect, field: Field) -> Cow<'_, str> {
    fn text(value: &str) -> Cow<'_, str> {
        Cow::Borrowed(value)
    }
    fn number(value: impl Into<u64>) -> Cow<'static, str> {
        Cow::Owned(value.into().to_string())
    }
    fn boolean(value: bool) -> Cow<'static, str> {
        Cow::Borrowed(if value { "true" } else { "false" })
    }

    match field {
        Field::RuleName => text(&event.rule_name),
        Field::UtcTime => text(&event.utc_time),
        Field::ProcessGuid => text(&event.process_guid),
        Field::ProcessId => number(event.process_id),
        Field::Image => text(&event.image),
        Field::User => text(&event.user),
        Field::Protocol => text(event.protocol),
        Field::Initiated => boolean(event.initiated),
        Field::SourceIsIpv6 => boolean(event.source_is_ipv6),
        Field::SourceIp => text(&event.source_ip),
        Field::SourceHostname => text(&event.source_hostname),
        Field::SourcePort => number(event.source_port),
        Field::SourcePortName => text(&event.source_port_name),
        Field::DestinationIsIpv6 => boolean(event.destination_is_ipv6),
        Field::DestinationIp => text(&event.destination_ip),
        Field::DestinationHostname => text(&event.destination_hostname),
        Field::DestinationPort => number(event.destination_port),
        Field::DestinationPortName => text(&event.destination_port_name),
        Field::CommandLine => text(&event.command_line),
        Field::CommandLineTruncated => boolean(event.command_line_truncated),
        Field::ImageTruncated => boolean(event.image_truncated),
        Field::ParentProcessId => number(event.parent_process_id),
        Field::ParentImage => text(&event.parent_image),
        Field::UserId => number(event.user_id),
        Field::ThreadId => number(event.thread_id),
        // Absent from the event when it equals ProcessId or is unknown; `-` is
        // how an unknown value is written.
        Field::ProcessIdInNamespace => match event.process_id_in_namespace {
            Some(pid) => number(pid),
            None => text("-"),
        },
        Field::ContainerId => text(&event.container_id),
        Field::NetNs => number(event.net_ns),
        Field::CommunityId => text(&event.community_id),
        Field::Attribution => text(event.attribution),
        // Other event types' own fields: a config cannot name them in
        // <NetworkConnect>; a lifecycle event's own come with it (rules.rs).
        _ => text("-"),
    }
}

/// [`field_value`] for a DnsQuery; fields it does not have read as `-` (a
/// config cannot name them in <DnsQuery>).
pub fn dns_field_value(event: &DnsQuery, field: Field) -> Cow<'_, str> {
    match field {
        Field::RuleName => Cow::Borrowed(&event.rule_name),
        Field::UtcTime => Cow::Borrowed(&event.utc_time),
        Field::ProcessGuid => Cow::Borrowed(&event.process_guid),
        Field::ProcessId => Cow::Owned(event.process_id.to_string()),
        Field::QueryName => Cow::Borrowed(&event.query_name),
        Field::QueryStatus => Cow::Owned(event.query_status.to_string()),
        Field::QueryResults => Cow::Borrowed(&event.query_results),
        Field::Image => Cow::Borrowed(&event.image),
        Field::User => Cow::Borrowed(&event.user),
        Field::NetNs => Cow::Owned(event.net_ns.to_string()),
        Field::ContainerId => Cow::Borrowed(&event.container_id),
        Field::ServerIp => Cow::Borrowed(&event.server_ip),
        Field::Protocol => Cow::Borrowed(event.protocol),
        _ => Cow::Borrowed("-"),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An event with a distinct value in every field.
    pub(crate) fn sample_event() -> NetworkConnect {
        NetworkConnect {
            event_id: 3,
            rule_name: "-".into(),
            utc_time: "2026-11-29 16:37:54.640".into(),
            process_guid: "{3d1219c7-54e2-6b0c-5541-147800560000}".into(),
            process_id: 30533,
            image: "/usr/bin/Curl".into(),
            user: "Alice".into(),
            protocol: "tcp",
            initiated: true,
            source_is_ipv6: false,
            source_ip: "10.0.0.5".into(),
            source_hostname: "-".into(),
            source_port: 60802,
            source_port_name: "-".into(),
            destination_is_ipv6: false,
            destination_ip: "93.184.216.34".into(),
            destination_hostname: "-".into(),
            destination_port: 443,
            destination_port_name: "-".into(),
            command_line: "curl -s https://Example.com/x".into(),
            command_line_truncated: false,
            image_truncated: false,
            parent_process_id: 4242,
            parent_image: "/usr/bin/bash".into(),
            user_id: 1000,
            thread_id: 30534,
            process_id_in_namespace: Some(7),
            container_id: "c0ffee".into(),
            net_ns: 4026531840,
            community_id: "1:LQU9qZlK+B5F3KDmev6m5PMibrg=".into(),
            attribution: "connect",
        }
    }

    fn json_text(value: &serde_json::Value) -> String {
        match value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }

    #[test]
    fn every_field_name_and_value_is_the_one_written_in_the_event() {
        let event = sample_event();
        let json = serde_json::to_value(&event).expect("serialize");
        let object = json.as_object().expect("object");
        for &field in Field::NETWORK_CONNECT {
            let written = object.get(field.name()).unwrap_or_else(|| panic!("{} is not in the event", field.name()));
            assert_eq!(field_value(&event, field), json_text(written), "{}", field.name());
        }
    }

    #[test]
    fn every_event_field_can_be_filtered_on() {
        // A field added to the event without a Field fails here.
        let json = serde_json::to_value(sample_event()).expect("serialize");
        for key in json.as_object().expect("object").keys() {
            if key != "EventID" {
                assert!(Field::from_name(key).is_some(), "no filter field for {key}");
            }
        }
    }

    #[test]
    fn names_are_case_sensitive() {
        assert_eq!(Field::from_name("DestinationPort"), Some(Field::DestinationPort));
        assert_eq!(Field::from_name("destinationport"), None);
        assert_eq!(Field::from_name("DestinationIsIpV6"), None);
        assert_eq!(Field::from_name_ignoring_case("DestinationIsIpV6"), Some(Field::DestinationIsIpv6));
    }

    #[test]
    fn kinds_follow_the_value_types() {
        let event = sample_event();
        for &field in Field::NETWORK_CONNECT {
            let value = field_value(&event, field);
            match field.kind() {
                ValueKind::Number => assert!(value.parse::<u64>().is_ok(), "{}: {value}", field.name()),
                ValueKind::Bool => assert!(value == "true" || value == "false", "{}: {value}", field.name()),
                ValueKind::Text => {}
            }
        }
    }

    #[test]
    fn every_dns_query_field_is_the_one_written_and_can_be_filtered_on() {
        let event = crate::event::dns_example();
        let json = serde_json::to_value(&event).expect("serialize");
        let object = json.as_object().expect("object");
        for key in object.keys().filter(|k| *k != "EventID") {
            let field = Field::from_name_in(Field::DNS_QUERY, key).unwrap_or_else(|| panic!("no field {key}"));
            assert_eq!(dns_field_value(&event, field), json_text(&object[key]), "{key}");
        }
        assert_eq!(object.len() - 1, Field::DNS_QUERY.len());
        let names: Vec<&str> = event.fields().iter().map(|(n, _)| *n).collect();
        let order: Vec<&str> = Field::DNS_QUERY.iter().map(|f| f.name()).collect();
        assert_eq!(names, order);
    }

    #[test]
    fn missing_namespace_pid_reads_as_unknown() {
        let mut event = sample_event();
        event.process_id_in_namespace = None;
        assert_eq!(field_value(&event, Field::ProcessIdInNamespace), "-");
    }
}
