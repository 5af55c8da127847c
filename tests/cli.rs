//! The command line and lifecycle of the real binary: errors before anything
//! is attached, privileges, signals.

mod common;

use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

use common::{require_root, Sensor, SENSOR};
use nix::sys::signal::Signal;

#[test]
fn bad_argument_exits_2() {
    let out = Command::new(SENSOR).arg("--no-such-flag").output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--no-such-flag"), "{err}");
    let out = Command::new(SENSOR).args(["--format", "csv"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn unopenable_output_exits_2_before_attaching() {
    require_root();
    let out = Command::new(SENSOR)
        .args(["--output", "/nonexistent-dir/events.jsonl"])
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent-dir/events.jsonl"), "names the path: {err}");
    assert!(!err.contains("ready"), "nothing was attached: {err}");
}

#[test]
fn without_privileges_names_what_is_missing() {
    require_root();
    // Run as nobody with no capabilities at all.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", SENSOR])
        .stdin(Stdio::null())
        .output()
        .expect("setpriv");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "must fail without privileges: {err}");
    assert!(
        err.contains("CAP_BPF") && err.contains("CAP_PERFMON") && err.contains("CAP_NET_ADMIN"),
        "names the capabilities: {err}"
    );
}

#[test]
fn a_probe_the_kernel_refuses_is_named_with_the_reason() {
    require_root();
    // It loads some programs before the refusal: take a turn with the others.
    let _turn = one_sensor();
    // Tracepoints need tracefs; mount it as the sensor would (it cannot here).
    if !std::path::Path::new("/sys/kernel/tracing/events").is_dir() {
        let status = Command::new("mount").args(["-t", "tracefs", "tracefs", "/sys/kernel/tracing"]).status();
        assert!(status.is_ok_and(|s| s.success()), "mounting tracefs");
    }
    // Root, but only CAP_BPF and CAP_PERFMON: the kernel refuses the cgroup
    // socket programs' attachment (it needs CAP_NET_ADMIN).
    let out = Command::new("setpriv")
        .args(["--bounding-set=-all,+bpf,+perfmon", "--inh-caps=-all", SENSOR, "--skip-privilege-check"])
        .stdin(Stdio::null())
        .output()
        .expect("setpriv");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    if err.contains("try raising 'ulimit -l'") {
        // Kernels before 5.11 (Debian 11) charge maps to RLIMIT_MEMLOCK, which
        // the sensor cannot lift without CAP_SYS_RESOURCE: the first map is refused.
        assert!(err.contains("tcp_state"), "names the object: {err}");
    } else {
        assert!(err.contains("udp_ingress") && err.contains("cgroup_skb/ingress"), "names the probe: {err}");
    }
    assert!(err.contains("Operation not permitted") || err.contains("EPERM"), "the kernel's reason: {err}");
}

#[test]
fn sigusr1_prints_the_stats_line() {
    let _turn = one_sensor();
    let sensor = Sensor::start(&[]);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(sensor.pid() as i32), Signal::SIGUSR1).expect("usr1");
    assert!(
        sensor.wait_log(&["stats:", "udp_flows_reported=", "udp_packets_suppressed=", "udp_flows_evicted="], WAIT),
        "{}",
        sensor.stderr_text()
    );
    let (status, _) = sensor.stop();
    assert!(status.success(), "still running after SIGUSR1, and stops cleanly");
}

#[test]
fn sigint_and_sigterm_exit_cleanly_with_stats() {
    let _turn = one_sensor();
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        let sensor = Sensor::start(&[]);
        let pid = sensor.pid();
        let (status, stderr) = sensor.stop_with(sig);
        assert_eq!(status.code(), Some(0), "{sig}: {stderr}");
        assert!(stderr.contains("stats: events_written="), "{stderr}");
        assert!(stderr.contains("detaching"), "{stderr}");
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }
}

/// Tests here that run a sensor take turns, so program counts are theirs alone.
static ONE_SENSOR: Mutex<()> = Mutex::new(());

fn one_sensor() -> MutexGuard<'static, ()> {
    ONE_SENSOR.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[test]
fn programs_are_detached_after_exit() {
    let _turn = one_sensor();
    let loaded = || {
        let out = Command::new("bpftool").args(["prog", "show"]).output().expect("bpftool");
        String::from_utf8_lossy(&out.stdout).matches("name tcp_state_change").count()
    };
    let before = loaded();
    let sensor = Sensor::start(&[]);
    assert_eq!(loaded(), before + 1, "the sensor's program is loaded while it runs");
    let (status, _) = sensor.stop();
    assert!(status.success());
    assert_eq!(loaded(), before, "no program left loaded by the sensor");
}

#[test]
fn stdout_is_the_default_sink() {
    require_root();
    let _turn = one_sensor();
    let mut child =
        Command::new(SENSOR).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().expect("stderr piped");
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("ready") {
                let _ = ready_tx.send(());
            }
        }
    });
    ready_rx.recv_timeout(common::bound(Duration::from_secs(30))).expect("sensor ready");
    // A connection over loopback while it runs.
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = l.local_addr().expect("addr").port();
    let _c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let _a = l.accept().expect("accept");
    // Its facts are in the ring buffer now; the sensor drains it at SIGTERM.
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    let ours = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["EventID"] == 3 && e["DestinationPort"] == port)
        .count();
    assert_eq!(ours, 2, "outbound + inbound on stdout: {text}");
}
