//! `sockscope-bench --soak-minutes N`: one sensor for N minutes under a
//! steady mixed load on loopback, with a SIGHUP (reopen, reload) every
//! minute; every interval a row: sensor RSS, its CPU share over the
//! interval, events written, UDP flows reported more than once, and what the
//! sensor counted as lost or evicted.
//!
//! The load (this process's threads, 127.0.0.0/8 only, every loop bounded
//! by the soak's end):
//! - `repeat`: one UDP socket re-sends to the same `flows` destinations
//!   (nothing listens) over and over: each must be reported once within the
//!   window, whatever else fills the flow table;
//! - `pairs`: 100 UDP sockets each send one datagram a second to one
//!   receiver that reads them: 100 outbound and 100 inbound flows, repeated;
//! - `fresh`: every second a new socket sends to 200 new destinations: the
//!   flow table (65,536 by default) fills in some 5 minutes and is thinned
//!   (old one-shot flows go first);
//! - TCP: a listener and a client connecting ~20 times a second.
//!
//! A duplicate is a UDP flow of this process reported twice. With the
//! default 30 min window and the repeated flows kept recent there should be
//! none, except after the sensor evicted flows to make room (the sensor sees
//! the whole host: a burst of new flows elsewhere, larger than the table's
//! free quarter, evicts older ones, which are then reported again, as
//! documented). So each row also shows the sensor's evictions in the
//! interval, and a duplicate is "unexplained" when neither that interval
//! nor the one before saw an eviction: the soak fails on those.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Deserialize;

pub struct SoakSettings {
    pub minutes: f64,
    pub interval: Duration,
    /// Destinations the `repeat` socket cycles through.
    pub flows: u16,
}

#[derive(Deserialize)]
struct Line {
    #[serde(rename = "EventID")]
    event_id: u64,
    #[serde(rename = "ProcessId")]
    process_id: Option<u64>,
    #[serde(rename = "Protocol")]
    protocol: Option<String>,
    #[serde(rename = "Initiated")]
    initiated: Option<bool>,
    #[serde(rename = "SourcePort")]
    source_port: Option<u64>,
    #[serde(rename = "DestinationIp")]
    destination_ip: Option<String>,
    #[serde(rename = "DestinationPort")]
    destination_port: Option<u64>,
}

/// Reads the sensor's output as it grows, counting this process's UDP flows.
struct Tally {
    file: std::fs::File,
    partial: Vec<u8>,
    me: u64,
    events: u64,
    flows: HashMap<(bool, u64, String, u64), u32>,
    duplicates: u64,
}

impl Tally {
    fn update(&mut self) -> Result<()> {
        let mut buf = Vec::new();
        self.file.read_to_end(&mut buf).context("reading the sensor's output")?;
        self.partial.extend_from_slice(&buf);
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else { return Ok(()) };
        let rest = self.partial.split_off(end + 1);
        let complete = std::mem::replace(&mut self.partial, rest);
        for raw in complete.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let Ok(l) = serde_json::from_slice::<Line>(raw) else { continue };
            if l.event_id != 3 {
                continue;
            }
            self.events += 1;
            if l.process_id != Some(self.me) || l.protocol.as_deref() != Some("udp") {
                continue;
            }
            let key = (
                l.initiated.unwrap_or(false),
                l.source_port.unwrap_or(0),
                l.destination_ip.unwrap_or_default(),
                l.destination_port.unwrap_or(0),
            );
            let n = self.flows.entry(key).or_insert(0);
            *n += 1;
            if *n > 1 {
                self.duplicates += 1;
            }
        }
        Ok(())
    }
}

fn vm_rss_kib(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Starts the load threads; they stop at `end` or when `stop` is set.
fn start_load(s: &SoakSettings, end: Instant, stop: &Arc<AtomicBool>) -> Result<Vec<std::thread::JoinHandle<()>>> {
    let mut threads = Vec::new();
    let running = {
        let stop = Arc::clone(stop);
        move || !stop.load(Ordering::Relaxed) && Instant::now() < end
    };

    let repeat = UdpSocket::bind("127.0.0.1:0").context("repeat socket")?;
    let flows = s.flows;
    let go = running.clone();
    threads.push(std::thread::spawn(move || {
        // ~2,000 datagrams a second: every destination again every few seconds.
        while go() {
            for i in 0..flows {
                let to = SocketAddr::from(([127, 0, 0, 2], 20_000 + i));
                let _ = repeat.send_to(b"soak", to);
                if i % 200 == 199 {
                    std::thread::sleep(Duration::from_millis(100));
                    if !go() {
                        return;
                    }
                }
            }
        }
    }));

    let receiver = UdpSocket::bind("127.0.0.3:0").context("receiver socket")?;
    receiver.set_read_timeout(Some(Duration::from_millis(200)))?;
    let to = receiver.local_addr()?;
    let go = running.clone();
    threads.push(std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while go() {
            let _ = receiver.recv_from(&mut buf);
        }
    }));
    let senders: Vec<UdpSocket> = (0..100).filter_map(|_| UdpSocket::bind("127.0.0.1:0").ok()).collect();
    let go = running.clone();
    threads.push(std::thread::spawn(move || {
        while go() {
            for s in &senders {
                let _ = s.send_to(b"pair", to);
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }));

    let go = running.clone();
    threads.push(std::thread::spawn(move || {
        let mut round: u32 = 0;
        while go() {
            if let Ok(s) = UdpSocket::bind("127.0.0.1:0") {
                for i in 0..200u32 {
                    let n = round.wrapping_mul(200).wrapping_add(i);
                    let ip = [127, 1, (n >> 16) as u8, (n >> 8) as u8];
                    let _ = s.send_to(b"fresh", SocketAddr::from((ip, 1024 + (n & 0xff) as u16)));
                }
            }
            round = round.wrapping_add(1);
            std::thread::sleep(Duration::from_secs(1));
        }
    }));

    let listener = TcpListener::bind("127.0.0.4:0").context("tcp listener")?;
    listener.set_nonblocking(true)?;
    let at = listener.local_addr()?;
    let go = running.clone();
    threads.push(std::thread::spawn(move || {
        while go() {
            match listener.accept() {
                Ok((c, _)) => drop(c),
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }));
    let go = running;
    threads.push(std::thread::spawn(move || {
        while go() {
            if let Ok(mut c) = TcpStream::connect_timeout(&at, Duration::from_secs(1)) {
                let _ = c.write_all(b"x");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }));
    Ok(threads)
}

/// One row per interval on stdout; returns whether the soak was clean (the
/// sensor ran throughout, no duplicate).
pub fn run(
    s: &SoakSettings,
    output: &Path,
    sensor_pid: u32,
    hup: impl Fn(),
    stats: impl Fn() -> std::collections::BTreeMap<String, u64>,
) -> Result<bool> {
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(s.minutes * 60.0);
    let stop = Arc::new(AtomicBool::new(false));
    let threads = start_load(s, end, &stop)?;
    let mut tally = Tally {
        file: std::fs::File::open(output).with_context(|| format!("opening {}", output.display()))?,
        partial: Vec::new(),
        me: u64::from(std::process::id()),
        events: 0,
        flows: HashMap::new(),
        duplicates: 0,
    };
    println!(
        "{:>8} {:>9} {:>8} {:>10} {:>11} {:>10} {:>9} {:>12} {:>6}",
        "minute", "RSS MB", "CPU %", "events", "UDP flows", "duplicates", "evicted", "unexplained", "lost"
    );
    let counter = |m: &std::collections::BTreeMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0);
    let mut last_evicted = counter(&stats(), "udp_flows_evicted");
    let mut evicted_before = false;
    let mut last_duplicates = 0;
    let mut unexplained = 0;
    let mut last_cpu = super::process_cpu_s(sensor_pid).unwrap_or(0.0);
    let mut last_at = Instant::now();
    let mut last_hup = Instant::now();
    let mut alive = true;
    let mut rss_rows = Vec::new();
    while Instant::now() < end {
        let next = (last_at + s.interval).min(end);
        while Instant::now() < next {
            std::thread::sleep(Duration::from_millis(200).min(next.saturating_duration_since(Instant::now())));
            if last_hup.elapsed() >= Duration::from_secs(60) {
                hup();
                last_hup = Instant::now();
            }
        }
        tally.update()?;
        let Ok(cpu) = super::process_cpu_s(sensor_pid) else {
            alive = false;
            println!("the sensor is gone");
            break;
        };
        let secs = last_at.elapsed().as_secs_f64();
        let rss = vm_rss_kib(sensor_pid);
        rss_rows.push(rss);
        let now = stats();
        let evicted = counter(&now, "udp_flows_evicted").saturating_sub(last_evicted);
        last_evicted = counter(&now, "udp_flows_evicted");
        let new_duplicates = tally.duplicates - last_duplicates;
        last_duplicates = tally.duplicates;
        if evicted == 0 && !evicted_before {
            unexplained += new_duplicates;
        }
        evicted_before = evicted > 0;
        let lost: u64 =
            ["ringbuf_drops", "udp_shed", "queue_udp_shed", "queue_dropped"].iter().map(|k| counter(&now, k)).sum();
        println!(
            "{:>8.1} {:>9.1} {:>8.2} {:>10} {:>11} {:>10} {:>9} {:>12} {:>6}",
            started.elapsed().as_secs_f64() / 60.0,
            rss as f64 / 1024.0,
            (cpu - last_cpu) / secs * 100.0,
            tally.events,
            tally.flows.len(),
            tally.duplicates,
            evicted,
            unexplained,
            lost
        );
        let _ = std::io::stdout().flush();
        last_cpu = cpu;
        last_at = Instant::now();
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    std::thread::sleep(Duration::from_millis(500));
    tally.update()?;
    let (first, last, max) = (
        rss_rows.first().copied().unwrap_or(0),
        rss_rows.last().copied().unwrap_or(0),
        rss_rows.iter().copied().max().unwrap_or(0),
    );
    println!(
        "soak: {:.1} min, RSS first {:.1} MB, last {:.1} MB, max {:.1} MB; {} events; {} UDP flows of the load, {} \
         duplicate reports, {} of them unexplained by evictions",
        started.elapsed().as_secs_f64() / 60.0,
        first as f64 / 1024.0,
        last as f64 / 1024.0,
        max as f64 / 1024.0,
        tally.events,
        tally.flows.len(),
        tally.duplicates,
        unexplained
    );
    Ok(alive && unexplained == 0)
}
