//! The command line. Every tunable is a setting with a safe default; with no
//! arguments the sensor reports every TCP connection as JSON lines on stdout.
use std::path::PathBuf;

use clap::Parser;

use crate::backpressure::pace::CpuPolicy;
use crate::dns::DnsMode;
use crate::format::{Format, JsonTypes};
use crate::probes::{SendmsgHook, UdpMechanism};
use crate::track::lifecycle::LifecycleMode;

#[derive(Debug, Parser)]
#[command(name = "sockscope", version, about = "Reports every network connection with the process behind it (eBPF)")]
pub struct Cli {
    /// Append events to PATH instead of writing them to stdout.
    #[arg(short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,

    /// Also send events to the local syslog socket (RFC 3164, as Sysmon for Linux does).
    #[arg(long)]
    pub syslog: bool,

    /// The local syslog socket used by --syslog.
    #[arg(long, value_name = "PATH", default_value = crate::sink::syslog::DEFAULT_LOCAL_PATH)]
    pub syslog_socket: PathBuf,

    /// Also send events to a remote syslog receiver: udp://HOST[:PORT] or
    /// tcp://HOST[:PORT] (port 514 by default).
    #[arg(long, value_name = "URL", value_parser = parse_remote)]
    pub syslog_remote: Option<crate::sink::syslog::RemoteTarget>,

    /// The message form of --syslog-remote. rfc3164: "<14>Mmm dd hh:mm:ss HOST
    /// sysmon: MSG", what rsyslog forwards of Sysmon's lines (what Wazuh's and
    /// Elastic's Sysmon for Linux parsers expect). rfc5424: "<14>1
    /// 2026-11-29T16:37:54.638341+00:00 HOST sysmon PID - - MSG".
    #[arg(long, value_enum, value_name = "FORM", default_value_t = crate::sink::syslog::RemoteFormat::Rfc3164)]
    pub syslog_remote_format: crate::sink::syslog::RemoteFormat,

    /// Message framing of --syslog-remote over TCP: a newline after each
    /// message (rsyslog omfwd's) or "LEN SP MSG" octet counting (RFC 6587).
    /// Default: newline with rfc3164, octet-counted with rfc5424.
    #[arg(long, value_enum, value_name = "FRAMING")]
    pub syslog_remote_framing: Option<crate::sink::syslog::Framing>,

    /// Put the pid in RFC 3164 syslog messages, local and remote
    /// ("sysmon[PID]:"); Sysmon does not.
    #[arg(long)]
    pub syslog_pid: bool,

    /// The syslog ident (RFC 3164 TAG, RFC 5424 APP-NAME).
    #[arg(long, value_name = "NAME", default_value = crate::sink::syslog::DEFAULT_IDENT)]
    pub syslog_ident: String,

    /// Event format.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub format: Format,

    /// Value types of the JSON form. typed: numbers and booleans as JSON
    /// numbers and booleans. sysmon: every value a string, as Sysmon writes it
    /// ("true", "3", ports as strings), for rules and pipelines built on
    /// Sysmon's types (Sigma rules, the Sysmon parsers of SIEMs).
    #[arg(long, value_enum, value_name = "TYPES", default_value_t = JsonTypes::Typed)]
    pub json_types: JsonTypes,

    /// A Sysmon for Linux config file (its NetworkConnect rules). Without it
    /// every connection is reported. SIGHUP reloads it.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Where state that outlives a run is kept (the XML EventRecordID).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/sockscope")]
    pub state_dir: PathBuf,

    /// Fill SourcePortName/DestinationPortName from a services file
    /// (otherwise "-", as Sysmon writes them).
    #[arg(long)]
    pub port_names: bool,

    /// The services file used by --port-names.
    #[arg(long, value_name = "FILE", default_value = crate::enrich::port_names::DEFAULT_PATH)]
    pub services_file: PathBuf,

    /// Seconds a half-seen TCP handshake is kept before it ages off (a connect
    /// never ESTABLISHED, an inbound connection never accept()ed).
    #[arg(long, value_name = "SECS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub pending_timeout: u64,

    /// Most half-seen TCP handshakes kept at once (oldest evicted, counted).
    #[arg(long, value_name = "N", default_value_t = 65_536, value_parser = clap::value_parser!(u64).range(1..=16_777_216))]
    pub pending_capacity: u64,

    /// Seconds an exited process stays known, for its events still in flight.
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub exit_grace: u64,

    /// Most processes kept in the process table.
    #[arg(long, value_name = "N", default_value_t = 262_144, value_parser = clap::value_parser!(u64).range(1024..=16_777_216))]
    pub process_capacity: u64,

    /// Ring-buffer size in MiB (a power of two; counted twice in RSS, as the kernel maps it twice).
    #[arg(long, value_name = "MIB", default_value_t = 8, value_parser = parse_ringbuf_mib)]
    pub ringbuf_mib: u32,

    /// Bytes of a command line captured at exec (at most 4096).
    #[arg(long, value_name = "BYTES", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(16..=4096))]
    pub argv_limit: u32,

    /// How UDP sends are seen (auto picks the best the kernel allows).
    #[arg(long, value_enum, default_value_t = UdpMechanism::Auto)]
    pub udp_mechanism: UdpMechanism,

    /// Process mechanism: the cgroup sendmsg4/6 hook. It names the
    /// destination of unconnected sends whose packets leave IPsec-transformed
    /// (egress then sees only ESP/AH); without it those are counted
    /// (udp_send_dest_unknown), not reported. It is the costliest
    /// per-datagram hook (the kernel locks the socket around it), so `auto`
    /// attaches it only when the kernel can transform packets and some
    /// network namespace has an IPsec policy (`when-ipsec`, checked every 2 s).
    #[arg(long, value_enum, default_value_t = SendmsgHook::Auto)]
    pub udp_sendmsg_hook: SendmsgHook,

    /// Seconds a UDP flow may be idle before a new packet reports it again.
    #[arg(long, value_name = "SECS", default_value_t = 1800, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub udp_window: u64,

    /// Size of the kernel's table of reported UDP flows (oldest evicted when full, counted).
    #[arg(long, value_name = "N", default_value_t = 65_536, value_parser = clap::value_parser!(u32).range(4..=4_194_304))]
    pub udp_flow_capacity: u32,

    /// sockscope's lifecycle events: failed outbound TCP handshakes (EventID
    /// 252) and the ends of reported connections with what they carried
    /// (EventID 253; UDP flows when they expire from --udp-window).
    #[arg(long, value_enum, value_name = "WHICH", default_value_t = LifecycleMode::Both)]
    pub lifecycle: LifecycleMode,

    /// Seconds over which repeated failures of one process to one
    /// destination (with one cause) are folded into one event 252 with a
    /// Count; the first is reported at once. 0: report every failure.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub failed_window: u64,

    /// Most (process, destination, cause) folds kept at once; the oldest is
    /// reported early when full (counted).
    #[arg(long, value_name = "N", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub failed_fold_capacity: u64,

    /// Most reported TCP connections kept open for their close event (the
    /// oldest forgotten when full, counted: its close then goes unreported).
    #[arg(long, value_name = "N", default_value_t = 65_536, value_parser = clap::value_parser!(u64).range(16..=16_777_216))]
    pub open_capacity: u64,
    /// DNS on port 53 (UDP and TCP, every network namespace): `events`
    /// reports each query with its answers (DnsQuery, EventID 22), `names`
    /// fills NetworkConnect's DestinationHostname (SourceHostname inbound)
    /// from the answers the same network namespace saw, `both` does both,
    /// `off` captures nothing.
    #[arg(long, value_enum, default_value_t = DnsMode::Both)]
    pub dns: DnsMode,

    /// Seconds a DNS query waits for its response before it is reported
    /// with QueryStatus 1460 (timeout).
    #[arg(long, value_name = "SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub dns_timeout: u64,

    /// DNS queries waiting for a response at most (the oldest go, counted).
    #[arg(long, value_name = "N", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub dns_pending_capacity: u64,

    /// Addresses whose host name is kept, over all network namespaces (the
    /// one that expires first goes when full, counted).
    #[arg(long, value_name = "N", default_value_t = 65_536, value_parser = clap::value_parser!(u64).range(1..=16_777_216))]
    pub dns_cache_capacity: u64,

    /// Longest a host name is kept, whatever the answer's TTL (at least 30 s
    /// are kept whatever the TTL).
    #[arg(long, value_name = "SECS", default_value_t = 3600, value_parser = clap::value_parser!(u32).range(30..=604_800))]
    pub dns_ttl_cap: u32,

    /// Seconds between stats events (EventID 251); 0: none.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub stats_interval: u64,

    /// Most formatted events waiting for the output (UDP is shed from 3/4 full).
    #[arg(long, value_name = "N", default_value_t = 16_384, value_parser = clap::value_parser!(u64).range(16..=16_777_216))]
    pub queue_capacity: u64,

    /// Who gets the CPU first. `yield`: the sensor's threads run SCHED_IDLE
    /// (facts wait in the ring buffer while the host's own work runs) and
    /// take normal priority to catch up when the ring buffer is 5/8 full,
    /// the output queue a quarter full, or something waited --max-defer-ms.
    #[arg(long, value_enum, default_value_t = CpuPolicy::Yield)]
    pub cpu_policy: CpuPolicy,

    /// With --cpu-policy yield: the longest a fact, an output line or a round
    /// of the reader's or writer's loop (signals, periodic work) waits before
    /// the sensor takes normal priority to catch up. At least 200: the loops
    /// come around every 100 ms when idle.
    #[arg(long, value_name = "MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(200..=60_000))]
    pub max_defer_ms: u64,

    /// Apply config exclusions only in userspace (by default the kernel also
    /// applies those decided by protocol and port, or protocol and address, so
    /// such traffic costs nothing).
    #[arg(long)]
    pub no_kernel_filter: bool,

    /// Print the manual page (sockscope(8), roff) generated from these
    /// options and exit; `make deb` ships it.
    #[arg(long, hide = true)]
    pub man: bool,

    /// Keep every system call allowed (no seccomp filter after start; for
    /// diagnosing a call the filter refuses with EPERM). Capabilities are
    /// dropped all the same.
    #[arg(long)]
    pub no_seccomp: bool,

    /// Check what this kernel allows: print which mechanism serves TCP out,
    /// TCP in, UDP out, UDP in and process identity, and why; load and attach
    /// them and remove them again. Exit 0 when every kind of event is
    /// covered, 1 with the reason otherwise.
    #[arg(long)]
    pub check: bool,

    /// Testing aid: try to load even without the capabilities (to see what the kernel says).
    #[arg(long, hide = true)]
    pub skip_privilege_check: bool,

    /// Testing aid: the accept probes act as if no accepted fd resolved.
    #[arg(long, hide = true)]
    pub pretend_unresolved_accepts: bool,

    /// Benchmark aid (sockscope-bench --hooks-only): the probes attach where
    /// they always do but every program returns at once; no event is reported.
    #[arg(long, hide = true)]
    pub hook_floor: bool,
}

/// The manual page, sockscope(8), from the option definitions above.
pub fn write_man_page(out: &mut dyn std::io::Write) -> std::io::Result<()> {
    use clap::CommandFactory;
    let cmd = Cli::command().long_about(
        "sockscope reports every TCP connection and UDP flow on the host, outbound and inbound, IPv4 and IPv6, \
         with the process behind it, as Sysmon for Linux NetworkConnect (Event ID 3) events: JSON lines or \
         Sysmon's XML, to a file, stdout, the local syslog socket or a remote syslog receiver. It needs root \
         (or CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN). SIGHUP reopens the output file and reloads the config; \
         SIGUSR1 logs a stats line; SIGINT and SIGTERM drain, write out and exit. Exit status: 0 on a clean \
         stop, 2 for a bad argument, config or output path, 1 for missing privileges or a probe the kernel refuses.",
    );
    clap_mangen::Man::new(cmd).section("8").render(out)
}

fn parse_remote(s: &str) -> Result<crate::sink::syslog::RemoteTarget, String> {
    crate::sink::syslog::RemoteTarget::parse(s).map_err(|e| e.to_string())
}

fn parse_ringbuf_mib(s: &str) -> Result<u32, String> {
    let n: u32 = s.parse().map_err(|e| format!("{e}"))?;
    if n == 0 || n > 1024 || !n.is_power_of_two() {
        return Err("must be a power of two between 1 and 1024".to_string());
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bad_values() {
        let cli = Cli::try_parse_from(["sockscope"]).expect("no arguments is valid");
        assert!(cli.output.is_none());
        assert_eq!(cli.format, Format::Json);
        assert!(Cli::try_parse_from(["sockscope", "--ringbuf-mib", "3"]).is_err());
        assert!(Cli::try_parse_from(["sockscope", "--pending-timeout", "0"]).is_err());
        assert!(Cli::try_parse_from(["sockscope", "--format", "csv"]).is_err());
        assert!(Cli::try_parse_from(["sockscope", "--bogus"]).is_err());
        assert_eq!(cli.json_types, JsonTypes::Typed);
        assert_eq!(cli.syslog_remote_format, crate::sink::syslog::RemoteFormat::Rfc3164);
        assert_eq!(cli.syslog_remote_framing, None);
        let cli = Cli::try_parse_from([
            "sockscope",
            "--json-types",
            "sysmon",
            "--syslog-remote-format",
            "rfc5424",
            "--syslog-remote-framing",
            "octet-counted",
        ])
        .expect("valid");
        assert_eq!(cli.json_types, JsonTypes::Sysmon);
        assert_eq!(cli.syslog_remote_format, crate::sink::syslog::RemoteFormat::Rfc5424);
        assert_eq!(cli.syslog_remote_framing, Some(crate::sink::syslog::Framing::OctetCounted));
        assert!(Cli::try_parse_from(["sockscope", "--json-types", "strings"]).is_err());
        assert_eq!(cli.lifecycle, LifecycleMode::Both);
        for (arg, mode) in
            [("off", LifecycleMode::Off), ("failed", LifecycleMode::Failed), ("closed", LifecycleMode::Closed)]
        {
            assert_eq!(Cli::try_parse_from(["sockscope", "--lifecycle", arg]).expect("valid").lifecycle, mode);
        }
        assert!(Cli::try_parse_from(["sockscope", "--lifecycle", "all"]).is_err());
        assert!(Cli::try_parse_from(["sockscope", "--syslog-remote-framing", "lf"]).is_err());
    }

    #[test]
    fn man_page_names_every_visible_option() {
        use clap::CommandFactory;
        let mut out = Vec::new();
        write_man_page(&mut out).expect("render");
        let page = String::from_utf8(out).expect("utf8");
        assert!(page.starts_with(".ie") || page.contains(".TH sockscope 8"), "{page:.200}");
        assert!(page.contains(".TH sockscope 8"), "{page:.300}");
        for arg in Cli::command().get_arguments().filter(|a| !a.is_hide_set()) {
            let Some(long) = arg.get_long() else { continue };
            // roff escapes '-' as "\-".
            assert!(page.contains(&format!("\\-\\-{}", long.replace('-', "\\-"))), "--{long} not in the page");
        }
        assert!(!page.contains("hook\\-floor") && !page.contains("\\-\\-man"), "hidden options stay out");
    }
}
