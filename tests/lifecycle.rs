//! The whole life of a connection on the real kernel: failed outbound
//! handshakes (event 252: refused, timed out, unreachable, aborted; folded
//! repeats) and the ends of reported connections (event 253: FIN, RST,
//! still open when the sensor stops), exact in JSON and in Sysmon's XML.
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{s, u, Peer, Sensor, TestNet};
use serde_json::Value;
use sockscope::format::xml_check;

const WAIT: Duration = Duration::from_secs(30);

fn lifecycle_events(sensor: &Sensor, id: u64) -> Vec<Value> {
    sensor.all_events().into_iter().filter(|e| e["EventID"] == id).collect()
}

/// Events `id` matching `pred`, once there are `n` (bounded).
fn wait_lifecycle(sensor: &Sensor, id: u64, n: usize, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    let end = Instant::now() + WAIT;
    loop {
        let got: Vec<Value> = lifecycle_events(sensor, id).into_iter().filter(|e| pred(e)).collect();
        if got.len() >= n || Instant::now() >= end {
            return got;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn refused_connects_are_reported_and_repeats_folded() {
    let sensor = Sensor::start(&["--failed-window", "2", "--stats-interval", "1"]);
    let port = closed_port();
    let me = u64::from(std::process::id());
    for _ in 0..4 {
        let e = TcpStream::connect(("127.0.0.1", port)).expect_err("nothing listens");
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
    }
    let ours = |e: &Value| e["ProcessId"] == me && e["DestinationPort"] == u64::from(port);
    let first = wait_lifecycle(&sensor, 252, 1, ours);
    assert!(!first.is_empty(), "no event 252; stderr:\n{}", sensor.stderr_text());
    let e = &first[0];
    assert_eq!((s(e, "Failure"), u(e, "Attempts"), u(e, "Count")), ("refused".into(), 1, 1), "{e}");
    assert_eq!((e["Protocol"].as_str(), e["Initiated"].as_bool()), (Some("tcp"), Some(true)));
    assert_eq!((s(e, "SourceIp"), s(e, "DestinationIp")), ("127.0.0.1".into(), "127.0.0.1".into()));
    assert_ne!(u(e, "SourcePort"), 0, "the local port the attempt used: {e}");
    assert_eq!(s(e, "Attribution"), "connect");
    assert!(s(e, "Image").contains("lifecycle"), "{e}");
    // The three repeats, folded into one report at the end of the window.
    let all = wait_lifecycle(&sensor, 252, 2, ours);
    assert_eq!(all.len(), 2, "the first and one folded report: {all:?}");
    assert_eq!((u(&all[1], "Count"), u(&all[1], "Attempts"), s(&all[1], "Failure")), (3, 3, "refused".into()));
    sensor.settle();
    assert_eq!(lifecycle_events(&sensor, 252).into_iter().filter(|e| ours(e)).count(), 2);
    // No connection was made: no close event for that destination.
    assert!(lifecycle_events(&sensor, 253).iter().all(|e| e["DestinationPort"] != u64::from(port)));
}

#[test]
fn lifecycle_off_reports_neither() {
    let sensor = Sensor::start(&["--lifecycle", "off"]);
    let port = closed_port();
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    transfer(&sensor, Close::Fin);
    sensor.settle();
    let all = sensor.all_events();
    assert!(all.iter().all(|e| e["EventID"] != 252 && e["EventID"] != 253), "{all:?}");
}

#[test]
fn timed_out_unreachable_and_aborted_connects_in_a_test_namespace() {
    let net = TestNet::new();
    // b drops everything it would send to a: a's SYNs go unanswered.
    run(Command::new("ip").args(["-n", &net.b, "route", "add", "blackhole", &format!("{}/32", net.ip4(1))]));
    let sensor = Sensor::start(&[]);
    let to = format!("{}:9", net.ip4(2));

    let mut timed_out = Peer::spawn(Some(&net.a), &["connect", "--to", &to, "--syn-count", "1", "--expect-failure"]);
    let mut aborted = Peer::spawn(Some(&net.a), &["connect", "--to", &to, "--abort"]);
    // Nobody has a's .99 address: neighbour resolution fails (ICMP host unreachable).
    let nowhere = format!("{}:80", net.ip4(99));
    let mut unreachable = Peer::spawn(Some(&net.a), &["connect", "--to", &nowhere, "--expect-failure"]);

    let aborted_local: SocketAddr = aborted.expect("aborted").parse().expect("addr");
    assert_eq!(timed_out.expect("failed"), libc::ETIMEDOUT.to_string());
    assert_eq!(unreachable.expect("failed"), libc::EHOSTUNREACH.to_string());
    let netns = TestNet::inode(&net.a);
    for (peer, failure, attempts, dest) in [
        (&timed_out, "timeout", Some(2), net.ip4(2)),
        (&aborted, "aborted", None, net.ip4(2)),
        (&unreachable, "unreachable", None, net.ip4(99)),
    ] {
        let pid = u64::from(peer.pid());
        let got = wait_lifecycle(&sensor, 252, 1, |e| e["ProcessId"] == pid);
        assert_eq!(got.len(), 1, "{failure}: {got:?}; stderr:\n{}", sensor.stderr_text());
        let e = &got[0];
        assert_eq!(s(e, "Failure"), failure, "{e}");
        assert_eq!((s(e, "DestinationIp"), s(e, "SourceIp")), (dest, net.ip4(1)), "{e}");
        assert_eq!(u(e, "NetNs"), netns);
        assert_eq!(u(e, "Count"), 1);
        if let Some(n) = attempts {
            // TCP_SYNCNT 1: the SYN and at least one retransmission (the
            // kernel's timeout is time-based and may fit in another).
            assert!(u(e, "Attempts") >= n, "{e}");
        }
        if failure == "aborted" {
            assert_eq!(u(e, "SourcePort"), u64::from(aborted_local.port()), "{e}");
        }
    }
}

enum Close {
    Fin,
    Rst,
}

const SENT: usize = 1000;
const RECEIVED: usize = 3000;

/// A loopback connection from this process to itself: SENT bytes out,
/// RECEIVED back, then closed by the connecting end as `close`; returns
/// (client port, server port) once the server end saw the close.
fn transfer(sensor: &Sensor, close: Close) -> (u16, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let server_port = listener.local_addr().expect("addr").port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut buf = vec![0u8; SENT];
        s.read_exact(&mut buf).expect("read what the client sent");
        s.write_all(&vec![b'y'; RECEIVED]).expect("send back");
        // Until the client's FIN (0) or RST (an error).
        let mut rest = [0u8; 16];
        let _ = s.read(&mut rest);
    });
    let mut c = TcpStream::connect(("127.0.0.1", server_port)).expect("connect");
    let client_port = c.local_addr().expect("addr").port();
    c.write_all(&vec![b'x'; SENT]).expect("send");
    let mut buf = vec![0u8; RECEIVED];
    c.read_exact(&mut buf).expect("read the reply");
    if let Close::Rst = close {
        socket2::SockRef::from(&c).set_linger(Some(Duration::ZERO)).expect("SO_LINGER 0");
    }
    drop(c);
    server.join().expect("server thread");
    let _ = sensor;
    (client_port, server_port)
}

/// The two 253 events of the connection (client end first).
fn closes(sensor: &Sensor, client_port: u16, server_port: u16) -> (Value, Value) {
    let ours = |e: &Value| {
        let ports = (u(e, "SourcePort"), u(e, "DestinationPort"));
        ports == (u64::from(client_port), u64::from(server_port))
            || ports == (u64::from(client_port), u64::from(server_port))
    };
    let got = wait_lifecycle(sensor, 253, 2, ours);
    assert_eq!(got.len(), 2, "both ends' close: {got:?}; stderr:\n{}", sensor.stderr_text());
    let client = got.iter().find(|e| e["Initiated"] == true).expect("client end").clone();
    let server = got.iter().find(|e| e["Initiated"] == false).expect("server end").clone();
    (client, server)
}

fn check_close(e: &Value, sent: usize, received: usize, reason: &str) {
    assert_eq!(
        (u(e, "BytesSent"), u(e, "BytesReceived"), s(e, "CloseReason")),
        (sent as u64, received as u64, reason.to_string()),
        "{e}"
    );
    assert_eq!(u(e, "SegmentsRetransmitted"), 0, "{e}");
    assert!(e["Duration"].is_u64() && e["SmoothedRttUs"].is_u64(), "{e}");
    assert_eq!(u(e, "ProcessId"), u64::from(std::process::id()));
}

#[test]
fn closes_carry_the_bytes_each_way_with_fin_and_with_rst() {
    let sensor = Sensor::start(&[]);
    let (cp, sp) = transfer(&sensor, Close::Fin);
    let (client, server) = closes(&sensor, cp, sp);
    check_close(&client, SENT, RECEIVED, "fin");
    check_close(&server, RECEIVED, SENT, "fin");
    // The same identity as the connection's event 3.
    let opened =
        sensor.wait_for(2, WAIT, |e| e["SourcePort"] == u64::from(cp) && e["DestinationPort"] == u64::from(sp));
    let connect = opened.iter().find(|e| e["Initiated"] == true).expect("event 3");
    for k in ["ProcessGuid", "Image", "SourceIp", "DestinationIp", "CommunityId", "Attribution", "RuleName"] {
        assert_eq!(client[k], connect[k], "{k}");
    }

    let (cp, sp) = transfer(&sensor, Close::Rst);
    let (client, server) = closes(&sensor, cp, sp);
    check_close(&client, SENT, RECEIVED, "reset");
    check_close(&server, RECEIVED, SENT, "reset");
}

#[test]
fn closes_in_sysmon_xml() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("events.xml");
    let sensor = Sensor::start_at(None, out.clone(), &dir.path().join("state"), &["--format", "xml"]);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let refused = closed_port();
    assert!(TcpStream::connect(("127.0.0.1", refused)).is_err());
    let (cp, _) = {
        let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let (mut s, _) = listener.accept().expect("accept");
        c.write_all(&[b'x'; 10]).expect("send");
        let mut buf = [0u8; 10];
        s.read_exact(&mut buf).expect("read");
        let cp = c.local_addr().expect("addr").port();
        drop(c);
        let _ = s.read(&mut buf);
        (cp, ())
    };
    let end = Instant::now() + WAIT;
    let (failed, closed) = loop {
        let events = xml_events(&out);
        let failed: Vec<_> = events.iter().filter(|e| e.element("EventID") == Some("252")).cloned().collect();
        let closed: Vec<_> = events
            .iter()
            .filter(|e| e.element("EventID") == Some("253") && e.data("SourcePort") == Some(&cp.to_string()))
            .cloned()
            .collect();
        if (failed.iter().any(|e| e.data("DestinationPort") == Some(&refused.to_string())) && closed.len() == 2)
            || Instant::now() >= end
        {
            break (failed, closed);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let f = failed.iter().find(|e| e.data("DestinationPort") == Some(&refused.to_string())).expect("252 in XML");
    let names: Vec<&str> = f.data.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(&names[18..], ["Failure", "Attempts", "Count"], "Sysmon's 18 fields, then its own: {names:?}");
    assert_eq!(names[0], "RuleName");
    assert_eq!((f.data("Failure"), f.data("Attempts"), f.data("Count")), (Some("refused"), Some("1"), Some("1")));
    assert_eq!(f.element("Task"), Some("252"));
    assert_eq!(closed.len(), 2, "both ends' close in XML");
    let c = closed.iter().find(|e| e.data("Initiated") == Some("true")).expect("client end");
    let names: Vec<&str> = c.data.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        &names[18..],
        ["Duration", "BytesSent", "BytesReceived", "SegmentsRetransmitted", "SmoothedRttUs", "CloseReason"]
    );
    assert_eq!(
        (c.data("BytesSent"), c.data("BytesReceived"), c.data("CloseReason")),
        (Some("10"), Some("0"), Some("fin"))
    );
    drop(sensor);
}

fn xml_events(path: &Path) -> Vec<xml_check::ParsedEvent> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    complete.lines().map(xml_check::parse_event).collect()
}

#[test]
fn connections_open_at_stop_are_reported_with_their_figures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sensor = Sensor::start_at(None, dir.path().join("events.jsonl"), &dir.path().join("state"), &[]);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let (mut srv, _) = listener.accept().expect("accept");
    c.write_all(&[b'x'; 100]).expect("send");
    let mut buf = [0u8; 100];
    srv.read_exact(&mut buf).expect("read");
    srv.write_all(&[b'y'; 250]).expect("reply");
    let mut back = [0u8; 250];
    c.read_exact(&mut back).expect("read reply");
    let cp = c.local_addr().expect("addr").port();
    // Until both ends' event 3 are out (then the kernel has marked both).
    let opened = sensor.wait_for(2, WAIT, |e| e["SourcePort"] == u64::from(cp));
    assert_eq!(opened.len(), 2);
    let out = sensor.out.clone();
    let (status, stderr) = sensor.stop();
    assert!(status.success(), "{stderr}");
    let text = std::fs::read_to_string(&out).expect("events");
    let stops: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json"))
        .filter(|e| e["EventID"] == 253 && e["SourcePort"] == u64::from(cp))
        .collect();
    assert_eq!(stops.len(), 2, "both ends, open at stop: {stops:?}\n{stderr}");
    for e in &stops {
        assert_eq!(s(e, "CloseReason"), "sensor-stop", "{e}");
        let (sent, received) = if e["Initiated"] == true { (100, 250) } else { (250, 100) };
        assert_eq!((u(e, "BytesSent"), u(e, "BytesReceived")), (sent, received), "{e}");
    }
    assert_eq!(common::final_stat(&stderr, "tcp_open_at_stop_without_figures"), 0);
    drop((c, srv));
}
