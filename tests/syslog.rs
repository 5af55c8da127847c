//! The sensor's syslog outputs end to end (the sinks themselves are tested
//! against a real rsyslogd in src/sink/syslog/rsyslog.rs): local RFC 3164 on
//! a unix socket; remote, the default RFC 3164 form through a real rsyslog
//! relay (UDP, TCP with newline framing, TCP with octet counting) into files
//! in the traditional and Debian 12's file formats, and RFC 5424 over TCP.

mod common;

use sockscope::format::xml_check;
use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
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
fn remote_syslog_rfc5424_over_tcp_with_octet_counting() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let addr = listener.local_addr().expect("addr");
    let url = format!("tcp://{addr}");
    let _sensor = Sensor::start(&["--format", "xml", "--syslog-remote", &url, "--syslog-remote-format", "rfc5424"]);
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
        // "<14>1 2026-11-29T18:55:13.291473+00:00 host sysmon PID - - <Event>..."
        let parts: Vec<&str> = msg.splitn(8, ' ').collect();
        assert_eq!(parts.len(), 8, "{msg}");
        assert_eq!(parts[0], "<14>1");
        assert!(parts[1].ends_with("+00:00") && parts[1].len() == 32 && parts[1].contains('T'), "{msg}");
        assert_eq!(parts[3], "sysmon");
        assert_eq!((parts[5], parts[6]), ("-", "-"));
        if is_our_event(parts[7], port) {
            ours += 1;
        }
    }
    assert_eq!(ours, 2, "outbound and inbound arrived among {frames} frames");
}

/// An rsyslogd of the test's own (config, work directory, pid file in a temp
/// directory; imudp and imtcp on free loopback ports), relaying what it
/// receives into two files: `traditional.log` (RSYSLOG_TraditionalFileFormat)
/// and `debian12.log` (no template: rsyslog's default, RSYSLOG_FileFormat,
/// which is what Debian 12's /etc/rsyslog.conf leaves in force; Debian 11's
/// set the traditional one). Killed on drop, also when a test fails.
struct Relay {
    dir: tempfile::TempDir,
    child: Option<Child>,
    udp: u16,
    tcp: u16,
}

/// Whether 127.0.0.1:`port` is bound in /proc/net/`table` (TCP: listening).
fn bound(table: &str, port: u16) -> bool {
    let Ok(text) = std::fs::read_to_string(format!("/proc/net/{table}")) else { return false };
    let local = format!("0100007F:{port:04X}");
    text.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 3 && f[1] == local && (table != "tcp" || f[3] == "0A")
    })
}

impl Relay {
    fn start() -> Relay {
        let dir = tempfile::Builder::new().prefix("sockscope-relay").tempdir().expect("tempdir");
        let d = dir.path().display().to_string();
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|s| s.local_addr()).expect("udp port").port();
        let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|s| s.local_addr()).expect("tcp port").port();
        let conf = format!(
            r#"global(workDirectory="{d}" maxMessageSize="64k")
module(load="imudp")
module(load="imtcp")
ruleset(name="relay") {{
  action(type="omfile" file="{d}/traditional.log" template="RSYSLOG_TraditionalFileFormat")
  action(type="omfile" file="{d}/debian12.log")
}}
input(type="imudp" address="127.0.0.1" port="{udp}" ruleset="relay")
input(type="imtcp" address="127.0.0.1" port="{tcp}" ruleset="relay")
"#
        );
        let conf_path = dir.path().join("rsyslog.conf");
        std::fs::write(&conf_path, conf).expect("write config");
        let out = std::fs::File::create(dir.path().join("rsyslogd.out")).expect("log file");
        let child = Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(&conf_path)
            .arg("-i")
            .arg(dir.path().join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn()
            .expect("rsyslogd runs (Debian package rsyslog, scripts/deps.sh)");
        let mut relay = Relay { dir, child: Some(child), udp, tcp };
        let end = Instant::now() + Duration::from_secs(15);
        while !(bound("udp", udp) && bound("tcp", tcp)) {
            let exited = relay.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            assert!(exited.is_none(), "rsyslogd exited at start: {}", relay.said());
            assert!(Instant::now() < end, "rsyslogd not listening after 15 s: {}", relay.said());
            std::thread::sleep(Duration::from_millis(20));
        }
        relay
    }

    fn said(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("rsyslogd.out")).unwrap_or_default()
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Complete lines of `name` whose event is ours, once there are `n` (bounded wait).
    fn wait_ours(&self, name: &str, n: usize, port: u16) -> Vec<String> {
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            let text = std::fs::read_to_string(self.file(name)).unwrap_or_default();
            let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
            let ours: Vec<String> = complete
                .lines()
                .filter(|l| l.find("<Event>").is_some_and(|i| is_our_event(&l[i..], port)))
                .map(str::to_owned)
                .collect();
            if ours.len() >= n || Instant::now() >= end {
                return ours;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname").trim().to_owned()
}

/// `Mmm dd hh:mm:ss` (day space-padded) at the start of `line`.
fn starts_with_rfc3164_stamp(line: &str) -> bool {
    let b = line.as_bytes();
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    b.len() > 15
        && MONTHS.contains(&&line[..3])
        && b[3] == b' '
        && (b[4] == b' ' || b[4].is_ascii_digit())
        && b[5].is_ascii_digit()
        && b[6] == b' '
        && line[7..15].bytes().enumerate().all(|(i, c)| if i % 3 == 2 { c == b':' } else { c.is_ascii_digit() })
}

/// `2026-12-06T10:00:00.123456+00:00` (fraction optional, numeric offset)
/// at the start of `line`: its length, if so.
fn rfc3339_stamp_len(line: &str) -> Option<usize> {
    let stamp = line.split(' ').next()?;
    let (date_time, offset) = stamp.split_at(stamp.len().checked_sub(6)?);
    let ok = date_time.len() >= 19
        && date_time.as_bytes()[10] == b'T'
        && (offset.starts_with('+') || offset.starts_with('-'))
        && offset.as_bytes()[3] == b':'
        && !stamp.contains('Z');
    ok.then_some(stamp.len())
}

/// The sensor's default remote form through a real rsyslog relay: in both
/// file formats the line is `STAMP HOST sysmon: <Event>...</Event>`, the tag
/// with its colon followed by the event, as a fleet's forwarded Sysmon lines
/// look (what Wazuh's and Elastic's Sysmon for Linux parsers split on).
fn relay_to_files(scheme: &str, extra: &[&str]) {
    let relay = Relay::start();
    let url = match scheme {
        "udp" => format!("udp://127.0.0.1:{}", relay.udp),
        _ => format!("tcp://127.0.0.1:{}", relay.tcp),
    };
    let mut args = vec!["--format", "xml", "--syslog-remote", &url];
    args.extend_from_slice(extra);
    let sensor = Sensor::start(&args);
    let port = connect_once();
    let host = hostname();
    let tail = format!(" {host} sysmon: <Event>");
    for file in ["traditional.log", "debian12.log"] {
        let lines = relay.wait_ours(file, 2, port);
        assert_eq!(
            lines.len(),
            2,
            "{scheme} {extra:?}: outbound and inbound in {file}; rsyslogd: {}\nsensor: {}",
            relay.said(),
            sensor.stderr_text()
        );
        for line in &lines {
            let stamp_len = match file {
                "traditional.log" => starts_with_rfc3164_stamp(line).then_some(15),
                _ => rfc3339_stamp_len(line),
            };
            let stamp_len = stamp_len.unwrap_or_else(|| panic!("{file}: stamp of {line:.80}"));
            assert!(line[stamp_len..].starts_with(&tail), "{file}: {line:.120}");
            assert!(line.ends_with("</Event>"), "{file}: one event, whole: {line:.80}");
        }
    }
}

#[test]
fn remote_default_through_an_rsyslog_relay_over_udp() {
    relay_to_files("udp", &[]);
}

#[test]
fn remote_default_through_an_rsyslog_relay_over_tcp_newline_framed() {
    relay_to_files("tcp", &[]);
}

#[test]
fn remote_default_through_an_rsyslog_relay_over_tcp_octet_counted() {
    relay_to_files("tcp", &["--syslog-remote-framing", "octet-counted"]);
}

/// RFC 5424 through the relay: rsyslog reads the numeric offset (the
/// Debian 12 file shows the event's UTC time with +00:00, no Z).
#[test]
fn remote_rfc5424_through_an_rsyslog_relay_keeps_a_numeric_offset() {
    let relay = Relay::start();
    let url = format!("tcp://127.0.0.1:{}", relay.tcp);
    let sensor = Sensor::start(&["--format", "xml", "--syslog-remote", &url, "--syslog-remote-format", "rfc5424"]);
    let port = connect_once();
    let lines = relay.wait_ours("debian12.log", 2, port);
    assert_eq!(lines.len(), 2, "rsyslogd: {}\nsensor: {}", relay.said(), sensor.stderr_text());
    for line in &lines {
        let len = rfc3339_stamp_len(line).unwrap_or_else(|| panic!("stamp of {line:.80}"));
        assert!(line[..len].ends_with("+00:00") && line[..len].contains('.'), "{line:.80}");
        assert!(line[len..].starts_with(&format!(" {} sysmon[", hostname())), "{line:.120}");
    }
}
