//! sockscope-loadgen: loopback-only workloads for the benchmark (sockscope-bench).
//!
//! Workloads (all on 127.0.0.0/8 or ::1, never any other address):
//! - `tcp_storm`: connect/accept/close cycles. Each worker thread has its own
//!   listener, so a worker always accepts the connection it just made and the
//!   cycle is strictly sequential (connect, accept, close server side, close
//!   client). The server closes first, so TIME_WAIT stays on the listener's
//!   side and never eats the client's ephemeral ports.
//! - `udp_one_flow`: N datagrams from one socket to one bound receiver socket
//!   (read by a thread only with `--udp-drain`).
//! - `udp_many_flows`: one datagram to each of N distinct (ip, port)
//!   destinations, 127.0.0.1.. and ports from `--port-base` up; nothing listens.
//!
//! Output on stdout, one JSON object per line: first `{"pid":N,...}`, last the
//! result (`elapsed_s`, `ops`, `ops_per_s`, ...). Exit code 0 when every
//! operation was done, 3 when the global timeout stopped it, 1 on an error.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use sockscope::bench::workload::{Report, Workload};

#[derive(Parser, Debug)]
#[command(name = "sockscope-loadgen", about = "Loopback-only network workloads for sockscope's benchmark")]
struct Cli {
    /// What to run.
    #[arg(value_enum)]
    workload: Workload,
    /// Operations: TCP cycles (default 20000), datagrams (default 2000000) or
    /// destinations (default 50000), depending on the workload.
    #[arg(long)]
    count: Option<u64>,
    /// Worker threads for tcp_storm (each with its own listener).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    threads: u32,
    /// Datagram payload size in bytes.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65_000))]
    size: u32,
    /// Use ::1 instead of 127.0.0.0/8 (udp_many_flows then varies the port only).
    #[arg(long)]
    ipv6: bool,
    /// udp_one_flow: a thread reads the receiver socket (the sensor then also
    /// reports one inbound flow).
    #[arg(long)]
    udp_drain: bool,
    /// udp_one_flow: connect() the sender and use send() instead of sendto().
    #[arg(long)]
    udp_connected: bool,
    /// udp_many_flows: first destination port (ports above the ephemeral range
    /// avoid hitting local sockets).
    #[arg(long, default_value_t = 61_000, value_parser = clap::value_parser!(u16).range(1024..))]
    port_base: u16,
    /// Run in a new network namespace of its own (root; loopback only),
    /// gone with the process: a run leaves no TIME_WAIT sockets behind for
    /// the next one to pay for (they expire 60 s later, in the middle of it).
    #[arg(long)]
    fresh_netns: bool,
    /// Global timeout: every loop stops when it is reached.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    timeout_secs: u64,
}

struct Outcome {
    ops: u64,
    elapsed: Duration,
    timed_out: bool,
    send_errors: u64,
    received: u64,
    hosts: u32,
}

/// Per-call bound on a blocking socket operation, so a stuck peer cannot hang
/// a loop past the global timeout by much.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the UDP loops look at the clock (a clock read per datagram would
/// show in the numbers).
const CLOCK_EVERY: u64 = 1024;

fn loopback(ipv6: bool) -> IpAddr {
    if ipv6 {
        IpAddr::V6(Ipv6Addr::LOCALHOST)
    } else {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    }
}

fn tcp_storm(cli: &Cli, cycles: u64, deadline: Instant) -> Result<Outcome> {
    let domain = if cli.ipv6 { Domain::IPV6 } else { Domain::IPV4 };
    let threads = u64::from(cli.threads);
    let mut listeners = Vec::new();
    for _ in 0..threads {
        let l = Socket::new(domain, Type::STREAM, Some(Protocol::TCP)).context("creating a listener")?;
        l.set_reuse_address(true).context("SO_REUSEADDR")?;
        l.bind(&SockAddr::from(SocketAddr::new(loopback(cli.ipv6), 0))).context("binding a listener")?;
        l.listen(1024).context("listen")?;
        // Linux bounds a blocking accept() by SO_RCVTIMEO.
        l.set_read_timeout(Some(IO_TIMEOUT)).context("SO_RCVTIMEO on the listener")?;
        let addr = l.local_addr().context("listener address")?;
        listeners.push((l, addr));
    }
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let results: Vec<Result<u64>> = std::thread::scope(|s| {
        let handles: Vec<_> = listeners
            .iter()
            .enumerate()
            .map(|(i, (listener, addr))| {
                // Spread the remainder so the total is exactly `cycles`.
                let n = cycles / threads + u64::from((i as u64) < cycles % threads);
                let stop = &stop;
                s.spawn(move || {
                    let r = tcp_worker(listener, addr, domain, n, deadline, stop);
                    if r.is_err() {
                        stop.store(true, Ordering::Relaxed);
                    }
                    r
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a tcp_storm worker panicked"))))
            .collect()
    });
    let elapsed = start.elapsed();
    let mut ops = 0;
    for r in results {
        ops += r?;
    }
    Ok(Outcome { ops, elapsed, timed_out: ops < cycles, send_errors: 0, received: 0, hosts: 1 })
}

fn tcp_worker(
    listener: &Socket,
    addr: &SockAddr,
    domain: Domain,
    n: u64,
    deadline: Instant,
    stop: &AtomicBool,
) -> Result<u64> {
    for done in 0..n {
        if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
            return Ok(done);
        }
        let client = Socket::new(domain, Type::STREAM, Some(Protocol::TCP)).context("creating a client socket")?;
        // Linux bounds a blocking connect() by SO_SNDTIMEO.
        client.set_write_timeout(Some(IO_TIMEOUT)).context("SO_SNDTIMEO")?;
        client.connect(addr).with_context(|| format!("connect, cycle {done}"))?;
        let (server, _) = listener.accept().with_context(|| format!("accept, cycle {done}"))?;
        drop(server);
        drop(client);
    }
    Ok(n)
}

fn udp_one_flow(cli: &Cli, count: u64, deadline: Instant) -> Result<Outcome> {
    let ip = loopback(cli.ipv6);
    let rx = UdpSocket::bind(SocketAddr::new(ip, 0)).context("binding the receiver")?;
    rx.set_read_timeout(Some(Duration::from_millis(100))).context("SO_RCVTIMEO on the receiver")?;
    let dst = rx.local_addr().context("receiver address")?;
    let tx = UdpSocket::bind(SocketAddr::new(ip, 0)).context("binding the sender")?;
    tx.set_write_timeout(Some(IO_TIMEOUT)).context("SO_SNDTIMEO on the sender")?;
    if cli.udp_connected {
        tx.connect(dst).context("connecting the sender")?;
    }
    let payload = vec![0x5a_u8; cli.size as usize];
    let stop = AtomicBool::new(false);
    let received = AtomicU64::new(0);
    let connected = cli.udp_connected;

    let (ops, send_errors, elapsed, timed_out) = std::thread::scope(|s| {
        if cli.udp_drain {
            s.spawn(|| {
                let mut buf = vec![0u8; 65_536];
                // Bounded by `stop` and the deadline; each recv waits at most 100 ms.
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    if rx.recv(&mut buf).is_ok() {
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        let start = Instant::now();
        let (mut ops, mut errors, mut timed_out) = (0u64, 0u64, false);
        for i in 0..count {
            if i % CLOCK_EVERY == 0 && Instant::now() >= deadline {
                timed_out = true;
                break;
            }
            let r = if connected { tx.send(&payload) } else { tx.send_to(&payload, dst) };
            match r {
                Ok(_) => ops += 1,
                Err(_) => errors += 1,
            }
        }
        let elapsed = start.elapsed();
        if cli.udp_drain {
            // Let the reader see what is still queued, briefly.
            std::thread::sleep(Duration::from_millis(200));
        }
        stop.store(true, Ordering::Relaxed);
        (ops, errors, elapsed, timed_out)
    });
    Ok(Outcome { ops, elapsed, timed_out, send_errors, received: received.load(Ordering::Relaxed), hosts: 1 })
}

fn udp_many_flows(cli: &Cli, count: u64, deadline: Instant) -> Result<Outcome> {
    let ports_per_host = 65_536 - u64::from(cli.port_base);
    let hosts = count.div_ceil(ports_per_host);
    if cli.ipv6 {
        ensure!(hosts <= 1, "--ipv6 has one address (::1): at most {ports_per_host} flows from port {}", cli.port_base);
    } else {
        // 127.0.0.1 ..= 127.0.0.254 only.
        ensure!(hosts <= 254, "{count} flows need {hosts} hosts; at most 254 (lower --port-base)");
    }
    let dsts: Vec<SocketAddr> = (0..count)
        .map(|i| {
            let port = cli.port_base + (i % ports_per_host) as u16;
            let ip = if cli.ipv6 {
                IpAddr::V6(Ipv6Addr::LOCALHOST)
            } else {
                IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i / ports_per_host) as u8))
            };
            SocketAddr::new(ip, port)
        })
        .collect();
    let tx = UdpSocket::bind(SocketAddr::new(loopback(cli.ipv6), 0)).context("binding the sender")?;
    tx.set_write_timeout(Some(IO_TIMEOUT)).context("SO_SNDTIMEO on the sender")?;
    let payload = vec![0x5a_u8; cli.size as usize];
    let start = Instant::now();
    let (mut ops, mut errors, mut timed_out) = (0u64, 0u64, false);
    for (i, dst) in dsts.iter().enumerate() {
        if i as u64 % CLOCK_EVERY == 0 && Instant::now() >= deadline {
            timed_out = true;
            break;
        }
        match tx.send_to(&payload, dst) {
            Ok(_) => ops += 1,
            Err(_) => errors += 1,
        }
    }
    let elapsed = start.elapsed();
    Ok(Outcome { ops, elapsed, timed_out, send_errors: errors, received: 0, hosts: hosts as u32 })
}

/// A new network namespace for this process, with its loopback up.
fn enter_fresh_netns() -> Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET) (needs root)")?;
    let status = std::process::Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .context("running `ip link set lo up`")?;
    anyhow::ensure!(status.success(), "`ip link set lo up` failed: {status}");
    Ok(())
}

fn run(cli: &Cli) -> Result<bool> {
    if cli.fresh_netns {
        enter_fresh_netns()?;
    }
    let pid = std::process::id();
    let mut out = std::io::stdout().lock();
    // The pid first, so a caller can match the sensor's events while we run.
    writeln!(out, "{}", serde_json::json!({ "pid": pid, "workload": cli.workload })).context("writing stdout")?;
    out.flush().context("flushing stdout")?;

    let deadline = Instant::now() + Duration::from_secs(cli.timeout_secs);
    let requested = cli.count.unwrap_or(match cli.workload {
        Workload::TcpStorm => 20_000,
        Workload::UdpOneFlow => 2_000_000,
        Workload::UdpManyFlows => 50_000,
    });
    if requested == 0 {
        bail!("--count must be at least 1");
    }
    let o = match cli.workload {
        Workload::TcpStorm => tcp_storm(cli, requested, deadline)?,
        Workload::UdpOneFlow => udp_one_flow(cli, requested, deadline)?,
        Workload::UdpManyFlows => udp_many_flows(cli, requested, deadline)?,
    };
    let secs = o.elapsed.as_secs_f64();
    let report = Report {
        workload: cli.workload,
        pid,
        requested,
        ops: o.ops,
        elapsed_s: secs,
        ops_per_s: if secs > 0.0 { o.ops as f64 / secs } else { 0.0 },
        timed_out: o.timed_out,
        send_errors: o.send_errors,
        received: o.received,
        hosts: o.hosts,
        ipv6: cli.ipv6,
    };
    writeln!(out, "{}", serde_json::to_string(&report).context("encoding the result")?).context("writing stdout")?;
    out.flush().context("flushing stdout")?;
    Ok(!o.timed_out)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("sockscope-loadgen: global timeout ({} s) reached before the end", cli.timeout_secs);
            ExitCode::from(3)
        }
        Err(e) => {
            eprintln!("sockscope-loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}
