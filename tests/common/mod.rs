//! Test harness: the real sensor, real peers, network namespaces joined by a
//! veth pair. Everything started here is stopped and removed on drop, also
//! when a test fails (panics unwind through the guards).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const SENSOR: &str = env!("CARGO_BIN_EXE_sockscope");
pub const PEER: &str = env!("CARGO_BIN_EXE_sockscope-peer");

/// Kernel tests need root; in CI they must fail loudly rather than skip.
pub fn require_root() {
    assert!(nix::unistd::geteuid().is_root(), "this test needs root (CAP_BPF, netns); run the suite as root");
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// A running sensor writing JSON lines to a file.
pub struct Sensor {
    child: Option<Child>,
    pub out: PathBuf,
    stderr: Arc<Mutex<Vec<String>>>,
    /// Closed by the stderr reader at end of file: every line is in `stderr`.
    stderr_done: Receiver<()>,
    _dir: Option<tempfile::TempDir>,
}

impl Sensor {
    pub fn start(extra: &[&str]) -> Sensor {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("events.jsonl");
        let state = dir.path().join("state");
        Self::start_at(Some(dir), out, &state, extra)
    }

    /// Starts a sensor writing to `out` with its state in `state`; `dir`, if
    /// given, lives as long as the sensor.
    pub fn start_at(dir: Option<tempfile::TempDir>, out: PathBuf, state: &Path, extra: &[&str]) -> Sensor {
        Self::start_via(&[], dir, out, state, extra)
    }

    /// As `start_at`, with the sensor run by `wrapper` (e.g. an `unshare` line
    /// ending in `exec "$0" "$@"`), which must exec it so its pid is the sensor's.
    pub fn start_via(
        wrapper: &[&str],
        dir: Option<tempfile::TempDir>,
        out: PathBuf,
        state: &Path,
        extra: &[&str],
    ) -> Sensor {
        require_root();
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(SENSOR);
                c
            }
            None => Command::new(SENSOR),
        };
        let mut child = cmd
            .arg("--output")
            .arg(&out)
            .arg("--state-dir")
            .arg(state)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sensor");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = channel();
        let (done_tx, stderr_done) = channel::<()>();
        let pipe = child.stderr.take().expect("stderr piped");
        let lines = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let _done = done_tx; // dropped at end of file
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if line.contains("ready") {
                    let _ = ready_tx.send(());
                }
                lines.lock().expect("lock").push(line);
            }
        });
        let sensor = Sensor { child: Some(child), out, stderr, stderr_done, _dir: dir };
        if ready_rx.recv_timeout(bound(Duration::from_secs(30))).is_err() {
            panic!("sensor not ready in 30 s; stderr:\n{}", sensor.stderr_text());
        }
        sensor
    }

    /// Waits until a stderr line contains every one of `parts`.
    pub fn wait_log(&self, parts: &[&str], timeout: Duration) -> bool {
        let end = Instant::now() + bound(timeout);
        loop {
            if self.stderr.lock().expect("lock").iter().any(|l| parts.iter().all(|p| l.contains(p))) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().expect("lock").join("\n")
    }

    /// The NetworkConnect events (Event ID 3) written so far.
    pub fn events(&self) -> Vec<Value> {
        self.all_events().into_iter().filter(|e| e["EventID"] == 3).collect()
    }

    /// Every JSON line written so far (also the sensor's own events, 4 and 16).
    pub fn all_events(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        // The sensor may be mid-line: only complete lines count.
        let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        complete
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
            .collect()
    }

    /// Events matching `pred`, once at least `n` are there (or on timeout).
    pub fn wait_for(&self, n: usize, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let end = Instant::now() + bound(timeout);
        loop {
            let got: Vec<Value> = self.events().into_iter().filter(|e| pred(e)).collect();
            if got.len() >= n || Instant::now() >= end {
                return got;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Returns once the sensor has written out every fact the kernel recorded
    /// before this call: a marker connection over loopback, made now, goes
    /// through the same ring buffer after them, and the sensor handles facts
    /// and writes lines in order, so once the marker's event is written so is
    /// every earlier one. What a test expects *not* to see is then settled,
    /// at any speed, without sleeping. The marker listens on `port` (0: any),
    /// which a test's config must let through.
    pub fn settle_on(&self, port: u16) {
        let listener = marker_listener(port);
        let port = listener.local_addr().expect("marker address").port();
        let stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("marker connect");
        let _accepted = listener.accept().expect("marker accept");
        let local = stream.local_addr().expect("marker local address").port();
        let me = u64::from(std::process::id());
        let got = self.wait_for(1, Duration::from_secs(30), |e| {
            e["Initiated"] == true
                && e["ProcessId"] == me
                && e["SourcePort"] == u64::from(local)
                && e["DestinationPort"] == u64::from(port)
        });
        assert_eq!(got.len(), 1, "the marker connection was reported; stderr:\n{}", self.stderr_text());
    }

    /// `settle_on` any port.
    pub fn settle(&self) {
        self.settle_on(0);
    }

    /// Waits for a stats event (251, `--stats-interval 1`) stamped `after`
    /// from now or later: the sensor writes it right after a tick, so by then
    /// that tick has aged off whatever was older than its timeout at the time.
    pub fn wait_tick_after(&self, after: Duration) {
        let at = (time::OffsetDateTime::now_utc() + after)
            .format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:3]"
            ))
            .expect("format a time");
        let end = Instant::now() + after + bound(Duration::from_secs(30));
        loop {
            if self.all_events().iter().any(|e| e["EventID"] == 251 && e["UtcTime"].as_str() >= Some(at.as_str())) {
                return;
            }
            assert!(Instant::now() < end, "no stats event at or after {at}; stderr:\n{}", self.stderr_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `sig`, waits for exit (bounded), returns status and stderr.
    pub fn stop_with(mut self, sig: nix::sys::signal::Signal) -> (ExitStatus, String) {
        let mut child = self.child.take().expect("running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, sig);
        let status = wait_bounded(&mut child, Duration::from_secs(10));
        // Every stderr line read (the reader closes the channel at end of file).
        let _ = self.stderr_done.recv_timeout(Duration::from_secs(10));
        (status, self.stderr_text())
    }

    pub fn stop(self) -> (ExitStatus, String) {
        self.stop_with(nix::sys::signal::Signal::SIGTERM)
    }
}

/// A loopback listener on `port` (0: an ephemeral one; the ports tests name
/// for themselves on loopback are below the ephemeral range, 32768-60999,
/// so neither takes the other's).
fn marker_listener(port: u16) -> std::net::TcpListener {
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("marker listener")
}

fn wait_bounded(child: &mut Child, limit: Duration) -> ExitStatus {
    let end = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            return child.wait().expect("wait after kill");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for Sensor {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::SIGTERM);
            wait_bounded(&mut child, Duration::from_secs(10));
        }
    }
}

/// A peer process; its stdout lines arrive on a channel.
pub struct Peer {
    child: Option<Child>,
    pid: u32,
    lines: Receiver<String>,
    pub seen: Vec<String>,
}

impl Peer {
    /// Runs `sockscope-peer ARGS`, in network namespace `ns` when given.
    pub fn spawn(ns: Option<&str>, args: &[&str]) -> Peer {
        Self::spawn_program(ns, Path::new(PEER), args)
    }

    pub fn spawn_program(ns: Option<&str>, program: &Path, args: &[&str]) -> Peer {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| std::ffi::OsStr::new(*a)).collect();
        Self::spawn_args(ns, program, &args)
    }

    /// As `spawn_program`, with arguments that need not be UTF-8.
    pub fn spawn_args(ns: Option<&str>, program: &Path, args: &[&std::ffi::OsStr]) -> Peer {
        let mut cmd = match ns {
            // `ip netns exec` execs the program: its pid is the peer's pid.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(program);
                c
            }
            None => Command::new(program),
        };
        let mut child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
        let (tx, rx) = channel();
        let out = child.stdout.take().expect("stdout piped");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Peer { pid: child.id(), child: Some(child), lines: rx, seen: Vec::new() }
    }

    /// Waits for a line starting with `prefix `, returns the rest.
    pub fn expect(&mut self, prefix: &str) -> String {
        let end = Instant::now() + bound(Duration::from_secs(20));
        if let Some(v) = self.find_seen(prefix) {
            return v;
        }
        while let Ok(line) = self.lines.recv_timeout(end.saturating_duration_since(Instant::now())) {
            self.seen.push(line);
            if let Some(v) = self.find_seen(prefix) {
                return v;
            }
        }
        panic!("peer never printed {prefix:?}; saw {:?}", self.seen);
    }

    fn find_seen(&self, prefix: &str) -> Option<String> {
        let p = format!("{prefix} ");
        self.seen.iter().find_map(|l| l.strip_prefix(&p).map(str::to_string))
    }

    pub fn values(&mut self, prefix: &str) -> Vec<String> {
        self.wait_ok();
        let p = format!("{prefix} ");
        self.seen.iter().filter_map(|l| l.strip_prefix(&p).map(str::to_string)).collect()
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits (bounded) for a successful exit and collects all output.
    pub fn wait_ok(&mut self) {
        if let Some(mut child) = self.child.take() {
            let status = wait_bounded(&mut child, bound(Duration::from_secs(30)));
            // Until the reader closes the channel at end of file (bounded).
            let end = Instant::now() + Duration::from_secs(10);
            while let Ok(line) = self.lines.recv_timeout(end.saturating_duration_since(Instant::now())) {
                self.seen.push(line);
            }
            assert!(status.success(), "peer failed: {status}; output {:?}", self.seen);
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

static NEXT: AtomicU32 = AtomicU32::new(1);

/// Two network namespaces ("hosts") joined by a veth pair, with
/// 169.254.N.1/24 + fd00:N::1/64 on `a` and .2 / ::2 on `b`.
pub struct TestNet {
    pub a: String,
    pub b: String,
    pub n: u32,
    /// `b`'s end of the veth pair.
    b_dev: String,
}

impl TestNet {
    pub fn new() -> TestNet {
        require_root();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}{}", std::process::id() % 100_000, n);
        let net = TestNet { a: format!("sscA{tag}"), b: format!("sscB{tag}"), n, b_dev: format!("vb{tag}") };
        for ns in [&net.a, &net.b] {
            run(Command::new("ip").args(["netns", "add", ns]));
            run(Command::new("ip").args(["-n", ns, "link", "set", "lo", "up"]));
        }
        let (va, vb) = (format!("va{tag}"), net.b_dev.clone());
        // Fixed MACs and permanent neighbour entries: no packet waits for
        // ARP/ND, so none is sent later from softirq (where the seed's UDP
        // mechanism would see some other task as the sender).
        let mac = |host: u8| format!("02:53:{:02x}:{:02x}:00:{host:02x}", (n >> 8) & 0xff, n & 0xff);
        run(Command::new("ip").args([
            "-n",
            &net.a,
            "link",
            "add",
            &va,
            "address",
            &mac(1),
            "type",
            "veth",
            "peer",
            "name",
            &vb,
            "address",
            &mac(2),
            "netns",
            &net.b,
        ]));
        for (ns, dev, host) in [(&net.a, &va, 1), (&net.b, &vb, 2)] {
            run(Command::new("ip").args(["-n", ns, "addr", "add", &format!("169.254.{n}.{host}/24"), "dev", dev]));
            run(Command::new("ip").args([
                "-n",
                ns,
                "addr",
                "add",
                &format!("fd00:{n}::{host}/64"),
                "dev",
                dev,
                "nodad",
            ]));
            run(Command::new("ip").args(["-n", ns, "link", "set", dev, "up"]));
        }
        for (ns, dev, peer) in [(&net.a, &va, 2u8), (&net.b, &vb, 1u8)] {
            for ip in [format!("169.254.{n}.{peer}"), format!("fd00:{n}::{peer}")] {
                run(Command::new("ip").args([
                    "-n",
                    ns,
                    "neigh",
                    "replace",
                    &ip,
                    "lladdr",
                    &mac(peer),
                    "dev",
                    dev,
                    "nud",
                    "permanent",
                ]));
            }
        }
        net
    }

    pub fn ip4(&self, host: u8) -> String {
        format!("169.254.{}.{host}", self.n)
    }

    pub fn ip6(&self, host: u8) -> String {
        format!("fd00:{}::{host}", self.n)
    }

    /// The namespace's inode, as the sensor's NetNs field reports it.
    pub fn inode(ns: &str) -> u64 {
        std::fs::metadata(format!("/run/netns/{ns}")).expect("netns file").ino()
    }

    /// Takes `b`'s end of the link down (`a`'s packets are lost) or up.
    pub fn set_b_link(&self, up: bool) {
        run(Command::new("ip").args(["-n", &self.b, "link", "set", &self.b_dev, if up { "up" } else { "down" }]));
    }

    pub fn sysctl(&self, ns: &str, key: &str, value: &str) {
        run(Command::new("ip").args(["netns", "exec", ns, "sysctl", "-qw", &format!("{key}={value}")]));
    }
}

impl TestNet {
    /// A kernel SNMP counter of namespace `ns` (nstat).
    pub fn counter(&self, ns: &str, name: &str) -> u64 {
        let out = Command::new("ip").args(["netns", "exec", ns, "nstat", "-az", name]).output().expect("nstat");
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no counter {name} in {text}"))
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// One TCP connection from namespace a to a listener in b (both ends exit).
pub fn tcp_connection_a_to_b(net: &TestNet) {
    let bind = format!("{}:0", net.ip4(2));
    let mut listener = Peer::spawn(Some(&net.b), &["listen", "--bind", &bind]);
    let port = listener.expect("listening");
    let to = format!("{}:{port}", net.ip4(2));
    Peer::spawn(Some(&net.a), &["connect", "--to", &to]).wait_ok();
    listener.wait_ok();
}

pub fn host_netns_inode() -> u64 {
    std::fs::metadata("/proc/self/ns/net").expect("own netns").ino()
}

/// A counter of the stats line the sensor logs when it stops.
pub fn final_stat(stderr: &str, name: &str) -> u64 {
    stderr
        .split(&format!(" {name}="))
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{name} in the final stats line: {stderr}"))
}

pub fn s(v: &Value, k: &str) -> String {
    match &v[k] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("{k} is not a number in {v}"))
}

/// The sensor's own report of this kernel (`sockscope --check`): which
/// mechanism serves what, and what it cannot see. Tests that meet a
/// documented degradation (README, "Kernels") assert it from this.
#[allow(dead_code)]
pub fn kernel_report() -> String {
    static REPORT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    REPORT
        .get_or_init(|| {
            let out = Command::new(SENSOR).arg("--check").output().expect("sockscope --check runs");
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
        .clone()
}

/// A corked UDP datagram that leaves in setsockopt(UDP_CORK, 0) is seen
/// (cgroup_skb may ask for the task: 6.18 here; not 6.1, 6.12).
#[allow(dead_code)]
pub fn uncork_seen() -> bool {
    !kernel_report().contains("setsockopt(UDP_CORK, 0): not seen")
}

/// A wait's bound on this machine: `SOCKSCOPE_TEST_TIME_SCALE` times it (the
/// kernel VMs of scripts/test-kernels.sh run under an emulator several times
/// slower; a bound only matters when something never happens).
pub fn bound(d: Duration) -> Duration {
    let scale = std::env::var("SOCKSCOPE_TEST_TIME_SCALE").ok().and_then(|v| v.parse::<u32>().ok()).unwrap_or(1);
    d * scale.clamp(1, 20)
}

/// UDP receives are reported (not on 5.10: README, "Kernels").
#[allow(dead_code)]
pub fn udp_receives_seen() -> bool {
    !kernel_report().contains("UDP in: not seen")
}

/// UDP sends have a process-context mechanism (not on 5.10: only the packet one).
#[allow(dead_code)]
pub fn udp_process_sends() -> bool {
    kernel_report().contains("UDP out: process")
}
