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
