//! What the sensor is asked to do, grouped by the stage that uses it. The
//! command line (src/cli.rs) is parsed into this once; each stage receives
//! its own part, so no stage reads the command line.
use std::path::PathBuf;

use crate::backpressure::pace::CpuPolicy;
use crate::dns::DnsSettings;
use crate::format::{Format, JsonTypes};
use crate::probes::{SendmsgHook, UdpMechanism};
use crate::sink::syslog::{Framing, RemoteFormat, RemoteTarget};
use crate::track::lifecycle::LifecycleMode;

const NS_PER_SEC: u64 = 1_000_000_000;

#[derive(Debug, Clone)]
pub struct Settings {
    pub host: HostSettings,
    pub probes: ProbeSettings,
    pub track: TrackSettings,
    pub rules: RuleSettings,
    pub output: OutputSettings,
    pub pace: PaceSettings,
    /// Between stats events (EventID 251); 0: none.
    pub stats_interval_ns: u64,
}

/// Startup checks of the host.
#[derive(Debug, Clone)]
pub struct HostSettings {
    /// Testing aid: try to load even without the capabilities.
    pub skip_privilege_check: bool,
    /// No seccomp filter once started (diagnosing a call it refuses).
    pub no_seccomp: bool,
}

/// The eBPF side: what is loaded and how it is sized.
#[derive(Debug, Clone)]
pub struct ProbeSettings {
    pub ringbuf_bytes: u32,
    pub argv_limit: u32,
    pub udp_mechanism: UdpMechanism,
    pub udp_sendmsg_hook: SendmsgHook,
    pub udp_flow_capacity: u32,
    /// Testing aid: the accept probes act as if no accepted fd resolved.
    pub pretend_unresolved_accepts: bool,
    /// Benchmark aid: every program returns at once.
    pub hook_floor: bool,
    /// Mark reported connections and write their close (event 253).
    pub lifecycle_closed: bool,
    /// Copy DNS messages on port 53 in the kernel.
    pub dns_capture: bool,
}

/// State kept across facts: its ages and bounds.
#[derive(Debug, Clone)]
pub struct TrackSettings {
    pub pending_timeout_ns: u64,
    pub pending_capacity: usize,
    pub exit_grace_ns: u64,
    pub process_capacity: usize,
    pub udp_window_ns: u64,
    pub udp_flow_capacity: usize,
    pub lifecycle: LifecycleMode,
    pub failed_window_ns: u64,
    pub failed_fold_capacity: usize,
    pub open_capacity: usize,
    pub dns: DnsSettings,
}

/// The Sysmon config and where its exclusions are applied.
#[derive(Debug, Clone)]
pub struct RuleSettings {
    pub config: Option<PathBuf>,
    /// Also apply the exclusions the kernel can decide (else userspace only).
    pub kernel_filter: bool,
}

/// Formatting and where lines go.
#[derive(Debug, Clone)]
pub struct OutputSettings {
    pub format: Format,
    pub json_types: JsonTypes,
    pub file: Option<PathBuf>,
    pub syslog: Option<LocalSyslogSettings>,
    pub syslog_remote: Option<RemoteSyslogSettings>,
    pub syslog_ident: String,
    pub state_dir: PathBuf,
    /// The services file, when port names are asked for.
    pub port_names: Option<PathBuf>,
    pub queue_capacity: usize,
}

#[derive(Debug, Clone)]
pub struct RemoteSyslogSettings {
    pub target: RemoteTarget,
    pub format: RemoteFormat,
    /// None: the format's own (newline for RFC 3164, octet counting for RFC 5424).
    pub framing: Option<Framing>,
    /// "sysmon[PID]:" in RFC 3164 messages.
    pub with_pid: bool,
}

#[derive(Debug, Clone)]
pub struct LocalSyslogSettings {
    pub socket: PathBuf,
    pub with_pid: bool,
}

/// Who gets the CPU first, and how late an event may be.
#[derive(Debug, Clone)]
pub struct PaceSettings {
    pub cpu_policy: CpuPolicy,
    pub max_defer_ms: u64,
}

impl From<&crate::cli::Cli> for Settings {
    fn from(cli: &crate::cli::Cli) -> Self {
        // clap bounds every number below (src/cli.rs), so none overflows.
        let as_usize = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        Settings {
            host: HostSettings { skip_privilege_check: cli.skip_privilege_check, no_seccomp: cli.no_seccomp },
            probes: ProbeSettings {
                ringbuf_bytes: cli.ringbuf_mib * 1024 * 1024,
                argv_limit: cli.argv_limit,
                udp_mechanism: cli.udp_mechanism,
                udp_sendmsg_hook: cli.udp_sendmsg_hook,
                udp_flow_capacity: cli.udp_flow_capacity,
                pretend_unresolved_accepts: cli.pretend_unresolved_accepts,
                hook_floor: cli.hook_floor,
                lifecycle_closed: cli.lifecycle.closed(),
                dns_capture: cli.dns.capture(),
            },
            track: TrackSettings {
                pending_timeout_ns: cli.pending_timeout * NS_PER_SEC,
                pending_capacity: as_usize(cli.pending_capacity),
                exit_grace_ns: cli.exit_grace * NS_PER_SEC,
                process_capacity: as_usize(cli.process_capacity),
                udp_window_ns: cli.udp_window * NS_PER_SEC,
                udp_flow_capacity: cli.udp_flow_capacity as usize,
                lifecycle: cli.lifecycle,
                failed_window_ns: cli.failed_window * NS_PER_SEC,
                failed_fold_capacity: as_usize(cli.failed_fold_capacity),
                open_capacity: as_usize(cli.open_capacity),
                dns: DnsSettings {
                    mode: cli.dns,
                    timeout_ns: cli.dns_timeout * NS_PER_SEC,
                    pending_capacity: as_usize(cli.dns_pending_capacity),
                    cache_capacity: as_usize(cli.dns_cache_capacity),
                    ttl_cap_s: cli.dns_ttl_cap,
                },
            },
            rules: RuleSettings { config: cli.config.clone(), kernel_filter: !cli.no_kernel_filter },
            output: OutputSettings {
                format: cli.format,
                json_types: cli.json_types,
                file: cli.output.clone(),
                syslog: cli
                    .syslog
                    .then(|| LocalSyslogSettings { socket: cli.syslog_socket.clone(), with_pid: cli.syslog_pid }),
                syslog_remote: cli.syslog_remote.map(|target| RemoteSyslogSettings {
                    target,
                    format: cli.syslog_remote_format,
                    framing: cli.syslog_remote_framing,
                    with_pid: cli.syslog_pid,
                }),
                syslog_ident: cli.syslog_ident.clone(),
                state_dir: cli.state_dir.clone(),
                port_names: cli.port_names.then(|| cli.services_file.clone()),
                queue_capacity: as_usize(cli.queue_capacity),
            },
            pace: PaceSettings { cpu_policy: cli.cpu_policy, max_defer_ms: cli.max_defer_ms },
            stats_interval_ns: cli.stats_interval.saturating_mul(NS_PER_SEC),
        }
    }
}

impl ProbeSettings {
    pub fn ring_bytes(&self) -> u64 {
        u64::from(self.ringbuf_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn the_command_line_becomes_each_stages_settings() {
        let cli = crate::cli::Cli::parse_from([
            "sockscope",
            "--ringbuf-mib",
            "16",
            "--udp-window",
            "60",
            "--port-names",
            "--no-kernel-filter",
            "--syslog",
            "--syslog-pid",
        ]);
        let s = Settings::from(&cli);
        assert_eq!(s.probes.ringbuf_bytes, 16 << 20);
        assert_eq!(s.track.udp_window_ns, 60 * NS_PER_SEC);
        assert_eq!(s.output.port_names.as_deref(), Some(std::path::Path::new("/etc/services")));
        assert!(!s.rules.kernel_filter);
        assert!(s.output.syslog.as_ref().is_some_and(|l| l.with_pid));
        let plain = Settings::from(&crate::cli::Cli::parse_from(["sockscope"]));
        assert!(plain.output.port_names.is_none() && plain.output.syslog.is_none() && plain.rules.kernel_filter);
    }
}
