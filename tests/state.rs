//! The state directory against the real binary (issue 21, points 7 and 8):
//! a corrupt EventRecordID state file is kept aside and said in an event,
//! and two sensors on one state directory are refused.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{require_root, Sensor, SENSOR};

const WAIT: Duration = Duration::from_secs(10);

fn record_id(line: &str) -> u64 {
    line.split("<EventRecordID>")
        .nth(1)
        .and_then(|r| r.split('<').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no EventRecordID in {line}"))
}

#[test]
fn a_corrupt_state_file_is_kept_aside_and_said_in_an_event() {
    require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("mkdir");
    std::fs::write(state.join("event-record-id"), b"\x00\x00garbage").expect("write");
    let out = dir.path().join("events.xml");
    let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_micros() as u64;
    let sensor = Sensor::start_at(None, out.clone(), &state, &["--format", "xml"]);
    assert!(sensor.wait_log(&["was corrupt", "fresh base"], WAIT), "{}", sensor.stderr_text());
    let (status, stderr) = sensor.stop();
    assert!(status.success(), "{stderr}");

    let text = std::fs::read_to_string(&out).expect("read");
    let error = text.lines().find(|l| l.contains("<EventID>255</EventID>")).expect("event 255");
    assert!(error.contains("StateFileCorrupt") && error.contains("event-record-id.corrupt-"), "{error}");
    let ids: Vec<u64> = text.lines().map(record_id).collect();
    assert!(ids.iter().all(|&id| id >= before), "ids from the fresh base: {ids:?}");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "increasing: {ids:?}");
    let aside: Vec<_> = std::fs::read_dir(&state)
        .expect("state dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("event-record-id.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "the corrupt file kept aside");
    assert_eq!(std::fs::read(aside[0].path()).expect("read"), b"\x00\x00garbage");
    let kept: u64 =
        std::fs::read_to_string(state.join("event-record-id")).expect("new state").trim().parse().expect("n");
    assert!(kept > *ids.last().expect("ids"), "a fresh state file");
}

#[test]
fn two_sensors_on_one_state_directory_are_refused() {
    require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let first = Sensor::start_at(None, dir.path().join("a.jsonl"), &state, &["--format", "xml"]);
    let out = Command::new(SENSOR)
        .args(["--format", "xml"])
        .arg("--output")
        .arg(dir.path().join("b.jsonl"))
        .arg("--state-dir")
        .arg(&state)
        .stdin(Stdio::null())
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("in use by another sensor") && err.contains(&first.pid().to_string()), "{err}");
    assert!(!err.contains("ready"), "{err}");
    let (status, stderr) = first.stop();
    assert!(status.success(), "{stderr}");
    // Free again once the first has stopped.
    let again = Sensor::start_at(None, dir.path().join("c.jsonl"), &state, &["--format", "xml"]);
    let (status, stderr) = again.stop();
    assert!(status.success(), "{stderr}");
}

fn status_field(text: &str, name: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("{name} in {text}"))
}

/// Issue 21.7: after start the sensor runs with no new privileges, a
/// seccomp filter and only the capabilities later work needs, in every
/// thread; and it still reports. (Close events, on by default, keep
/// CAP_SYS_ADMIN: at stop the sensor enters each network namespace to read
/// its open connections; without them it goes too.)
#[test]
fn the_running_sensor_keeps_only_what_it_needs() {
    require_root();
    let sensor = Sensor::start(&["--lifecycle", "failed"]);
    assert!(sensor.wait_log(&["privileges dropped"], WAIT), "{}", sensor.stderr_text());
    assert!(sensor.wait_log(&["seccomp filter in place"], WAIT), "{}", sensor.stderr_text());
    let tasks = std::fs::read_dir(format!("/proc/{}/task", sensor.pid())).expect("tasks");
    let mut seen = 0;
    for task in tasks.filter_map(|t| t.ok()) {
        let Ok(text) = std::fs::read_to_string(task.path().join("status")) else { continue };
        seen += 1;
        assert_eq!(status_field(&text, "NoNewPrivs"), "1", "{text}");
        assert_eq!(status_field(&text, "Seccomp"), "2", "filter mode: {text}");
        let eff = u64::from_str_radix(&status_field(&text, "CapEff"), 16).expect("hex");
        let bnd = u64::from_str_radix(&status_field(&text, "CapBnd"), 16).expect("hex");
        for (cap, name) in [(1, "CAP_DAC_OVERRIDE"), (16, "CAP_SYS_MODULE"), (7, "CAP_SETUID"), (21, "CAP_SYS_ADMIN")] {
            assert_eq!(eff & 1 << cap, 0, "{name} dropped: {text}");
            assert_eq!(bnd & 1 << cap, 0, "{name} out of the bounding set: {text}");
        }
    }
    assert!(seen >= 2, "threads looked at: {seen}");
    // Still at work: a connection is reported, a SIGHUP reopens the output.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let _c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let _a = listener.accept().expect("accept");
    let got = sensor.wait_for(1, WAIT, |e| e["DestinationPort"] == port && e["Initiated"] == true);
    assert_eq!(got.len(), 1, "{}", sensor.stderr_text());
    std::fs::remove_file(&sensor.out).expect("rotate");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(sensor.pid() as i32), nix::sys::signal::Signal::SIGHUP)
        .expect("hup");
    assert!(sensor.wait_log(&["reopened"], WAIT), "{}", sensor.stderr_text());
    let (status, stderr) = sensor.stop();
    assert!(status.success(), "{stderr}");
    // A call the filter refused would show as a warning or an error (the
    // start report says, at info, that the kernel refuses fexit programs).
    let refused: Vec<&str> = stderr
        .lines()
        .filter(|l| (l.contains("WARN") || l.contains("ERROR")) && l.contains("Operation not permitted"))
        .collect();
    assert!(refused.is_empty(), "no call refused: {refused:?}\n{stderr}");
}
