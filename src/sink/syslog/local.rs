//! RFC 3164 to the local log socket, as glibc's `syslog(3)` writes it, but
//! never blocking.
//!
//! glibc connects a `SOCK_DGRAM` socket and, if the path is a stream socket
//! (`EPROTOTYPE`), a `SOCK_STREAM` one; we do the same. Its sends block; ours are
//! `MSG_DONTWAIT`: a message the receiver cannot take now waits in a bounded
//! backlog (in order, drained by later `send`s and by `flush`), and a message
//! that finds the backlog full is dropped and counted. Linux lets only
//! `net.unix.max_dgram_qlen` (10 by default) datagrams wait in the receiver's
//! queue, so a burst needs that backlog even with a healthy receiver.
//!
//! When the receiver is absent or restarted (`ENOENT`, `ECONNREFUSED` on the
//! old socket), the connection is retried at the next send or flush, at most
//! once per backoff period (50 ms doubling to 1 s).

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use socket2::{Domain, SockAddr, Socket, Type};

use super::wire::{check_ident, local_message, local_stamp};
use super::SyslogStats;

/// Messages held while the receiver is slow or absent (default).
pub const DEFAULT_BACKLOG: usize = 1024;
const BACKOFF_START: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The kind of socket found at the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalSocketKind {
    /// One message per datagram (journald's and rsyslog's `/dev/log`).
    Datagram,
    /// A byte stream; each message ends with a NUL, as glibc writes it.
    Stream,
}

struct Conn {
    sock: Socket,
    kind: LocalSocketKind,
}

enum Drain {
    /// The backlog is empty.
    Done,
    /// The receiver cannot take more now.
    Blocked,
    /// No connection, and it is not time to retry yet (or the retry failed).
    Disconnected,
}

/// Local syslog sink. Not thread-safe by design: it sits on the event path,
/// which owns it.
pub struct LocalSyslog {
    path: PathBuf,
    addr: SockAddr,
    ident: String,
    pid: Option<u32>,
    conn: Option<Conn>,
    /// Kind to try first: the last one that worked.
    prefer: LocalSocketKind,
    ever_connected: bool,
    backoff: Duration,
    next_attempt: Instant,
    /// Formatted messages, each ending with a NUL (sent only on streams).
    backlog: VecDeque<Vec<u8>>,
    max_backlog: usize,
    /// Bytes of the front message already written to the current stream.
    front_written: usize,
    /// (second, stamp) of the last message: localtime once per second.
    stamp: (i64, String),
    stats: SyslogStats,
}

impl LocalSyslog {
    /// A sink writing to the unix socket at `path` with `ident` as the tag, in
    /// Sysmon for Linux's form (no pid; see [`with_pid`](Self::with_pid)).
    /// Fails only on bad settings: an absent receiver is retried later.
    pub fn new(path: impl AsRef<Path>, ident: &str) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Err(why) = check_ident(ident) {
            bail!("syslog ident {ident:?} {why}");
        }
        let addr = SockAddr::unix(&path)
            .with_context(|| format!("syslog socket path {} is not a valid unix socket address", path.display()))?;
        let mut sink = LocalSyslog {
            path,
            addr,
            ident: ident.to_owned(),
            pid: None,
            conn: None,
            prefer: LocalSocketKind::Datagram,
            ever_connected: false,
            backoff: BACKOFF_START,
            next_attempt: Instant::now(),
            backlog: VecDeque::new(),
            max_backlog: DEFAULT_BACKLOG,
            front_written: 0,
            stamp: (i64::MIN, String::new()),
            stats: SyslogStats::default(),
        };
        sink.try_connect();
        Ok(sink)
    }

    /// Adds `[pid]` after the ident (glibc's `LOG_PID`). Sysmon for Linux does
    /// not set it, so its lines read `sysmon: <Event>...`.
    pub fn with_pid(mut self, include: bool) -> Self {
        self.pid = include.then(std::process::id);
        self
    }

    /// How many messages may wait for a slow or absent receiver (0: none; a
    /// message the socket does not take at once is dropped).
    pub fn with_backlog(mut self, max_messages: usize) -> Self {
        self.max_backlog = max_messages;
        self
    }

    /// Sends one event line, or queues it, or drops and counts it. Never blocks.
    pub fn send(&mut self, line: &str) {
        let mut msg = self.format(line);
        msg.push(0);
        self.backlog.push_back(msg);
        self.drain();
        // Drop the newest beyond the bound, never a half-written front.
        while self.backlog.len() > self.max_backlog && !(self.backlog.len() == 1 && self.front_written > 0) {
            self.backlog.pop_back();
            self.stats.dropped += 1;
        }
    }

    /// Tries to write the backlog, waiting at most `timeout` for the receiver.
    /// True when nothing is left waiting. `Duration::ZERO` only tries.
    pub fn flush(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let state = self.drain();
            let now = Instant::now();
            if matches!(state, Drain::Done) || now >= deadline {
                return self.backlog.is_empty();
            }
            let left = deadline - now;
            match (state, &self.conn) {
                (Drain::Blocked, Some(conn)) => wait_writable(&conn.sock, left.min(Duration::from_millis(100))),
                _ => std::thread::sleep(left.min(self.next_attempt.saturating_duration_since(now)).max(ms(1))),
            }
        }
    }

    pub fn stats(&self) -> SyslogStats {
        self.stats
    }

    /// Messages waiting for the receiver.
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        self.backlog.len()
    }

    /// The socket kind in use, if connected.
    pub fn socket_kind(&self) -> Option<LocalSocketKind> {
        self.conn.as_ref().map(|c| c.kind)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn format(&mut self, line: &str) -> Vec<u8> {
        let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        if self.stamp.0 != secs {
            self.stamp = (secs, local_stamp(secs));
        }
        local_message(&self.stamp.1, &self.ident, self.pid, line)
    }

    /// Writes from the front of the backlog until it is empty or the socket
    /// stops taking data.
    fn drain(&mut self) -> Drain {
        loop {
            if self.conn.is_none() && !self.try_connect() {
                return Drain::Disconnected;
            }
            let Some(conn) = &self.conn else { return Drain::Disconnected };
            let Some(front) = self.backlog.front() else { return Drain::Done };
            let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
            let result = match conn.kind {
                // The NUL terminator is for streams only.
                LocalSocketKind::Datagram => conn.sock.send_with_flags(&front[..front.len() - 1], flags),
                LocalSocketKind::Stream => conn.sock.send_with_flags(&front[self.front_written..], flags),
            };
            match result {
                Ok(n) => {
                    let complete = match conn.kind {
                        LocalSocketKind::Datagram => true,
                        LocalSocketKind::Stream => {
                            self.front_written += n;
                            self.front_written == front.len()
                        }
                    };
                    if complete {
                        self.backlog.pop_front();
                        self.front_written = 0;
                        self.stats.sent += 1;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Drain::Blocked,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                    // Larger than the socket's buffer: it would never pass.
                    self.backlog.pop_front();
                    self.stats.dropped += 1;
                }
                Err(_) => {
                    // Receiver gone (ECONNREFUSED on a datagram, EPIPE/ECONNRESET
                    // on a stream): reconnect now, resend the front whole.
                    self.conn = None;
                    self.front_written = 0;
                    self.next_attempt = Instant::now();
                }
            }
        }
    }

    /// Connects if the backoff allows; true if connected afterwards.
    fn try_connect(&mut self) -> bool {
        let now = Instant::now();
        if now < self.next_attempt {
            return false;
        }
        let other = match self.prefer {
            LocalSocketKind::Datagram => LocalSocketKind::Stream,
            LocalSocketKind::Stream => LocalSocketKind::Datagram,
        };
        let result = match connect(&self.addr, self.prefer) {
            // Wrong socket type at the path: try the other, as glibc does.
            Err(e) if e.raw_os_error() == Some(libc::EPROTOTYPE) => connect(&self.addr, other),
            r => r,
        };
        match result {
            Ok(conn) => {
                self.prefer = conn.kind;
                if self.ever_connected {
                    self.stats.reconnects += 1;
                }
                self.ever_connected = true;
                self.backoff = BACKOFF_START;
                self.conn = Some(conn);
                true
            }
            Err(_) => {
                self.next_attempt = now + self.backoff;
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                false
            }
        }
    }
}

fn connect(addr: &SockAddr, kind: LocalSocketKind) -> io::Result<Conn> {
    let ty = match kind {
        LocalSocketKind::Datagram => Type::DGRAM,
        LocalSocketKind::Stream => Type::STREAM,
    };
    // Non-blocking from the start: a stream connect to a full listen queue
    // returns EAGAIN instead of waiting.
    let sock = Socket::new(Domain::UNIX, ty.nonblocking().cloexec(), None)?;
    sock.connect(addr)?;
    Ok(Conn { sock, kind })
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Waits until `sock` can take data (a connected unix datagram socket reports
/// this when the receiver's queue has room), at most `timeout`.
fn wait_writable(sock: &Socket, timeout: Duration) {
    let mut pfd = libc::pollfd { fd: sock.as_raw_fd(), events: libc::POLLOUT, revents: 0 };
    let millis = timeout.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
    // SAFETY: one valid pollfd for the duration of the call. The result does
    // not matter: the caller retries the send either way.
    unsafe {
        libc::poll(&mut pfd, 1, millis);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::{UnixDatagram, UnixListener};

    fn temp() -> tempfile::TempDir {
        tempfile::Builder::new().prefix("sockscope-syslog").tempdir().unwrap()
    }

    /// Strips the `<14>Mmm dd hh:mm:ss ` header and returns the rest.
    fn after_stamp(raw: &[u8]) -> &[u8] {
        assert!(raw.starts_with(b"<14>"), "{:?}", String::from_utf8_lossy(raw));
        assert_eq!(raw[19], b' ', "{:?}", String::from_utf8_lossy(raw));
        &raw[20..]
    }

    #[test]
    fn bad_settings_are_errors() {
        let e = LocalSyslog::new("/tmp/x", "a b").err().unwrap();
        assert!(e.to_string().contains("ident"), "{e}");
        let long = format!("/tmp/{}", "x".repeat(200));
        let e = LocalSyslog::new(long, "sysmon").err().unwrap();
        assert!(format!("{e:#}").contains("unix socket address"), "{e:#}");
    }

    #[test]
    fn datagram_messages_are_glibc_records() {
        let dir = temp();
        let path = dir.path().join("log");
        let rx = UnixDatagram::bind(&path).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut sink = LocalSyslog::new(&path, "sysmon").unwrap();
        assert_eq!(sink.socket_kind(), Some(LocalSocketKind::Datagram));
        sink.send("<Event>a &amp; é</Event>");
        let mut buf = vec![0u8; 4096];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(after_stamp(&buf[..n]), "sysmon: <Event>a &amp; é</Event>".as_bytes());
        let mut sink = LocalSyslog::new(&path, "sysmon").unwrap().with_pid(true);
        sink.send("x");
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(after_stamp(&buf[..n]), format!("sysmon[{}]: x", std::process::id()).as_bytes());
        assert_eq!(sink.stats(), SyslogStats { sent: 1, ..Default::default() });
    }

    #[test]
    fn stream_socket_gets_nul_terminated_records_in_order() {
        let dir = temp();
        let path = dir.path().join("log");
        let listener = UnixListener::bind(&path).unwrap();
        let mut sink = LocalSyslog::new(&path, "sysmon").unwrap();
        assert_eq!(sink.socket_kind(), Some(LocalSocketKind::Stream));
        let (mut peer, _) = listener.accept().unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // Large messages, to exercise partial writes on the non-blocking stream.
        let lines: Vec<String> =
            (0..300).map(|i| format!("<Event n=\"{i}\">{}</Event>", "é&<".repeat(i * 20))).collect();
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            let mut buf = vec![0u8; 65536];
            while all.iter().filter(|&&b| b == 0).count() < 300 {
                let n = peer.read(&mut buf).unwrap();
                assert!(n > 0, "stream closed early");
                all.extend_from_slice(&buf[..n]);
            }
            all
        });
        for line in &lines {
            sink.send(line);
        }
        assert!(sink.flush(Duration::from_secs(10)), "backlog left: {}", sink.pending());
        let all = reader.join().unwrap();
        let records: Vec<&[u8]> = all.split(|&b| b == 0).filter(|r| !r.is_empty()).collect();
        assert_eq!(records.len(), 300);
        for (rec, line) in records.iter().zip(&lines) {
            assert_eq!(after_stamp(rec), format!("sysmon: {line}").as_bytes());
        }
        assert_eq!(sink.stats(), SyslogStats { sent: 300, ..Default::default() });
    }

    #[test]
    fn absent_receiver_counts_drops_without_blocking_and_connects_later() {
        let dir = temp();
        let path = dir.path().join("log");
        let mut sink = LocalSyslog::new(&path, "sysmon").unwrap().with_backlog(8);
        assert_eq!(sink.socket_kind(), None);
        let n = 10_000;
        let mut times = Vec::with_capacity(n);
        let start = Instant::now();
        for i in 0..n {
            let t = Instant::now();
            sink.send(&format!("event {i}"));
            times.push(t.elapsed());
        }
        let total = start.elapsed();
        times.sort();
        let (median, p99, worst) = (times[n / 2], times[n * 99 / 100], times[n - 1]);
        eprintln!("local, no receiver: {n} sends in {total:?}, median {median:?}, p99 {p99:?}, slowest {worst:?}");
        assert_eq!(sink.stats().dropped, n as u64 - 8);
        assert_eq!(sink.pending(), 8);
        assert!(total < Duration::from_secs(1), "{n} sends took {total:?}");
        assert!(p99 < Duration::from_millis(1), "p99 send {p99:?}");

        // The receiver appears: the held messages go out first, in order.
        let rx = UnixDatagram::bind(&path).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert!(sink.flush(Duration::from_secs(5)));
        sink.send("after");
        let mut buf = vec![0u8; 256];
        let got: Vec<String> = (0..9)
            .map(|_| {
                let n = rx.recv(&mut buf).unwrap();
                String::from_utf8(after_stamp(&buf[..n]).to_vec()).unwrap()
            })
            .collect();
        let want: Vec<String> =
            (0..8).map(|i| format!("sysmon: event {i}")).chain(["sysmon: after".to_owned()]).collect();
        assert_eq!(got, want);
        assert_eq!(sink.stats().reconnects, 0, "a first connection is not a reconnect");
    }

    #[test]
    fn full_receiver_queue_is_absorbed_by_the_backlog() {
        let dir = temp();
        let path = dir.path().join("log");
        let rx = UnixDatagram::bind(&path).unwrap();
        let mut sink = LocalSyslog::new(&path, "sysmon").unwrap();
        // Nobody reads: the kernel queue fills (max_dgram_qlen), then the backlog.
        let t = Instant::now();
        for i in 0..200 {
            sink.send(&format!("e{i}"));
        }
        assert!(t.elapsed() < Duration::from_millis(500));
        assert!(sink.pending() > 0, "the kernel took everything: the test proves nothing");
        assert!(!sink.flush(Duration::from_millis(20)), "flush must give up when the receiver is stuck");
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            (0..200)
                .map(|_| {
                    let n = rx.recv(&mut buf).unwrap();
                    String::from_utf8(after_stamp(&buf[..n]).to_vec()).unwrap()
                })
                .collect::<Vec<_>>()
        });
        assert!(sink.flush(Duration::from_secs(5)));
        let got = reader.join().unwrap();
        assert_eq!(got, (0..200).map(|i| format!("sysmon: e{i}")).collect::<Vec<_>>());
        assert_eq!(sink.stats(), SyslogStats { sent: 200, ..Default::default() });
    }
}
