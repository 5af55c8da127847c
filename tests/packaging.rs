//! The service packaging (packaging/, `make install`): systemd takes the
//! unit without a word, its capability set is all the sensor needs, logrotate
//! takes the policy, and `make install` puts each file where it belongs.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{s, tcp_connection_a_to_b, Peer, Sensor, TestNet, SENSOR};

const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/sockscope.service");
const LOGROTATE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/sockscope.logrotate");

fn unit_text() -> String {
    std::fs::read_to_string(UNIT).expect("packaging/sockscope.service")
}

/// The value of the unit's first `key=` line.
fn unit_value(key: &str) -> String {
    let prefix = format!("{key}=");
    unit_text()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
        .unwrap_or_else(|| panic!("{key}= in the unit"))
}

#[test]
fn systemd_takes_the_unit_without_a_warning() {
    // verify checks that ExecStart is executable: a copy names the built sensor.
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = dir.path().join("sockscope.service");
    std::fs::write(&unit, unit_text().replace("/usr/local/bin/sockscope", SENSOR)).expect("write unit");
    let out = Command::new("systemd-analyze").arg("verify").arg(&unit).output().expect("systemd-analyze runs");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // It exits 0 even for lines it ignores; what it prints is the finding.
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");
}

/// `CapabilityBoundingSet=CAP_A CAP_B` as setpriv's `-all,+a,+b`.
fn bounding_set() -> String {
    let caps: Vec<String> = unit_value("CapabilityBoundingSet")
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    assert!(!caps.is_empty());
    format!("-all,{}", caps.join(","))
}

/// Under the unit's capability bounding set (and nothing more), the sensor
/// loads, attaches and reports a TCP connection and a UDP flow, with either
/// UDP mechanism (the packet one needs setns, so CAP_SYS_ADMIN).
#[test]
fn the_units_capabilities_are_all_the_sensor_needs() {
    let bounding = format!("--bounding-set={}", bounding_set());
    for mechanism in ["process", "packet"] {
        let net = TestNet::new();
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("events.jsonl");
        let state = dir.path().join("state");
        let sensor =
            Sensor::start_via(&["setpriv", &bounding, "--"], Some(dir), out, &state, &["--udp-mechanism", mechanism]);
        if mechanism == "packet" {
            // That mechanism covers a namespace once it has its socket there.
            let watched = format!("netns={}", TestNet::inode(&net.a));
            assert!(
                sensor.wait_log(&["watching network namespace", &watched], Duration::from_secs(10)),
                "no packet socket in {}: {}",
                net.a,
                sensor.stderr_text()
            );
        }
        tcp_connection_a_to_b(&net);
        let udp_to = format!("{}:9400", net.ip4(2));
        Peer::spawn(Some(&net.a), &["udp-send", "--to", &udp_to]).wait_ok();
        let events = sensor.wait_for(3, Duration::from_secs(10), |e| {
            e["EventID"] == 3 && s(e, "DestinationIp") == net.ip4(2) && s(e, "Image").ends_with("sockscope-peer")
        });
        let (status, stderr) = sensor.stop();
        let kinds: Vec<(String, bool)> =
            events.iter().map(|e| (s(e, "Protocol"), e["Initiated"].as_bool().unwrap_or(false))).collect();
        for want in [("tcp", true), ("tcp", false), ("udp", true)] {
            assert!(
                kinds.iter().any(|(p, i)| p == want.0 && *i == want.1),
                "{mechanism}: {want:?} in {kinds:?}; stderr:\n{stderr}"
            );
        }
        assert!(status.success(), "{mechanism}: {status:?}\n{stderr}");
    }
}

#[test]
fn logrotate_takes_the_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new("logrotate")
        .arg("--debug")
        .arg("--state")
        .arg(dir.path().join("state"))
        .arg(LOGROTATE)
        .output()
        .expect("logrotate runs");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && !said.contains("error"), "logrotate --debug: {said}");
    // It rotates the file the unit writes.
    let output_flag = unit_value("ExecStart");
    let events_file = output_flag.split_whitespace().skip_while(|w| *w != "--output").nth(1).expect("--output FILE");
    assert!(said.contains(&format!("considering log {events_file}")), "{said}");
}

#[test]
fn make_install_puts_the_sensor_the_unit_and_the_policy_in_place() {
    let dest = tempfile::tempdir().expect("tempdir");
    let status = Command::new("make")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["-s", "install-files", "PREFIX=/opt/sockscope"])
        .arg(format!("DESTDIR={}", dest.path().display()))
        .arg(format!("SENSOR_BIN={SENSOR}"))
        .status()
        .expect("make runs");
    assert!(status.success());
    let root = dest.path();
    let bin = root.join("opt/sockscope/bin/sockscope");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&bin).expect("installed sensor").permissions().mode();
    assert_eq!(mode & 0o777, 0o755);
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/sockscope.service")).expect("installed unit");
    assert!(unit.lines().any(|l| l.starts_with("ExecStart=/opt/sockscope/bin/sockscope ")), "{unit}");
    assert!(Path::new(&root.join("etc/logrotate.d/sockscope")).is_file());
}
