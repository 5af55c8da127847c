//! Probes: the eBPF side as the rest of the sensor sees it. Split by concern:
//! - `host`: what the host must give (privileges, tracefs, the cgroup2 root,
//!   libbpf's log) and `kconfig` (its build config);
//! - `kernel`: what the running kernel allows, and the mechanism chosen per
//!   kind of event (the start report, `--check`);
//! - `load`: loading the objects, sharing their maps, attaching every program
//!   (naming any the kernel refuses, with its reason);
//! - `maps`: reading and writing the maps while running (counters, the UDP
//!   flow table, the config's kernel exclusions);
//! - `netns` (the packet mechanism's per-namespace sockets), `xfrm` (IPsec
//!   policies), `skel` (the generated skeletons), `tcp_stop` (the report of
//!   connections open when the sensor stops).
//!
//! A new program: its `src/bpf/NAME.bpf.c` (build.rs finds it and generates
//! its skeleton module), and in `load.rs` its storage slot, its place in
//! `Probes`, its load and attach; its counters, if any, in `maps.rs`.

pub mod host;
pub mod kconfig;
pub mod kernel;
mod load;
mod maps;
pub mod netns;
pub mod skel;
mod tcp_stop;
pub mod xfrm;

use load::UdpSend;
pub use load::{ObjectStorage, ProbeOptions, Probes};
pub use maps::{KernelCounters, TcpKernelCounters, UDP_KERNEL_COUNTERS};

/// How UDP sends are seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UdpMechanism {
    /// The best the kernel offers: `process` if it loads and attaches, else `packet`.
    Auto,
    /// sock_send_length + cgroup_skb/egress + cgroup sendmsg4/6: the sender's context, every namespace.
    Process,
    /// The seed's: consume_skb behind one filtered raw packet socket per namespace.
    Packet,
}

/// Whether to attach cgroup sendmsg4/6 (process mechanism).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SendmsgHook {
    /// `when-ipsec` when the kernel can transform packets (IPsec ESP/AH,
    /// IPComp, per its build config) or its config cannot be read; else off.
    Auto,
    /// Attached once some network namespace has an IPsec (xfrm) policy
    /// (looked for at start and every 2 s; then it stays).
    WhenIpsec,
    /// Always attached.
    On,
    /// Never attached.
    Off,
}

impl SendmsgHook {
    /// The setting with `auto` decided, and why.
    pub fn resolve(self) -> (SendmsgHook, &'static str) {
        match self {
            SendmsgHook::On => (SendmsgHook::On, "asked for"),
            SendmsgHook::Off => (SendmsgHook::Off, "turned off"),
            SendmsgHook::WhenIpsec => (SendmsgHook::WhenIpsec, "asked for"),
            SendmsgHook::Auto => match kconfig::kernel_config() {
                Some(c) if kconfig::can_transform_packets(&c) => {
                    (SendmsgHook::WhenIpsec, "the kernel can IPsec-transform packets")
                }
                Some(_) => (SendmsgHook::Off, "the kernel has no IPsec/IPComp transforms"),
                None => (SendmsgHook::WhenIpsec, "the kernel's build config is not readable"),
            },
        }
    }
}

impl Probes<'_> {
    /// The ring buffer every program writes its facts to.
    pub fn ring_buffer(&self) -> &libbpf_rs::Map<'_> {
        &self.tcp_state.maps.events
    }

    pub fn udp_packet_mode(&self) -> bool {
        matches!(self.udp_send, UdpSend::Packet { .. })
    }

    /// Whether the iterator of connections open at stop is loaded (close
    /// events on, and the kernel has iter/tcp): it enters every network
    /// namespace at stop.
    pub fn has_tcp_stop(&self) -> bool {
        self.tcp_stop.is_some()
    }

    pub fn attached(&self) -> usize {
        self.links.len()
    }

    /// At stop: has the kernel write a closed fact (sensor-stop, with its
    /// counters) for every reported connection still open, in every network
    /// namespace. Returns false when it cannot (no iterator).
    pub fn report_open_tcp(&self) -> bool {
        let Some((_, link)) = &self.tcp_stop else {
            return false;
        };
        let (ran, failed) = tcp_stop::report_open_connections(link);
        for f in &failed {
            tracing::debug!("open connections at stop: {f}");
        }
        tracing::info!("open connections at stop: looked in {ran} network namespaces ({} could not be)", failed.len());
        true
    }
}
