//! sockscope-bench: what the sensor costs and what it misses.
//!
//! For each workload of sockscope-loadgen it runs pairs A B A B ...: A is the
//! load generator alone, B the same with the release sensor running (started
//! with `--output FILE`, ready, workload, caught up, SIGTERM, stats line). It
//! then prints, per workload, the median throughput without and with the
//! sensor, the events the sensor reported for the load generator's pid against
//! those expected, the losses the sensor counted, the sensor's CPU time per
//! reported event and its peak RSS. Needs root (the sensor loads eBPF).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use sockscope::bench::workload::{Report, Workload};
use sockscope::bench::{clock_ticks_per_sec, process_cpu_s, soak};

#[derive(Parser, Debug)]
#[command(name = "sockscope-bench", about = "Measures what the sockscope sensor costs and what it misses (needs root)")]
struct Cli {
    /// CI smoke run: tiny counts, 1 pair (no timing assertion).
    #[arg(long)]
    quick: bool,
    /// Workloads to run, comma separated [default: all].
    #[arg(long, value_enum, value_delimiter = ',')]
    workloads: Vec<Workload>,
    /// A/B pairs per workload [default: 3, --quick: 1].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pairs: Option<u32>,
    /// tcp_storm cycles per run [default: 20000, --quick: 200].
    #[arg(long)]
    tcp_cycles: Option<u64>,
    /// tcp_storm worker threads (each with its own listener).
    #[arg(long, default_value_t = 2)]
    tcp_threads: u32,
    /// udp_one_flow datagrams per run [default: 2000000, --quick: 20000].
    #[arg(long)]
    udp_datagrams: Option<u64>,
    /// udp_many_flows destinations per run [default: 50000, --quick: 500].
    #[arg(long)]
    udp_flows: Option<u64>,
    /// Datagram payload bytes.
    #[arg(long, default_value_t = 64)]
    udp_size: u32,
    /// udp_one_flow: read the datagrams (one more, inbound, event expected).
    #[arg(long)]
    udp_drain: bool,
    /// udp_one_flow: connected sender (send) instead of sendto.
    #[arg(long)]
    udp_connected: bool,
    /// Use ::1 instead of 127.0.0.0/8.
    #[arg(long)]
    ipv6: bool,
    /// The sensor binary [default: `sockscope` next to this binary].
    #[arg(long)]
    sensor: Option<PathBuf>,
    /// The load generator [default: `sockscope-loadgen` next to this binary].
    #[arg(long)]
    loadgen: Option<PathBuf>,
    /// Extra sensor argument (repeatable), e.g. --sensor-arg=--udp-mechanism=packet.
    #[arg(long = "sensor-arg", allow_hyphen_values = true)]
    sensor_args: Vec<String>,
    /// Where the sensor's output files go [default: a new directory in $TMPDIR].
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Keep the sensor's output files.
    #[arg(long)]
    keep_output: bool,
    /// Longest wait for the sensor's `ready`.
    #[arg(long, default_value_t = 60)]
    ready_timeout_secs: u64,
    /// Longest wait, after the workload, for the sensor to catch up.
    #[arg(long, default_value_t = 60)]
    catchup_timeout_secs: u64,
    /// The load generator's global timeout.
    #[arg(long, default_value_t = 300)]
    loadgen_timeout_secs: u64,
    /// Unmeasured load-generator runs per workload before the pairs, so the
    /// first A run does not pay for cold caches alone [default: 1, --quick: 0].
    #[arg(long)]
    warmup: Option<u32>,
    /// Pause between runs, so one run's aftermath (TIME_WAIT, softirq backlog) settles.
    #[arg(long, default_value_t = 1000)]
    pause_ms: u64,
    /// Before each run, wait (at most this long) until the host is quiet:
    /// other work on 2 cores skews A and B. 0 disables the wait [default: 120, --quick: 0].
    #[arg(long)]
    quiet_wait_secs: Option<u64>,
    /// Host CPU busy share (all CPUs, 0.5 s sample) under which the host counts as quiet.
    #[arg(long, default_value_t = 0.15)]
    quiet_busy: f64,
    /// Also write every run's measurements as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Exit 4 if a sensor run missed events that no counter explains, or
    /// reported some with --hooks-only or --probes-only (for CI).
    #[arg(long)]
    check_events: bool,
    /// B runs start the sensor with a config excluding every TCP and UDP
    /// event, which the kernel applies at the probes: no event reaches
    /// userspace (none is expected), so the ratio is what the probes alone cost.
    #[arg(long, conflicts_with = "hooks_only")]
    probes_only: bool,
    /// B runs start the sensor with every program returning at once
    /// (`--hook-floor`): the ratio is what the hook points alone cost, the
    /// floor under any program at those places. No event is expected.
    #[arg(long)]
    hooks_only: bool,
    /// Instead of the workloads: one sensor for this many minutes under a
    /// mixed load (src/bench/soak.rs), reporting RSS, CPU and duplicate UDP
    /// reports every --soak-interval-secs; exit 1 on a duplicate no eviction
    /// explains, or if the sensor dies. The fresh flows fill the default
    /// 65,536-entry flow table in some 5 minutes; then it is thinned.
    #[arg(long, value_parser = parse_minutes)]
    soak_minutes: Option<f64>,
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    soak_interval_secs: u64,
    /// Destinations the soak's repeating UDP socket cycles through.
    #[arg(long, default_value_t = 8000)]
    soak_flows: u16,
}

fn parse_minutes(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(m) if m > 0.0 && m <= 24.0 * 60.0 => Ok(m),
        _ => Err(format!("`{s}`: minutes, more than 0 and at most a day")),
    }
}

impl Cli {
    /// B runs in which no event leaves the kernel (none is expected).
    fn no_events(&self) -> bool {
        self.probes_only || self.hooks_only
    }

    /// What the B runs start beside the load.
    fn b_mode(&self) -> &'static str {
        match (self.probes_only, self.hooks_only) {
            (true, _) => "probes-only",
            (_, true) => "hooks-only",
            _ => "sensor",
        }
    }
}

/// Resolved settings.
struct Config {
    workloads: Vec<Workload>,
    pairs: u32,
    warmup: u32,
    quiet_wait_secs: u64,
    tcp_cycles: u64,
    udp_datagrams: u64,
    udp_flows: u64,
    sensor: PathBuf,
    loadgen: PathBuf,
    sensor_args: Vec<String>,
    /// The sensor has `--state-dir` (keep its state out of /var/lib during a benchmark).
    state_dir_flag: bool,
    work_dir: PathBuf,
    cli: Cli,
}

#[derive(Debug, Default, Clone, Copy, Serialize)]
struct Counts {
    tcp_out: u64,
    tcp_in: u64,
    udp_out: u64,
    udp_in: u64,
}

impl Counts {
    fn total(&self) -> u64 {
        self.tcp_out + self.tcp_in + self.udp_out + self.udp_in
    }
    fn pairs(&self) -> [u64; 4] {
        [self.tcp_out, self.tcp_in, self.udp_out, self.udp_in]
    }
}

#[derive(Debug, Serialize)]
struct SensorRun {
    pid: u32,
    reported: Counts,
    expected: Counts,
    /// Events (ID 3) of other processes in the file: other activity on the host.
    other_pid_events: u64,
    bad_lines: u64,
    caught_up: bool,
    catchup_s: f64,
    /// CPU time of the sensor's threads between `ready` and just before SIGTERM.
    cpu_workload_s: f64,
    /// utime+stime since the sensor started (loading, /proc scan included), just before SIGTERM.
    cpu_total_s: f64,
    vmhwm_kib: u64,
    stats: BTreeMap<String, u64>,
    exit: String,
}

#[derive(Debug, Serialize)]
struct Run {
    workload: Workload,
    pair: u32,
    with_sensor: bool,
    /// What ran beside the load: "none" (A runs), "sensor", "probes-only"
    /// or "hooks-only" (the B runs' mode).
    mode: &'static str,
    /// Host CPU busy share just before the run (0.5 s sample).
    host_busy_before: f64,
    loadgen: Report,
    sensor: Option<SensorRun>,
}

/// Stats-line counters that mean an event was, or may have been, not written.
const LOSS_COUNTERS: [&str; 6] =
    ["ringbuf_drops", "decode_errors", "udp_shed", "queue_udp_shed", "queue_dropped", "tcp_accepts_unresolved"];
/// Counters that explain a missing or unattributed event without being ring-buffer loss.
const OTHER_MISS_COUNTERS: [&str; 5] = [
    "tcp_inbound_never_accepted",
    "tcp_pending_connects_expired",
    "tcp_outbound_unattributed",
    "process_unknown",
    "udp_flows_evicted",
];

fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sockscope-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> Result<ExitCode> {
    if !nix::unistd::geteuid().is_root() {
        bail!("needs root: the sensor loads eBPF programs");
    }
    let cfg = resolve(cli)?;
    std::fs::create_dir_all(&cfg.work_dir).with_context(|| format!("creating {}", cfg.work_dir.display()))?;
    print_header(&cfg);
    if bpf_stats_enabled() {
        println!(
            "  WARNING: kernel.bpf_stats_enabled is 1: every eBPF program run also reads the clock twice, \
             so the probes cost more than they do without it (sysctl -w kernel.bpf_stats_enabled=0)"
        );
    }

    if let Some(minutes) = cfg.cli.soak_minutes {
        return soak(cfg, minutes);
    }

    let mut runs = Vec::new();
    let mut failures = Vec::new();
    for &w in &cfg.workloads {
        for i in 1..=cfg.warmup {
            eprintln!("sockscope-bench: running {} warm-up {i} (not counted)", w.name());
            if let Err(e) = run_loadgen(&cfg, w) {
                failures.push(format!("{} warm-up {i}: {e:#}", w.name()));
            }
            std::thread::sleep(Duration::from_millis(cfg.cli.pause_ms));
        }
        for pair in 1..=cfg.pairs {
            for with_sensor in [false, true] {
                let label =
                    format!("{} pair {pair} {}", w.name(), if with_sensor { "B (sensor)" } else { "A (alone)" });
                let busy = wait_quiet(&cfg);
                eprintln!("sockscope-bench: running {label} (host busy {:.0}% before)", busy * 100.0);
                let r = if with_sensor { run_with_sensor(&cfg, w, pair) } else { run_alone(&cfg, w, pair) };
                match r {
                    Ok(mut run) => {
                        run.host_busy_before = busy;
                        eprintln!("sockscope-bench:   {}", run_summary(&run));
                        runs.push(run);
                    }
                    Err(e) => {
                        eprintln!("sockscope-bench: {label} failed: {e:#}");
                        failures.push(format!("{label}: {e:#}"));
                    }
                }
                std::thread::sleep(Duration::from_millis(cfg.cli.pause_ms));
            }
        }
    }

    print_runs(&runs);
    print_summary(&cfg, &runs);
    let unexplained = print_targets(&cfg, &runs);
    print_footer(&cfg);
    if let Some(path) = &cfg.cli.json {
        let text = serde_json::to_string_pretty(&runs).context("encoding the runs")?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    if !cfg.cli.keep_output {
        let _ = std::fs::remove_dir_all(&cfg.work_dir);
    }
    if !failures.is_empty() {
        println!("\nFAILED RUNS ({}):", failures.len());
        for f in &failures {
            println!("  {f}");
        }
        return Ok(ExitCode::FAILURE);
    }
    if cfg.cli.check_events && unexplained {
        println!(
            "\n--check-events: a sensor run missed events that no counter explains, or reported events where none may \
             leave the kernel"
        );
        return Ok(ExitCode::from(4));
    }
    Ok(ExitCode::SUCCESS)
}

/// `--soak-minutes`: one sensor, the soak's load, a row per interval.
fn soak(cfg: Config, minutes: f64) -> Result<ExitCode> {
    let output = cfg.work_dir.join("soak.jsonl");
    let state = cfg.work_dir.join("soak-state");
    let sensor = Sensor::start(&cfg, &output, &state)?;
    let pid = sensor.pid();
    println!("soak: {minutes} min, sensor pid {pid}, a row every {} s", cfg.cli.soak_interval_secs);
    let settings = soak::SoakSettings {
        minutes,
        interval: Duration::from_secs(cfg.cli.soak_interval_secs),
        flows: cfg.cli.soak_flows,
    };
    let hup = || {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGHUP);
    };
    // The sensor's counters now (SIGUSR1: a stats line on stderr).
    let stats = || -> BTreeMap<String, u64> {
        while sensor.stats_rx.try_recv().is_ok() {}
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGUSR1);
        sensor.stats_rx.recv_timeout(Duration::from_secs(5)).map(|l| parse_stats(&l)).unwrap_or_default()
    };
    let clean = soak::run(&settings, &output, pid, hup, stats)?;
    let (exit, stats) = sensor.stop()?;
    let stat = |k: &str| stats.get(k).copied().unwrap_or(0);
    let lost: u64 = LOSS_COUNTERS.iter().map(|k| stat(k)).sum();
    println!(
        "soak: sensor {exit}; lost {lost}, udp_flows_evicted {}, udp_flows_walked_peak {}, events_written {}",
        stat("udp_flows_evicted"),
        stat("udp_flows_walked_peak"),
        stat("events_written")
    );
    if !cfg.cli.keep_output {
        let _ = std::fs::remove_dir_all(&cfg.work_dir);
    }
    Ok(if clean { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn resolve(cli: Cli) -> Result<Config> {
    let here = std::env::current_exe().context("locating this binary")?;
    let dir = here.parent().ok_or_else(|| anyhow!("{} has no parent directory", here.display()))?.to_path_buf();
    let sensor = cli.sensor.clone().unwrap_or_else(|| dir.join("sockscope"));
    let loadgen = cli.loadgen.clone().unwrap_or_else(|| dir.join("sockscope-loadgen"));
    for (what, p) in [("sensor", &sensor), ("load generator", &loadgen)] {
        if !p.is_file() {
            bail!("{what} not found at {} (build with `cargo build --release`, or pass its path)", p.display());
        }
    }
    let help = Command::new(&sensor)
        .arg("--help")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} --help", sensor.display()))?;
    let state_dir_flag = String::from_utf8_lossy(&help.stdout).contains("--state-dir");
    let q = cli.quick;
    let workloads = if cli.workloads.is_empty() {
        vec![Workload::TcpStorm, Workload::UdpOneFlow, Workload::UdpManyFlows]
    } else {
        cli.workloads.clone()
    };
    let work_dir = cli
        .work_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("sockscope-bench-{}", std::process::id())));
    Ok(Config {
        workloads,
        pairs: cli.pairs.unwrap_or(if q { 1 } else { 3 }),
        warmup: cli.warmup.unwrap_or(if q { 0 } else { 1 }),
        quiet_wait_secs: cli.quiet_wait_secs.unwrap_or(if q { 0 } else { 120 }),
        tcp_cycles: cli.tcp_cycles.unwrap_or(if q { 200 } else { 20_000 }),
        udp_datagrams: cli.udp_datagrams.unwrap_or(if q { 20_000 } else { 2_000_000 }),
        udp_flows: cli.udp_flows.unwrap_or(if q { 500 } else { 50_000 }),
        sensor,
        loadgen,
        sensor_args: cli.sensor_args.clone(),
        state_dir_flag,
        work_dir,
        cli,
    })
}

fn loadgen_command(cfg: &Config, w: Workload) -> Command {
    let mut c = Command::new(&cfg.loadgen);
    c.arg(w.name()).arg("--timeout-secs").arg(cfg.cli.loadgen_timeout_secs.to_string());
    // Each run on a clean network stack: tcp_storm leaves 20,000 TIME_WAIT
    // sockets, whose expiry 60 s later landed in other runs (A runs of one
    // bench measured 110k to 163k cycles/s).
    c.arg("--fresh-netns");
    let count = match w {
        Workload::TcpStorm => cfg.tcp_cycles,
        Workload::UdpOneFlow => cfg.udp_datagrams,
        Workload::UdpManyFlows => cfg.udp_flows,
    };
    c.arg("--count").arg(count.to_string());
    match w {
        Workload::TcpStorm => {
            c.arg("--threads").arg(cfg.cli.tcp_threads.to_string());
        }
        Workload::UdpOneFlow => {
            c.arg("--size").arg(cfg.cli.udp_size.to_string());
            if cfg.cli.udp_drain {
                c.arg("--udp-drain");
            }
            if cfg.cli.udp_connected {
                c.arg("--udp-connected");
            }
        }
        Workload::UdpManyFlows => {
            c.arg("--size").arg(cfg.cli.udp_size.to_string());
        }
    }
    if cfg.cli.ipv6 {
        c.arg("--ipv6");
    }
    c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

/// Waits for `child`, killing it at `deadline`.
fn wait_until(child: &mut Child, deadline: Instant) -> Result<Option<ExitStatus>> {
    loop {
        if let Some(st) = child.try_wait().context("waiting for a child")? {
            return Ok(Some(st));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the load generator to its end (bounded) and parses its result line.
fn run_loadgen(cfg: &Config, w: Workload) -> Result<Report> {
    let mut child = loadgen_command(cfg, w).spawn().with_context(|| format!("starting {}", cfg.loadgen.display()))?;
    // Its own timeout stops it; this one only guards against a hang.
    let deadline = Instant::now() + Duration::from_secs(cfg.cli.loadgen_timeout_secs + 30);
    let status = wait_until(&mut child, deadline)?;
    // Its output is a few lines: the pipes cannot have filled while we waited.
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = child.stdout.take() {
        s.read_to_string(&mut out).context("reading the load generator's stdout")?;
    }
    if let Some(mut s) = child.stderr.take() {
        s.read_to_string(&mut err).context("reading the load generator's stderr")?;
    }
    let status = status.ok_or_else(|| anyhow!("load generator hung; killed. stderr: {}", err.trim()))?;
    if !status.success() {
        bail!("load generator {status}: {}", err.trim());
    }
    let last = out.lines().rev().find(|l| l.contains("\"ops\"")).ok_or_else(|| anyhow!("no result line in {out:?}"))?;
    serde_json::from_str(last).with_context(|| format!("parsing the load generator's result {last:?}"))
}

fn run_alone(cfg: &Config, w: Workload, pair: u32) -> Result<Run> {
    let loadgen = run_loadgen(cfg, w)?;
    Ok(Run { workload: w, pair, with_sensor: false, mode: "none", host_busy_before: 0.0, loadgen, sensor: None })
}

/// A running sensor; killed on drop if still running.
struct Sensor {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    stats_rx: Receiver<String>,
}

impl Drop for Sensor {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `line` has the word `ready` (not "already").
fn is_ready_line(line: &str) -> bool {
    line.split(|c: char| !c.is_ascii_alphanumeric() && c != '_').any(|w| w == "ready")
}

impl Sensor {
    fn start(cfg: &Config, output: &Path, state: &Path) -> Result<Sensor> {
        let mut cmd = Command::new(&cfg.sensor);
        cmd.arg("--output").arg(output);
        if cfg.state_dir_flag {
            cmd.arg("--state-dir").arg(state);
        }
        if cfg.cli.probes_only {
            let config = cfg.work_dir.join("exclude-all.xml");
            std::fs::write(&config, EXCLUDE_ALL).with_context(|| format!("writing {}", config.display()))?;
            cmd.arg("--config").arg(config);
        }
        if cfg.cli.hooks_only {
            cmd.arg("--hook-floor");
        }
        cmd.args(&cfg.sensor_args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| format!("starting {}", cfg.sensor.display()))?;
        let pipe = child.stderr.take().ok_or_else(|| anyhow!("sensor stderr not piped"))?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = channel();
        let (stats_tx, stats_rx) = channel();
        let keep = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if is_ready_line(&line) {
                    let _ = ready_tx.send(());
                }
                if let Some(i) = line.find("stats: ") {
                    let _ = stats_tx.send(line[i + 7..].to_string());
                }
                if let Ok(mut v) = keep.lock() {
                    // Diagnostics only: the last lines are enough.
                    if v.len() >= 200 {
                        v.remove(0);
                    }
                    v.push(line);
                }
            }
        });
        let mut sensor = Sensor { child, lines, stats_rx };
        let deadline = Instant::now() + Duration::from_secs(cfg.cli.ready_timeout_secs);
        loop {
            if ready_rx.recv_timeout(Duration::from_millis(50)).is_ok() {
                return Ok(sensor);
            }
            if let Some(st) = sensor.child.try_wait().context("waiting for the sensor")? {
                std::thread::sleep(Duration::from_millis(100));
                bail!("sensor exited before ready ({st}); stderr:\n{}", sensor.stderr_tail());
            }
            if Instant::now() >= deadline {
                bail!("sensor not ready in {} s; stderr:\n{}", cfg.cli.ready_timeout_secs, sensor.stderr_tail());
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stderr_tail(&self) -> String {
        self.lines
            .lock()
            .map(|v| v.iter().rev().take(20).rev().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }

    /// SIGTERM, bounded wait (then SIGKILL), and the stats line.
    fn stop(mut self) -> Result<(String, BTreeMap<String, u64>)> {
        let pid = Pid::from_raw(i32::try_from(self.pid()).context("sensor pid")?);
        kill(pid, Signal::SIGTERM).context("sending SIGTERM to the sensor")?;
        let status = wait_until(&mut self.child, Instant::now() + Duration::from_secs(30))?;
        let exit = match status {
            Some(st) => st.to_string(),
            None => "did not stop in 30 s; killed".to_string(),
        };
        let stats = match self.stats_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(line) => parse_stats(&line),
            Err(_) => bail!("no stats line from the sensor ({exit}); stderr:\n{}", self.stderr_tail()),
        };
        Ok((exit, stats))
    }
}

fn parse_stats(line: &str) -> BTreeMap<String, u64> {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| v.parse().ok().map(|v| (k.to_string(), v)))
        .collect()
}

/// CPU time of the process's live threads, seconds, to the nanosecond: the
/// sum of each thread's time on a CPU (/proc/PID/task/*/schedstat, first
/// field). The sensor's threads live from `ready` to SIGTERM, so over that
/// window it is the process's CPU time without the 10 ms ticks of
/// utime+stime (a quarter of a µs per event in a 40,000-event run).
fn threads_cpu_s(pid: u32) -> Result<f64> {
    let dir = format!("/proc/{pid}/task");
    let mut ns = 0u64;
    for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {dir}"))? {
        let path = entry.with_context(|| format!("listing {dir}"))?.path().join("schedstat");
        // A thread that ended since the listing has no file: it is not counted.
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let first = text.split_whitespace().next().ok_or_else(|| anyhow!("empty {}", path.display()))?;
        ns += first.parse::<u64>().with_context(|| format!("{}: {text:?}", path.display()))?;
    }
    Ok(ns as f64 / 1e9)
}

/// VmHWM (peak resident set), KiB.
fn peak_rss_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let line = text.lines().find(|l| l.starts_with("VmHWM:")).ok_or_else(|| anyhow!("{path}: no VmHWM"))?;
    line.split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow!("{path}: bad {line:?}"))?
        .parse()
        .with_context(|| format!("{path}: {line:?}"))
}

/// Counts, incrementally, the sensor's events of one pid in its output file.
struct EventCounter {
    file: File,
    partial: Vec<u8>,
    pid: u32,
    mine: Counts,
    other_pid: u64,
    bad: u64,
    lines: u64,
}

#[derive(Deserialize)]
struct EventFields {
    #[serde(rename = "EventID")]
    event_id: u64,
    #[serde(rename = "ProcessId")]
    process_id: Option<u64>,
    #[serde(rename = "Protocol")]
    protocol: Option<String>,
    #[serde(rename = "Initiated")]
    initiated: Option<bool>,
}

impl EventCounter {
    fn open(path: &Path, pid: u32) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        Ok(Self { file, partial: Vec::new(), pid, mine: Counts::default(), other_pid: 0, bad: 0, lines: 0 })
    }

    /// Reads what was appended since the last call.
    fn update(&mut self) -> Result<()> {
        let mut buf = Vec::new();
        self.file.read_to_end(&mut buf).context("reading the sensor's output")?;
        self.partial.extend_from_slice(&buf);
        // Only complete lines: the sensor may be mid-line.
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else { return Ok(()) };
        let rest = self.partial.split_off(end + 1);
        let complete = std::mem::replace(&mut self.partial, rest);
        for line in complete.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            self.lines += 1;
            match serde_json::from_slice::<EventFields>(line) {
                Ok(ev) if ev.event_id != 3 => {}
                Ok(ev) if ev.process_id != Some(u64::from(self.pid)) => self.other_pid += 1,
                Ok(ev) => match (ev.protocol.as_deref(), ev.initiated) {
                    (Some("tcp"), Some(true)) => self.mine.tcp_out += 1,
                    (Some("tcp"), Some(false)) => self.mine.tcp_in += 1,
                    (Some("udp"), Some(true)) => self.mine.udp_out += 1,
                    (Some("udp"), Some(false)) => self.mine.udp_in += 1,
                    _ => self.bad += 1,
                },
                Err(_) => self.bad += 1,
            }
        }
        Ok(())
    }
}

/// `--probes-only`: a Sysmon config whose exclusions the sensor hands to the
/// kernel (protocol `is any`), so no TCP or UDP event leaves the probes.
const EXCLUDE_ALL: &str = r#"<Sysmon schemaversion="4.81">
  <EventFiltering>
    <RuleGroup name="" groupRelation="or">
      <NetworkConnect onmatch="exclude">
        <Protocol condition="is any">tcp;udp</Protocol>
      </NetworkConnect>
    </RuleGroup>
  </EventFiltering>
</Sysmon>
"#;

fn expected(w: Workload, lg: &Report, drain: bool, no_events: bool) -> Counts {
    if no_events {
        return Counts::default();
    }
    match w {
        Workload::TcpStorm => Counts { tcp_out: lg.ops, tcp_in: lg.ops, ..Counts::default() },
        Workload::UdpOneFlow => {
            Counts { udp_out: u64::from(lg.ops > 0), udp_in: u64::from(drain && lg.received > 0), ..Counts::default() }
        }
        Workload::UdpManyFlows => Counts { udp_out: lg.ops, ..Counts::default() },
    }
}

fn run_with_sensor(cfg: &Config, w: Workload, pair: u32) -> Result<Run> {
    let output = cfg.work_dir.join(format!("{}-pair{pair}.jsonl", w.name()));
    let state = cfg.work_dir.join("state");
    std::fs::create_dir_all(&state).with_context(|| format!("creating {}", state.display()))?;
    // A fresh file per run: the sensor appends.
    File::create(&output).with_context(|| format!("creating {}", output.display()))?;
    let sensor = Sensor::start(cfg, &output, &state)?;
    let spid = sensor.pid();
    let cpu_ready = threads_cpu_s(spid)?;

    let loadgen = run_loadgen(cfg, w)?;
    let exp = expected(w, &loadgen, cfg.cli.udp_drain, cfg.cli.no_events());

    // Caught up: every expected event is there, or the file stopped growing
    // for 2 s (the sensor flushes after every 100 ms poll), or the bound.
    let mut counter = EventCounter::open(&output, loadgen.pid)?;
    let t0 = Instant::now();
    let bound = Duration::from_secs(cfg.cli.catchup_timeout_secs);
    let (mut last_lines, mut last_change) = (0, t0);
    let caught_up = loop {
        counter.update()?;
        if counter.mine.total() >= exp.total() {
            // Give late duplicates a chance to show (a few polls).
            std::thread::sleep(Duration::from_millis(300));
            counter.update()?;
            break true;
        }
        let now = Instant::now();
        if counter.lines != last_lines {
            (last_lines, last_change) = (counter.lines, now);
        } else if now - last_change >= Duration::from_secs(2) || now - t0 >= bound {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let catchup_s = t0.elapsed().as_secs_f64();

    let cpu_end = threads_cpu_s(spid)?;
    let cpu_total_s = process_cpu_s(spid)?;
    let vmhwm_kib = peak_rss_kib(spid)?;
    let (exit, stats) = sensor.stop()?;
    // The sensor drains and flushes at exit: count those too.
    counter.update()?;
    if !cfg.cli.keep_output {
        let _ = std::fs::remove_file(&output);
    }
    Ok(Run {
        workload: w,
        pair,
        with_sensor: true,
        mode: cfg.cli.b_mode(),
        host_busy_before: 0.0,
        loadgen: loadgen.clone(),
        sensor: Some(SensorRun {
            pid: spid,
            reported: counter.mine,
            expected: exp,
            other_pid_events: counter.other_pid,
            bad_lines: counter.bad,
            caught_up,
            catchup_s,
            cpu_workload_s: cpu_end - cpu_ready,
            cpu_total_s,
            vmhwm_kib,
            stats,
            exit,
        }),
    })
}

/// (busy, total) jiffies of all CPUs, from the first line of /proc/stat.
fn cpu_jiffies() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest is inside user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Share of all CPUs busy over `d`.
fn host_busy(d: Duration) -> f64 {
    let a = cpu_jiffies();
    std::thread::sleep(d);
    match (a, cpu_jiffies()) {
        (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => (b1 - b0) as f64 / (t1 - t0) as f64,
        _ => 0.0,
    }
}

/// Waits, bounded, until the host is quiet; returns the last busy share seen.
fn wait_quiet(cfg: &Config) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(cfg.quiet_wait_secs);
    let mut said = false;
    loop {
        let busy = host_busy(Duration::from_millis(500));
        if busy < cfg.cli.quiet_busy || Instant::now() >= deadline {
            if busy >= cfg.cli.quiet_busy && cfg.quiet_wait_secs > 0 {
                eprintln!("sockscope-bench: host still {:.0}% busy; running anyway", busy * 100.0);
            }
            return busy;
        }
        if !said {
            eprintln!("sockscope-bench: host {:.0}% busy (other work); waiting for it to be quiet", busy * 100.0);
            said = true;
        }
    }
}

fn stat(s: &SensorRun, k: &str) -> u64 {
    s.stats.get(k).copied().unwrap_or(0)
}

fn lost(s: &SensorRun) -> u64 {
    LOSS_COUNTERS.iter().map(|k| stat(s, k)).sum()
}

/// Expected events not in the file, category by category.
fn missing(s: &SensorRun) -> u64 {
    s.expected.pairs().iter().zip(s.reported.pairs()).map(|(e, r)| e.saturating_sub(r)).sum()
}

fn extra(s: &SensorRun) -> u64 {
    s.expected.pairs().iter().zip(s.reported.pairs()).map(|(e, r)| r.saturating_sub(*e)).sum()
}

fn cpu_us_per_event(cpu_s: f64, events: u64) -> Option<f64> {
    (events > 0).then(|| cpu_s * 1e6 / events as f64)
}

/// µs per event for the table; under one clock tick only a bound is known.
fn cpu_cell(cpu_s: f64, events: u64) -> String {
    match cpu_us_per_event(cpu_s, events) {
        None => "-".to_string(),
        Some(_) if cpu_s == 0.0 => format!("<{:.2}", 1e6 / clock_ticks_per_sec() / events as f64),
        Some(v) => format!("{v:.2}"),
    }
}

fn run_summary(r: &Run) -> String {
    let mut s = format!("{} ops in {:.3} s = {:.0} ops/s", r.loadgen.ops, r.loadgen.elapsed_s, r.loadgen.ops_per_s);
    if let Some(x) = &r.sensor {
        s += &format!(
            "; events {}/{} (missing {}, extra {}), lost {}, cpu {:.3} s, VmHWM {} KiB",
            x.reported.total(),
            x.expected.total(),
            missing(x),
            extra(x),
            lost(x),
            x.cpu_workload_s,
            x.vmhwm_kib
        );
    }
    s
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

fn mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{x:.prec$}"))
}

fn print_header(cfg: &Config) {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("sockscope-bench{}", if cfg.cli.quick { " --quick (smoke run: counts too small for timing)" } else { "" });
    println!("  kernel {}, {cpus} CPUs, load average {}", kernel.trim(), loadavg());
    println!("  sensor {} {}", cfg.sensor.display(), cfg.sensor_args.join(" "));
    println!("  loadgen {}", cfg.loadgen.display());
    println!(
        "  workloads {}; {} pair(s) A B per workload (A = loadgen alone, B = with the sensor), after {} warm-up run(s)",
        cfg.workloads.iter().map(|w| w.name()).collect::<Vec<_>>().join(","),
        cfg.pairs,
        cfg.warmup
    );
    println!(
        "  tcp_storm {} cycles on {} threads (a listener each); udp_one_flow {} x {} B ({}{}); udp_many_flows {} destinations; {}",
        cfg.tcp_cycles,
        cfg.cli.tcp_threads,
        cfg.udp_datagrams,
        cfg.cli.udp_size,
        if cfg.cli.udp_connected { "connected send" } else { "sendto" },
        if cfg.cli.udp_drain { ", receiver reads" } else { ", receiver bound, not read" },
        cfg.udp_flows,
        if cfg.cli.ipv6 { "::1" } else { "127.0.0.0/8" }
    );
    if cfg.cli.probes_only {
        println!(
            "  --probes-only: B runs exclude every event in the kernel; the ratio is the probes' own cost \
             (events expected: 0)"
        );
    }
    if cfg.cli.hooks_only {
        println!(
            "  --hooks-only: B runs attach every probe but each returns at once; the ratio is what the hook \
             points alone cost (events expected: 0)"
        );
    }
    let others = other_sensors();
    if !others.is_empty() {
        println!("  WARNING: other sockscope processes are running (pids {others:?}): their probes load both A and B");
    }
}

/// Whether the kernel times every eBPF program run (bpftool's run_time_ns).
fn bpf_stats_enabled() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|s| s.trim() == "1")
}

fn print_footer(cfg: &Config) {
    println!("\n  load average at the end {}", loadavg());
    println!(
        "  CPU is the sensor's: from `ready` to just before SIGTERM (cpu), its threads' time on a CPU \
         (/proc/PID/task/*/schedstat, ns); since start (cpu_total), utime+stime (/proc/PID/stat, {} ticks/s). \
         In-kernel eBPF time is charged to the load generator, not the sensor.",
        clock_ticks_per_sec()
    );
    if cfg.cli.keep_output {
        println!("  sensor output kept in {}", cfg.work_dir.display());
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_string())
}

/// Other sensor processes (from /proc/*/comm), which would skew A and B alike.
fn other_sensors() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sockscope"))
        .collect()
}

fn print_runs(runs: &[Run]) {
    println!("\nRuns (in order; busy% = host CPU busy in the 0.5 s before the run):");
    println!(
        "{:<15} {:>4} {:>2} {:>5} {:>9} {:>9} {:>12} | {:>8} {:>8} {:>7} {:>7} {:>6} {:>7} {:>5} | {:>8} {:>9} {:>9} {:>7} {:>8}",
        "workload",
        "pair",
        "AB",
        "busy%",
        "ops",
        "elapsed_s",
        "ops/s",
        "tcp_out",
        "tcp_in",
        "udp_out",
        "udp_in",
        "expect",
        "missing",
        "lost",
        "cpu_s",
        "cpu_us/ev",
        "cpu_total",
        "rss_MB",
        "catchup"
    );
    for r in runs {
        let lg = &r.loadgen;
        print!(
            "{:<15} {:>4} {:>2} {:>5.0} {:>9} {:>9.3} {:>12.1} |",
            r.workload.name(),
            r.pair,
            if r.with_sensor { "B" } else { "A" },
            r.host_busy_before * 100.0,
            lg.ops,
            lg.elapsed_s,
            lg.ops_per_s
        );
        match &r.sensor {
            None => println!(),
            Some(s) => println!(
                " {:>8} {:>8} {:>7} {:>7} {:>6} {:>7} {:>5} | {:>8.3} {:>9} {:>9.3} {:>7.1} {:>7.2}s{}",
                s.reported.tcp_out,
                s.reported.tcp_in,
                s.reported.udp_out,
                s.reported.udp_in,
                s.expected.total(),
                missing(s),
                lost(s),
                s.cpu_workload_s,
                cpu_cell(s.cpu_workload_s, s.reported.total()),
                s.cpu_total_s,
                mb(s.vmhwm_kib),
                s.catchup_s,
                if s.caught_up { "" } else { " (stalled)" }
            ),
        }
    }
    // Counters behind the numbers, for the sensor runs.
    println!("\nSensor counters per B run (whole host, not only the load generator; nonzero loss-related ones):");
    for r in runs {
        let Some(s) = &r.sensor else { continue };
        let mut parts: Vec<String> = ["events_written", "udp_packets_suppressed", "cpu_boosts"]
            .iter()
            .chain(LOSS_COUNTERS.iter())
            .map(|k| format!("{k}={}", stat(s, k)))
            .collect();
        parts.extend(OTHER_MISS_COUNTERS.iter().filter(|k| stat(s, k) > 0).map(|k| format!("{k}={}", stat(s, k))));
        if extra(s) > 0 {
            parts.push(format!("extra_events={}", extra(s)));
        }
        if s.other_pid_events > 0 {
            parts.push(format!("other_pids_events={}", s.other_pid_events));
        }
        if s.bad_lines > 0 {
            parts.push(format!("unparsed_lines={}", s.bad_lines));
        }
        println!("  {} pair {} ({}): {}", r.workload.name(), r.pair, s.exit, parts.join(" "));
    }
}

struct Summary {
    pairs: usize,
    without: Option<f64>,
    with: Option<f64>,
    ratio: Option<f64>,
    reported_min: u64,
    reported_max: u64,
    expected_max: u64,
    missing_total: u64,
    lost_total: u64,
    cpu_us: Option<f64>,
    /// cpu_us for the table (a bound when no run used a clock tick).
    cpu_cell: String,
    cpu_total_us: Option<f64>,
    rss_kib: u64,
}

fn summarize(runs: &[Run], w: Workload) -> Summary {
    let of = |b: bool| runs.iter().filter(move |r| r.workload == w && r.with_sensor == b);
    let without = median(of(false).map(|r| r.loadgen.ops_per_s).collect());
    let with = median(of(true).map(|r| r.loadgen.ops_per_s).collect());
    let sensors: Vec<&SensorRun> = of(true).filter_map(|r| r.sensor.as_ref()).collect();
    Summary {
        pairs: of(false).count().min(of(true).count()),
        without,
        with,
        ratio: without.zip(with).and_then(|(a, b)| (a > 0.0).then(|| b / a)),
        reported_min: sensors.iter().map(|s| s.reported.total()).min().unwrap_or(0),
        reported_max: sensors.iter().map(|s| s.reported.total()).max().unwrap_or(0),
        expected_max: sensors.iter().map(|s| s.expected.total()).max().unwrap_or(0),
        missing_total: sensors.iter().map(|s| missing(s)).sum(),
        lost_total: sensors.iter().map(|s| lost(s)).sum(),
        cpu_cell: if !sensors.is_empty() && sensors.iter().all(|s| s.cpu_workload_s == 0.0) {
            cpu_cell(0.0, sensors.iter().map(|s| s.reported.total()).min().unwrap_or(0))
        } else {
            opt(
                median(sensors.iter().filter_map(|s| cpu_us_per_event(s.cpu_workload_s, s.reported.total())).collect()),
                2,
            )
        },
        cpu_us: median(sensors.iter().filter_map(|s| cpu_us_per_event(s.cpu_workload_s, s.reported.total())).collect()),
        cpu_total_us: median(
            sensors.iter().filter_map(|s| cpu_us_per_event(s.cpu_total_s, s.reported.total())).collect(),
        ),
        rss_kib: sensors.iter().map(|s| s.vmhwm_kib).max().unwrap_or(0),
    }
}

fn print_summary(cfg: &Config, runs: &[Run]) {
    println!("\nSummary (medians over the pairs; events per B run as min..max of reported / expected):");
    println!(
        "{:<15} {:>5} {:>13} {:>13} {:>7} {:>17} {:>9} {:>10} {:>10} {:>14} {:>11}",
        "workload",
        "pairs",
        "without ops/s",
        "with ops/s",
        "ratio",
        "events rep/exp",
        "missing",
        "lost",
        "cpu_us/ev",
        "cpu_total_us/ev",
        "peak_rss_MB"
    );
    for &w in &cfg.workloads {
        let s = summarize(runs, w);
        let ev = if s.reported_min == s.reported_max {
            format!("{}/{}", s.reported_min, s.expected_max)
        } else {
            format!("{}..{}/{}", s.reported_min, s.reported_max, s.expected_max)
        };
        println!(
            "{:<15} {:>5} {:>13} {:>13} {:>7} {:>17} {:>9} {:>10} {:>10} {:>14} {:>11.2}",
            w.name(),
            s.pairs,
            opt(s.without, 1),
            opt(s.with, 1),
            opt(s.ratio, 4),
            ev,
            s.missing_total,
            s.lost_total,
            s.cpu_cell,
            opt(s.cpu_total_us, 2),
            mb(s.rss_kib)
        );
    }
    println!("  (missing and lost are summed over the B runs; lost = {} from the stats line)", LOSS_COUNTERS.join("+"));
}

/// Prints each target met/missed; returns whether events went missing
/// unexplained (or appeared where none may).
fn print_targets(cfg: &Config, runs: &[Run]) -> bool {
    println!("\nTargets{}:", if cfg.cli.quick { " (quick run: timing not meaningful)" } else { "" });
    if cfg.cli.no_events() {
        println!("  (no event leaves the kernel in these B runs, so the event and CPU targets are not checked)");
    }
    let mark = |ok: bool| if ok { "met   " } else { "MISSED" };
    let mut unexplained = false;
    let mut cpu_worst: Option<(f64, &str)> = None;
    for &w in &cfg.workloads {
        let s = summarize(runs, w);
        let sensors: Vec<&SensorRun> =
            runs.iter().filter(|r| r.workload == w && r.with_sensor).filter_map(|r| r.sensor.as_ref()).collect();
        if sensors.is_empty() {
            println!("  {}: no completed sensor run", w.name());
            continue;
        }
        // Every missing event should be matched by a counted loss; where no
        // event may leave the kernel, none may appear.
        let explained = sensors.iter().all(|x| missing(x) <= lost(x));
        unexplained |= !explained;
        if cfg.cli.no_events() && sensors.iter().any(|x| extra(x) > 0) {
            println!("  [FAILED] {}: events reported in runs where none may leave the kernel", w.name());
            unexplained = true;
        }
        let all_exact = sensors.iter().all(|x| missing(x) == 0 && extra(x) == 0);
        let ratio = s.ratio.unwrap_or(0.0);
        let throughput_target = match w {
            Workload::TcpStorm => Some(0.95),
            Workload::UdpOneFlow => Some(0.98),
            Workload::UdpManyFlows => None,
        };
        if let Some(target) = throughput_target {
            println!(
                "  [{}] {} throughput >= {:.0}% of without: {:.2}% ({:+.2} points)",
                mark(ratio >= target),
                w.name(),
                target * 100.0,
                ratio * 100.0,
                (ratio - target) * 100.0
            );
        }
        // --probes-only: no event is expected, so the event targets say nothing.
        if !cfg.cli.no_events() {
            let (met, text) = match w {
                Workload::TcpStorm => (
                    all_exact && s.lost_total == 0,
                    format!(
                        "tcp_storm every event (2 per cycle), none lost: reported {}..{} of {}, missing {}, lost {}",
                        s.reported_min, s.reported_max, s.expected_max, s.missing_total, s.lost_total
                    ),
                ),
                Workload::UdpOneFlow => (
                    all_exact,
                    format!(
                        "udp_one_flow exactly {} event(s) per run: reported {}..{}",
                        s.expected_max, s.reported_min, s.reported_max
                    ),
                ),
                Workload::UdpManyFlows => (
                    explained,
                    format!(
                        "udp_many_flows every flow reported or each loss counted: missing {}, lost {}",
                        s.missing_total, s.lost_total
                    ),
                ),
            };
            println!("  [{}] {text}", mark(met));
        }
        // One event per run says nothing about the cost per event.
        if w != Workload::UdpOneFlow {
            if let Some(c) = s.cpu_us {
                if cpu_worst.is_none_or(|(v, _)| c > v) {
                    cpu_worst = Some((c, w.name()));
                }
            }
        }
    }
    if let Some((c, w)) = cpu_worst {
        println!(
            "  [{}] sensor CPU <= 5 us per event (worst median, {w}): {c:.2} us ({:+.2} us)",
            mark(c <= 5.0),
            c - 5.0
        );
    }
    let rss = runs.iter().filter_map(|r| r.sensor.as_ref()).map(|s| s.vmhwm_kib).max().unwrap_or(0);
    if rss > 0 {
        println!("  [{}] peak RSS <= 50 MB: {:.2} MB ({} KiB)", mark(mb(rss) <= 50.0), mb(rss), rss);
    }
    unexplained
}
