//! UDP new flows against the real kernel, for both send mechanisms: the
//! process-context one and the seed's packet-socket one. Senders run in a
//! network namespace created after the sensor started.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::{s, u, Peer, Sensor, TestNet, PEER};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

fn start(mechanism: &str, extra: &[&str]) -> Sensor {
    let mut args = vec!["--udp-mechanism", mechanism];
    args.extend_from_slice(extra);
    let sensor = Sensor::start(&args);
    assert!(sensor.wait_log(&["UDP sends:", mechanism_word(mechanism)], WAIT), "{}", sensor.stderr_text());
    sensor
}

fn mechanism_word(mechanism: &str) -> &'static str {
    if mechanism == "packet" {
        "packet-socket"
    } else {
        "process-context"
    }
}

/// The seed's mechanism covers a namespace once the sensor has its socket there.
fn covered(sensor: &Sensor, mechanism: &str, ns: &str) {
    if mechanism == "packet" {
        let inode = TestNet::inode(ns).to_string();
        assert!(
            sensor.wait_log(&["watching network namespace", &format!("netns={inode}")], WAIT),
            "no packet socket in {ns}: {}",
            sensor.stderr_text()
        );
    }
}

fn udp_events(sensor: &Sensor, n: usize, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    sensor.wait_for(n, WAIT, |e| s(e, "Protocol") == "udp" && pred(e));
    sensor.settle(); // a duplicate is written by now
    sensor.wait_for(0, Duration::ZERO, |e| s(e, "Protocol") == "udp" && pred(e))
}

fn to_port(e: &Value) -> u64 {
    u(e, "DestinationPort")
}

/// Outbound flows for every send call, IPv4, IPv6 and IPv4-mapped, across
/// two namespaces; the receiver's side is checked too.
fn send_variants(mechanism: &str) {
    let sensor = start(mechanism, &[]);
    let net = TestNet::new();
    covered(&sensor, mechanism, &net.a);
    for via in ["sendto", "sendmsg", "sendmmsg", "send", "write", "io-uring", "msg-more", "cork"] {
        for family in ["v4", "v6", "mapped"] {
            send_case(&sensor, &net, mechanism, via, family);
        }
    }
}

fn send_case(sensor: &Sensor, net: &TestNet, mechanism: &str, via: &str, family: &str) {
    {
        let (bind, to_host, sender_ip, receiver_ip) = match family {
            "v4" => ("0.0.0.0:0".to_string(), net.ip4(2), net.ip4(1), net.ip4(2)),
            "v6" | "v6-dstopts" | "v6-dstopts-512" => ("[::]:0".to_string(), net.ip6(2), net.ip6(1), net.ip6(2)),
            _ => ("[::]:0".to_string(), format!("::ffff:{}", net.ip4(2)), net.ip4(1), net.ip4(2)),
        };
        // One corked datagram: it leaves in setsockopt(UDP_CORK, 0), and no
        // later send on the socket may stand in for it.
        let count = if via == "cork" { "1" } else { "3" };
        let mut r = Peer::spawn(Some(&net.b), &["udp-recv", "--bind", &bind, "--count", count, "--via", "recvfrom"]);
        let port: u16 = r.expect("listening").parse().expect("port");
        let to = SocketAddr::new(to_host.parse().expect("ip"), port).to_string();
        let mut args = vec!["udp-send", "--to", &to, "--count", count, "--via", via];
        if family == "mapped" {
            args.push("--v6-socket");
        }
        match family {
            "v6-dstopts" => args.extend_from_slice(&["--ipv6-dstopts", "8"]),
            // Several options, 512 bytes (more than ~1000 the kernel refuses: EMSGSIZE).
            "v6-dstopts-512" => args.extend_from_slice(&["--ipv6-dstopts", "512"]),
            _ => {}
        }
        let mut sender = Peer::spawn(Some(&net.a), &args);
        let local: SocketAddr = sender.expect("local").parse().expect("addr");
        sender.wait_ok();
        r.wait_ok();
        let sender_pid = u64::from(sender.pid());
        let (ns_a, ns_b) = (TestNet::inode(&net.a), TestNet::inode(&net.b));
        let out =
            // Ports repeat across cases (ephemeral): the sender's own port tells them apart.
            udp_events(sensor, 1, |e| {
                e["Initiated"] == true
                    && u(e, "NetNs") == ns_a
                    && to_port(e) == u64::from(port)
                    && u(e, "SourcePort") == u64::from(local.port())
            });
        assert_eq!(out.len(), 1, "{mechanism} {via} {family}: one outbound event: {out:?}\n{}", sensor.stderr_text());
        let e = &out[0];
        assert_eq!(u(e, "ProcessId"), sender_pid, "{e}");
        assert_eq!(s(e, "Image"), PEER);
        assert_eq!(s(e, "SourceIp"), sender_ip, "{mechanism} {via} {family}: {e}");
        assert_eq!(u(e, "SourcePort"), u64::from(local.port()));
        assert_eq!(s(e, "DestinationIp"), receiver_ip);
        assert_eq!(e["DestinationIsIpv6"], receiver_ip.contains(':'));
        assert_eq!(u(e, "NetNs"), TestNet::inode(&net.a));
        let expected = if mechanism == "packet" { "packet" } else { "send" };
        assert_eq!(s(e, "Attribution"), expected);

        let inn = udp_events(sensor, 1, |e| {
            e["Initiated"] == false
                && u(e, "NetNs") == ns_b
                && to_port(e) == u64::from(port)
                && u(e, "SourcePort") == u64::from(local.port())
        });
        assert_eq!(inn.len(), 1, "{via} {family}: one inbound event: {inn:?}");
        assert_eq!(u(&inn[0], "ProcessId"), u64::from(r.pid()));
        assert_eq!(s(&inn[0], "SourceIp"), sender_ip);
        assert_eq!(u(&inn[0], "SourcePort"), u64::from(local.port()));
        assert_eq!(u(&inn[0], "NetNs"), TestNet::inode(&net.b));
    }
}

/// IPv6 datagrams with an extension header (Destination Options) between
/// the IPv6 header and UDP, sent and received: the probes look past it, an
/// 8-byte one and a 512-byte one of several options.
fn extension_headers(mechanism: &str) {
    let sensor = start(mechanism, &[]);
    let net = TestNet::new();
    covered(&sensor, mechanism, &net.a);
    for family in ["v6-dstopts", "v6-dstopts-512"] {
        for via in ["sendto", "send"] {
            send_case(&sensor, &net, mechanism, via, family);
        }
    }
}

#[test]
fn ipv6_extension_headers_process_context() {
    extension_headers("process");
}

#[test]
fn ipv6_extension_headers_packet_socket() {
    extension_headers("packet");
}

#[test]
fn send_variants_process_context() {
    send_variants("process");
}

#[test]
fn send_variants_packet_socket() {
    send_variants("packet");
}

/// With the sendmsg hook and without it, unconnected sends are reported with
/// their destination: egress alone names it (the hook only matters for
/// IPsec-transformed packets, which this test kernel cannot make).
#[test]
fn unconnected_sends_with_and_without_the_sendmsg_hook() {
    for (setting, log) in [("off", "no sendmsg hook"), ("on", "+ cgroup sendmsg4/6")] {
        let sensor = start("process", &["--udp-sendmsg-hook", setting]);
        assert!(sensor.wait_log(&["UDP sends:", log], WAIT), "{setting}: {}", sensor.stderr_text());
        let net = TestNet::new();
        for via in ["sendto", "sendmsg", "sendmmsg"] {
            for family in ["v4", "v6", "mapped"] {
                send_case(&sensor, &net, "process", via, family);
            }
        }
        let (_, stderr) = sensor.stop();
        assert!(stderr.contains("udp_send_dest_unknown=0"), "{setting}: no destination went missing: {stderr}");
    }
}

/// Inbound flows for every receive call: the sender's real address whether
/// or not the receiver asked for it.
#[test]
fn receive_variants_report_the_real_sender() {
    let sensor = start("auto", &[]);
    let net = TestNet::new();
    let vias = ["recvfrom", "recvfrom-null", "recvmsg", "recvmsg-null", "recvmmsg", "recv", "read", "io-uring"];
    let cases: Vec<(&str, &str)> =
        vias.iter().flat_map(|via| ["v4", "v6", "mapped"].map(move |family| (*via, family))).collect();
    for (case, (via, family)) in cases.into_iter().enumerate() {
        // A sender port of its own per case: receiver ports may repeat.
        let sport = 40000 + case as u16;
        let (bind, recv_ip, send_ip, connect_to) = match family {
            "v4" => (format!("{}:0", net.ip4(2)), net.ip4(2), net.ip4(1), format!("{}:{sport}", net.ip4(1))),
            "v6" => (format!("[{}]:0", net.ip6(2)), net.ip6(2), net.ip6(1), format!("[{}]:{sport}", net.ip6(1))),
            _ => ("[::]:0".to_string(), net.ip4(2), net.ip4(1), format!("[::ffff:{}]:{sport}", net.ip4(1))),
        };
        let mut args = vec!["udp-recv", "--bind", &bind, "--count", "2", "--via", via];
        if matches!(via, "recv" | "read") {
            args.extend_from_slice(&["--connect", &connect_to]);
        }
        let mut r = Peer::spawn(Some(&net.b), &args);
        let port: u16 = r.expect("listening").parse().expect("port");
        let to = SocketAddr::new(recv_ip.parse().expect("ip"), port).to_string();
        let from = SocketAddr::new(send_ip.parse().expect("ip"), sport).to_string();
        let mut sender = Peer::spawn(Some(&net.a), &["udp-send", "--to", &to, "--count", "2", "--bind", &from]);
        sender.wait_ok();
        r.wait_ok();
        let ns_b = TestNet::inode(&net.b);
        let inn = udp_events(&sensor, 1, |e| {
            e["Initiated"] == false
                && u(e, "NetNs") == ns_b
                && to_port(e) == u64::from(port)
                && u(e, "SourcePort") == u64::from(sport)
        });
        assert_eq!(inn.len(), 1, "{via} {family}: {inn:?}\n{}", sensor.stderr_text());
        let e = &inn[0];
        assert_eq!(u(e, "ProcessId"), u64::from(r.pid()), "{via}: {e}");
        assert_eq!(s(e, "SourceIp"), send_ip, "{via} {family}: {e}");
        assert_eq!(u(e, "SourcePort"), u64::from(sport));
        assert_eq!(s(e, "DestinationIp"), recv_ip);
        assert_eq!(e["SourceIsIpv6"], send_ip.contains(':'));
        assert_eq!(s(e, "Attribution"), "receive");
    }
}

fn many_datagrams_one_event(mechanism: &str) {
    let sensor = start(mechanism, &[]);
    let net = TestNet::new();
    covered(&sensor, mechanism, &net.a);
    let to = format!("{}:9", net.ip4(2));
    let mut sender = Peer::spawn(Some(&net.a), &["udp-send", "--to", &to, "--count", "500"]);
    let local: SocketAddr = sender.expect("local").parse().expect("addr");
    sender.wait_ok();
    let ns = TestNet::inode(&net.a);
    let out = udp_events(&sensor, 1, |e| {
        u(e, "NetNs") == ns && u(e, "SourcePort") == u64::from(local.port()) && to_port(e) == 9
    });
    assert_eq!(out.len(), 1, "{mechanism}: 500 datagrams, one flow: {out:?}");
    let (status, stderr) = sensor.stop();
    assert!(status.success());
    let suppressed: u64 = stderr
        .split_whitespace()
        .find_map(|w| w.strip_prefix("udp_packets_suppressed="))
        .and_then(|v| v.parse().ok())
        .expect("stats line");
    assert!(suppressed >= 499, "{mechanism}: repeats stopped in the kernel: {suppressed}");
}

#[test]
fn five_hundred_datagrams_one_event_process_context() {
    many_datagrams_one_event("process");
}

#[test]
fn five_hundred_datagrams_one_event_packet_socket() {
    many_datagrams_one_event("packet");
}

/// One socket in `a` sends `count` datagrams to each of `n` ports of `b`;
/// returns the outbound events of that socket.
fn send_to_many(sensor: &Sensor, net: &TestNet, first_port: u16, n: u16, count: &str) -> Vec<Value> {
    let dests: Vec<String> = (0..n).map(|i| format!("{}:{}", net.ip4(2), first_port + i)).collect();
    let mut args = vec!["udp-send", "--count", count];
    for d in &dests {
        args.extend_from_slice(&["--to", d]);
    }
    let mut sender = Peer::spawn(Some(&net.a), &args);
    let local: SocketAddr = sender.expect("local").parse().expect("addr");
    sender.wait_ok();
    let ns = TestNet::inode(&net.a);
    udp_events(sensor, usize::from(n), |e| {
        e["Initiated"] == true && u(e, "NetNs") == ns && u(e, "SourcePort") == u64::from(local.port())
    })
}

fn destinations_and_sockets(mechanism: &str) {
    let sensor = start(mechanism, &[]);
    let net = TestNet::new();
    covered(&sensor, mechanism, &net.a);
    let out = send_to_many(&sensor, &net, 20000, 20, "3");
    assert_eq!(out.len(), 20, "{mechanism}: 20 destinations, 20 events");
    let ports: HashSet<u64> = out.iter().map(to_port).collect();
    assert_eq!(ports.len(), 20);

    let to = format!("{}:30000", net.ip4(2));
    let mut two = Peer::spawn(Some(&net.a), &["udp-send", "--to", &to, "--count", "5", "--sockets", "2"]);
    let locals: HashSet<String> = two.values("local").into_iter().collect();
    assert_eq!(locals.len(), 2);
    let ns = TestNet::inode(&net.a);
    let out = udp_events(&sensor, 2, |e| e["Initiated"] == true && u(e, "NetNs") == ns && to_port(e) == 30000);
    assert_eq!(out.len(), 2, "{mechanism}: two sockets, one destination, two events: {out:?}");
}

#[test]
fn destinations_and_sockets_process_context() {
    destinations_and_sockets("process");
}

#[test]
fn destinations_and_sockets_packet_socket() {
    destinations_and_sockets("packet");
}

fn window_expiry(mechanism: &str) {
    let sensor = start(mechanism, &["--udp-window", "2"]);
    let net = TestNet::new();
    covered(&sensor, mechanism, &net.a);
    let to = format!("{}:7000", net.ip4(2));
    // Again within the window: one event.
    let mut quick = Peer::spawn(Some(&net.a), &["udp-send", "--to", &to, "--count", "2", "--repeat-after-ms", "500"]);
    quick.wait_ok();
    let qpid = u64::from(quick.pid());
    // Again after the window (2 s, swept every second): reported again.
    let mut slow = Peer::spawn(Some(&net.a), &["udp-send", "--to", &to, "--count", "2", "--repeat-after-ms", "4500"]);
    slow.wait_ok();
    let spid = u64::from(slow.pid());
    let q = udp_events(&sensor, 1, |e| u(e, "ProcessId") == qpid && e["Initiated"] == true);
    assert_eq!(q.len(), 1, "{mechanism}: within the window: {q:?}");
    let got = udp_events(&sensor, 2, |e| u(e, "ProcessId") == spid && e["Initiated"] == true);
    assert_eq!(got.len(), 2, "{mechanism}: idle past the window, reported again: {got:?}");
    assert_eq!(s(&got[0], "SourcePort"), s(&got[1], "SourcePort"), "the same flow");
    let (status, stderr) = sensor.stop();
    assert!(status.success());
    assert!(!stderr.contains("udp_flows_expired=0 "), "expiry counted: {stderr}");
}

#[test]
fn window_expiry_process_context() {
    window_expiry("process");
}

#[test]
fn window_expiry_packet_socket() {
    window_expiry("packet");
}

fn tiny_table(mechanism: &str) {
    let sensor = start(mechanism, &["--udp-flow-capacity", "16"]);
    let net = TestNet::new();
    covered(&sensor, mechanism, &net.a);
    let out = send_to_many(&sensor, &net, 21000, 50, "2");
    let ports: HashSet<u64> = out.iter().map(to_port).collect();
    assert_eq!(ports.len(), 50, "{mechanism}: every new flow reported with a 16-entry table");
    assert_eq!(out.len(), 50, "{mechanism}: and each once");
    let (status, stderr) = sensor.stop();
    assert!(status.success());
    let evicted: u64 = stderr
        .split_whitespace()
        .find_map(|w| w.strip_prefix("udp_flows_evicted="))
        .and_then(|v| v.parse().ok())
        .expect("stats line");
    assert!(evicted > 0, "{mechanism}: evictions counted: {stderr}");
}

#[test]
fn tiny_table_process_context() {
    tiny_table("process");
}

#[test]
fn tiny_table_packet_socket() {
    tiny_table("packet");
}

/// A host without a cgroup2 mount: the sensor mounts one for its hooks (in
/// its own mount namespace here, so the host is untouched).
#[test]
fn works_without_a_cgroup2_mount() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("events.jsonl");
    let state = dir.path().join("state");
    let script =
        "for m in $(awk '$3 == \"cgroup2\" {print $2}' /proc/mounts); do umount -l \"$m\"; done; exec \"$0\" \"$@\"";
    let sensor = Sensor::start_via(
        &["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        Some(dir),
        out,
        &state,
        &[],
    );
    assert!(sensor.wait_log(&["mounted cgroup2"], WAIT), "{}", sensor.stderr_text());
    let net = TestNet::new();
    let to = format!("{}:9", net.ip4(2));
    let mut sender = Peer::spawn(Some(&net.a), &["udp-send", "--to", &to, "--count", "2"]);
    sender.wait_ok();
    let ns = TestNet::inode(&net.a);
    let got = udp_events(&sensor, 1, |e| u(e, "NetNs") == ns && to_port(e) == 9);
    assert_eq!(got.len(), 1, "{}", sensor.stderr_text());
    assert_eq!(u(&got[0], "ProcessId"), u64::from(sender.pid()));
}

/// The packet-socket mechanism sees a namespace's sends only through its raw
/// socket there; without CAP_NET_RAW it has none, and says so per namespace
/// instead of reporting nothing in silence.
#[test]
fn a_namespace_the_packet_mechanism_cannot_watch_is_announced() {
    let net = TestNet::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("events.jsonl");
    let state = dir.path().join("state");
    let sensor = Sensor::start_via(
        &["setpriv", "--bounding-set=-net_raw", "--"],
        Some(dir),
        out,
        &state,
        &["--udp-mechanism", "packet"],
    );
    let netns = format!("netns={}", TestNet::inode(&net.a));
    assert!(
        sensor.wait_log(&["WARN", "no packet socket in this network namespace", &netns], WAIT),
        "{}",
        sensor.stderr_text()
    );
}

/// `--udp-sendmsg-hook when-ipsec` (what `auto` picks on a kernel that can
/// do IPsec): the costly sendmsg hooks stay off while no network namespace
/// has an IPsec policy, and come on within seconds of one appearing.
#[test]
fn the_sendmsg_hook_comes_when_an_ipsec_policy_does() {
    let sensor = start("process", &["--udp-sendmsg-hook", "when-ipsec"]);
    assert!(sensor.wait_log(&["UDP sendmsg hook off until an IPsec policy appears"], WAIT), "{}", sensor.stderr_text());
    let net = TestNet::new();
    // Addresses no test uses: only the policy's existence matters.
    let added = std::process::Command::new("ip")
        .args(["-n", &net.a, "xfrm", "policy", "add", "src", "169.254.253.1", "dst", "169.254.253.2"])
        .args(["dir", "out", "tmpl", "proto", "esp", "mode", "transport"])
        .status()
        .expect("ip runs");
    assert!(added.success(), "ip xfrm policy add");
    let netns = format!("network namespace {}", TestNet::inode(&net.a));
    assert!(
        sensor.wait_log(&["UDP sendmsg hook on", "IPsec (xfrm) policy is in", &netns], WAIT),
        "{}",
        sensor.stderr_text()
    );
    // Unconnected sends are still reported, none with its destination unknown.
    covered(&sensor, "process", &net.a);
    send_case(&sensor, &net, "process", "sendto", "v4");
    let (_, stderr) = sensor.stop();
    assert!(stderr.contains("udp_send_dest_unknown=0"), "{stderr}");
}

/// The sensor process's CPU time so far (utime + stime, in clock ticks).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

/// The UDP events of network namespace `ns`, once at least `n` are written
/// (bounded by `limit`): counted on the raw lines, parsed once.
fn wait_udp_lines(sensor: &Sensor, ns: u64, n: usize, limit: Duration) -> Vec<Value> {
    let tag = format!("\"NetNs\":{ns},");
    let end = std::time::Instant::now() + limit;
    loop {
        let text = std::fs::read_to_string(&sensor.out).unwrap_or_default();
        let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        let got = complete.lines().filter(|l| l.contains(&tag) && l.contains("\"Protocol\":\"udp\"")).count();
        if got >= n || std::time::Instant::now() >= end {
            return complete
                .lines()
                .filter(|l| l.contains(&tag))
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|e| s(e, "Protocol") == "udp" && u(e, "NetNs") == ns)
                .collect();
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn flow_keys(events: &[Value]) -> HashSet<(bool, u64, u64)> {
    events.iter().map(|e| (e["Initiated"] == true, u(e, "SourcePort"), u(e, "DestinationPort"))).collect()
}

/// Issue 21.4: 20,000 sockets each send one datagram to a receiver: 40,000
/// new flows into a 16,384-entry table. The sensor walks the whole table
/// (not its first batch), thins it (counted), reports every flow once, and
/// the most recent flows, sent again, are not reported again. CPU is printed
/// as a measurement only.
#[test]
fn full_flow_table_is_walked_thinned_and_never_repeats() {
    let sensor = start("process", &["--udp-flow-capacity", "16384"]);
    let net = TestNet::new();
    let ns = TestNet::inode(&net.a);
    let dir = tempfile::tempdir().expect("tempdir");
    let go = dir.path().join("go");
    let ip = net.ip4(1);
    let cpu_start = cpu_ticks(sensor.pid());
    let started = std::time::Instant::now();
    let args = ["udp-fan", "--ip", &ip, "--first-port", "10000", "--count", "20000", "--recv-port", "40000"];
    let go_arg = go.to_string_lossy().into_owned();
    let mut all = args.to_vec();
    all.extend_from_slice(&["--again", "1000", "--go-file", &go_arg, "--timeout-secs", "240"]);
    let mut fan = Peer::spawn(Some(&net.a), &all);
    let sent = fan.expect("sent");
    assert_eq!(sent, "20000 received 20000", "every datagram read");
    let first = wait_udp_lines(&sensor, ns, 40_000, Duration::from_secs(180));
    let phase1 = started.elapsed();
    let cpu_phase1 = cpu_ticks(sensor.pid()) - cpu_start;
    let keys = flow_keys(&first);
    if keys.len() != 40_000 {
        let (_, stderr) = sensor.stop();
        let stats = stderr.lines().filter(|l| l.contains("stats:")).collect::<Vec<_>>().join("\n");
        panic!("{} of 40,000 flows reported: {stats}", keys.len());
    }
    assert_eq!(first.len(), 40_000, "and each once");

    // The last 1,000 flows again (in the table: thinning goes oldest first),
    // then one new flow (port 30000), whose events mark the end.
    std::fs::write(&go, b"go").expect("go file");
    let resent = fan.expect("resent");
    assert_eq!(resent, "1000 received 21001", "every datagram read again");
    let after = wait_udp_lines(&sensor, ns, 40_002, Duration::from_secs(60));
    let marker = after.iter().filter(|e| u(e, "SourcePort") == 30000 || u(e, "DestinationPort") == 30000).count();
    assert_eq!(marker, 2, "the new flow reported both ways");
    assert_eq!(after.len(), 40_002, "no flow seen again within the window is reported again");
    assert_eq!(flow_keys(&after).len(), 40_002);
    fan.wait_ok();

    let (status, stderr) = sensor.stop();
    assert!(status.success(), "{stderr}");
    let walked = common::final_stat(&stderr, "udp_flows_walked_peak");
    assert_eq!(walked, 16_384, "a sweep walked the whole table, full: {stderr}");
    assert!(common::final_stat(&stderr, "udp_flows_evicted") > 0, "evictions counted: {stderr}");
    let hz = 100.0;
    eprintln!(
        "measurement: 40,000 UDP flows in {:.1} s; sensor CPU {:.2} s ({:.1}% of one CPU)",
        phase1.as_secs_f64(),
        cpu_phase1 as f64 / hz,
        cpu_phase1 as f64 / hz / phase1.as_secs_f64() * 100.0
    );
}
