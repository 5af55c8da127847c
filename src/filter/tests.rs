//! Whole-config tests: the files under tests/configs and small inline configs.

use std::path::{Path, PathBuf};

use super::field::tests::sample_event;
use super::field::{field_value, Field};
use super::sysmon_config::Problem;
use super::*;

fn config_path(name: &str) -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/configs")).join(name)
}

fn load(name: &str) -> (RuleSet, Vec<String>) {
    RuleSet::from_file(config_path(name)).unwrap_or_else(|error| panic!("{name}: {error}"))
}

fn inline(xml: &str) -> (RuleSet, Vec<String>) {
    RuleSet::from_str(xml, "inline.xml").unwrap_or_else(|error| panic!("{error}\n{xml}"))
}

fn filters(schema_version: &str, event_filtering: &str) -> String {
    format!("<Sysmon schemaversion=\"{schema_version}\"><EventFiltering>{event_filtering}</EventFiltering></Sysmon>")
}

fn event(change: impl FnOnce(&mut NetworkConnect)) -> NetworkConnect {
    let mut event = sample_event();
    change(&mut event);
    event
}

/// `Some(rule name)` when reported, `None` when dropped.
fn outcome(rules: &RuleSet, event: &NetworkConnect) -> Option<Option<String>> {
    match rules.evaluate(event) {
        Verdict::Report { rule_name } => Some(rule_name.map(str::to_string)),
        Verdict::Drop => None,
    }
}

fn reported_as(name: &str) -> Option<Option<String>> {
    Some(Some(name.to_string()))
}

const REPORTED_UNNAMED: Option<Option<String>> = Some(None);
const DROPPED: Option<Option<String>> = None;

fn port(port: u16) -> NetworkConnect {
    event(|e| e.destination_port = port)
}

fn image(path: &str) -> NetworkConnect {
    event(|e| e.image = path.into())
}

#[test]
fn without_a_config_everything_is_reported_unnamed() {
    let rules = RuleSet::allow_all();
    assert_eq!(outcome(&rules, &sample_event()), REPORTED_UNNAMED);
    assert!(rules.may_report());
    assert_eq!(rules.config_name(), None);
    assert_eq!(rules.config_bytes(), None);
}

#[test]
fn a_config_without_network_connect_reports_nothing() {
    let (rules, notices) = load("no_network_connect.xml");
    assert_eq!(outcome(&rules, &sample_event()), DROPPED);
    assert_eq!(outcome(&rules, &port(22)), DROPPED);
    assert!(!rules.may_report());
    assert_eq!(notices.len(), 3, "{notices:#?}");
    assert!(notices[0].ends_with(
        ":4:7: 1 <ProcessCreate> filter ignored: sockscope reports NetworkConnect and DnsQuery events only"
    ));
    assert!(notices[1].contains(":7:7: 1 <FileCreate> filter ignored"), "{}", notices[1]);
    assert!(notices[2].contains("no <NetworkConnect> filter"), "{}", notices[2]);
}

#[test]
fn include_reports_only_matches_with_their_names() {
    let (rules, notices) = load("include_basic.xml");
    assert!(notices.is_empty(), "{notices:?}");
    assert_eq!(outcome(&rules, &port(22)), reported_as("ssh"));
    assert_eq!(outcome(&rules, &port(6667)), reported_as("irc"));
    assert_eq!(outcome(&rules, &port(31337)), REPORTED_UNNAMED);
    assert_eq!(outcome(&rules, &image("/usr/bin/nc")), reported_as("netcat"));
    assert_eq!(outcome(&rules, &sample_event()), DROPPED);
    assert!(rules.may_report());
}

#[test]
fn a_lone_exclude_filter_reports_everything_else() {
    let (rules, _) = load("exclude_only.xml");
    assert_eq!(outcome(&rules, &image("/usr/lib/systemd/systemd-resolved")), DROPPED);
    assert_eq!(outcome(&rules, &event(|e| e.destination_ip = "127.0.0.53".into())), DROPPED);
    assert_eq!(outcome(&rules, &event(|e| e.destination_ip = "::1".into())), DROPPED);
    assert_eq!(outcome(&rules, &sample_event()), REPORTED_UNNAMED);
    assert!(rules.may_report());
}

#[test]
fn exclude_wins_over_include() {
    let (rules, _) = load("include_and_exclude.xml");
    // The condition has no name: it takes its RuleGroup's.
    assert_eq!(outcome(&rules, &sample_event()), reported_as("outbound-web"));
    assert_eq!(outcome(&rules, &port(80)), reported_as("outbound-web"));
    assert_eq!(outcome(&rules, &image("/usr/lib/apt/methods/https")), DROPPED);
    assert_eq!(outcome(&rules, &port(22)), DROPPED);
}

#[test]
fn and_group_needs_every_field_and_one_of_the_alternatives() {
    let (rules, _) = load("and_group.xml");
    let shell = |path: &str, port: u16, initiated: bool| {
        event(|e| {
            e.image = path.into();
            e.destination_port = port;
            e.initiated = initiated;
        })
    };
    assert_eq!(outcome(&rules, &shell("/usr/bin/bash", 4444, true)), reported_as("shell-outbound"));
    assert_eq!(outcome(&rules, &shell("/bin/sh", 1024, true)), reported_as("shell-outbound"));
    assert_eq!(outcome(&rules, &shell("/usr/bin/curl", 4444, true)), DROPPED);
    assert_eq!(outcome(&rules, &shell("/usr/bin/bash", 1023, true)), DROPPED);
    assert_eq!(outcome(&rules, &shell("/usr/bin/dash", 4444, false)), DROPPED);
}

#[test]
fn rules_combine_their_conditions_and_pass_on_names() {
    let (rules, _) = load("rule_groups.xml");
    let download = |command_line: &str| event(|e| e.command_line = command_line.into());
    assert_eq!(outcome(&rules, &download("curl -O http://example.com/a")), reported_as("download-tool"));
    assert_eq!(outcome(&rules, &download("curl http://localhost/a")), DROPPED);
    assert_eq!(outcome(&rules, &download("curl https://example.com/a")), DROPPED);
    // Condition name over Rule name over RuleGroup name.
    assert_eq!(outcome(&rules, &port(4444)), reported_as("remote-shell-ports"));
    assert_eq!(outcome(&rules, &port(5555)), reported_as("own-name"));
    assert_eq!(outcome(&rules, &port(6667)), reported_as("network-group"));
    let backup = event(|e| {
        e.command_line = "curl http://example.com/a".into();
        e.user = "backup".into();
    });
    assert_eq!(outcome(&rules, &backup), DROPPED);
}

#[test]
fn default_relation_depends_on_the_schema_version() {
    let (and_rules, _) = load("direct_filters_schema_4_90.xml");
    assert_eq!(outcome(&and_rules, &port(22)), REPORTED_UNNAMED);
    assert_eq!(outcome(&and_rules, &port(80)), DROPPED);
    assert_eq!(outcome(&and_rules, &event(|e| e.protocol = "udp")), DROPPED);

    let (or_rules, _) = load("direct_filters_schema_4_1.xml");
    assert_eq!(outcome(&or_rules, &port(22)), REPORTED_UNNAMED);
    assert_eq!(outcome(&or_rules, &event(|e| e.protocol = "udp")), REPORTED_UNNAMED);
    assert_eq!(outcome(&or_rules, &port(80)), DROPPED);
}

#[test]
fn rule_group_without_relation_takes_the_schema_default() {
    let body = r#"<RuleGroup name="g"><NetworkConnect onmatch="include">
        <DestinationPort>22</DestinationPort><User>alice</User></NetworkConnect></RuleGroup>"#;
    let (new_schema, _) = inline(&filters("4.90", body));
    assert_eq!(outcome(&new_schema, &port(22)), reported_as("g"));
    assert_eq!(outcome(&new_schema, &port(23)), DROPPED);
    let (old_schema, _) = inline(&filters("4.1", body));
    assert_eq!(outcome(&old_schema, &port(23)), reported_as("g"));
    let bob_to_ssh = event(|e| {
        e.user = "bob".into();
        e.destination_port = 22;
    });
    assert_eq!(outcome(&old_schema, &bob_to_ssh), reported_as("g"));
    let neither = event(|e| {
        e.user = "bob".into();
        e.destination_port = 23;
    });
    assert_eq!(outcome(&old_schema, &neither), DROPPED);
}

#[test]
fn empty_filters_include_nothing_or_exclude_nothing() {
    let (include_nothing, _) = load("empty_include.xml");
    assert_eq!(outcome(&include_nothing, &sample_event()), DROPPED);
    assert!(!include_nothing.may_report());
    let (exclude_nothing, _) = load("empty_exclude.xml");
    assert_eq!(outcome(&exclude_nothing, &sample_event()), REPORTED_UNNAMED);
    assert!(exclude_nothing.may_report());
}

#[test]
fn several_exclude_filters_drop_what_none_matches_as_sysmon_does() {
    let (rules, _) = load("two_exclude_groups.xml");
    assert_eq!(outcome(&rules, &port(53)), DROPPED);
    assert_eq!(outcome(&rules, &port(123)), DROPPED);
    assert_eq!(outcome(&rules, &port(443)), DROPPED);
    assert!(!rules.may_report());
}

#[test]
fn legacy_default_attribute_is_the_opposite_of_onmatch() {
    let (rules, _) = load("legacy_default_attribute.xml");
    assert_eq!(outcome(&rules, &port(53)), DROPPED);
    assert_eq!(outcome(&rules, &port(443)), REPORTED_UNNAMED);
    assert_eq!(rules.schema_version(), Some("3.30"));
}

#[test]
fn the_include_filter_written_last_names_the_event() {
    let body = r#"
        <RuleGroup name="first" groupRelation="or"><NetworkConnect onmatch="include">
            <DestinationPort>443</DestinationPort></NetworkConnect></RuleGroup>
        <RuleGroup name="second" groupRelation="or"><NetworkConnect onmatch="include">
            <Protocol>tcp</Protocol></NetworkConnect></RuleGroup>"#;
    let (rules, _) = inline(&filters("4.90", body));
    assert_eq!(outcome(&rules, &sample_event()), reported_as("second"));
    assert_eq!(outcome(&rules, &event(|e| e.protocol = "udp")), reported_as("first"));
}

#[test]
fn every_condition() {
    let (rules, notices) = load("all_conditions.xml");
    assert!(notices.is_empty(), "{notices:?}");
    let case = |marker: u32, path: &str, port: u16| {
        event(|e| {
            e.command_line = format!("cond-{marker}: x").into();
            e.image = path.into();
            e.destination_port = port;
        })
    };
    let expectations: &[(u32, &str, u16, Option<&str>)] = &[
        (1, "/USR/BIN/curl", 1, Some("is")),
        (1, "/usr/bin/curl2", 1, None),
        (2, "/usr/bin/wget", 1, Some("is not")),
        (2, "/usr/bin/CURL", 1, None),
        (3, "/x", 8080, Some("is any")),
        (3, "/x", 8081, None),
        (4, "/usr/bin/x", 1, Some("contains")),
        (4, "/usr/sbin/x", 1, None),
        (5, "/usr/bin/python3", 1, Some("contains any")),
        (5, "/usr/bin/node", 1, None),
        (6, "/usr/local/bin/x", 1, Some("contains all")),
        (6, "/usr/bin/local", 1, None),
        (7, "/opt/x", 1, Some("excludes")),
        (7, "/usr/bin/x", 1, None),
        (8, "/opt/x", 1, Some("excludes any")),
        (8, "/dev/shm/x", 1, None),
        (9, "/usr/bin/x", 1, Some("excludes all")),
        (9, "/usr/sbin/x", 1, None),
        (10, "/TMP/x", 1, Some("begin with")),
        (10, "/var/tmp/x", 1, None),
        (11, "/opt/usr/x", 1, Some("not begin with")),
        (11, "/usr/x", 1, None),
        (12, "/tmp/a.SH", 1, Some("end with")),
        (12, "/tmp/a.shx", 1, None),
        (13, "/tmp/a.shx", 1, Some("not end with")),
        (13, "/tmp/a.sh", 1, None),
        (14, "/x", 80, Some("less than")),
        (14, "/x", 1024, None),
        (15, "/x", 50000, Some("more than")),
        (15, "/x", 49151, None),
        (16, "/usr/bin/nc", 1, Some("image")),
        (16, "/usr/bin/ncat", 1, None),
    ];
    for &(marker, path, port, expected) in expectations {
        let expected = expected.map(|name| Some(name.to_string()));
        assert_eq!(outcome(&rules, &case(marker, path, port)), expected, "cond-{marker} {path} {port}");
    }
}

#[test]
fn linux_technique_config() {
    let (rules, notices) = load("linux_techniques.xml");
    assert_eq!(outcome(&rules, &sample_event()), reported_as("TechniqueID=T1105,TechniqueName=Ingress Tool Transfer"));
    let ssh = |port: u16| {
        event(|e| {
            e.image = "/usr/bin/ssh".into();
            e.destination_port = port;
        })
    };
    assert_eq!(outcome(&rules, &ssh(22)), reported_as("TechniqueID=T1021.004,TechniqueName=Remote Services: SSH"));
    assert_eq!(outcome(&rules, &ssh(2222)), DROPPED);
    assert_eq!(
        outcome(&rules, &image("/usr/bin/socat")),
        reported_as("TechniqueID=T1095,TechniqueName=Non-Application Layer Protocol")
    );
    assert_eq!(outcome(&rules, &image("/usr/bin/python3")), DROPPED);
    // One notice per ignored event type.
    let ignored: Vec<&str> =
        notices.iter().filter_map(|notice| notice.split(": ").nth(1)).filter(|text| text.contains("ignored")).collect();
    assert_eq!(
        ignored,
        [
            "1 <ProcessCreate> filter ignored",
            "1 <ProcessTerminate> filter ignored",
            "1 <RawAccessRead> filter ignored",
            "2 <FileCreate> filters ignored",
            "1 <FileDelete> filter ignored",
        ]
    );
    assert_eq!(notices.len(), 5);
}

#[test]
fn windows_config_loads_and_its_settings_are_ignored() {
    let (rules, notices) = load("windows_modular.xml");
    assert_eq!(outcome(&rules, &port(22)), reported_as("technique_id=T1021.004,technique_name=SSH"));
    assert_eq!(outcome(&rules, &port(9030)), reported_as("technique_id=T1090.003,technique_name=Tor"));
    assert_eq!(outcome(&rules, &sample_event()), DROPPED);
    let udp_rdp = event(|e| {
        e.protocol = "udp";
        e.destination_port = 22;
    });
    assert_eq!(outcome(&rules, &udp_rdp), reported_as("technique_id=T1021.004,technique_name=SSH"));
    let settings = notices.iter().filter(|notice| notice.contains("setting <")).count();
    let event_types =
        notices.iter().filter(|notice| notice.contains("filter ignored") || notice.contains("filters ignored"));
    assert_eq!(settings, 3, "{notices:#?}");
    assert_eq!(event_types.count(), 4, "{notices:#?}");
    assert_eq!(rules.schema_version(), Some("4.50"));
    // Its <DnsQuery onmatch="exclude">: a lone exclude filter reports the rest.
    let mut dns = crate::event::dns_example();
    assert_eq!(rules.evaluate_dns(&dns), Verdict::Report { rule_name: None });
    dns.query_name = "7.2.0.192.in-addr.arpa.".into();
    assert_eq!(rules.evaluate_dns(&dns), Verdict::Drop);
}

#[test]
fn dns_query_filters_use_dns_query_fields() {
    let xml = filters(
        "4.90",
        r#"<DnsQuery onmatch="include"><QueryName name="ex" condition="end with">example.test</QueryName></DnsQuery>
           <DnsQuery onmatch="exclude"><QueryStatus condition="is">3</QueryStatus></DnsQuery>
           <NetworkConnect onmatch="exclude"/>"#,
    );
    let (rules, _) = inline(&xml);
    let mut dns = crate::event::dns_example();
    assert_eq!(rules.evaluate_dns(&dns), Verdict::Report { rule_name: Some("ex") });
    dns.query_status = 3;
    assert_eq!(rules.evaluate_dns(&dns), Verdict::Drop);
    dns.query_status = 0;
    dns.query_name = "other.test".into();
    assert_eq!(rules.evaluate_dns(&dns), Verdict::Drop);
    // A NetworkConnect field in <DnsQuery>, and the reverse: the config is refused.
    let bad = filters(
        "4.90",
        r#"<DnsQuery onmatch="include"><DestinationPort condition="is">53</DestinationPort></DnsQuery>"#,
    );
    let err = RuleSet::from_str(&bad, "bad.xml").expect_err("refused");
    assert!(err.to_string().contains("unknown field `DestinationPort` in <DnsQuery>"), "{err}");
    let bad = filters(
        "4.90",
        r#"<NetworkConnect onmatch="include"><QueryName condition="is">a</QueryName></NetworkConnect>"#,
    );
    assert!(RuleSet::from_str(&bad, "bad.xml").is_err());
    // Without a config every query is reported.
    assert_eq!(RuleSet::allow_all().evaluate_dns(&dns), Verdict::Report { rule_name: None });
}

/// A malformed config says where it fails in its first lines:
/// `<!-- expect-error LINE:COLUMN KIND -->`.
fn expected_error(path: &Path) -> (usize, usize, String) {
    let bytes = std::fs::read(path).expect("read");
    let text = String::from_utf8_lossy(&bytes);
    let marker = text.split("expect-error ").nth(1).expect("expect-error marker");
    let mut words = marker.split_whitespace();
    let (line, column) = words.next().and_then(|position| position.split_once(':')).expect("LINE:COLUMN");
    let kind = words.next().expect("KIND");
    (line.parse().expect("line"), column.parse().expect("column"), kind.to_string())
}

fn kind(problem: &Problem) -> &'static str {
    match problem {
        Problem::Encoding(_) => "encoding",
        Problem::MalformedXml(_) => "malformed-xml",
        Problem::WrongRoot(_) => "wrong-root",
        Problem::MissingAttribute { .. } => "missing-attribute",
        Problem::UnexpectedElement { .. } => "unexpected-element",
        Problem::UnknownField { .. } => "unknown-field",
        Problem::UnknownCondition(_) => "unknown-condition",
        Problem::BadValue(_) => "bad-value",
    }
}

#[test]
fn malformed_configs_are_rejected_at_the_right_place() {
    let directory = config_path("malformed");
    let mut checked = 0;
    for entry in std::fs::read_dir(&directory).expect("malformed configs") {
        let path = entry.expect("entry").path();
        let (line, column, expected_kind) = expected_error(&path);
        let error = match RuleSet::from_file(&path) {
            Ok(_) => panic!("{} was accepted", path.display()),
            Err(error) => error,
        };
        let message = error.to_string();
        assert_eq!(error.location(), Some((line, column)), "{message}");
        assert_eq!(error.problem().map(kind), Some(expected_kind.as_str()), "{message}");
        assert!(message.starts_with(&format!("{}:{line}:{column}: ", path.display())), "{message}");
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} malformed configs");
}

#[test]
fn error_messages_name_the_problem() {
    let error = |xml: &str| RuleSet::from_str(xml, "c.xml").expect_err("rejected").to_string();
    assert_eq!(
        error(&filters(
            "4.90",
            r#"<NetworkConnect onmatch="include"><Destinationport>1</Destinationport></NetworkConnect>"#
        )),
        "c.xml:1:80: unknown field `Destinationport` in <NetworkConnect> \
         (did you mean DestinationPort? names are case-sensitive)"
    );
    assert!(error(&filters(
        "4.90",
        r#"<NetworkConnect onmatch="include"><Image condition="like">a</Image></NetworkConnect>"#
    ))
    .contains("unknown condition `like`; the conditions are: is, is not, is any, contains,"));
    assert_eq!(
        error(&filters(
            "4.90",
            r#"<NetworkConnect onmatch="include"><SourcePort condition="less than">low</SourcePort></NetworkConnect>"#
        )),
        "c.xml:1:114: bad value: `less than` on SourcePort needs a number, not `low`"
    );
    assert_eq!(
        error(&filters("4.90", "<NetworkConnnect onmatch=\"include\"/>")),
        "c.xml:1:46: unexpected element <NetworkConnnect> in <EventFiltering>; \
         expected <RuleGroup> or an event type such as <NetworkConnect>"
    );
    assert_eq!(
        error(&filters("4.90", "<ruleGroup><networkConnect onmatch=\"include\"/></ruleGroup>")),
        "c.xml:1:57: unexpected element <networkConnect> in <ruleGroup>; \
         expected an event type such as <NetworkConnect> (did you mean <NetworkConnect>? names are case-sensitive)"
    );
}

#[test]
fn a_missing_file_is_a_read_error_naming_it() {
    let path = config_path("does-not-exist.xml");
    let error = RuleSet::from_file(&path).expect_err("missing");
    assert!(matches!(error, ConfigError::Read { .. }));
    assert_eq!(error.location(), None);
    assert!(error.to_string().contains("does-not-exist.xml"), "{error}");
}

#[test]
fn the_config_is_kept_for_its_hash() {
    let path = config_path("include_basic.xml");
    let (rules, _) = RuleSet::from_file(&path).expect("loads");
    assert_eq!(rules.config_bytes(), Some(std::fs::read(&path).expect("read").as_slice()));
    assert_eq!(rules.config_name(), Some(path.display().to_string().as_str()));
    assert_eq!(rules.schema_version(), Some("4.90"));
}

#[test]
fn every_field_can_be_matched_from_a_config() {
    let sample = sample_event();
    for &field in Field::NETWORK_CONNECT {
        let name = field.name();
        let value = field_value(&sample, field);
        let xml = |condition: &str| {
            filters(
                "4.90",
                &format!(
                    r#"<NetworkConnect onmatch="include"><{name} condition="{condition}">{value}</{name}></NetworkConnect>"#
                ),
            )
        };
        let (is, _) = inline(&xml("is"));
        assert_eq!(outcome(&is, &sample), REPORTED_UNNAMED, "{name} is {value}");
        let (is_not, _) = inline(&xml("is not"));
        assert_eq!(outcome(&is_not, &sample), DROPPED, "{name} is not {value}");
    }
}

#[test]
fn attribute_values_and_text_are_read_as_xml_defines() {
    let body = r#"<RuleGroup name="a &amp; b" groupRelation="OR"><NetworkConnect onmatch="Include">
        <CommandLine condition="Contains">-s https://example.com&#x2F;x</CommandLine>
        <CommandLine condition="contains"><![CDATA[<never>]]></CommandLine>
    </NetworkConnect></RuleGroup>"#;
    let (rules, _) = inline(&filters("4.90", body));
    assert_eq!(outcome(&rules, &sample_event()), reported_as("a & b"));
    assert_eq!(outcome(&rules, &event(|e| e.command_line = "x <NEVER> y".into())), reported_as("a & b"));
    assert_eq!(outcome(&rules, &event(|e| e.command_line = "curl".into())), DROPPED);
}

#[test]
fn suspicious_parts_give_notices() {
    let xml = r#"<Sysmon schemaversion="4.90">
  <HashAlgorithms>sha256</HashAlgorithms>
  <EventFiltering>
    <NetworkConnect onmatch="include">
      <Rule groupRelation="and"/>
      <Image condition="end with"> /curl</Image>
    </NetworkConnect>
  </EventFiltering>
</Sysmon>"#;
    let (rules, notices) = inline(xml);
    assert_eq!(
        notices,
        [
            "inline.xml:2:3: setting <HashAlgorithms> ignored: sockscope does not use it",
            "inline.xml:5:7: empty <Rule> ignored",
            "inline.xml:6:35: the value of <Image> starts or ends with whitespace, which must then match too",
        ]
    );
    // The value is compared as written.
    assert_eq!(outcome(&rules, &sample_event()), DROPPED);
    assert_eq!(outcome(&rules, &image("/usr/bin /curl")), REPORTED_UNNAMED);
}

fn lifecycle(id: u32, port: u16, extras: Vec<(&'static str, crate::event::Extra)>) -> LifecycleEvent {
    let mut connect = self::port(port);
    connect.event_id = id;
    LifecycleEvent { connect, extras }
}

#[test]
fn lifecycle_events_have_rules_of_their_own_or_follow_network_connect() {
    use crate::event::{Extra, CONNECTION_CLOSED, CONNECTION_FAILED};
    let failed = |port, why| lifecycle(CONNECTION_FAILED, port, vec![("Failure", Extra::Text(why))]);
    let closed = |port, bytes| lifecycle(CONNECTION_CLOSED, port, vec![("BytesSent", Extra::Num(bytes))]);
    let decide = |rules: &RuleSet, e: &LifecycleEvent| match rules.evaluate_lifecycle(e) {
        Verdict::Report { rule_name } => Some(rule_name.map(str::to_string)),
        Verdict::Drop => None,
    };
    // NetworkConnect rules only: failures follow them, closes are reported.
    let (rules, _) = inline(&filters(
        "4.90",
        r#"<NetworkConnect onmatch="include"><DestinationPort name="web">443</DestinationPort></NetworkConnect>"#,
    ));
    assert_eq!(decide(&rules, &failed(443, "refused")), Some(Some("web".into())));
    assert_eq!(decide(&rules, &failed(22, "refused")), None);
    assert_eq!(decide(&rules, &closed(22, 5)), Some(None));
    // Rules of their own, on their own fields.
    let (rules, notices) = inline(&filters(
        "4.90",
        r#"<NetworkConnect onmatch="exclude"><DestinationPort>22</DestinationPort></NetworkConnect>
           <ConnectionFailed onmatch="exclude"><Failure>aborted</Failure></ConnectionFailed>
           <ConnectionClosed onmatch="include"><BytesSent name="big" condition="more than">1000</BytesSent></ConnectionClosed>"#,
    ));
    assert!(notices.is_empty(), "{notices:?}");
    assert_eq!(decide(&rules, &failed(22, "refused")), Some(None), "its own rules, not NetworkConnect's");
    assert_eq!(decide(&rules, &failed(80, "aborted")), None);
    assert_eq!(decide(&rules, &closed(80, 5000)), Some(Some("big".into())));
    assert_eq!(decide(&rules, &closed(80, 10)), None);
    assert!(rules.has_closed_rules());
    assert!(rules.kernel_exclusions().is_empty(), "a connect dropped in the kernel could not be a failure event");
    // A lifecycle field where it does not belong is an error.
    for body in [
        r#"<NetworkConnect onmatch="include"><Failure>refused</Failure></NetworkConnect>"#,
        r#"<ConnectionFailed onmatch="include"><BytesSent>1</BytesSent></ConnectionFailed>"#,
        r#"<ConnectionClosed onmatch="include"><QueryName>example.test</QueryName></ConnectionClosed>"#,
        r#"<DnsQuery onmatch="include"><CloseReason>fin</CloseReason></DnsQuery>"#,
    ] {
        let error = RuleSet::from_str(&filters("4.90", body), "inline.xml").expect_err("unknown field");
        assert!(matches!(error.problem(), Some(Problem::UnknownField { .. })), "{error}");
    }
}

#[test]
fn the_packaged_config_reports_every_connection_and_query() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/sockscope.xml");
    let (rules, notices) = RuleSet::from_file(&path).expect("loads");
    assert!(notices.is_empty(), "{notices:?}");
    assert_eq!(rules.evaluate(&sample_event()), Verdict::Report { rule_name: None });
    assert_eq!(rules.evaluate_dns(&crate::event::dns_example()), Verdict::Report { rule_name: None });
}
