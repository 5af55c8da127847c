//! Loss is never silent, and health is visible: stats events on an interval,
//! and when the output stalls, every UDP flow is either reported or counted
//! as lost in a loss event, while TCP keeps the queue's last room.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::mpsc::channel;
use std::time::Duration;

use common::{require_root, s, u, Peer, Sensor, TestNet, SENSOR};
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
    for field in ["EventsPerSecond", "EventsWritten", "Lost", "UdpPacketsSuppressed", "TcpPending", "Processes"] {
        assert!(e.get(field).is_some(), "{field} in {e}");
    }
    assert!(u(e, "Processes") > 0);
    assert_eq!(u(e, "Lost"), 0);
}

#[test]
fn stalled_output_loses_nothing_silently() {
    require_root();
    let net = TestNet::new();
    let mut child = Command::new(SENSOR)
        .args(["--queue-capacity", "64", "--state-dir", "/nonexistent-unused", "--stats-interval", "0"])
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
    rx.recv_timeout(Duration::from_secs(30)).expect("sensor ready");
    // Nobody reads stdout yet: the pipe fills, the writer blocks, the queue fills.
    let dests: Vec<String> = (0..3000).map(|i| format!("{}:{}", net.ip4(2), 10000 + i)).collect();
    let mut args = vec!["udp-send"];
    for d in &dests {
        args.extend_from_slice(&["--to", d]);
    }
    let mut sender = Peer::spawn(Some(&net.a), &args);
    sender.wait_ok();
    std::thread::sleep(Duration::from_millis(1500)); // a loss event is due within a second
                                                     // Now drain the output, stop, and account for every flow.
    let mut out = child.stdout.take().expect("stdout");
    let drain = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = out.read_to_string(&mut text);
        text
    });
    std::thread::sleep(Duration::from_millis(500));
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::SIGTERM);
    let status = child.wait().expect("wait");
    assert!(status.success());
    let text = drain.join().expect("drain");
    let stderr = reader.join().expect("stderr").join("\n");
    let events: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let ns = TestNet::inode(&net.a);
    let reported = events
        .iter()
        .filter(|e| e["EventID"] == 3 && s(e, "Protocol") == "udp" && u(e, "NetNs") == ns && e["Initiated"] == true)
        .count() as u64;
    let losses: Vec<&Value> = events.iter().filter(|e| e["EventID"] == 250).collect();
    assert!(!losses.is_empty(), "a loss event was written; stderr:\n{stderr}");
    let lost: u64 = losses
        .iter()
        .map(|e| u(e, "RingBufferDrops") + u(e, "UdpShedInKernel") + u(e, "UdpShedInQueue") + u(e, "QueueDropped"))
        .sum();
    assert!(lost > 0);
    assert!(reported + lost >= 3000, "every flow reported ({reported}) or counted lost ({lost})");
    assert!(reported < 3000, "the stall really lost something ({reported} reported)");
    assert!(stderr.contains("events lost"), "announced on stderr too: {stderr}");
}
