//! Output faults against the real binary (issue 21, points 1 and 7): a full
//! disk, a log directory gone at SIGHUP, stdout on /dev/full, a fragment
//! left by kill -9; the output opened as a regular file only.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{require_root, u, Peer, Sensor, SENSOR};
use nix::sys::signal::Signal;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(15);

/// A small tmpfs, unmounted on drop (also when the test fails).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn new(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().expect("tempdir");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "sockscope-test"])
            .arg(dir.path())
            .status()
            .expect("mount");
        assert!(ok.success(), "mount tmpfs");
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// `n` loopback TCP connections to a listener on `port` (2n events).
fn connections(port: u16, n: usize) {
    let bind = format!("127.0.0.1:{port}");
    let count = n.to_string();
    let mut l = Peer::spawn(None, &["listen", "--bind", &bind, "--count", &count]);
    let got: u16 = l.expect("listening").parse().expect("port");
    let to = SocketAddr::from(([127, 0, 0, 1], got)).to_string();
    let mut c = Peer::spawn(None, &["connect", "--to", &to, "--count", &count]);
    c.wait_ok();
    l.wait_ok();
}

/// Every line of `path` is a whole JSON object; returns them.
fn whole_lines(path: &Path) -> Vec<Value> {
    let bytes = std::fs::read(path).unwrap_or_default();
    assert!(bytes.is_empty() || bytes.ends_with(b"\n"), "{}: ends in a partial line", path.display());
    String::from_utf8_lossy(&bytes)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: bad line {l:?}: {e}", path.display())))
        .collect()
}

fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn output_dropped(events: &[Value]) -> u64 {
    events.iter().filter(|e| e["EventID"] == 250).filter_map(|e| e["OutputDropped"].as_u64()).sum()
}

fn still_running(sensor: &Sensor) -> bool {
    Path::new(&format!("/proc/{}", sensor.pid())).exists()
        && !std::fs::read_to_string(format!("/proc/{}/stat", sensor.pid())).unwrap_or_default().contains(") Z ")
}

#[test]
fn a_full_disk_is_survived_and_counted_with_whole_lines_only() {
    require_root();
    let fs = Tmpfs::new("64k");
    // The filler takes most of it; removed, it makes room again.
    let filler = fs.path().join("filler");
    let _ = std::fs::write(&filler, vec![b'x'; 40 << 10]);
    let out = fs.path().join("events.jsonl");
    let dir = tempfile::tempdir().expect("tempdir");
    let sensor = Sensor::start_at(None, out.clone(), &dir.path().join("state"), &["--stats-interval", "3600"]);
    // ~1 KiB a line: 40 connections (80 events) overfill the 24 KiB left.
    connections(27_401, 40);
    assert!(sensor.wait_log(&["No space left on device"], WAIT), "{}", sensor.stderr_text());
    assert!(still_running(&sensor), "the sensor keeps running");
    let before = whole_lines(&out);
    assert!(before.len() < 80, "the disk filled up: {} lines", before.len());

    // Room again: the next events are written, and the loss is announced.
    std::fs::remove_file(&filler).expect("rm filler");
    let written = wait_until(Duration::from_secs(30), || {
        connections(27_402, 1);
        let now = whole_lines(&out);
        now.iter().any(|e| e["EventID"] == 3 && u(e, "DestinationPort") == 27_402) && output_dropped(&now) > 0
    });
    let after = whole_lines(&out);
    assert!(written, "events and OutputDropped once writable: {after:?}\n{}", sensor.stderr_text());
    let (status, stderr) = sensor.stop();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("writable again"), "{stderr}");
    whole_lines(&out);
}

#[test]
fn a_log_directory_removed_before_sighup_is_waited_for() {
    require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).expect("mkdir");
    let out = logs.join("events.jsonl");
    let sensor = Sensor::start_at(None, out.clone(), &dir.path().join("state"), &["--stats-interval", "3600"]);
    std::fs::remove_dir_all(&logs).expect("rm -r");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(sensor.pid() as i32), Signal::SIGHUP).expect("hup");
    assert!(sensor.wait_log(&["reopening", "No such file or directory"], WAIT), "{}", sensor.stderr_text());
    connections(27_403, 3);
    assert!(still_running(&sensor), "the sensor keeps running: {}", sensor.stderr_text());

    std::fs::create_dir(&logs).expect("mkdir again");
    let back = wait_until(Duration::from_secs(30), || {
        connections(27_404, 1);
        let now = whole_lines(&out);
        now.iter().any(|e| e["EventID"] == 3) && output_dropped(&now) > 0
    });
    assert!(back, "a new file once the directory is back: {:?}\n{}", whole_lines(&out), sensor.stderr_text());
    let (status, stderr) = sensor.stop();
    assert!(status.success(), "{stderr}");
}

#[test]
fn stdout_on_dev_full_keeps_the_sensor_running() {
    require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").expect("/dev/full");
    let mut child = Command::new(SENSOR)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(full)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stderr = child.stderr.take().expect("stderr");
    let mut child = Kill(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let mut wait_line = |part: &str| {
        let end = Instant::now() + WAIT;
        while Instant::now() < end {
            if seen.iter().any(|l: &String| l.contains(part)) {
                return true;
            }
            if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
                seen.push(l);
            }
        }
        false
    };
    assert!(wait_line("ready"), "started");
    connections(27_405, 2);
    assert!(wait_line("No space left on device"), "the fault is said");
    assert!(child.0.try_wait().expect("try_wait").is_none(), "still running");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.0.id() as i32), Signal::SIGTERM).expect("term");
    let end = Instant::now() + WAIT;
    let mut status = None;
    while status.is_none() && Instant::now() < end {
        status = child.0.try_wait().expect("try_wait");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(status.is_some_and(|s| s.success()), "exits 0: {status:?}");
}

#[test]
fn a_fragment_left_by_kill_9_is_cut_before_appending() {
    require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("events.jsonl");
    let state = dir.path().join("state");
    let sensor = Sensor::start_at(None, out.clone(), &state, &[]);
    connections(27_406, 1);
    assert_eq!(sensor.wait_for(2, WAIT, |e| u(e, "DestinationPort") == 27_406).len(), 2);
    let (_, _) = sensor.stop_with(Signal::SIGKILL);
    // What a kill in the middle of a write leaves.
    let whole = std::fs::read(&out).expect("read");
    let mut torn = whole.clone();
    torn.extend_from_slice(b"{\"EventID\":3,\"RuleName\":\"-\",\"UtcTi");
    std::fs::write(&out, &torn).expect("write");

    let sensor = Sensor::start_at(None, out.clone(), &state, &[]);
    assert!(sensor.wait_log(&["cut off a partial last line"], WAIT), "{}", sensor.stderr_text());
    connections(27_407, 1);
    assert_eq!(sensor.wait_for(2, WAIT, |e| u(e, "DestinationPort") == 27_407).len(), 2);
    let lines = whole_lines(&out);
    assert!(std::fs::read(&out).expect("read").starts_with(&whole), "what was whole is kept");
    assert!(lines.len() > 4);
    let (status, stderr) = sensor.stop();
    assert!(status.success(), "{stderr}");
}

fn start_refused(out: &Path) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = Command::new(SENSOR)
        .arg("--output")
        .arg(out)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .stdin(Stdio::null())
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{}: refused: {err}", out.display());
    assert!(!err.contains("ready"), "{err}");
    err
}

#[test]
fn the_output_is_a_regular_file_not_a_symlink_with_mode_0640() {
    require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("target");
    std::fs::write(&target, b"").expect("write");
    let link: PathBuf = dir.path().join("events.jsonl");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    let err = start_refused(&link);
    assert!(err.contains("symlink"), "{err}");
    assert_eq!(std::fs::metadata(&target).expect("target").len(), 0, "nothing written through the link");

    let hostname = std::fs::read("/proc/sys/kernel/hostname").expect("hostname");
    let err = start_refused(Path::new("/proc/sys/kernel/hostname"));
    assert!(err.contains("procfs"), "{err}");
    assert_eq!(std::fs::read("/proc/sys/kernel/hostname").expect("hostname"), hostname);
    let err = start_refused(Path::new("/dev/null"));
    assert!(err.contains("not a regular file"), "{err}");

    let open = dir.path().join("open.jsonl");
    std::fs::write(&open, b"").expect("write");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let sensor = Sensor::start_at(None, open.clone(), &dir.path().join("state"), &[]);
    let mode = std::fs::metadata(&open).expect("meta").permissions().mode() & 0o7777;
    assert_eq!(mode, 0o640, "mode enforced");
    drop(sensor);
}
