//! The sensor's syslog outputs end to end (the sinks themselves are tested
//! against a real rsyslogd in src/sink/syslog/rsyslog.rs): local RFC 3164 on
//! a unix socket, remote RFC 5424 over TCP with octet counting.

mod common;

use sockscope::format::xml_check;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::{Peer, Sensor, PEER};

fn connect_once() -> u16 {
    let mut l = Peer::spawn(None, &["listen", "--bind", "127.0.0.1:0"]);
    let port: u16 = l.expect("listening").parse().expect("port");
    let to = format!("127.0.0.1:{port}");
    let mut c = Peer::spawn(None, &["connect", "--to", &to]);
    let _: SocketAddr = c.expect("local").parse().expect("addr");
    c.wait_ok();
    l.wait_ok();
    port
}

fn is_our_event(xml: &str, port: u16) -> bool {
    let e = xml_check::parse_event(xml);
    e.element("EventID") == Some("3")
        && e.data("DestinationPort") == Some(port.to_string().as_str())
        && e.data("Image") == Some(PEER)
}

#[test]
fn local_syslog_as_sysmon_writes_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log.sock");
    let socket = UnixDatagram::bind(&path).expect("bind");
    socket.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    let _sensor = Sensor::start(&["--format", "xml", "--syslog", "--syslog-socket", path.to_str().expect("utf8")]);
    let port = connect_once();
    let end = Instant::now() + Duration::from_secs(10);
    let mut ours = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while ours.len() < 2 && Instant::now() < end {
        let Ok(n) = socket.recv(&mut buf) else { continue };
        let msg = String::from_utf8(buf[..n].to_vec()).expect("utf8 message");
        // "<14>Nov 29 18:55:13 sysmon: <Event>..."
        let (header, xml) = msg.split_once(": <Event>").map(|(h, x)| (h, format!("<Event>{x}"))).expect("shape");
        assert!(header.starts_with("<14>") && header.ends_with(" sysmon"), "{header}");
        assert_eq!(header.len(), "<14>Nov 29 18:55:13 sysmon".len(), "{header}");
        if is_our_event(&xml, port) {
            ours.push(xml);
        }
    }
    assert_eq!(ours.len(), 2, "outbound and inbound arrived over the unix socket");
}

#[test]
fn remote_syslog_over_tcp_with_octet_counting() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let addr = listener.local_addr().expect("addr");
    let url = format!("tcp://{addr}");
    let _sensor = Sensor::start(&["--format", "xml", "--syslog-remote", &url]);
    let (stream, _) = listener.accept().expect("the sensor connects");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let port = connect_once();
    let mut reader = BufReader::new(stream);
    let end = Instant::now() + Duration::from_secs(10);
    let mut ours = 0;
    let mut frames = 0;
    while ours < 2 && Instant::now() < end {
        // RFC 6587: "LEN SP MSG"
        let mut len = Vec::new();
        reader.read_until(b' ', &mut len).expect("length");
        let len: usize = std::str::from_utf8(&len).expect("digits").trim().parse().expect("length");
        let mut msg = vec![0u8; len];
        reader.read_exact(&mut msg).expect("message");
        frames += 1;
        let msg = String::from_utf8(msg).expect("utf8");
        // "<14>1 2026-11-29T18:55:13.291473Z host sysmon PID - - <Event>..."
        let parts: Vec<&str> = msg.splitn(8, ' ').collect();
        assert_eq!(parts.len(), 8, "{msg}");
        assert_eq!(parts[0], "<14>1");
        assert!(parts[1].ends_with('Z') && parts[1].contains('T'), "{msg}");
        assert_eq!(parts[3], "sysmon");
        assert_eq!((parts[5], parts[6]), ("-", "-"));
        if is_our_event(parts[7], port) {
            ours += 1;
        }
    }
    assert_eq!(ours, 2, "outbound and inbound arrived among {frames} frames");
}
