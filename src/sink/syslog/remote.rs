//! Syslog to a remote collector over UDP or TCP, from a sender thread: RFC
//! 3164 as rsyslog forwards Sysmon's lines (default) or RFC 5424.
//!
//! The event path formats the message (so its timestamp is the event's, even
//! when it waits) and `try_send`s it into a bounded queue; a full queue drops
//! and counts it. The thread writes the queue in order.
//!
//! TCP: RFC 6587 framing, a newline after each message (non-transparent, as
//! rsyslog's `omfwd` frames) or octet counting. Before each message the thread peeks at the
//! socket: a collector never sends, so EOF or an error means it is gone, and
//! the thread reconnects (backoff 50 ms doubling to 2 s) while the queue holds
//! what arrives meanwhile (up to its bound). A write that times out is resumed
//! on the same connection; a write that fails is sent again, whole, on the next
//! connection, once: if it had partly reached the collector that message may
//! arrive twice. Data already in the kernel when a collector dies is lost (plain
//! TCP syslog has no acknowledgements).
//!
//! UDP: one datagram per message; messages above `max_datagram` bytes are cut
//! at a character boundary and counted as truncated.

use std::fmt;
use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use time::OffsetDateTime;

use super::wire::{check_ident, local_stamp, newline_frame, octet_frame, truncate_utf8, Rfc3164Header, Rfc5424Header};
use super::SyslogStats;

pub const DEFAULT_PORT: u16 = 514;
/// Largest UDP message sent whole (RFC 5426 asks receivers for 2048 at least;
/// rsyslog's default maximum is 8 KiB).
pub const DEFAULT_MAX_DATAGRAM: usize = 8192;
pub const DEFAULT_QUEUE_LEN: usize = 4096;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Bounds a write to a collector that stopped reading, so the thread sees the
/// stop flag; the write then resumes where it stopped.
const WRITE_TIMEOUT: Duration = Duration::from_millis(500);
const BACKOFF_START: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How often an idle or waiting thread looks at the stop flag.
const TICK: Duration = Duration::from_millis(20);
/// How long `Drop` waits for the thread; past it the thread is left to end alone.
const STOP_WAIT: Duration = Duration::from_secs(3);

/// The message form of `--syslog-remote`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum RemoteFormat {
    /// `<14>Mmm dd hh:mm:ss HOST sysmon: MSG`: what rsyslog's omfwd forwards
    /// of Sysmon's local lines (RFC 3164 with the host name).
    #[default]
    Rfc3164,
    /// `<14>1 2026-11-29T16:37:54.638341+00:00 HOST sysmon PID - - MSG`.
    Rfc5424,
}

/// How messages are delimited on a TCP connection (RFC 6587).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Framing {
    /// A newline after each message (non-transparent framing; rsyslog
    /// omfwd's default, what every TCP syslog receiver takes).
    Newline,
    /// `LEN SP MSG` (octet counting; rsyslog's imtcp, syslog-ng, Wazuh's
    /// remoted with `<protocol>tcp</protocol>` take both).
    OctetCounted,
}

impl Framing {
    /// When not chosen: newline for RFC 3164 (as omfwd), octet counting for
    /// RFC 5424 (RFC 6587's recommendation, and this sink's framing before).
    pub fn default_for(format: RemoteFormat) -> Framing {
        match format {
            RemoteFormat::Rfc3164 => Framing::Newline,
            RemoteFormat::Rfc5424 => Framing::OctetCounted,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Udp,
    Tcp,
}

/// Where remote messages go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteTarget {
    pub proto: Proto,
    pub addr: SocketAddr,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("syslog target {0:?}: expected udp://HOST[:PORT] or tcp://HOST[:PORT]")]
    Shape(String),
    #[error("syslog target {0:?}: unknown protocol {1:?} (use udp or tcp)")]
    Proto(String, String),
    #[error("syslog target {0:?}: bad port {1:?} (1-65535)")]
    Port(String, String),
    #[error("syslog target {0:?}: an IPv6 address must be in brackets, e.g. tcp://[::1]:514")]
    Ipv6Brackets(String),
    #[error("syslog target {0:?}: cannot resolve host {1:?}: {2}")]
    Resolve(String, String, String),
}

impl RemoteTarget {
    /// Parses `udp://127.0.0.1:514`, `tcp://[::1]:6514`, `tcp://collector:514`
    /// (a name is resolved now, once; the first address wins). The port
    /// defaults to 514.
    pub fn parse(s: &str) -> Result<Self, TargetError> {
        let shape = || TargetError::Shape(s.to_owned());
        let (scheme, rest) = s.split_once("://").ok_or_else(shape)?;
        let proto = match scheme.to_ascii_lowercase().as_str() {
            "udp" => Proto::Udp,
            "tcp" => Proto::Tcp,
            other => return Err(TargetError::Proto(s.to_owned(), other.to_owned())),
        };
        if rest.is_empty() || rest.contains(['/', '?', '#', '@']) || rest.chars().any(char::is_whitespace) {
            return Err(shape());
        }
        let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
            let (host, after) = inner.split_once(']').ok_or_else(shape)?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(shape());
            }
            match after {
                "" => (host, None),
                p => (host, Some(p.strip_prefix(':').ok_or_else(shape)?)),
            }
        } else {
            match rest.split_once(':') {
                Some((_, p)) if p.contains(':') => return Err(TargetError::Ipv6Brackets(s.to_owned())),
                Some((host, p)) => (host, Some(p)),
                None => (rest, None),
            }
        };
        if host.is_empty() {
            return Err(shape());
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n != 0 => n,
                _ => return Err(TargetError::Port(s.to_owned(), p.to_owned())),
            },
        };
        let ip = match host.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) => {
                let resolve = |why: String| TargetError::Resolve(s.to_owned(), host.to_owned(), why);
                let mut addrs = (host, port).to_socket_addrs().map_err(|e| resolve(e.to_string()))?;
                addrs.next().ok_or_else(|| resolve("no address".to_owned()))?.ip()
            }
        };
        Ok(RemoteTarget { proto, addr: SocketAddr::new(ip, port) })
    }
}

impl FromStr for RemoteTarget {
    type Err = TargetError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RemoteTarget::parse(s)
    }
}

impl fmt::Display for RemoteTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.proto {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
        };
        write!(f, "{scheme}://{}", self.addr)
    }
}

/// Settings of a [`RemoteSyslog`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteConfig {
    pub target: RemoteTarget,
    pub format: RemoteFormat,
    /// TCP only; `None`: [`Framing::default_for`] the format.
    pub framing: Option<Framing>,
    /// The RFC 3164 TAG / RFC 5424 APP-NAME.
    pub ident: String,
    /// HOSTNAME (the caller's host name; `-` if empty).
    pub hostname: String,
    /// RFC 3164 only: `IDENT[PID]:` instead of `IDENT:` (RFC 5424 always
    /// carries the pid in PROCID).
    pub pid: bool,
    /// RFC 5424 MSGID; `-` when `None`.
    pub msgid: Option<String>,
    /// Messages that may wait for the sender thread (at least 1).
    pub queue_len: usize,
    /// UDP only: longer messages are cut to this many bytes.
    pub max_datagram: usize,
}

impl RemoteConfig {
    pub fn new(target: RemoteTarget, ident: &str, hostname: &str) -> Self {
        RemoteConfig {
            target,
            format: RemoteFormat::default(),
            framing: None,
            ident: ident.to_owned(),
            hostname: hostname.to_owned(),
            pid: false,
            msgid: None,
            queue_len: DEFAULT_QUEUE_LEN,
            max_datagram: DEFAULT_MAX_DATAGRAM,
        }
    }
}

#[derive(Default)]
struct Shared {
    sent: AtomicU64,
    dropped: AtomicU64,
    reconnects: AtomicU64,
    truncated: AtomicU64,
    /// Messages accepted into the queue / finished by the thread (sent or
    /// dropped): `flush` waits for the second to reach the first.
    accepted: AtomicU64,
    finished: AtomicU64,
    stop: AtomicBool,
}

impl Shared {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn finish(&self, counter: &AtomicU64) {
        Shared::bump(counter);
        self.finished.fetch_add(1, Ordering::Release);
    }
}

/// The fixed part of each message, by format.
enum Header {
    Rfc3164(Rfc3164Header),
    Rfc5424(Rfc5424Header),
}

impl Header {
    fn message(&self, line: &str) -> Vec<u8> {
        match self {
            Header::Rfc3164(h) => h.message(&local_stamp(OffsetDateTime::now_utc().unix_timestamp()), line),
            Header::Rfc5424(h) => h.message(OffsetDateTime::now_utc(), line),
        }
    }
}

/// Remote syslog sink. `send` and `flush` take `&self`: it can be shared.
pub struct RemoteSyslog {
    target: RemoteTarget,
    header: Header,
    /// TCP only.
    framing: Framing,
    max_datagram: usize,
    tx: Option<SyncSender<Vec<u8>>>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    exited: Receiver<()>,
}

impl RemoteSyslog {
    /// Starts the sender thread with default settings (RFC 3164, MSGID `-`,
    /// datagram limit). The collector need not be up: the thread connects
    /// when it can.
    #[cfg(test)]
    pub fn start(target: RemoteTarget, ident: &str, hostname: &str, queue_len: usize) -> Result<Self> {
        let mut cfg = RemoteConfig::new(target, ident, hostname);
        cfg.queue_len = queue_len;
        RemoteSyslog::start_with(cfg)
    }

    pub fn start_with(cfg: RemoteConfig) -> Result<Self> {
        if let Err(why) = check_ident(&cfg.ident) {
            bail!("syslog ident {:?} {why}", cfg.ident);
        }
        if cfg.queue_len == 0 {
            bail!("syslog queue length must be at least 1");
        }
        // The header alone must fit, or every datagram would be cut to nothing.
        if cfg.target.proto == Proto::Udp && cfg.max_datagram < 480 {
            bail!("syslog datagram limit {} is below 480 bytes (RFC 5426)", cfg.max_datagram);
        }
        let pid = std::process::id();
        let header = match cfg.format {
            RemoteFormat::Rfc3164 => {
                Header::Rfc3164(Rfc3164Header::new(&cfg.hostname, &cfg.ident, cfg.pid.then_some(pid)))
            }
            RemoteFormat::Rfc5424 => {
                Header::Rfc5424(Rfc5424Header::new(&cfg.hostname, &cfg.ident, pid, cfg.msgid.as_deref()))
            }
        };
        let framing = cfg.framing.unwrap_or_else(|| Framing::default_for(cfg.format));
        let (tx, rx) = mpsc::sync_channel(cfg.queue_len);
        let shared = Arc::new(Shared::default());
        let (exited_tx, exited) = mpsc::channel();
        let thread_shared = Arc::clone(&shared);
        let target = cfg.target;
        let thread = std::thread::Builder::new()
            .name("syslog-remote".to_owned())
            .spawn(move || {
                // Dropped when the thread ends, also by a panic: tells Drop.
                let _exited = exited_tx;
                // Started before the sensor drops its privileges: it needs none.
                crate::privilege::drop_all_in_this_thread();
                let mut sender = Sender { rx, shared: thread_shared, target, held: None, retry: Backoff::new() };
                sender.run();
            })
            .with_context(|| format!("starting the syslog sender thread for {target}"))?;
        Ok(RemoteSyslog {
            target,
            header,
            framing,
            max_datagram: cfg.max_datagram,
            tx: Some(tx),
            shared,
            thread: Some(thread),
            exited,
        })
    }

    /// Queues one event line. Never blocks: a full queue drops and counts it.
    pub fn send(&self, line: &str) {
        let mut msg = self.header.message(line);
        let msg = match self.target.proto {
            Proto::Tcp => match self.framing {
                Framing::Newline => newline_frame(msg),
                Framing::OctetCounted => octet_frame(&msg),
            },
            Proto::Udp => {
                if truncate_utf8(&mut msg, self.max_datagram) {
                    Shared::bump(&self.shared.truncated);
                }
                msg
            }
        };
        let Some(tx) = &self.tx else { return Shared::bump(&self.shared.dropped) };
        match tx.try_send(msg) {
            Ok(()) => Shared::bump(&self.shared.accepted),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Shared::bump(&self.shared.dropped),
        }
    }

    /// Waits until every message queued before the call has been written (or
    /// given up), at most `timeout`. True if it got there.
    pub fn flush(&self, timeout: Duration) -> bool {
        let target = self.shared.accepted.load(Ordering::Relaxed);
        let deadline = Instant::now() + timeout;
        loop {
            if self.shared.finished.load(Ordering::Acquire) >= target {
                return true;
            }
            if Instant::now() >= deadline || self.thread.as_ref().is_none_or(|t| t.is_finished()) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    pub fn stats(&self) -> SyslogStats {
        SyslogStats {
            sent: self.shared.sent.load(Ordering::Relaxed),
            dropped: self.shared.dropped.load(Ordering::Relaxed),
            reconnects: self.shared.reconnects.load(Ordering::Relaxed),
            truncated: self.shared.truncated.load(Ordering::Relaxed),
        }
    }

    pub fn target(&self) -> RemoteTarget {
        self.target
    }

    /// The TCP framing in use (also reported for UDP, where it has no effect).
    pub fn framing(&self) -> Framing {
        self.framing
    }
}

impl Drop for RemoteSyslog {
    /// Stops the thread without delivering what is still queued (call `flush`
    /// first for that); waits at most `STOP_WAIT`.
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.tx = None;
        let ended = match self.exited.recv_timeout(STOP_WAIT) {
            Err(RecvTimeoutError::Timeout) => false,
            Ok(()) | Err(RecvTimeoutError::Disconnected) => true,
        };
        if let Some(thread) = self.thread.take() {
            if ended {
                let _ = thread.join();
            } else {
                tracing::warn!(target = %self.target, "syslog sender thread did not stop in time; left behind");
            }
        }
    }
}

/// A message in the thread's hands.
struct Held {
    bytes: Vec<u8>,
    /// Bytes already written on the current connection (resumed after a timeout).
    written: usize,
    /// Connections this message's write failed on.
    failures: u8,
}

enum Link {
    Udp(Socket),
    Tcp(Socket),
}

struct Backoff {
    delay: Duration,
    next: Instant,
}

impl Backoff {
    fn new() -> Self {
        Backoff { delay: BACKOFF_START, next: Instant::now() }
    }
    fn due(&self) -> bool {
        Instant::now() >= self.next
    }
    fn failed(&mut self) {
        self.next = Instant::now() + self.delay;
        self.delay = (self.delay * 2).min(BACKOFF_MAX);
    }
    fn reset(&mut self) {
        self.delay = BACKOFF_START;
        self.next = Instant::now();
    }
}

struct Sender {
    rx: Receiver<Vec<u8>>,
    shared: Arc<Shared>,
    target: RemoteTarget,
    held: Option<Held>,
    retry: Backoff,
}

impl Sender {
    fn run(&mut self) {
        let mut link: Option<Link> = None;
        let mut ever_connected = false;
        let mut lost_logged = false;
        while !self.shared.stop.load(Ordering::Relaxed) {
            let mut held = match self.held.take() {
                Some(h) => h,
                None => match self.rx.recv_timeout(TICK) {
                    Ok(bytes) => Held { bytes, written: 0, failures: 0 },
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => break,
                },
            };
            if let Some(Link::Tcp(sock)) = &link {
                if held.written == 0 && peer_gone(sock) {
                    link = None;
                }
            }
            if link.is_none() {
                if !self.retry.due() {
                    self.held = Some(held);
                    std::thread::sleep(TICK.min(self.retry.next.saturating_duration_since(Instant::now())));
                    continue;
                }
                match open(self.target) {
                    Ok(l) => {
                        if ever_connected && matches!(l, Link::Tcp(_)) {
                            Shared::bump(&self.shared.reconnects);
                            tracing::info!(target = %self.target, "syslog connection restored");
                        }
                        ever_connected = true;
                        lost_logged = false;
                        self.retry.reset();
                        link = Some(l);
                    }
                    Err(e) => {
                        if !lost_logged {
                            tracing::warn!(target = %self.target, "syslog collector unreachable, holding events: {e}");
                            lost_logged = true;
                        }
                        self.retry.failed();
                        self.held = Some(held);
                        continue;
                    }
                }
            }
            let Some(l) = &link else { continue };
            match write(l, self.target.addr, &mut held) {
                Ok(true) => self.shared.finish(&self.shared.sent),
                // Timed out part-way: resume on the same connection.
                Ok(false) => self.held = Some(held),
                Err(e) => {
                    if let Link::Udp(_) = l {
                        // Nothing to reconnect: this datagram is lost.
                        self.shared.finish(&self.shared.dropped);
                        continue;
                    }
                    if !lost_logged {
                        tracing::warn!(target = %self.target, "syslog connection lost: {e}");
                        lost_logged = true;
                    }
                    link = None;
                    held.written = 0;
                    held.failures += 1;
                    if held.failures > 1 {
                        self.shared.finish(&self.shared.dropped);
                    } else {
                        self.held = Some(held);
                    }
                }
            }
        }
        // Stopped: what is still here is not delivered.
        let left = u64::from(self.held.take().is_some()) + self.rx.try_iter().count() as u64;
        self.shared.dropped.fetch_add(left, Ordering::Relaxed);
        self.shared.finished.fetch_add(left, Ordering::Release);
    }
}

fn open(target: RemoteTarget) -> io::Result<Link> {
    let domain = Domain::for_address(target.addr);
    match target.proto {
        Proto::Udp => {
            let sock = Socket::new(domain, Type::DGRAM.cloexec(), Some(Protocol::UDP))?;
            Ok(Link::Udp(sock))
        }
        Proto::Tcp => {
            let sock = Socket::new(domain, Type::STREAM.cloexec(), Some(Protocol::TCP))?;
            sock.connect_timeout(&SockAddr::from(target.addr), CONNECT_TIMEOUT)?;
            sock.set_write_timeout(Some(WRITE_TIMEOUT))?;
            Ok(Link::Tcp(sock))
        }
    }
}

/// Writes (the rest of) one message. Ok(true) when complete, Ok(false) when
/// the write timed out with bytes left, Err when the link failed.
fn write(link: &Link, addr: SocketAddr, held: &mut Held) -> io::Result<bool> {
    match link {
        Link::Udp(sock) => {
            sock.send_to(&held.bytes, &SockAddr::from(addr))?;
            Ok(true)
        }
        Link::Tcp(sock) => {
            while held.written < held.bytes.len() {
                match sock.send_with_flags(&held.bytes[held.written..], libc::MSG_NOSIGNAL) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => held.written += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                        return Ok(false)
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(true)
        }
    }
}

/// True if the collector closed the connection or it failed. A syslog
/// collector never sends, so anything readable is EOF or an error; stray bytes
/// are read and ignored.
fn peer_gone(sock: &Socket) -> bool {
    let mut buf = [MaybeUninit::<u8>::uninit(); 256];
    match sock.recv_with_flags(&mut buf, libc::MSG_DONTWAIT) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr, TcpListener, UdpSocket};

    #[test]
    fn targets_parse() {
        let t = RemoteTarget::parse("udp://127.0.0.1:514").unwrap();
        assert_eq!(t, RemoteTarget { proto: Proto::Udp, addr: "127.0.0.1:514".parse().unwrap() });
        let t: RemoteTarget = "tcp://[::1]:6514".parse().unwrap();
        assert_eq!(t.addr, SocketAddr::new(Ipv6Addr::LOCALHOST.into(), 6514));
        assert_eq!(t.proto, Proto::Tcp);
        assert_eq!(t.to_string(), "tcp://[::1]:6514");
        assert_eq!(RemoteTarget::parse("TCP://10.0.0.1").unwrap().addr.port(), 514);
        assert_eq!(RemoteTarget::parse("udp://[fe80::1]").unwrap().addr.port(), 514);
        let t = RemoteTarget::parse("tcp://localhost:601").unwrap();
        assert!(t.addr.ip().is_loopback(), "{t}");
    }

    #[test]
    fn bad_targets_say_why() {
        use TargetError::*;
        type Check = fn(&TargetError) -> bool;
        let cases: [(&str, Check); 12] = [
            ("127.0.0.1:514", |e| matches!(e, Shape(_))),
            ("", |e| matches!(e, Shape(_))),
            ("tcp://", |e| matches!(e, Shape(_))),
            ("tls://127.0.0.1:6514", |e| matches!(e, Proto(_, p) if p == "tls")),
            ("udp://127.0.0.1:0", |e| matches!(e, Port(..))),
            ("udp://127.0.0.1:65536", |e| matches!(e, Port(..))),
            ("udp://127.0.0.1:", |e| matches!(e, Port(..))),
            ("udp://::1:514", |e| matches!(e, Ipv6Brackets(_))),
            ("udp://[::1", |e| matches!(e, Shape(_))),
            ("udp://[::1]514", |e| matches!(e, Shape(_))),
            ("tcp://127.0.0.1:514/x", |e| matches!(e, Shape(_))),
            ("tcp://no-such-host.invalid:514", |e| matches!(e, Resolve(..))),
        ];
        for (s, ok) in cases {
            let e = RemoteTarget::parse(s).unwrap_err();
            assert!(ok(&e), "{s:?} gave {e:?}");
            assert!(e.to_string().contains(&format!("{s:?}")), "{e}");
        }
    }

    #[test]
    fn bad_settings_are_errors() {
        let t = RemoteTarget { proto: Proto::Udp, addr: (Ipv4Addr::LOCALHOST, 9).into() };
        assert!(RemoteSyslog::start(t, "a b", "h", 4).is_err());
        assert!(RemoteSyslog::start(t, "sysmon", "h", 0).is_err());
        let mut cfg = RemoteConfig::new(t, "sysmon", "h");
        cfg.max_datagram = 100;
        assert!(RemoteSyslog::start_with(cfg).is_err());
    }

    /// A loopback port nobody listens on (bound then released).
    fn dead_tcp_port() -> SocketAddr {
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap()
    }

    #[test]
    fn no_collector_tiny_queue_counts_drops_and_never_blocks() {
        let target = RemoteTarget { proto: Proto::Tcp, addr: dead_tcp_port() };
        let sink = RemoteSyslog::start(target, "sysmon", "host", 4).unwrap();
        let n = 10_000;
        let mut times = Vec::with_capacity(n);
        let start = Instant::now();
        for i in 0..n {
            let t = Instant::now();
            sink.send(&format!("<Event>{i}</Event>"));
            times.push(t.elapsed());
        }
        let total = start.elapsed();
        times.sort();
        let (median, p99, worst) = (times[n / 2], times[n * 99 / 100], times[n - 1]);
        eprintln!(
            "remote tcp, no collector: {n} sends in {total:?}, median {median:?}, p99 {p99:?}, slowest {worst:?}"
        );
        // A blocking send would take the connect timeout or the backoff (50 ms
        // and more); the slowest single call is left out, it is the scheduler's.
        assert!(p99 < Duration::from_millis(1), "p99 send {p99:?}");
        assert!(total < Duration::from_secs(1), "{n} sends took {total:?}");
        let s = sink.stats();
        // At most the queue plus the one in the thread's hands are kept.
        assert!(s.dropped >= (n - 5) as u64, "{s:?}");
        assert_eq!(s.sent, 0);
        assert!(!sink.flush(Duration::from_millis(100)), "nothing can be written");
        let t = Instant::now();
        drop(sink);
        assert!(t.elapsed() < STOP_WAIT, "drop took {:?}", t.elapsed());
    }

    #[test]
    fn udp_datagrams_are_rfc5424_and_cut_at_the_limit() {
        let rx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let target = RemoteTarget { proto: Proto::Udp, addr: rx.local_addr().unwrap() };
        let mut cfg = RemoteConfig::new(target, "sysmon", "vm");
        cfg.format = RemoteFormat::Rfc5424;
        cfg.max_datagram = 1000;
        cfg.msgid = Some("NET".to_owned());
        let sink = RemoteSyslog::start_with(cfg).unwrap();
        sink.send("<Event>é</Event>");
        sink.send(&"é".repeat(1000));
        assert!(sink.flush(Duration::from_secs(5)));
        let mut buf = vec![0u8; 4096];
        let n = rx.recv(&mut buf).unwrap();
        let m = std::str::from_utf8(&buf[..n]).unwrap();
        let prefix = format!(" vm sysmon {} NET - <Event>é</Event>", std::process::id());
        assert!(m.starts_with("<14>1 20") && m.ends_with(&prefix), "{m}");
        let n = rx.recv(&mut buf).unwrap();
        assert!((999..=1000).contains(&n), "{n}");
        assert!(std::str::from_utf8(&buf[..n]).is_ok());
        assert_eq!(sink.stats(), SyslogStats { sent: 2, dropped: 0, reconnects: 0, truncated: 1 });
    }

    #[test]
    fn default_is_rfc3164_with_the_host_and_tcp_newline_framing() {
        let rx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let target = RemoteTarget { proto: Proto::Udp, addr: rx.local_addr().unwrap() };
        let sink = RemoteSyslog::start(target, "sysmon", "vm", 4).unwrap();
        sink.send("<Event>é</Event>");
        assert!(sink.flush(Duration::from_secs(5)));
        let mut buf = vec![0u8; 4096];
        let n = rx.recv(&mut buf).unwrap();
        let m = std::str::from_utf8(&buf[..n]).unwrap();
        // <14>Nov  9 08:05:03 vm sysmon: <Event>é</Event>
        assert!(m.starts_with("<14>") && m.len() > 19, "{m}");
        assert_eq!(&m[19..], " vm sysmon: <Event>é</Event>", "{m}");

        // (chosen framing, whether the messages end with a newline)
        for (framing, newline) in [(None, true), (Some(Framing::Newline), true), (Some(Framing::OctetCounted), false)] {
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
            let target = RemoteTarget { proto: Proto::Tcp, addr: listener.local_addr().unwrap() };
            let mut cfg = RemoteConfig::new(target, "sysmon", "vm");
            cfg.framing = framing;
            cfg.pid = true;
            let sink = RemoteSyslog::start_with(cfg).unwrap();
            sink.send("<Event>a</Event>");
            sink.send("<Event>a</Event>");
            assert!(sink.flush(Duration::from_secs(5)));
            drop(sink);
            let (mut conn, _) = listener.accept().unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut got = String::new();
            std::io::Read::read_to_string(&mut conn, &mut got).unwrap();
            let msg_len =
                "<14>Nov  9 08:05:03 vm sysmon[]: <Event>a</Event>".len() + std::process::id().to_string().len();
            let tail = format!(" vm sysmon[{}]: <Event>a</Event>", std::process::id());
            if !newline {
                // "LEN <14>...LEN <14>..."
                let frame = format!("{msg_len} ");
                assert!(got.starts_with(&frame) && got.len() == 2 * (frame.len() + msg_len), "{got:?}");
                assert!(got[frame.len()..frame.len() + msg_len].ends_with(&tail), "{got:?}");
            } else {
                let lines: Vec<&str> = got.split_inclusive('\n').collect();
                assert_eq!(lines.len(), 2, "{got:?}");
                for l in lines {
                    assert!(l.len() == msg_len + 1 && l.ends_with(&format!("{tail}\n")), "{got:?}");
                }
            }
        }
    }
}
