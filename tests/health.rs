//! Loss is never silent, and health is visible: stats events on an interval;
//! when the output stalls, facts wait in the ring buffer, and once that is as
//! full as the sensor lets it get, every UDP flow is either reported or
//! counted as lost in a loss event.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc::channel;
use std::time::Duration;

use common::{final_stat, require_root, s, tcp_connection_a_to_b, u, Peer, Sensor, TestNet, SENSOR};
use serde_json::Value;

#[test]
fn stats_events_on_the_interval() {
    let sensor = Sensor::start(&["--stats-interval", "1"]);
    let mut stats: Vec<Value> = Vec::new();
    for _ in 0..100 {
        stats = sensor.all_events().into_iter().filter(|e| e["EventID"] == 251).collect();
        if stats.len() >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(stats.len() >= 2, "one a second: {stats:?}");
    let e = &stats[0];
    for field in [
        "EventsPerSecond",
        "EventsWritten",
        "Lost",
        "UdpPacketsSuppressed",
        "TcpPending",
        "Processes",
        "CpuBoosts",
        "RingBufferPeakBytes",
    ] {
        assert!(e.get(field).is_some(), "{field} in {e}");
    }
    assert!(u(e, "Processes") > 0);
    assert_eq!(u(e, "Lost"), 0);
}

/// A sensor writing JSON to a pipe nobody reads until the test says so,
/// with a 64-line queue: once the pipe is full the writer blocks and the
/// queue fills. Returns when it is ready; the thread collects its stderr.
fn sensor_on_a_pipe(extra: &[&str]) -> (std::process::Child, std::thread::JoinHandle<Vec<String>>) {
    let mut child = Command::new(SENSOR)
        .args(["--queue-capacity", "64", "--state-dir", "/nonexistent-unused", "--stats-interval", "0"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sensor");
    let (tx, rx) = channel();
    let stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("ready") {
                let _ = tx.send(());
            }
            all.push(line);
        }
        all
    });
    rx.recv_timeout(common::bound(Duration::from_secs(30))).expect("sensor ready");
    (child, reader)
}

/// One datagram from namespace a to each of `n` ports of b (new flows).
fn send_udp_flows(net: &TestNet, n: u16, first_port: u16) {
    let dests: Vec<String> = (0..n).map(|i| format!("{}:{}", net.ip4(2), first_port + i)).collect();
    let mut args = vec!["udp-send"];
    for d in &dests {
        args.extend_from_slice(&["--to", d]);
    }
    Peer::spawn(Some(&net.a), &args).wait_ok();
}

/// Stalls the output of a sensor on a pipe while `n` UDP flows go from a to
/// b, then drains it and stops it: the flows reported, the loss events, and
/// the sensor's stderr.
fn flows_through_a_stalled_output(n: u16, extra: &[&str]) -> (u64, Vec<Value>, String) {
    let _alone = one_at_a_time();
    let net = TestNet::new();
    let (mut child, reader) = sensor_on_a_pipe(extra);
    // Nobody reads stdout yet: the pipe fills, the writer blocks, the queue
    // fills. Every flow's fact is written (or shed) inside its send, so once
    // the sender is done the stall has done what it can, at any speed.
    send_udp_flows(&net, n, 10000);
    // Now the output moves again: lines are collected as they come.
    let out = BufReader::new(child.stdout.take().expect("stdout"));
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    let collected = std::sync::Arc::clone(&lines);
    let drain = std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                collected.lock().expect("lock").push(v);
            }
        }
    });
    let ns = TestNet::inode(&net.a);
    let ours =
        |e: &Value| e["EventID"] == 3 && s(e, "Protocol") == "udp" && u(e, "NetNs") == ns && e["Initiated"] == true;
    // Every flow accounted for, however long the catch-up takes on this
    // machine: reported, or counted in a loss event (written each second).
    let accounted = |events: &[Value]| {
        let reported = events.iter().filter(|e| ours(e)).count() as u64;
        let lost: u64 = events.iter().filter(|e| e["EventID"] == 250).map(lost_in).sum();
        reported + lost
    };
    let end = std::time::Instant::now() + Duration::from_secs(120);
    while accounted(&lines.lock().expect("lock")) < u64::from(n) && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::SIGTERM);
    let status = child.wait().expect("wait");
    assert!(status.success());
    drain.join().expect("drain");
    let stderr = reader.join().expect("stderr").join("\n");
    let events = std::mem::take(&mut *lines.lock().expect("lock"));
    let reported = events.iter().filter(|e| ours(e)).count() as u64;
    let losses = events.into_iter().filter(|e| e["EventID"] == 250).collect();
    (reported, losses, stderr)
}

/// Events a loss event (250) counts as lost.
fn lost_in(e: &Value) -> u64 {
    u(e, "RingBufferDrops") + u(e, "UdpShedInKernel") + u(e, "UdpShedInQueue") + u(e, "QueueDropped")
}

#[test]
fn stalled_output_keeps_facts_in_the_ring_buffer() {
    require_root();
    // The stall lasts as long as the 3,000 sends take; a fact that waits
    // longer than --max-defer-ms is read regardless (and the full queue sheds
    // it): give the bound room for a slow machine (the emulated kernels of
    // scripts/test-kernels.sh took over a second).
    let (reported, losses, stderr) = flows_through_a_stalled_output(3000, &["--max-defer-ms", "60000"]);
    assert!(losses.is_empty(), "nothing lost: {losses:?}\n{stderr}");
    assert_eq!(reported, 3000, "every flow reported once the output moved again; stderr:\n{stderr}");
    assert_eq!(final_stat(&stderr, "queue_dropped") + final_stat(&stderr, "queue_udp_shed"), 0, "{stderr}");
    // 3,000 lines do not fit the pipe and the 64-line queue: facts waited unread.
    assert!(final_stat(&stderr, "ringbuf_peak_bytes") > 0, "{stderr}");
}

#[test]
fn stalled_output_loses_nothing_silently() {
    require_root();
    // A 1 MiB ring buffer: 20,000 flow facts (88 bytes each, 1.7 MB) fill it
    // past where the reader reads on, so the queue sheds and the kernel sheds
    // UDP.
    let (reported, losses, stderr) = flows_through_a_stalled_output(20_000, &["--ringbuf-mib", "1"]);
    assert!(!losses.is_empty(), "a loss event was written; stderr:\n{stderr}");
    let lost: u64 = losses.iter().map(lost_in).sum();
    assert!(lost > 0);
    assert!(reported + lost >= 20_000, "every flow reported ({reported}) or counted lost ({lost})");
    assert!(reported < 20_000, "the stall really lost something ({reported} reported)");
    assert!(stderr.contains("events lost"), "announced on stderr too: {stderr}");
}

/// Tests that load every CPU, need the CPUs for themselves, or flood every
/// sensor on the host with flows (each sees all namespaces) take turns.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static CPU: std::sync::Mutex<()> = std::sync::Mutex::new(());
    CPU.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Scheduling policy of each thread of `pid`, by thread name (/proc stat field 41).
fn thread_policies(pid: u32) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return out };
    for task in tasks.flatten() {
        let path = task.path();
        let (Ok(comm), Ok(stat)) =
            (std::fs::read_to_string(path.join("comm")), std::fs::read_to_string(path.join("stat")))
        else {
            continue;
        };
        // Fields after the command name's closing parenthesis start at field 3.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { continue };
        if let Some(policy) = rest.split_whitespace().nth(41 - 3).and_then(|p| p.parse().ok()) {
            out.push((comm.trim().to_string(), policy));
        }
    }
    out
}

const SCHED_OTHER: u32 = 0;
const SCHED_IDLE: u32 = 5;

/// True once every sensor thread but the watchdog has `policy`.
fn wait_policy(pid: u32, policy: u32, timeout: Duration) -> Vec<(String, u32)> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let now = thread_policies(pid);
        let done = now.iter().filter(|(name, _)| name != "sockscope-pace").all(|(_, p)| *p == policy);
        if done || std::time::Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Busy loops on every CPU, killed on drop (and by `timeout` at the latest).
struct Spinners(Vec<std::process::Child>);

impl Spinners {
    fn start(seconds: u32) -> Spinners {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        Spinners(
            (0..cpus)
                .map(|_| {
                    Command::new("timeout")
                        .args([&seconds.to_string(), "sh", "-c", "while :; do :; done"])
                        .process_group(0)
                        .spawn()
                        .expect("spawn a busy loop")
                })
                .collect(),
        )
    }
}

impl Drop for Spinners {
    fn drop(&mut self) {
        for c in &mut self.0 {
            // Its own process group: `timeout` and the shell it runs.
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::SIGKILL);
            let _ = c.wait();
        }
    }
}

/// Threads other than the watchdog, all with `policy`?
fn all_but_watchdog(threads: &[(String, u32)], policy: u32) -> bool {
    !threads.is_empty() && threads.iter().filter(|(n, _)| n != "sockscope-pace").all(|(_, p)| *p == policy)
}

#[test]
fn the_sensor_yields_the_cpu_and_takes_it_back_when_behind() {
    require_root();
    let net = TestNet::new();
    // JSON to a pipe nobody reads yet: once it is full the writer blocks and
    // the queue (64 lines) fills, the backlog the watchdog must act on.
    let (mut child, reader) = sensor_on_a_pipe(&[]);
    let pid = child.id();
    let idle = wait_policy(pid, SCHED_IDLE, Duration::from_secs(5));
    assert!(all_but_watchdog(&idle, SCHED_IDLE), "the sensor's threads yield: {idle:?}");
    assert!(
        idle.iter().any(|(n, p)| n == "sockscope-pace" && *p == SCHED_OTHER),
        "the watchdog keeps normal priority: {idle:?}"
    );

    send_udp_flows(&net, 600, 20000);
    let behind = wait_policy(pid, SCHED_OTHER, Duration::from_secs(10));
    assert!(all_but_watchdog(&behind, SCHED_OTHER), "a stalled queue raises the sensor: {behind:?}");

    let mut out = child.stdout.take().expect("stdout");
    let drain = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = out.read_to_string(&mut text);
        text
    });
    let caught_up = wait_policy(pid, SCHED_IDLE, Duration::from_secs(10));
    assert!(all_but_watchdog(&caught_up, SCHED_IDLE), "caught up, the sensor yields again: {caught_up:?}");

    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::SIGTERM);
    let status = child.wait().expect("wait");
    let _ = drain.join();
    let stderr = reader.join().expect("stderr").join("\n");
    assert!(status.success(), "{stderr}");
    assert!(final_stat(&stderr, "cpu_boosts") >= 1, "counted: {stderr}");
    let peak = final_stat(&stderr, "ringbuf_peak_bytes");
    // 600 flow facts (88 bytes each with the record header) came in a burst
    // while the sensor yielded or gathered: some were seen unread.
    assert!(peak >= 88, "the ring's peak fill is seen: {stderr}");
}

#[test]
fn an_event_comes_out_while_every_cpu_is_busy() {
    require_root();
    let _alone = one_at_a_time();
    let sensor = Sensor::start(&["--max-defer-ms", "200"]);
    assert!(all_but_watchdog(&wait_policy(sensor.pid(), SCHED_IDLE, Duration::from_secs(5)), SCHED_IDLE));
    // Every CPU busy at normal priority: the sensor's SCHED_IDLE threads get
    // only scraps of CPU; a late fact or loop round makes the watchdog raise
    // them, so the event is out within about --max-defer-ms.
    let _spinners = Spinners::start(60);
    let mut l = Peer::spawn(None, &["listen", "--bind", "127.0.0.1:0"]);
    let port: u16 = l.expect("listening").parse().expect("port");
    let to = format!("127.0.0.1:{port}");
    let mut c = Peer::spawn(None, &["connect", "--to", &to]);
    c.wait_ok();
    l.wait_ok();
    let connector = u64::from(c.pid());
    // How late is the machine's business: the watchdog's bound on it
    // (--max-defer-ms) is unit-tested with a synthetic clock in src/backpressure/pace.rs.
    // Here: it does come out, while the spinners still run.
    let got = sensor.wait_for(1, Duration::from_secs(45), |e| {
        e["EventID"] == 3 && e["Initiated"] == true && u(e, "ProcessId") == connector
    });
    assert_eq!(got.len(), 1, "the connection was reported while the CPUs were busy");
}

#[test]
fn cpu_policy_normal_keeps_normal_priority() {
    require_root();
    let sensor = Sensor::start(&["--cpu-policy", "normal"]);
    // Every thread is started before the ready line.
    let threads = thread_policies(sensor.pid());
    assert!(!threads.is_empty());
    assert!(threads.iter().all(|(_, p)| *p == SCHED_OTHER), "{threads:?}");
    assert!(!threads.iter().any(|(n, _)| n == "sockscope-pace"), "no watchdog: {threads:?}");
}

#[test]
fn without_cap_sys_nice_the_sensor_keeps_normal_priority() {
    // Leaving SCHED_IDLE needs CAP_SYS_NICE: a sensor without it must not
    // yield what it could not take back.
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("events.jsonl");
    let state = dir.path().join("state");
    let sensor = Sensor::start_via(&["setpriv", "--bounding-set=-sys_nice", "--"], Some(dir), out, &state, &[]);
    let stderr = sensor.stderr_text();
    assert!(stderr.contains("CAP_SYS_NICE") && stderr.contains("keeps normal CPU priority"), "{stderr}");
    // The watchdog thread tried SCHED_IDLE and back, failed, and ends: once
    // it is gone, every thread left has normal priority.
    let end = std::time::Instant::now() + Duration::from_secs(20);
    while thread_policies(sensor.pid()).iter().any(|(n, _)| n == "sockscope-pace") {
        assert!(std::time::Instant::now() < end, "the watchdog thread never ended");
        std::thread::sleep(Duration::from_millis(20));
    }
    let threads = thread_policies(sensor.pid());
    assert!(!threads.is_empty());
    assert!(threads.iter().all(|(_, p)| *p == SCHED_OTHER), "{threads:?}");
}

/// A storm of connections, whether or not the machine is fast enough for the
/// burst gate to call it a burst (its decisions are unit-tested with a
/// synthetic clock in src/backpressure/burst.rs): every event, nothing lost, and the
/// counters agree with each other and with what was written.
#[test]
fn a_storm_is_reported_whole_and_the_counters_agree() {
    require_root();
    let _alone = one_at_a_time();
    // The event file outlives the sensor: it is counted after the final drain.
    let dir = tempfile::tempdir().expect("tempdir");
    let events_file = dir.path().join("events.jsonl");
    let sensor = Sensor::start_at(None, events_file.clone(), &dir.path().join("state"), &[]);
    // 5,000 loopback connect/accept/close cycles from 2 threads, in a network
    // namespace of their own: some 10,000 events within a fraction of a second.
    let out = Command::new(env!("CARGO_BIN_EXE_sockscope-loadgen"))
        .args(["tcp_storm", "--count", "5000", "--fresh-netns", "--timeout-secs", "60"])
        .output()
        .expect("run the load generator");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v.get("ops").is_some())
        .expect("the load generator's report");
    assert_eq!(u(&report, "ops"), 5000, "{report}");
    let pid = u(&report, "pid");
    let got = sensor.wait_for(10_000, Duration::from_secs(10), |e| u(e, "ProcessId") == pid);
    assert_eq!(got.len(), 10_000, "every connection, both ends");
    let (status, stderr) = sensor.stop();
    assert!(status.success(), "{stderr}");
    let stat = |name: &str| final_stat(&stderr, name);
    for lost in ["ringbuf_drops", "queue_dropped", "queue_udp_shed", "udp_shed", "tcp_accepts_unresolved"] {
        assert_eq!(stat(lost), 0, "{lost}: {stderr}");
    }
    // Every event counted as written is in the file (the sensor sees the
    // whole host: connections, DNS queries and lifecycle events of other
    // work count too, on both sides alike).
    let lines = |ids: &[u64]| event_lines(&events_file, ids);
    assert_eq!(lines(&[3, 22]), stat("events_written"), "{stderr}");
    assert_eq!(lines(&[252, 253]), stat("failed_written") + stat("closed_written"), "{stderr}");
    assert_eq!(stat("events_filtered"), 0, "no config, nothing filtered: {stderr}");
    assert!(stat("tcp_outbound") >= 5000 && stat("tcp_inbound") >= 5000, "{stderr}");
    assert!(stat("facts") >= 15_000, "a connect, an ESTABLISHED and an accept fact a cycle: {stderr}");
    // The most the reader ever saw unread fits the ring buffer (8 MiB).
    assert!(stat("ringbuf_peak_bytes") <= 8 << 20, "{stderr}");
}

/// Lines of the events `ids` in a stopped sensor's file.
fn event_lines(path: &std::path::Path, ids: &[u64]) -> u64 {
    let text = std::fs::read_to_string(path).expect("the event file");
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .filter(|e| ids.contains(&e["EventID"].as_u64().unwrap_or(0)))
        .count() as u64
}

/// The ready line's `probes=N`.
fn probes_attached(stderr: &str) -> u64 {
    let ready = stderr.lines().find(|l| l.contains(" ready ")).expect("a ready line");
    let field = ready.split_whitespace().find_map(|w| w.strip_prefix("probes=")).expect("probes= in the ready line");
    field.parse().expect("a count")
}

/// A TCP connection and a UDP flow (read by b) from a to b.
fn one_connection_and_one_flow(net: &TestNet) {
    tcp_connection_a_to_b(net);
    let bind = format!("{}:0", net.ip4(2));
    let mut receiver = Peer::spawn(Some(&net.b), &["udp-recv", "--bind", &bind]);
    let port = receiver.expect("listening");
    let to = format!("{}:{port}", net.ip4(2));
    Peer::spawn(Some(&net.a), &["udp-send", "--to", &to]).wait_ok();
    receiver.wait_ok();
}

/// `--hook-floor` (the benchmark's --hooks-only) attaches as many probes as
/// a normal run, and traffic that a normal run reports leaves no fact at all:
/// every program returned before doing anything.
#[test]
fn the_hook_floor_attaches_every_probe_and_reports_nothing() {
    let net = TestNet::new();
    let normal = Sensor::start(&[]);
    one_connection_and_one_flow(&net);
    // The connection and the flow, each at both ends (the flow's receiving
    // end not where UDP receives are not seen: 5.10).
    let expected = if common::udp_receives_seen() { 4 } else { 3 };
    let reported = normal.wait_for(expected, Duration::from_secs(10), |e| {
        e["EventID"] == 3 && (e["Protocol"] == "tcp" || e["Protocol"] == "udp") && s(e, "DestinationIp") == net.ip4(2)
    });
    let (_, normal_err) = normal.stop();
    assert_eq!(reported.len(), expected, "the normal run reports the connection and the flow: {reported:?}");
    assert!(final_stat(&normal_err, "facts") > 0);

    let floor = Sensor::start(&["--hook-floor"]);
    one_connection_and_one_flow(&net);
    // A fact would be in the ring buffer now (written inside the syscalls
    // that are done); the sensor drains it when it stops, below.
    let events: Vec<Value> = floor.all_events().into_iter().filter(|e| e["EventID"] == 3).collect();
    let (_, floor_err) = floor.stop();
    assert!(events.is_empty(), "no event with --hook-floor: {events:?}");
    assert_eq!(final_stat(&floor_err, "facts"), 0, "no fact left any probe");
    assert_eq!(probes_attached(&floor_err), probes_attached(&normal_err), "the same probes attach");
}
