//! DNS against the real kernel: a responder of the test's own in a test
//! namespace (never the host's resolver, no outside traffic), clients that
//! resolve and then connect. DnsQuery events (22) exact, in JSON and XML;
//! host names on NetworkConnect; NXDOMAIN, truncated, malformed and cut
//! responses, a query never answered, DNS over TCP and IPv6, a local stub.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{final_stat, s, u, Peer, Sensor, TestNet, PEER};
use serde_json::Value;
use sockscope::format::xml_check;

const WAIT: Duration = Duration::from_secs(20);

fn records(net: &TestNet) -> Vec<String> {
    let (v4, v6) = (net.ip4(2), net.ip6(2));
    vec![
        "www.example.test=CNAME:cdn.example.test".into(),
        format!("cdn.example.test=A:{v4}"),
        format!("cdn.example.test=AAAA:{v6}"),
        format!("tc.example.test=A:{v4}"),
        format!("cut.example.test=A:{v4}"),
        format!("stub.example.test=A:{v4}"),
        format!("peer.example.test=A:{v4}"),
    ]
}

/// A DNS responder in `ns` on `bind` (port 53).
fn serve(ns: &str, bind: &str, records: &[String]) -> Peer {
    let mut args = vec!["dns-serve", "--bind", bind, "--timeout-secs", "120"];
    for r in records {
        args.extend(["--record", r.as_str()]);
    }
    let mut p = Peer::spawn(Some(ns), &args);
    p.expect("listening");
    p
}

/// Resolves `name` from `ns` through `server`; returns the client's pid.
fn resolve(ns: &str, server: &str, name: &str, extra: &[&str]) -> (u32, Peer) {
    let mut args = vec!["resolve-connect", "--server", server, "--name", name];
    args.extend_from_slice(extra);
    let mut p = Peer::spawn(Some(ns), &args);
    let pid: u32 = p.expect("pid").parse().expect("pid");
    p.wait_ok();
    (pid, p)
}

fn dns_events(sensor: &Sensor, n: usize, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    let end = std::time::Instant::now() + WAIT;
    loop {
        let got: Vec<Value> = sensor.all_events().into_iter().filter(|e| e["EventID"] == 22 && pred(e)).collect();
        if got.len() >= n || std::time::Instant::now() >= end {
            return got;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn keys(e: &Value) -> Vec<String> {
    // serde_json's map keeps keys sorted unless preserve_order: compare the line itself.
    e.as_object().expect("object").keys().cloned().collect()
}

#[test]
fn dns_queries_and_host_names_in_json() {
    let sensor = Sensor::start(&["--dns-timeout", "1"]);
    let net = TestNet::new();
    let recs = records(&net);
    let (v4, v6) = (net.ip4(2), net.ip6(2));
    let _udp4 = serve(&net.b, &format!("{v4}:53"), &recs);
    let _udp6 = serve(&net.b, &format!("[{v6}]:53"), &recs);
    let mut l4 = Peer::spawn(Some(&net.b), &["listen", "--bind", &format!("{v4}:0")]);
    let p4 = l4.expect("listening");
    let mut l6 = Peer::spawn(Some(&net.b), &["listen", "--bind", &format!("[{v6}]:0")]);
    let p6 = l6.expect("listening");
    let netns_a = TestNet::inode(&net.a);
    let server4 = format!("{v4}:53");
    let server6 = format!("[{v6}]:53");

    // A CNAME chain to an IPv4 address, then a connection to it.
    let (pid, mut c) = resolve(&net.a, &server4, "www.example.test", &["--connect-port", &p4]);
    assert_eq!(c.values("answer"), vec![v4.clone()]);
    let got = dns_events(&sensor, 1, |e| u(e, "ProcessId") == u64::from(pid));
    assert_eq!(got.len(), 1, "{got:?}");
    let e = &got[0];
    assert_eq!(s(e, "QueryName"), "www.example.test");
    assert_eq!(u(e, "QueryStatus"), 0);
    assert_eq!(s(e, "QueryResults"), format!("type:  5 cdn.example.test;::ffff:{v4};"));
    assert_eq!(s(e, "Image"), PEER);
    assert_eq!(s(e, "User"), "root");
    assert_eq!(s(e, "ServerIp"), v4);
    assert_eq!(s(e, "Protocol"), "udp");
    assert_eq!(u(e, "NetNs"), netns_a);
    assert_eq!(s(e, "RuleName"), "-");
    assert!(s(e, "ProcessGuid").starts_with('{'), "{e}");
    let mut names = keys(e);
    names.sort();
    let mut want = vec![
        "EventID",
        "RuleName",
        "UtcTime",
        "ProcessGuid",
        "ProcessId",
        "QueryName",
        "QueryStatus",
        "QueryResults",
        "Image",
        "User",
        "NetNs",
        "ContainerId",
        "ServerIp",
        "Protocol",
    ];
    want.sort();
    assert_eq!(names, want);
    let conn = sensor.wait_for(1, WAIT, |e| u(e, "ProcessId") == u64::from(pid) && s(e, "Protocol") == "tcp");
    assert_eq!(conn.len(), 1, "{conn:?}");
    assert_eq!(s(&conn[0], "DestinationIp"), v4);
    assert_eq!(s(&conn[0], "DestinationHostname"), "www.example.test");
    assert_eq!(s(&conn[0], "SourceHostname"), "-");
    // The DNS flow itself (UDP to port 53) has no name: nothing answered for the server's address.
    let flow = sensor.wait_for(1, WAIT, |e| u(e, "ProcessId") == u64::from(pid) && s(e, "Protocol") == "udp");
    assert_eq!(s(&flow[0], "DestinationHostname"), "-");
    l4.wait_ok();

    // AAAA over IPv6.
    let (pid6, _) = resolve(&net.a, &server6, "www.example.test", &["--qtype", "AAAA", "--connect-port", &p6]);
    let got = dns_events(&sensor, 1, |e| u(e, "ProcessId") == u64::from(pid6));
    assert_eq!(s(&got[0], "QueryResults"), format!("type:  5 cdn.example.test;{v6};"));
    assert_eq!(s(&got[0], "ServerIp"), v6);
    let conn = sensor.wait_for(1, WAIT, |e| u(e, "ProcessId") == u64::from(pid6) && s(e, "Protocol") == "tcp");
    assert_eq!(s(&conn[0], "DestinationHostname"), "www.example.test");
    l6.wait_ok();

    // NXDOMAIN.
    let (pid, _) = resolve(&net.a, &server4, "nx.example.test", &[]);
    let got = dns_events(&sensor, 1, |e| u(e, "ProcessId") == u64::from(pid));
    assert_eq!((u(&got[0], "QueryStatus"), s(&got[0], "QueryResults")), (3, "-".to_string()));

    // Truncated over UDP, then the same question over TCP: two queries.
    let (pid, _) = resolve(&net.a, &server4, "tc.example.test", &[]);
    let got = dns_events(&sensor, 2, |e| u(e, "ProcessId") == u64::from(pid));
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(
        (s(&got[0], "Protocol"), u(&got[0], "QueryStatus"), s(&got[0], "QueryResults")),
        ("udp".into(), 0, "-".into())
    );
    assert_eq!((s(&got[1], "Protocol"), s(&got[1], "QueryResults")), ("tcp".into(), format!("::ffff:{v4};")));

    // A pointer loop in the answer, and a response cut short: 9502, counted.
    for name in ["bad.example.test", "cut.example.test"] {
        let (pid, _) = resolve(&net.a, &server4, name, &[]);
        let got = dns_events(&sensor, 1, |e| u(e, "ProcessId") == u64::from(pid));
        assert_eq!(u(&got[0], "QueryStatus"), 9502, "{name}: {got:?}");
        assert_eq!(s(&got[0], "QueryName"), name);
    }

    // No response: reported once the timeout passes, status 1460.
    let (pid, _) = resolve(&net.a, &server4, "silent.example.test", &["--wait-secs", "1"]);
    let got = dns_events(&sensor, 1, |e| u(e, "ProcessId") == u64::from(pid));
    assert_eq!((u(&got[0], "QueryStatus"), s(&got[0], "QueryResults")), (1460, "-".to_string()), "{got:?}");

    // A local stub (127.0.0.53) in the client's namespace.
    let _stub = serve(&net.a, "127.0.0.53:53", &recs);
    let (pid, _) = resolve(&net.a, "127.0.0.53:53", "stub.example.test", &[]);
    let got = dns_events(&sensor, 1, |e| u(e, "ProcessId") == u64::from(pid));
    assert_eq!((s(&got[0], "ServerIp"), s(&got[0], "QueryResults")), ("127.0.0.53".into(), format!("::ffff:{v4};")));

    // Inbound: a peer whose address namespace a resolved connects in; its name is the Source's.
    let (_, _) = resolve(&net.a, &server4, "peer.example.test", &[]);
    let mut la = Peer::spawn(Some(&net.a), &["listen", "--bind", &format!("{}:0", net.ip4(1))]);
    let lpid: u64 = la.expect("pid").parse().expect("pid");
    let pa = la.expect("listening");
    let mut cb = Peer::spawn(Some(&net.b), &["connect", "--to", &format!("{}:{pa}", net.ip4(1))]);
    cb.wait_ok();
    la.wait_ok();
    let inbound = sensor.wait_for(1, WAIT, |e| u(e, "ProcessId") == lpid && e["Initiated"] == false);
    assert_eq!(
        (s(&inbound[0], "SourceIp"), s(&inbound[0], "SourceHostname")),
        (v4.clone(), "peer.example.test".into())
    );
    // The connector in b saw no answer: no name there (per namespace).
    let outbound_b = sensor.wait_for(1, WAIT, |e| u(e, "DestinationPort").to_string() == pa && e["Initiated"] == true);
    assert_eq!(s(&outbound_b[0], "DestinationHostname"), "-");

    // Exactly one event per query: the responder's side is never a query
    // (other tests resolve the same name in namespaces of their own).
    sensor.settle();
    let www = sensor
        .all_events()
        .into_iter()
        .filter(|e| e["EventID"] == 22 && s(e, "QueryName") == "www.example.test" && u(e, "NetNs") == netns_a)
        .count();
    assert_eq!(www, 2);
    let (status, stderr) = sensor.stop();
    assert!(status.success());
    assert!(final_stat(&stderr, "dns_malformed") >= 2, "{stderr}");
    assert!(final_stat(&stderr, "dns_timed_out") >= 1, "{stderr}");
    assert!(final_stat(&stderr, "dns_names_learned") >= 4, "{stderr}");
}

fn xml_lines(path: &Path) -> Vec<xml_check::ParsedEvent> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    complete.lines().map(xml_check::parse_event).collect()
}

/// The XML form, and `<DnsQuery>` rules: NXDOMAIN excluded, a name given.
#[test]
fn dns_query_in_xml_with_rules() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.xml");
    std::fs::write(
        &config,
        r#"<Sysmon schemaversion="4.90"><EventFiltering>
  <RuleGroup groupRelation="or"><NetworkConnect onmatch="exclude"/></RuleGroup>
  <RuleGroup groupRelation="or"><DnsQuery onmatch="exclude"><QueryStatus condition="is">3</QueryStatus></DnsQuery></RuleGroup>
  <RuleGroup groupRelation="or"><DnsQuery onmatch="include"><QueryName name="ours" condition="end with">.example.test</QueryName></DnsQuery></RuleGroup>
</EventFiltering></Sysmon>"#,
    )
    .expect("config");
    let out = dir.path().join("events.xml");
    let state = dir.path().join("state");
    let sensor =
        Sensor::start_at(None, out.clone(), &state, &["--format", "xml", "-c", config.to_str().expect("utf8")]);
    let net = TestNet::new();
    let recs = records(&net);
    let v4 = net.ip4(2);
    let _srv = serve(&net.b, &format!("{v4}:53"), &recs);
    let server = format!("{v4}:53");
    let (nx_pid, _) = resolve(&net.a, &server, "nx.example.test", &[]);
    let (pid, _) = resolve(&net.a, &server, "www.example.test", &[]);
    let end = std::time::Instant::now() + WAIT;
    let ours = loop {
        let all = xml_lines(&out);
        // This test's two processes only: the sensor sees every namespace, and
        // tests running alongside resolve `.example.test` names of their own.
        let mine = [pid.to_string(), nx_pid.to_string()];
        let ours: Vec<_> = all
            .into_iter()
            .filter(|e| {
                e.element("EventID") == Some("22") && e.data("ProcessId").is_some_and(|p| mine.iter().any(|m| m == p))
            })
            .collect();
        if !ours.is_empty() || std::time::Instant::now() >= end {
            break ours;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // www's event is written after nx's was decided (facts in order): nx was excluded.
    assert_eq!(ours.len(), 1, "{:?}", std::fs::read_to_string(&out));
    let e = &ours[0];
    assert_eq!(e.element("Version"), Some("5"));
    assert_eq!(e.element("Task"), Some("22"));
    assert_eq!(e.data("RuleName"), Some("ours"));
    assert_eq!(e.data("ProcessId"), Some(pid.to_string().as_str()));
    assert_ne!(e.data("ProcessId"), Some(nx_pid.to_string().as_str()));
    assert_eq!(e.data("QueryName"), Some("www.example.test"));
    assert_eq!(e.data("QueryStatus"), Some("0"));
    assert_eq!(e.data("QueryResults"), Some(format!("type:  5 cdn.example.test;::ffff:{v4};").as_str()));
    assert_eq!(e.data("Image"), Some(PEER));
    assert_eq!(e.data("User"), Some("root"));
    assert_eq!(e.data("ServerIp"), None, "sockscope's own fields are JSON-only");
    let line = std::fs::read_to_string(&out).expect("read");
    let line = line.lines().find(|l| l.contains("<EventID>22</EventID>")).expect("line");
    let order = [
        "RuleName",
        "UtcTime",
        "ProcessGuid",
        "ProcessId",
        "QueryName",
        "QueryStatus",
        "QueryResults",
        "Image",
        "User",
    ];
    let at: Vec<usize> = order.iter().map(|n| line.find(&format!("Name=\"{n}\"")).expect(n)).collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{line}");
    let (status, _) = sensor.stop();
    assert!(status.success());
}

/// `--dns names`: host names, no DnsQuery events; `--dns off`: neither.
#[test]
fn dns_modes_names_and_off() {
    for (mode, name) in [("names", "www.example.test"), ("off", "-")] {
        let sensor = Sensor::start(&["--dns", mode]);
        let net = TestNet::new();
        let v4 = net.ip4(2);
        let _srv = serve(&net.b, &format!("{v4}:53"), &records(&net));
        let mut l4 = Peer::spawn(Some(&net.b), &["listen", "--bind", &format!("{v4}:0")]);
        let p4 = l4.expect("listening");
        let (pid, _) = resolve(&net.a, &format!("{v4}:53"), "www.example.test", &["--connect-port", &p4]);
        l4.wait_ok();
        let conn = sensor.wait_for(1, WAIT, |e| u(e, "ProcessId") == u64::from(pid) && s(e, "Protocol") == "tcp");
        assert_eq!(s(&conn[0], "DestinationHostname"), name, "--dns {mode}");
        sensor.settle();
        assert!(!sensor.all_events().iter().any(|e| e["EventID"] == 22), "--dns {mode}");
        let (status, _) = sensor.stop();
        assert!(status.success());
    }
}
