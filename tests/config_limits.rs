//! Big and hostile configs against the real binary (issue 21, points 2, 3
//! and 6): bounded size and depth, special files refused, values a Sysmon
//! config cannot mean refused with file:line:col, more exclusions than the
//! kernel's tables hold, and a reload never kills a running sensor.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{require_root, u, Peer, Sensor, SENSOR};
use nix::sys::signal::Signal;

const WAIT: Duration = Duration::from_secs(10);

/// Writes a hostile config at the path.
type MakeConfig = Box<dyn Fn(&Path)>;

/// Runs the sensor with `args`, killed if it has not exited within `limit`.
fn run_bounded(args: &[&str], limit: Duration) -> (Output, Duration) {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let out = dir.path().join("events.jsonl");
    let started = Instant::now();
    let mut child = Command::new(SENSOR)
        .args(args)
        .arg("--state-dir")
        .arg(&state)
        .arg("--output")
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sensor");
    while child.try_wait().expect("try_wait").is_none() && started.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    (child.wait_with_output().expect("output"), started.elapsed())
}

fn refused(config: &Path, expect: &[&str]) {
    let path = config.to_str().expect("utf8");
    let (out, took) = run_bounded(&["-c", path], Duration::from_secs(20));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{path}: exit 2 (took {took:?}): {err}");
    assert!(err.contains(path), "names the file: {err}");
    for part in expect {
        assert!(err.contains(part), "{path}: says {part:?}: {err}");
    }
    assert!(!err.contains("ready"), "nothing attached: {err}");
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write config");
}

fn sysmon(body: &str) -> String {
    format!("<Sysmon schemaversion=\"4.90\">\n<EventFiltering>\n{body}\n</EventFiltering>\n</Sysmon>\n")
}

fn deep_xml(depth: usize) -> String {
    let mut s = String::with_capacity(depth * 8 + 64);
    s.push_str("<Sysmon schemaversion=\"4.90\">");
    for _ in 0..depth {
        s.push_str("<a>");
    }
    for _ in 0..depth {
        s.push_str("</a>");
    }
    s.push_str("</Sysmon>\n");
    s
}

#[test]
fn values_a_sysmon_config_cannot_mean_are_refused_with_file_line_column() {
    require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        ("schema.xml", "<Sysmon schemaversion=\"99.0\">\n<EventFiltering/>\n</Sysmon>\n".to_string(), ":1:9:", "99.0"),
        (
            "port.xml",
            sysmon("<NetworkConnect onmatch=\"include\">\n<DestinationPort condition=\"is\">99999</DestinationPort>\n</NetworkConnect>"),
            ":4:",
            "99999",
        ),
        (
            "ip.xml",
            sysmon("<NetworkConnect onmatch=\"exclude\">\n<DestinationIp condition=\"is\">999.1.1.1</DestinationIp>\n</NetworkConnect>"),
            ":4:",
            "999.1.1.1",
        ),
    ];
    for (name, text, place, value) in cases {
        let path = dir.path().join(name);
        write(&path, &text);
        refused(&path, &[&format!("{}{place}", path.display()), value]);
    }
}

#[test]
fn size_depth_and_special_files_are_bounded() {
    require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    // 150,000 levels: refused at the 33rd with its place, no stack overflow.
    let deep = dir.path().join("deep.xml");
    write(&deep, &deep_xml(150_000));
    refused(&deep, &[&format!("{}:1:", deep.display()), "nested deeper than 32"]);

    // Larger than the bound: refused before it is parsed.
    let big = dir.path().join("big.xml");
    let mut f = std::fs::File::create(&big).expect("create");
    f.write_all(sysmon("").as_bytes()).expect("write");
    f.write_all(&vec![b' '; 9 << 20]).expect("write");
    drop(f);
    refused(&big, &["larger than 8 MiB"]);

    // Special files: never read (a FIFO would hang, /dev/zero never ends).
    refused(Path::new("/dev/zero"), &["a device"]);
    refused(Path::new("/tmp"), &["a directory"]);
    let fifo = dir.path().join("fifo.xml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    refused(&fifo, &["a FIFO"]);
}

#[test]
fn a_hostile_config_at_sighup_keeps_the_sensor_and_its_rules() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.xml");
    write(
        &config,
        &sysmon("<NetworkConnect onmatch=\"exclude\"><DestinationPort condition=\"is\">27311</DestinationPort></NetworkConnect>"),
    );
    let sensor = Sensor::start(&["-c", config.to_str().expect("utf8")]);
    let pid = nix::unistd::Pid::from_raw(sensor.pid() as i32);
    let hostile: [(&str, MakeConfig); 3] = [
        ("nested deeper", Box::new(|p| write(p, &deep_xml(150_000)))),
        (
            "larger than",
            Box::new(|p| {
                let mut f = std::fs::File::create(p).expect("create");
                f.write_all(&vec![b' '; 9 << 20]).expect("write");
            }),
        ),
        (
            "a FIFO",
            Box::new(|p| {
                let _ = std::fs::remove_file(p);
                nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
            }),
        ),
    ];
    for (n, (what, make)) in hostile.iter().enumerate() {
        make(&config);
        nix::sys::signal::kill(pid, Signal::SIGHUP).expect("hup");
        let said = || sensor.stderr_text().matches("keeping the rules in force").count() > n;
        let end = Instant::now() + WAIT;
        while !said() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(said(), "{what}: refused, old rules kept: {}", sensor.stderr_text());
        assert!(sensor.stderr_text().contains(what), "{}", sensor.stderr_text());
    }
    // Still running, still applying the old rules.
    let _ = std::fs::remove_file(&config);
    connect_once(27311);
    connect_once(27312);
    assert_eq!(sensor.wait_for(2, WAIT, |e| u(e, "DestinationPort") == 27312).len(), 2);
    assert!(sensor.wait_for(0, Duration::ZERO, |e| u(e, "DestinationPort") == 27311).is_empty());
    let (status, stderr) = sensor.stop();
    assert!(status.success(), "{stderr}");
}

/// One loopback TCP connection to `port`.
fn connect_once(port: u16) {
    let bind = format!("127.0.0.1:{port}");
    let mut l = Peer::spawn(None, &["listen", "--bind", &bind]);
    let got: u16 = l.expect("listening").parse().expect("port");
    let to = SocketAddr::from(([127, 0, 0, 1], got)).to_string();
    let mut c = Peer::spawn(None, &["connect", "--to", &to]);
    c.wait_ok();
    l.wait_ok();
}

fn exclusions(first: u16, n: u16) -> String {
    let rules: String =
        (first..first + n).map(|p| format!("<DestinationPort condition=\"is\">{p}</DestinationPort>\n")).collect();
    sysmon(&format!(
        "<RuleGroup groupRelation=\"or\"><NetworkConnect onmatch=\"exclude\">\n{rules}</NetworkConnect></RuleGroup>"
    ))
}

/// 4,097 exclusions the kernel could apply, one more than its table holds:
/// the sensor starts, says how many it applies where, excludes all of them;
/// a reload with 6,000 keeps it running. Ports below the ephemeral range
/// (32768-60999), so no other socket holds one.
#[test]
fn more_exclusions_than_the_kernel_table_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("many.xml");
    write(&config, &exclusions(20_000, 4_097));
    let sensor = Sensor::start(&["-c", config.to_str().expect("utf8")]);
    assert!(
        sensor.wait_log(&["4096 of 4097 config exclusions applied in the kernel", "the other 1 in userspace"], WAIT),
        "{}",
        sensor.stderr_text()
    );
    // The first and the last excluded ports, and one that is not.
    for port in [20_000, 24_096, 24_097] {
        connect_once(port);
    }
    assert_eq!(sensor.wait_for(2, WAIT, |e| u(e, "DestinationPort") == 24_097).len(), 2);
    let excluded = sensor.wait_for(0, Duration::ZERO, |e| matches!(u(e, "DestinationPort"), 20_000 | 24_096));
    assert!(excluded.is_empty(), "{excluded:?}");

    write(&config, &exclusions(20_000, 6_000));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(sensor.pid() as i32), Signal::SIGHUP).expect("hup");
    assert!(sensor.wait_log(&["config reloaded"], WAIT), "{}", sensor.stderr_text());
    assert!(sensor.wait_log(&["4096 of 6000 config exclusions"], WAIT), "{}", sensor.stderr_text());
    connect_once(25_999);
    connect_once(26_000);
    assert_eq!(sensor.wait_for(2, WAIT, |e| u(e, "DestinationPort") == 26_000).len(), 2);
    assert!(sensor.wait_for(0, Duration::ZERO, |e| u(e, "DestinationPort") == 25_999).is_empty());
    let (status, stderr) = sensor.stop();
    assert!(status.success(), "{stderr}");
}
