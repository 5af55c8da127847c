//! TCP against the real kernel: the sensor binary, real sockets and
//! processes, loopback and two network namespaces joined by a veth pair.

mod common;

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{final_stat, host_netns_inode, s, u, Peer, Sensor, TestNet, PEER};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);
/// The pending timeout these tests set (1 s) and a margin for the clock conversion.
const PENDING_AGED: Duration = Duration::from_millis(1200);

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn sockaddr(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

struct Pair {
    listener_pid: u64,
    connector_pid: u64,
    port: u16,
    /// The connecting socket's local address, as the connector saw it.
    local: SocketAddr,
}

struct Side<'a> {
    ns: Option<&'a str>,
    args: Vec<&'a str>,
}

fn connect_pair(listen: Side<'_>, connect_host: &str, connect: Side<'_>) -> Pair {
    let mut largs = vec!["listen"];
    largs.extend(listen.args);
    let mut l = Peer::spawn(listen.ns, &largs);
    let port: u16 = l.expect("listening").parse().expect("port");
    let to = sockaddr(connect_host, port);
    let mut cargs = vec!["connect", "--to", &to];
    cargs.extend(connect.args);
    let mut c = Peer::spawn(connect.ns, &cargs);
    let connector_pid = u64::from(c.pid());
    let locals = c.values("local");
    l.wait_ok();
    let local = locals.first().expect("connector printed its address").parse().expect("local addr");
    Pair { listener_pid: u64::from(l.pid()), connector_pid, port, local }
}

fn outbound(sensor: &Sensor, p: &Pair) -> Vec<Value> {
    let (port, sport) = (p.port, p.local.port());
    let got = sensor.wait_for(1, WAIT, |e| {
        s(e, "Protocol") == "tcp"
            && e["Initiated"] == true
            && u(e, "DestinationPort") == u64::from(port)
            && u(e, "SourcePort") == u64::from(sport)
    });
    // Any duplicate is written before the marker: the caller counts them all.
    sensor.settle();
    let again = sensor.wait_for(0, Duration::ZERO, |e| {
        s(e, "Protocol") == "tcp"
            && e["Initiated"] == true
            && u(e, "DestinationPort") == u64::from(port)
            && u(e, "SourcePort") == u64::from(sport)
    });
    assert!(again.len() >= got.len());
    again
}

fn inbound(sensor: &Sensor, p: &Pair) -> Vec<Value> {
    let (port, sport) = (p.port, p.local.port());
    let pred = |e: &Value| {
        e["Initiated"] == false && u(e, "DestinationPort") == u64::from(port) && u(e, "SourcePort") == u64::from(sport)
    };
    sensor.wait_for(1, WAIT, pred);
    sensor.settle();
    sensor.wait_for(0, Duration::ZERO, pred)
}

/// Checks both events of a connection: process, direction, addresses, netns.
fn check_both(sensor: &Sensor, p: &Pair, server_ip: &str, netns_out: u64, netns_in: u64) {
    let client_ip = canonical(p.local.ip()).to_string();
    let server_ip = canonical(server_ip.parse().expect("ip")).to_string();
    let is6 = |ip: &str| ip.contains(':');

    let out = outbound(sensor, p);
    assert_eq!(out.len(), 1, "exactly one outbound event: {out:?}\nstderr:\n{}", sensor.stderr_text());
    let e = &out[0];
    assert_eq!(u(e, "EventID"), 3);
    assert_eq!(s(e, "Protocol"), "tcp");
    assert_eq!(u(e, "ProcessId"), p.connector_pid, "{e}");
    assert_eq!(s(e, "Image"), PEER, "{e}");
    assert_eq!(s(e, "User"), "root");
    assert_eq!(u(e, "UserId"), 0);
    assert_eq!(s(e, "SourceIp"), client_ip);
    assert_eq!(e["SourceIsIpv6"], is6(&client_ip));
    assert_eq!(s(e, "DestinationIp"), server_ip);
    assert_eq!(e["DestinationIsIpv6"], is6(&server_ip));
    assert_eq!(u(e, "NetNs"), netns_out);
    assert_eq!(s(e, "Attribution"), "connect");
    assert!(s(e, "CommandLine").starts_with(&format!("{PEER} connect --to ")), "{e}");

    let inn = inbound(sensor, p);
    assert_eq!(inn.len(), 1, "exactly one inbound event: {inn:?}\nstderr:\n{}", sensor.stderr_text());
    let e = &inn[0];
    assert_eq!(u(e, "ProcessId"), p.listener_pid, "{e}");
    assert_eq!(s(e, "Image"), PEER);
    // Sysmon's direction: for an accepted connection Source is the remote peer.
    assert_eq!(s(e, "SourceIp"), client_ip);
    assert_eq!(u(e, "SourcePort"), u64::from(p.local.port()));
    assert_eq!(s(e, "DestinationIp"), server_ip);
    assert_eq!(u(e, "DestinationPort"), u64::from(p.port));
    assert_eq!(u(e, "NetNs"), netns_in);
    assert_eq!(s(e, "Attribution"), "accept");
}

fn side<'a>(ns: Option<&'a str>, args: &[&'a str]) -> Side<'a> {
    Side { ns, args: args.to_vec() }
}

#[test]
fn loopback_ipv4_accept() {
    let sensor = Sensor::start(&[]);
    let p = connect_pair(side(None, &["--bind", "127.0.0.1:0"]), "127.0.0.1", side(None, &[]));
    check_both(&sensor, &p, "127.0.0.1", host_netns_inode(), host_netns_inode());
}

#[test]
fn loopback_ipv6_accept4() {
    let sensor = Sensor::start(&[]);
    let p = connect_pair(side(None, &["--bind", "[::1]:0", "--accept", "accept4"]), "::1", side(None, &[]));
    check_both(&sensor, &p, "::1", host_netns_inode(), host_netns_inode());
}

#[test]
fn across_namespaces_ipv4_accept_null() {
    let net = TestNet::new();
    let sensor = Sensor::start(&[]);
    let bind = format!("{}:0", net.ip4(2));
    let p = connect_pair(
        side(Some(&net.b), &["--bind", &bind, "--accept", "accept-null"]),
        &net.ip4(2),
        side(Some(&net.a), &[]),
    );
    assert_eq!(p.local.ip().to_string(), net.ip4(1));
    check_both(&sensor, &p, &net.ip4(2), TestNet::inode(&net.a), TestNet::inode(&net.b));
}

#[test]
fn across_namespaces_ipv6_accept() {
    let net = TestNet::new();
    let sensor = Sensor::start(&[]);
    let bind = format!("[{}]:0", net.ip6(2));
    let p = connect_pair(side(Some(&net.b), &["--bind", &bind]), &net.ip6(2), side(Some(&net.a), &[]));
    check_both(&sensor, &p, &net.ip6(2), TestNet::inode(&net.a), TestNet::inode(&net.b));
}

#[test]
fn dual_stack_mapped_ipv4_reported_as_ipv4() {
    let net = TestNet::new();
    let sensor = Sensor::start(&[]);
    // Listener on [::] (dual stack), connector on an IPv6 socket to ::ffff:v4.
    let mapped = format!("::ffff:{}", net.ip4(2));
    let p = connect_pair(
        side(Some(&net.b), &["--bind", "[::]:0", "--accept", "accept-null"]),
        &mapped,
        side(Some(&net.a), &[]),
    );
    assert!(p.local.is_ipv6(), "connector used an IPv6 socket: {}", p.local);
    check_both(&sensor, &p, &net.ip4(2), TestNet::inode(&net.a), TestNet::inode(&net.b));
    let e = &outbound(&sensor, &p)[0];
    assert_eq!(s(e, "SourceIp"), net.ip4(1));
    assert_eq!(e["SourceIsIpv6"], false);
}

#[test]
fn forked_child_connects_on_parents_socket() {
    let sensor = Sensor::start(&[]);
    let mut l = Peer::spawn(None, &["listen", "--bind", "127.0.0.1:0"]);
    let port: u16 = l.expect("listening").parse().expect("port");
    let to = sockaddr("127.0.0.1", port);
    let mut c = Peer::spawn(None, &["connect", "--to", &to, "--via", "fork-child"]);
    let parent = u64::from(c.pid());
    let child: u64 = c.expect("child").parse().expect("child pid");
    let local: SocketAddr = c.expect("local").parse().expect("addr");
    c.wait_ok();
    l.wait_ok();
    assert_ne!(parent, child);
    let p = Pair { listener_pid: u64::from(l.pid()), connector_pid: child, port, local };
    let out = outbound(&sensor, &p);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(u(&out[0], "ProcessId"), child, "the child connected: {}", out[0]);
    assert_eq!(u(&out[0], "ParentProcessId"), parent);
    assert_eq!(s(&out[0], "Image"), PEER);
    assert_eq!(s(&out[0], "ParentImage"), PEER);
}

#[test]
fn second_thread_connect_reports_process_id() {
    let sensor = Sensor::start(&[]);
    let mut l = Peer::spawn(None, &["listen", "--bind", "127.0.0.1:0"]);
    let port: u16 = l.expect("listening").parse().expect("port");
    let to = sockaddr("127.0.0.1", port);
    let mut c = Peer::spawn(None, &["connect", "--to", &to, "--via", "thread"]);
    let pid = u64::from(c.pid());
    let tid: u64 = c.expect("tid").parse().expect("tid");
    let local: SocketAddr = c.expect("local").parse().expect("addr");
    c.wait_ok();
    l.wait_ok();
    assert_ne!(pid, tid);
    let p = Pair { listener_pid: u64::from(l.pid()), connector_pid: pid, port, local };
    let out = outbound(&sensor, &p);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(u(&out[0], "ProcessId"), pid);
    assert_eq!(u(&out[0], "ThreadId"), tid);
}

#[test]
fn refused_connect_gives_no_event() {
    let net = TestNet::new();
    let sensor = Sensor::start(&[]);
    // Nothing listens on b:7; the RST refuses the connection.
    let to = sockaddr(&net.ip4(2), 7);
    let mut c = Peer::spawn(Some(&net.a), &["connect", "--to", &to, "--expect-refused"]);
    assert_eq!(c.values("refused").len(), 1);
    // A successful connection afterwards proves the sensor was reporting.
    let bind = format!("{}:0", net.ip4(2));
    let p = connect_pair(side(Some(&net.b), &["--bind", &bind]), &net.ip4(2), side(Some(&net.a), &[]));
    assert_eq!(outbound(&sensor, &p).len(), 1);
    let refused: Vec<Value> = sensor.events().into_iter().filter(|e| u(e, "DestinationPort") == 7).collect();
    assert!(refused.is_empty(), "refused connect reported: {refused:?}");
    let (status, stderr) = sensor.stop();
    assert!(status.success());
    assert!(stderr.contains("tcp_handshakes_failed=1"), "failure counted: {stderr}");
}

#[test]
fn two_hundred_concurrent_connections() {
    let net = TestNet::new();
    let sensor = Sensor::start(&[]);
    let bind = format!("{}:0", net.ip4(2));
    let mut l = Peer::spawn(Some(&net.b), &["listen", "--bind", &bind, "--count", "200", "--accept", "accept4"]);
    let port: u16 = l.expect("listening").parse().expect("port");
    let to = sockaddr(&net.ip4(2), port);
    let mut c = Peer::spawn(Some(&net.a), &["connect", "--to", &to, "--count", "200"]);
    let locals: HashSet<u16> =
        c.values("local").iter().map(|a| a.parse::<SocketAddr>().expect("addr").port()).collect();
    l.wait_ok();
    assert_eq!(locals.len(), 200);
    let (cpid, lpid) = (u64::from(c.pid()), u64::from(l.pid()));
    let is_ours = |e: &Value, initiated: bool| {
        e["Initiated"] == initiated
            && u(e, "DestinationPort") == u64::from(port)
            && locals.contains(&(u(e, "SourcePort") as u16))
    };
    sensor.wait_for(200, WAIT, |e| is_ours(e, true));
    sensor.wait_for(200, WAIT, |e| is_ours(e, false));
    sensor.settle();
    let out = sensor.wait_for(0, Duration::ZERO, |e| is_ours(e, true));
    let inn = sensor.wait_for(0, Duration::ZERO, |e| is_ours(e, false));
    assert_eq!(out.len(), 200, "outbound events");
    assert_eq!(inn.len(), 200, "inbound events");
    let distinct = |v: &[Value]| v.iter().map(|e| u(e, "SourcePort")).collect::<HashSet<_>>().len();
    assert_eq!(distinct(&out), 200, "no duplicates outbound");
    assert_eq!(distinct(&inn), 200, "no duplicates inbound");
    assert!(out.iter().all(|e| u(e, "ProcessId") == cpid));
    assert!(inn.iter().all(|e| u(e, "ProcessId") == lpid));
}

#[test]
fn process_that_exits_at_once_keeps_its_image() {
    let sensor = Sensor::start(&[]);
    // A copy under its own odd name: the Image can only come from this exec.
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = dir.path().join("quick exit \"peer\"");
    std::fs::copy(PEER, &exe).expect("copy peer");
    let mut l = Peer::spawn(None, &["listen", "--bind", "127.0.0.1:0"]);
    let port: u16 = l.expect("listening").parse().expect("port");
    let to = sockaddr("127.0.0.1", port);
    let mut c = Peer::spawn_program(None, &exe, &["connect", "--to", &to]);
    let pid = u64::from(c.pid());
    let local: SocketAddr = c.expect("local").parse().expect("addr");
    c.wait_ok();
    l.wait_ok();
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "the connector is gone");
    let p = Pair { listener_pid: u64::from(l.pid()), connector_pid: pid, port, local };
    let out = outbound(&sensor, &p);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(u(&out[0], "ProcessId"), pid);
    assert_eq!(s(&out[0], "Image"), exe.to_str().expect("utf8 path"));
}

#[test]
fn nonblocking_connect() {
    let sensor = Sensor::start(&[]);
    let p = connect_pair(side(None, &["--bind", "[::1]:0"]), "::1", side(None, &["--nonblocking"]));
    check_both(&sensor, &p, "::1", host_netns_inode(), host_netns_inode());
}

#[test]
fn tcp_fast_open() {
    let net = TestNet::new();
    // Client and server TFO without cookies: the SYN carries data, and the
    // server's accept() returns the child before it is ESTABLISHED.
    net.sysctl(&net.a, "net.ipv4.tcp_fastopen", "0x207");
    net.sysctl(&net.b, "net.ipv4.tcp_fastopen", "0x207");
    let sensor = Sensor::start(&[]);
    let bind = format!("{}:0", net.ip4(2));
    let p = connect_pair(
        side(Some(&net.b), &["--bind", &bind, "--fastopen"]),
        &net.ip4(2),
        side(Some(&net.a), &["--fastopen"]),
    );
    check_both(&sensor, &p, &net.ip4(2), TestNet::inode(&net.a), TestNet::inode(&net.b));
    assert_eq!(net.counter(&net.a, "TcpExtTCPFastOpenActive"), 1, "the client's SYN carried data");
    assert_eq!(net.counter(&net.b, "TcpExtTCPFastOpenPassive"), 1, "the server took the fast-open SYN");
}

#[test]
fn accept_whose_socket_cannot_be_named_is_counted_lost_and_announced() {
    let net = TestNet::new();
    // The accept probes act as if the returned fd did not resolve (in life:
    // another thread closed it before accept returned).
    let sensor = Sensor::start(&["--pretend-unresolved-accepts"]);
    let bind = format!("[{}]:0", net.ip6(2));
    let p = connect_pair(side(Some(&net.b), &["--bind", &bind]), &net.ip6(2), side(Some(&net.a), &[]));
    assert_eq!(outbound(&sensor, &p).len(), 1, "the connecting side is still reported");
    let end = Instant::now() + WAIT;
    let loss = loop {
        let loss: Vec<Value> = sensor.all_events().into_iter().filter(|e| e["EventID"] == 250).collect();
        if !loss.is_empty() || Instant::now() >= end {
            break loss;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // At least ours: tests running alongside accept too, and every accept
    // on the host looks unresolved to this sensor.
    let announced: u64 = loss.iter().map(|e| u(e, "TcpAcceptsUnresolved")).sum();
    assert!(announced >= 1, "announced: {loss:?}");
    assert!(inbound(&sensor, &p).is_empty(), "no inbound event without the socket");
    let (_, stderr) = sensor.stop();
    let counted = final_stat(&stderr, "tcp_accepts_unresolved");
    assert!(counted >= announced, "counted {counted}, announced {announced}");
    assert!(stderr.contains("events lost: ") && stderr.contains(", TCP accepts unresolved "), "warned: {stderr}");
}

#[test]
fn event_is_written_with_its_time() {
    let sensor = Sensor::start(&[]);
    let mut l = Peer::spawn(None, &["listen", "--bind", "127.0.0.1:0"]);
    let port: u16 = l.expect("listening").parse().expect("port");
    let to = sockaddr("127.0.0.1", port);
    let before = time_now();
    let mut c = Peer::spawn(None, &["connect", "--to", &to]);
    let local: SocketAddr = c.expect("local").parse().expect("addr");
    // How soon it is written depends on the machine's load: the flush
    // policy's timing is unit-tested (src/sink/queue.rs) with a synthetic clock.
    let got = sensor.wait_for(1, WAIT, |e| e["Initiated"] == true && u(e, "SourcePort") == u64::from(local.port()));
    assert_eq!(got.len(), 1, "the connection's event was written");
    let after = time_now();
    let t = s(&got[0], "UtcTime");
    assert!(t.len() == 23 && before <= t && t <= after, "UtcTime {t} within [{before}, {after}]");
    let guid = s(&got[0], "ProcessGuid");
    assert!(guid.starts_with('{') && guid.ends_with('}') && guid.len() == 38, "{guid}");
    c.wait_ok();
    l.wait_ok();
}

/// Wall-clock now in the UtcTime format, from `date` (independent of the sensor).
fn time_now() -> String {
    let out = std::process::Command::new("date").args(["-u", "+%Y-%m-%d %H:%M:%S.%3N"]).output().expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// io_uring makes no connect or accept syscall: connections opened with
/// CONNECT requests, accepted by single-shot requests and by a multishot one,
/// each attributed to the connecting and the listening process.
#[test]
fn io_uring_connects_and_accepts() {
    let sensor = Sensor::start(&[]);
    for (accept, n) in [
        ("io-uring", 2usize),
        ("io-uring-multishot", 3),
        ("io-uring-direct", 2),
        ("io-uring-multishot-direct", 3),
        // The listener as a fixed file: its port is known from the ring's table.
        ("io-uring-multishot-fixed", 2),
    ] {
        let count = n.to_string();
        let mut l = Peer::spawn(None, &["listen", "--bind", "127.0.0.1:0", "--accept", accept, "--count", &count]);
        let port: u16 = l.expect("listening").parse().expect("port");
        let to = sockaddr("127.0.0.1", port);
        let mut c = Peer::spawn(None, &["connect", "--to", &to, "--count", &count, "--via", "io-uring"]);
        let connector_pid = u64::from(c.pid());
        let locals: Vec<SocketAddr> = c.values("local").iter().map(|v| v.parse().expect("addr")).collect();
        l.wait_ok();
        assert_eq!(locals.len(), n);
        for local in locals {
            let p = Pair { listener_pid: u64::from(l.pid()), connector_pid, port, local };
            let out = outbound(&sensor, &p);
            assert_eq!(out.len(), 1, "io_uring connect: one outbound event: {out:?}\n{}", sensor.stderr_text());
            assert_eq!(u(&out[0], "ProcessId"), connector_pid, "{}", out[0]);
            assert_eq!(s(&out[0], "Attribution"), "connect");
            let inn = inbound(&sensor, &p);
            assert_eq!(inn.len(), 1, "{accept}: one inbound event per connection: {inn:?}\n{}", sensor.stderr_text());
            assert_eq!(u(&inn[0], "ProcessId"), p.listener_pid, "{}", inn[0]);
            assert_eq!(s(&inn[0], "Image"), PEER);
            assert_eq!(s(&inn[0], "Attribution"), "accept");
        }
    }
}

/// io_uring recognises a multishot accept's completions by (ring,
/// user_data) only. An application that puts another multishot request under
/// the same user_data (here a poll whose result, 260, is also the fd of its
/// own outbound TCP socket) must not make that socket look accepted: it would
/// age off as an early accept and be reported inbound; one naming a
/// connection accepted before would be reported a second time.
#[test]
fn io_uring_completions_under_an_accepts_user_data_are_not_accepts() {
    let sensor = Sensor::start(&["--pending-timeout", "1", "--stats-interval", "1"]);
    let mut l = Peer::spawn(
        None,
        &[
            "listen",
            "--bind",
            "127.0.0.1:0",
            "--accept",
            "io-uring-multishot",
            "--count",
            "1",
            "--uring-decoy=outbound",
        ],
    );
    let port: u16 = l.expect("listening").parse().expect("port");
    let decoy: SocketAddr = l.expect("decoy").parse().expect("decoy address");
    let to = sockaddr("127.0.0.1", port);
    let mut c = Peer::spawn(None, &["connect", "--to", &to]);
    c.wait_ok();
    l.wait_ok();
    let listener_pid = u64::from(l.pid());
    // Both real accepts (the connector's and the decoy's own connection).
    let accepted = sensor.wait_for(2, WAIT, |e| {
        e["Initiated"] == false && u(e, "ProcessId") == listener_pid && u(e, "DestinationPort") == u64::from(port)
    });
    assert_eq!(accepted.len(), 2, "{accepted:?}\n{}", sensor.stderr_text());
    // A tick past the pending timeout (1 s) has aged off whatever waited:
    // a false inbound event would be written by then.
    sensor.wait_tick_after(PENDING_AGED);
    let false_inbound: Vec<Value> = sensor
        .events()
        .into_iter()
        .filter(|e| e["Initiated"] == false && u(e, "DestinationPort") == u64::from(decoy.port()))
        .collect();
    assert!(false_inbound.is_empty(), "the decoy's outbound socket reported as accepted: {false_inbound:?}");
    let outbound = sensor.events().into_iter().filter(|e| {
        e["Initiated"] == true && u(e, "ProcessId") == listener_pid && u(e, "SourcePort") == u64::from(decoy.port())
    });
    assert_eq!(outbound.count(), 1, "the decoy connection itself is an outbound connection");

    // The same naming a connection accepted just before (the listener's own,
    // accepted first): one inbound event, not a second when the repeat ages off.
    let args = ["listen", "--bind", "127.0.0.1:0", "--accept", "io-uring-multishot", "--count", "0"];
    let mut l = Peer::spawn(None, &[&args[..], &["--uring-decoy=accepted"]].concat());
    let port: u16 = l.expect("listening").parse().expect("port");
    let local: SocketAddr = l.expect("decoy").parse().expect("decoy address");
    l.wait_ok();
    let pid = u64::from(l.pid());
    let p = Pair { listener_pid: pid, connector_pid: pid, port, local };
    assert_eq!(inbound(&sensor, &p).len(), 1, "{}", sensor.stderr_text());
    sensor.wait_tick_after(PENDING_AGED);
    let again = inbound(&sensor, &p);
    assert_eq!(again.len(), 1, "reported once: {again:?}");
}

/// Simultaneous open: A's SYN is lost (B's link is down), then B connects to
/// A's port while A is still in SYN_SENT. A's socket goes SYN_SENT ->
/// SYN_RECV -> ESTABLISHED and is never accepted: both ends are outbound
/// connections of their own process.
#[test]
fn simultaneous_open_is_two_outbound_connections() {
    let sensor = Sensor::start(&[]);
    let net = TestNet::new();
    let (a, b) = simultaneous_open(&net);
    let mine = |e: &Value| [TestNet::inode(&net.a), TestNet::inode(&net.b)].contains(&u(e, "NetNs"));
    for (pid, port, peer_port) in [(a, 41001u64, 41002u64), (b, 41002, 41001)] {
        let got = sensor.wait_for(1, WAIT, |e| {
            mine(e) && s(e, "Protocol") == "tcp" && u(e, "SourcePort") == port && u(e, "DestinationPort") == peer_port
        });
        assert_eq!(got.len(), 1, "one event from port {port}: {got:?}\n{}", sensor.stderr_text());
        assert_eq!(got[0]["Initiated"], true, "{}", got[0]);
        assert_eq!(u(&got[0], "ProcessId"), u64::from(pid), "{}", got[0]);
        assert_eq!(s(&got[0], "Attribution"), "connect");
    }
    let inbound = sensor.wait_for(0, Duration::ZERO, |e| mine(e) && e["Initiated"] == false);
    assert!(inbound.is_empty(), "no inbound side: {inbound:?}");
}

/// Excluding DestinationPort 41001 drops B's connection (to A's port) only:
/// A's socket reaches ESTABLISHED from SYN_RECV like an accepted one, and
/// judged in that direction in the kernel it would be dropped too.
#[test]
fn simultaneous_open_under_a_port_exclusion() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("exclude.xml");
    let rule = r#"<Sysmon schemaversion="4.81"><EventFiltering><RuleGroup name="" groupRelation="or">
<NetworkConnect onmatch="exclude"><DestinationPort condition="is">41001</DestinationPort></NetworkConnect>
</RuleGroup></EventFiltering></Sysmon>"#;
    std::fs::write(&config, rule).expect("config");
    let sensor = Sensor::start(&["-c", config.to_str().expect("utf8")]);
    let net = TestNet::new();
    let (a, _) = simultaneous_open(&net);
    let mine = |e: &Value| [TestNet::inode(&net.a), TestNet::inode(&net.b)].contains(&u(e, "NetNs"));
    let got = sensor.wait_for(1, WAIT, |e| mine(e) && u(e, "SourcePort") == 41001);
    assert_eq!(got.len(), 1, "A's connection: {got:?}\n{}", sensor.stderr_text());
    assert_eq!((u(&got[0], "ProcessId"), u(&got[0], "DestinationPort")), (u64::from(a), 41002), "{}", got[0]);
    let to_a = sensor.wait_for(0, Duration::ZERO, |e| mine(e) && u(e, "DestinationPort") == 41001);
    assert!(to_a.is_empty(), "B's connection is excluded: {to_a:?}");
}

/// Whether a socket bound to `local` in namespace `ns` is in SYN_SENT.
fn in_syn_sent(ns: &str, local: &str) -> bool {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "ss", "-Htn", "state", "syn-sent", "src", local])
        .output()
        .expect("ss");
    assert!(out.status.success(), "ss: {}", String::from_utf8_lossy(&out.stderr));
    !String::from_utf8_lossy(&out.stdout).trim().is_empty()
}

/// A connects to B while B's link is down (its SYN is lost), then B
/// connects to A while A is in SYN_SENT. Returns the two pids.
fn simultaneous_open(net: &TestNet) -> (u32, u32) {
    let (a_addr, b_addr) = (format!("{}:41001", net.ip4(1)), format!("{}:41002", net.ip4(2)));
    net.set_b_link(false);
    let mut a = Peer::spawn(Some(&net.a), &["connect", "--to", &b_addr, "--bind", &a_addr, "--nonblocking"]);
    // SYN_SENT is set before connect() transmits the SYN, which the link
    // that is down drops: once A is there its first SYN went nowhere.
    let end = Instant::now() + WAIT;
    while !in_syn_sent(&net.a, &a_addr) {
        assert!(Instant::now() < end, "A never reached SYN_SENT");
        std::thread::sleep(Duration::from_millis(10));
    }
    net.set_b_link(true);
    let mut b = Peer::spawn(Some(&net.b), &["connect", "--to", &a_addr, "--bind", &b_addr, "--nonblocking"]);
    b.wait_ok();
    a.wait_ok();
    (a.pid(), b.pid())
}
