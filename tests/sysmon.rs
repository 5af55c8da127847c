//! Sysmon compatibility of the real binary: the XML form, EventRecordID kept
//! across restarts, the service and config events, Community ID, port names,
//! Sysmon configs (filtering, RuleName, errors, SIGHUP reload), logrotate.

mod common;

use sockscope::format::xml_check;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{s, u, Peer, Sensor, PEER, SENSOR};
use nix::sys::signal::Signal;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

/// One loopback TCP connection; returns (listener port, connector local port).
fn connect_once(bind: &str) -> (u16, u16) {
    let mut l = Peer::spawn(None, &["listen", "--bind", bind]);
    let port: u16 = l.expect("listening").parse().expect("port");
    let host: SocketAddr = bind.parse().expect("bind address");
    let to = SocketAddr::new(host.ip(), port).to_string();
    let mut c = Peer::spawn(None, &["connect", "--to", &to]);
    let local: SocketAddr = c.expect("local").parse().expect("addr");
    c.wait_ok();
    l.wait_ok();
    (port, local.port())
}

fn xml_lines(path: &Path) -> Vec<xml_check::ParsedEvent> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    complete.lines().map(xml_check::parse_event).collect()
}

fn wait_xml(path: &Path, pred: impl Fn(&xml_check::ParsedEvent) -> bool) -> Vec<xml_check::ParsedEvent> {
    let end = std::time::Instant::now() + WAIT;
    loop {
        let all = xml_lines(path);
        if all.iter().any(&pred) || std::time::Instant::now() >= end {
            return all;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn xml_events_with_record_ids_kept_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("events.xml");
    let state = dir.path().join("state");
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname").trim().to_string();
    let mut ids = Vec::new();
    for round in 0..2 {
        let sensor = Sensor::start_at(None, out.clone(), &state, &["--format", "xml"]);
        let (port, sport) = connect_once("127.0.0.1:0");
        let is_ours = |e: &xml_check::ParsedEvent| {
            e.element("EventID") == Some("3")
                && e.data("DestinationPort") == Some(&port.to_string())
                && e.data("SourcePort") == Some(&sport.to_string())
        };
        let all = wait_xml(&out, |e| is_ours(e) && e.data("Initiated") == Some("false"));
        let (status, _) = sensor.stop();
        assert!(status.success());
        let all_after = xml_lines(&out);
        assert!(all_after.len() >= all.len());
        let ours: Vec<_> = all_after.iter().filter(|e| is_ours(e)).collect();
        assert_eq!(ours.len(), 2, "round {round}: outbound and inbound");
        for e in &ours {
            assert_eq!(e.element("Computer"), Some(hostname.as_str()));
            assert_eq!(e.element("Channel"), Some("Linux-Sysmon/Operational"));
            assert_eq!(e.data("Image"), Some(PEER));
            assert_eq!(e.data("Protocol"), Some("tcp"));
            // Initiated or not, the connector's port is the Source (Sysmon's direction).
            assert_eq!(e.data("SourcePort"), Some(sport.to_string().as_str()));
        }
        let states: Vec<&str> =
            all_after.iter().filter(|e| e.element("EventID") == Some("4")).filter_map(|e| e.data("State")).collect();
        assert_eq!(states.iter().filter(|s| **s == "Started").count(), round + 1);
        assert_eq!(states.iter().filter(|s| **s == "Stopped").count(), round + 1);
        assert_eq!(all_after.iter().filter(|e| e.element("EventID") == Some("16")).count(), round + 1);
        ids = all_after
            .iter()
            .map(|e| e.element("EventRecordID").expect("record id").parse::<u64>().expect("number"))
            .collect();
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "EventRecordID increases across the restart: {ids:?}");
}

#[test]
fn xml_stays_well_formed_for_hostile_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("events.xml");
    let sensor = Sensor::start_at(None, out.clone(), &dir.path().join("state"), &["--format", "xml"]);
    let exe = dir.path().join(std::ffi::OsStr::from_bytes(b"a<b>&c\"d'e]]>\x01\x7ff\xff\xfe"));
    std::fs::copy(PEER, &exe).expect("copy");
    let mut l = Peer::spawn(None, &["listen", "--bind", "127.0.0.1:0"]);
    let port: u16 = l.expect("listening").parse().expect("port");
    let to = format!("127.0.0.1:{port}");
    let mut c = Peer::spawn_program(None, &exe, &["connect", "--to", &to]);
    c.wait_ok();
    l.wait_ok();
    let all =
        wait_xml(&out, |e| e.data("DestinationPort") == Some(&port.to_string()) && e.data("Initiated") == Some("true"));
    let e = all
        .iter()
        .find(|e| e.data("DestinationPort") == Some(&port.to_string()) && e.data("Initiated") == Some("true"))
        .expect("event for the hostile image");
    // Documented: text as bytes -> \\ and \xHH for non-UTF-8; XML-invalid
    // control characters as \xHH; the rest entity-escaped and parsed back.
    let expected = format!("{}/a<b>&c\"d'e]]>\\x01\\x7ff\\xff\\xfe", dir.path().display());
    assert_eq!(e.data("Image"), Some(expected.as_str()));
    drop(sensor);
}

#[test]
fn json_has_community_id_and_optional_port_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let services = dir.path().join("services");
    std::fs::write(&services, "# test\nssh 22/tcp\nsockscope-test 27123/tcp # ours\nbad line\n").expect("write");
    let sensor = Sensor::start(&["--port-names", "--services-file", services.to_str().expect("utf8")]);
    let (port, sport) = connect_once("127.0.0.1:27123");
    assert_eq!(port, 27123);
    let got = sensor.wait_for(2, WAIT, |e| u(e, "DestinationPort") == 27123 && u(e, "SourcePort") == u64::from(sport));
    assert_eq!(got.len(), 2);
    for e in &got {
        assert_eq!(s(e, "DestinationPortName"), "sockscope-test");
        assert_eq!(s(e, "SourcePortName"), "-");
        let id = s(e, "CommunityId");
        assert!(id.starts_with("1:") && id.len() == 30, "{id}");
    }
    // Both directions of one connection share the Community ID.
    assert_eq!(s(&got[0], "CommunityId"), s(&got[1], "CommunityId"));
    let out = Sensor::start(&[]);
    let (port2, _) = connect_once("127.0.0.1:0");
    let e = out.wait_for(1, WAIT, |e| u(e, "DestinationPort") == u64::from(port2));
    assert_eq!(s(&e[0], "DestinationPortName"), "-", "no names unless enabled");
}

fn write_config(path: &Path, body: &str) {
    std::fs::write(
        path,
        format!("<Sysmon schemaversion=\"4.90\"><EventFiltering><RuleGroup name=\"\" groupRelation=\"or\">{body}</RuleGroup></EventFiltering></Sysmon>\n"),
    )
    .expect("write config");
}

#[test]
fn config_filters_names_rules_and_reloads_on_sighup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("sysmon.xml");
    write_config(
        &config,
        "<NetworkConnect onmatch=\"include\"><DestinationPort name=\"watched port\" condition=\"is\">27201</DestinationPort>\
         <DestinationPort condition=\"is\">27202</DestinationPort></NetworkConnect>\
         <NetworkConnect onmatch=\"exclude\"><DestinationPort condition=\"is\">27202</DestinationPort></NetworkConnect>\
         <ProcessCreate onmatch=\"include\"/>",
    );
    let sensor = Sensor::start(&["-c", config.to_str().expect("utf8")]);
    assert!(sensor.wait_log(&["ProcessCreate"], WAIT), "a notice for the ignored event type: {}", sensor.stderr_text());
    connect_once("127.0.0.1:27201");
    connect_once("127.0.0.1:27202");
    connect_once("127.0.0.1:27203");
    let got = sensor.wait_for(2, WAIT, |e| u(e, "DestinationPort") == 27201);
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|e| s(e, "RuleName") == "watched port"));
    // One more watched connection, made after the others: once its events
    // are written, theirs would be too.
    connect_once("127.0.0.1:27201");
    assert_eq!(sensor.wait_for(4, WAIT, |e| u(e, "DestinationPort") == 27201).len(), 4);
    let others = sensor.wait_for(0, Duration::ZERO, |e| matches!(u(e, "DestinationPort"), 27202 | 27203));
    assert!(others.is_empty(), "exclude wins over include; unmatched not reported: {others:?}");

    // A bad new config keeps the old rules.
    std::fs::write(&config, "<Sysmon schemaversion=\"4.90\"><EventFiltering>").expect("write");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(sensor.pid() as i32), Signal::SIGHUP).expect("hup");
    assert!(sensor.wait_log(&["keeping the rules in force"], WAIT), "{}", sensor.stderr_text());
    connect_once("127.0.0.1:27203");
    connect_once("127.0.0.1:27201");
    assert_eq!(sensor.wait_for(4, WAIT, |e| u(e, "DestinationPort") == 27201).len(), 4);
    assert!(sensor.wait_for(0, Duration::ZERO, |e| u(e, "DestinationPort") == 27203).is_empty());

    // A good new config replaces them, and is announced (Event ID 16).
    write_config(&config, "<NetworkConnect onmatch=\"include\"><DestinationPort condition=\"is\">27203</DestinationPort></NetworkConnect>");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(sensor.pid() as i32), Signal::SIGHUP).expect("hup");
    assert!(sensor.wait_log(&["config reloaded"], WAIT), "{}", sensor.stderr_text());
    connect_once("127.0.0.1:27203");
    assert_eq!(sensor.wait_for(2, WAIT, |e| u(e, "DestinationPort") == 27203).len(), 2);
    let changes: Vec<Value> = sensor.all_events().into_iter().filter(|e| e["EventID"] == 16).collect();
    assert_eq!(changes.len(), 2, "start and one good reload: {changes:?}");
    assert!(s(&changes[1], "ConfigurationFileHash").starts_with("SHA256="));
    assert_ne!(s(&changes[0], "ConfigurationFileHash"), s(&changes[1], "ConfigurationFileHash"));
}

#[test]
fn bad_config_exits_2_naming_file_line_and_column() {
    common::require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("bad.xml");
    std::fs::write(
        &config,
        "<Sysmon schemaversion=\"4.90\">\n<EventFiltering>\n<NetworkConnect onmatch=\"include\">\n  <DestinationPrt condition=\"is\">80</DestinationPrt>\n</NetworkConnect></EventFiltering></Sysmon>\n",
    )
    .expect("write");
    let out =
        Command::new(SENSOR).args(["-c", config.to_str().expect("utf8")]).stdin(Stdio::null()).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:4:", config.display())), "file and line: {err}");
    assert!(err.contains("DestinationPrt"), "names the problem: {err}");
    assert!(!err.contains("ready"));
}

#[test]
fn sighup_reopens_the_output_file_for_logrotate() {
    let sensor = Sensor::start(&[]);
    let rotated = sensor.out.with_extension("1");
    std::fs::rename(&sensor.out, &rotated).expect("rotate");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(sensor.pid() as i32), Signal::SIGHUP).expect("hup");
    assert!(sensor.wait_log(&["reopened"], WAIT), "{}", sensor.stderr_text());
    let (port, _) = connect_once("127.0.0.1:0");
    let got = sensor.wait_for(2, WAIT, |e| u(e, "DestinationPort") == u64::from(port));
    assert_eq!(got.len(), 2, "new events go to the new file");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&sensor.out).expect("new file").permissions());
    assert_eq!(mode & 0o777, 0o640);
    let old = std::fs::read_to_string(&rotated).expect("old file");
    assert!(!old.contains(&format!("\"DestinationPort\":{port}")));
}

/// The kernel applies the protocol/port and protocol/address parts of
/// exclude rules itself; the answers must be the userspace engine's, on the
/// same traffic.
#[test]
fn kernel_and_userspace_filtering_agree() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("sysmon.xml");
    std::fs::write(
        &config,
        "<Sysmon schemaversion=\"4.90\"><EventFiltering>\
         <RuleGroup groupRelation=\"or\"><NetworkConnect onmatch=\"include\">\
           <Protocol name=\"all\" condition=\"is any\">tcp;udp</Protocol></NetworkConnect></RuleGroup>\
         <RuleGroup groupRelation=\"or\"><NetworkConnect onmatch=\"exclude\">\
           <DestinationPort condition=\"is any\">27301;27302</DestinationPort>\
           <DestinationIp condition=\"is any\">127.0.0.2;::1</DestinationIp></NetworkConnect></RuleGroup>\
         <RuleGroup groupRelation=\"and\"><NetworkConnect onmatch=\"exclude\">\
           <Protocol condition=\"is\">udp</Protocol><DestinationPort condition=\"is\">27303</DestinationPort>\
         </NetworkConnect></RuleGroup></EventFiltering></Sysmon>\n",
    )
    .expect("write config");
    let ours = |e: &Value| (27301..=27308).contains(&u(e, "DestinationPort"));
    let mut answers = Vec::new();
    for kernel in [true, false] {
        let mut args = vec!["-c", config.to_str().expect("utf8")];
        if !kernel {
            args.push("--no-kernel-filter");
        }
        let sensor = Sensor::start(&args);
        for port in ["27301", "27303", "27304"] {
            connect_once(&format!("127.0.0.1:{port}"));
        }
        for port in [27302, 27303, 27304] {
            let to = format!("127.0.0.1:{port}");
            Peer::spawn(None, &["udp-send", "--to", &to, "--count", "3"]).wait_ok();
        }
        // Excluded by address: both ends of the TCP connection (Destination
        // is the remote end outbound, the local end inbound) and the datagrams.
        connect_once("127.0.0.2:27305");
        Peer::spawn(None, &["udp-send", "--to", "127.0.0.2:27306", "--count", "3"]).wait_ok();
        connect_once("[::1]:27307");
        Peer::spawn(None, &["udp-send", "--to", "[::1]:27308", "--count", "3"]).wait_ok();
        sensor.wait_for(5, WAIT, ours);
        sensor.settle();
        let got = sensor.wait_for(0, Duration::ZERO, ours);
        let mut seen: Vec<(String, u64, bool)> =
            got.iter().map(|e| (s(e, "Protocol"), u(e, "DestinationPort"), e["Initiated"] == true)).collect();
        seen.sort();
        assert!(got.iter().all(|e| s(e, "RuleName") == "all"));
        let (status, stderr) = sensor.stop();
        assert!(status.success());
        let count = |name: &str| -> u64 {
            stderr
                .split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .and_then(|v| v.parse().ok())
                .expect("stats line")
        };
        if kernel {
            assert!(count("excluded_in_kernel") >= 10, "the kernel dropped them: {stderr}");
        } else {
            assert_eq!(count("excluded_in_kernel"), 0);
            assert!(count("events_filtered") >= 10, "userspace dropped them: {stderr}");
        }
        answers.push(seen);
    }
    let expected = vec![
        ("tcp".to_string(), 27303, false),
        ("tcp".to_string(), 27303, true),
        ("tcp".to_string(), 27304, false),
        ("tcp".to_string(), 27304, true),
        ("udp".to_string(), 27304, true),
    ];
    assert_eq!(answers[0], expected, "kernel + userspace");
    assert_eq!(answers[1], expected, "userspace only");
}

/// `--json-types sysmon`: every value of every line the sensor writes (its
/// NetworkConnect events both ways, service state 4 at start and stop,
/// config 16, stats 251) is a JSON string, as Sysmon writes values: what a
/// Sigma rule's `Initiated: 'true'` or `DestinationPort: '443'` compares.
#[test]
fn json_types_sysmon_writes_every_value_as_a_string() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("events.jsonl");
    let sensor = Sensor::start_at(
        None,
        out.clone(),
        &dir.path().join("state"),
        &["--json-types", "sysmon", "--stats-interval", "1"],
    );
    let (port, sport) = connect_once("127.0.0.1:0");
    let lines = |path: &Path| -> Vec<Value> {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        complete.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
    };
    let port_text = port.to_string();
    let ours = |v: &Value| {
        v["EventID"] == "3" && v["Image"] == PEER && v["DestinationPort"].as_str() == Some(port_text.as_str())
    };
    let end = std::time::Instant::now() + WAIT;
    while !(lines(&out).iter().filter(|v| ours(v)).count() >= 2 && lines(&out).iter().any(|v| v["EventID"] == "251"))
        && std::time::Instant::now() < end
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, stderr) = sensor.stop();
    assert!(status.success(), "{stderr}");
    let all = lines(&out);
    for v in &all {
        let members = v.as_object().unwrap_or_else(|| panic!("an object: {v}"));
        for (name, value) in members {
            assert!(value.is_string(), "{name} is {value} in {v}");
        }
    }
    let ids: Vec<&str> = all.iter().filter_map(|v| v["EventID"].as_str()).collect();
    for id in ["4", "16", "3", "251"] {
        assert!(ids.contains(&id), "event {id} among {ids:?}");
    }
    assert_eq!(all.last().map(|v| v["State"].clone()), Some(Value::from("Stopped")), "the last line");
    let ours: Vec<&Value> = all.iter().filter(|v| ours(v)).collect();
    let outbound = ours.iter().find(|v| v["Initiated"] == "true").unwrap_or_else(|| panic!("outbound in {ours:?}"));
    let inbound = ours.iter().find(|v| v["Initiated"] == "false").unwrap_or_else(|| panic!("inbound in {ours:?}"));
    assert_eq!((s(outbound, "SourcePort"), s(outbound, "Protocol")), (sport.to_string(), "tcp".to_string()));
    assert_eq!(s(inbound, "SourcePort"), sport.to_string());
    for e in [outbound, inbound] {
        assert_eq!((s(e, "SourceIsIpv6"), s(e, "DestinationIsIpv6")), ("false".into(), "false".into()));
        assert_eq!(s(e, "ProcessId").parse::<u32>().ok().map(|p| p > 0), Some(true), "{e}");
    }
}
