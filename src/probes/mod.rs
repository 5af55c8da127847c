//! Probes: load the eBPF objects, make them share one ring buffer, attach
//! every program (naming any the kernel refuses, with its reason).

pub mod kconfig;
pub mod netns;
pub mod ring_fill;
pub mod skel;
pub mod xfrm;

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use anyhow::{bail, Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, OpenObject, ProgramMut};

use crate::filter::kernel::KernelExclusions;

use skel::process::{ProcessSkel, ProcessSkelBuilder};
use skel::tcp_accept::{TcpAcceptSkel, TcpAcceptSkelBuilder};
use skel::tcp_accept_uring::{TcpAcceptUringSkel, TcpAcceptUringSkelBuilder};
use skel::tcp_state::{TcpStateSkel, TcpStateSkelBuilder};
use skel::udp_packet::{UdpPacketSkel, UdpPacketSkelBuilder};
use skel::udp_recv::{UdpRecvSkel, UdpRecvSkelBuilder};
use skel::udp_send::{UdpSendSkel, UdpSendSkelBuilder};

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

/// Entries of the kernel's `udp_counters` (enum udp_counter in udp_flows.bpf.h).
pub const UDP_KERNEL_COUNTERS: usize = 5;

pub struct ProbeOptions {
    pub ringbuf_bytes: u32,
    pub argv_limit: u32,
    /// Testing aid: the accept probes act as if no accepted fd resolved.
    pub pretend_unresolved_accepts: bool,
    pub udp: UdpMechanism,
    pub udp_flow_capacity: u32,
    /// Unread ring-buffer bytes above which new UDP flows are shed (0: never).
    pub udp_shed_above: u64,
    /// Attach cgroup sendmsg4/6 (the destination of unconnected sends whose
    /// packet leaves IPsec-transformed).
    pub udp_sendmsg_hook: bool,
    /// Benchmark aid: every program returns at once (hook_floor.bpf.h).
    pub hook_floor: bool,
}

/// Sets `hook_floor` (hook_floor.bpf.h) in an open skeleton's read-only data.
/// Every object has it, so its absence is a build error, not a silent no-op.
macro_rules! set_hook_floor {
    ($open:expr, $on:expr, $name:literal) => {
        $open
            .maps
            .rodata_data
            .as_deref_mut()
            .ok_or_else(|| anyhow::anyhow!(concat!("eBPF object ", $name, " has no read-only data")))?
            .hook_floor = $on
    };
}

/// Backing storage the skeletons borrow from; must outlive `Probes`.
pub struct ObjectStorage {
    tcp_state: MaybeUninit<OpenObject>,
    tcp_accept: MaybeUninit<OpenObject>,
    tcp_accept_uring: MaybeUninit<OpenObject>,
    process: MaybeUninit<OpenObject>,
    udp_recv: MaybeUninit<OpenObject>,
    udp_send: MaybeUninit<OpenObject>,
    udp_packet: MaybeUninit<OpenObject>,
}

impl ObjectStorage {
    pub fn new() -> Self {
        Self {
            tcp_state: MaybeUninit::uninit(),
            tcp_accept: MaybeUninit::uninit(),
            tcp_accept_uring: MaybeUninit::uninit(),
            process: MaybeUninit::uninit(),
            udp_recv: MaybeUninit::uninit(),
            udp_send: MaybeUninit::uninit(),
            udp_packet: MaybeUninit::uninit(),
        }
    }
}

/// The UDP send mechanism that is running (held so its object stays loaded).
pub enum UdpSend<'obj> {
    Process { skel: UdpSendSkel<'obj> },
    Packet { _skel: UdpPacketSkel<'obj> },
}

pub struct Probes<'obj> {
    pub tcp_state: TcpStateSkel<'obj>,
    pub tcp_accept: TcpAcceptSkel<'obj>,
    /// Held so the object stays loaded while its links are attached.
    _process: ProcessSkel<'obj>,
    /// io_uring accepts; absent when the kernel has no io_uring tracepoints.
    _uring: Option<TcpAcceptUringSkel<'obj>>,
    pub udp_recv: UdpRecvSkel<'obj>,
    pub udp_send: UdpSend<'obj>,
    links: Vec<Link>,
}

/// The cgroup v2 root, where cgroup hooks see every process on the host.
/// Mounts one (privately, under /run/sockscope) when the host has none: every
/// process is in the cgroup2 hierarchy whether or not it is mounted.
pub fn cgroup2_root() -> Result<std::path::PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    let found = mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 2 && f[2] == "cgroup2").then(|| std::path::PathBuf::from(f[1]))
    });
    if let Some(root) = found {
        return Ok(root);
    }
    let root = std::path::PathBuf::from("/run/sockscope/cgroup2");
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    nix::mount::mount(Some("cgroup2"), &root, Some("cgroup2"), nix::mount::MsFlags::empty(), None::<&str>)
        .context("no cgroup2 file system is mounted, and mounting one failed (needs CAP_SYS_ADMIN)")?;
    tracing::info!("mounted cgroup2 on {}", root.display());
    Ok(root)
}

/// The cgroup v2 root, opened for attaching.
fn open_cgroup2_root() -> Result<std::fs::File> {
    let root = cgroup2_root()?;
    std::fs::File::open(&root).with_context(|| format!("opening the cgroup2 root {}", root.display()))
}

/// The cgroup sendmsg4/6 hooks (see udp_send.bpf.c), at load or later.
fn attach_sendmsg(skel: &UdpSendSkel<'_>, cgroup: &std::fs::File, links: &mut Vec<Link>) -> Result<()> {
    attach_cgroup(&skel.progs.udp_sendmsg4, cgroup, links)?;
    attach_cgroup(&skel.progs.udp_sendmsg6, cgroup, links)
}

fn attach_cgroup(prog: &ProgramMut<'_>, cgroup: &std::fs::File, links: &mut Vec<Link>) -> Result<()> {
    use std::os::fd::AsRawFd;
    let link = prog.attach_cgroup(cgroup.as_raw_fd()).with_context(|| {
        format!(
            "the kernel refused to attach probe {} ({}) to the cgroup2 root",
            prog.name().to_string_lossy(),
            prog.section().to_string_lossy()
        )
    })?;
    links.push(link);
    Ok(())
}

fn attach(prog: &ProgramMut<'_>, links: &mut Vec<Link>) -> Result<()> {
    let link = prog.attach().with_context(|| {
        format!(
            "the kernel refused to attach probe {} ({})",
            prog.name().to_string_lossy(),
            prog.section().to_string_lossy()
        )
    })?;
    links.push(link);
    Ok(())
}

impl<'obj> Probes<'obj> {
    pub fn load(storage: &'obj mut ObjectStorage, opts: &ProbeOptions) -> Result<Self> {
        let mut open =
            TcpStateSkelBuilder::default().open(&mut storage.tcp_state).context("opening eBPF object tcp_state")?;
        open.maps.events.set_max_entries(opts.ringbuf_bytes).context("sizing the ring buffer")?;
        set_hook_floor!(open, opts.hook_floor, "tcp_state");
        let tcp_state = open.load().context(
            "the kernel refused eBPF object tcp_state (tp_btf/inet_sock_set_state); see the libbpf log above",
        )?;

        // Maps every object declares (facts.h headers) but that must be one.
        let common = [
            ("events", tcp_state.maps.events.as_fd()),
            ("ringbuf_drops", tcp_state.maps.ringbuf_drops.as_fd()),
            ("config_exclusions", tcp_state.maps.config_exclusions.as_fd()),
            ("config_addr_exclusions", tcp_state.maps.config_addr_exclusions.as_fd()),
            ("config_exclusion_count", tcp_state.maps.config_exclusion_count.as_fd()),
            ("excluded_in_kernel", tcp_state.maps.excluded_in_kernel.as_fd()),
        ];

        let mut open =
            TcpAcceptSkelBuilder::default().open(&mut storage.tcp_accept).context("opening eBPF object tcp_accept")?;
        share_maps(open.open_object_mut(), &common)?;
        set_hook_floor!(open, opts.hook_floor, "tcp_accept");
        if let Some(ro) = open.maps.rodata_data.as_deref_mut() {
            ro.pretend_unresolved = opts.pretend_unresolved_accepts;
        }
        let tcp_accept = open.load().context(
            "the kernel refused eBPF object tcp_accept (syscalls/sys_exit_accept{,4}); see the libbpf log above",
        )?;

        let mut open =
            ProcessSkelBuilder::default().open(&mut storage.process).context("opening eBPF object process")?;
        share_maps(open.open_object_mut(), &common)?;
        set_hook_floor!(open, opts.hook_floor, "process");
        if let Some(ro) = open.maps.rodata_data.as_deref_mut() {
            ro.args_limit = opts.argv_limit;
        }
        let process = open.load().context(
            "the kernel refused eBPF object process (tp_btf/sched_process_{exec,fork,exit}, cgroup_attach_task); \
             see the libbpf log above",
        )?;

        let mut open =
            UdpRecvSkelBuilder::default().open(&mut storage.udp_recv).context("opening eBPF object udp_recv")?;
        share_maps(open.open_object_mut(), &common)?;
        open.maps.udp_flows.set_max_entries(opts.udp_flow_capacity).context("sizing the UDP flow table")?;
        set_hook_floor!(open, opts.hook_floor, "udp_recv");
        if let Some(ro) = open.maps.rodata_data.as_deref_mut() {
            ro.udp_shed_above = opts.udp_shed_above;
        }
        let udp_recv = open.load().context(
            "the kernel refused eBPF object udp_recv (cgroup_skb/ingress, sock_recv_length); \
             see the libbpf log above",
        )?;

        let cgroup = open_cgroup2_root()?;

        let mut links = Vec::new();
        attach_cgroup(&udp_recv.progs.udp_ingress, &cgroup, &mut links)?;
        attach(&udp_recv.progs.udp_recv_done, &mut links)?;

        let mut maps = common.to_vec();
        maps.push(("udp_flows", udp_recv.maps.udp_flows.as_fd()));
        maps.push(("udp_counters", udp_recv.maps.udp_counters.as_fd()));
        let shared = SharedUdpMaps {
            shed_above: opts.udp_shed_above,
            sendmsg_hook: opts.udp_sendmsg_hook,
            hook_floor: opts.hook_floor,
            maps,
        };
        let udp_send = match opts.udp {
            UdpMechanism::Packet => {
                UdpSend::Packet { _skel: load_udp_packet(&mut storage.udp_packet, &shared, &mut links)? }
            }
            UdpMechanism::Process => {
                UdpSend::Process { skel: load_udp_send(&mut storage.udp_send, &shared, &cgroup, &mut links)? }
            }
            UdpMechanism::Auto => match load_udp_send(&mut storage.udp_send, &shared, &cgroup, &mut links) {
                Ok(skel) => UdpSend::Process { skel },
                Err(e) => {
                    tracing::warn!(
                        "process-context UDP send probes unavailable ({e:#}); using the packet-socket mechanism"
                    );
                    UdpSend::Packet { _skel: load_udp_packet(&mut storage.udp_packet, &shared, &mut links)? }
                }
            },
        };
        match &udp_send {
            UdpSend::Process { .. } => tracing::info!(
                "UDP sends: process-context mechanism (sock_send_length + cgroup_skb/egress{}), every network namespace",
                if opts.udp_sendmsg_hook { " + cgroup sendmsg4/6" } else { "; no sendmsg hook" }
            ),
            UdpSend::Packet { .. } => tracing::info!(
                "UDP sends: packet-socket mechanism (consume_skb + one raw AF_PACKET socket per network namespace)"
            ),
        }

        attach(&tcp_state.progs.tcp_state_change, &mut links)?;
        attach(&tcp_accept.progs.accept_exit, &mut links)?;
        attach(&tcp_accept.progs.accept4_exit, &mut links)?;
        attach(&process.progs.process_exec, &mut links)?;
        attach(&process.progs.process_fork, &mut links)?;
        attach(&process.progs.process_exit, &mut links)?;
        attach(&process.progs.process_cgroup, &mut links)?;
        let uring = match load_tcp_accept_uring(&mut storage.tcp_accept_uring, &common, opts.hook_floor, &mut links) {
            Ok(skel) => Some(skel),
            Err(e) => {
                tracing::warn!("io_uring accepts not seen ({e:#}): they count as never accepted");
                None
            }
        };
        Ok(Self { tcp_state, tcp_accept, _process: process, _uring: uring, udp_recv, udp_send, links })
    }

    /// Replaces the config exclusions the kernel applies (src/filter/kernel.rs).
    /// Tables hold so many: what does not fit is left to userspace, which
    /// applies every rule anyway. Returns how many of each were applied.
    pub fn set_exclusions(&self, exclusions: &KernelExclusions) -> Result<(usize, usize)> {
        let ports = &self.tcp_state.maps.config_exclusions;
        let addrs = &self.tcp_state.maps.config_addr_exclusions;
        let count = &self.tcp_state.maps.config_exclusion_count;
        let set_count = |index: u32, n: usize| {
            let n = u32::try_from(n).unwrap_or(u32::MAX);
            count.update(&index.to_ne_bytes(), &n.to_ne_bytes(), MapFlags::ANY).context("counting kernel exclusions")
        };
        // While the tables change the kernel applies none: userspace applies
        // every rule anyway, so nothing is excluded twice or wrongly.
        set_count(0, 0)?;
        set_count(1, 0)?;
        for map in [ports, addrs] {
            for key in map.keys().collect::<Vec<_>>() {
                map.delete(&key).context("clearing kernel exclusions")?;
            }
        }
        let port_room = ports.max_entries() as usize;
        let addr_room = addrs.max_entries() as usize;
        let mut applied_ports = 0;
        for e in exclusions.ports.iter().take(port_room) {
            let mut key = [0u8; 4];
            key[0] = e.protocol;
            key[1] = e.side as u8;
            key[2..].copy_from_slice(&e.port.to_ne_bytes());
            ports.update(&key, &[1u8], MapFlags::ANY).context("loading kernel exclusions")?;
            applied_ports += 1;
        }
        let mut applied_addrs = 0;
        for e in exclusions.addrs.iter().take(addr_room) {
            // struct addr_exclusion_key: protocol, side, pad, 16-byte address.
            let mut key = [0u8; 20];
            key[0] = e.protocol;
            key[1] = e.side as u8;
            key[4..].copy_from_slice(&e.addr);
            addrs.update(&key, &[1u8], MapFlags::ANY).context("loading kernel address exclusions")?;
            applied_addrs += 1;
        }
        set_count(0, applied_ports)?;
        set_count(1, applied_addrs)?;
        Ok((applied_ports, applied_addrs))
    }

    /// Attaches the cgroup sendmsg hooks now (process mechanism; none for
    /// the packet one). The caller keeps the links, and drops them before
    /// `self`: the ring buffer's reader holds `self` borrowed meanwhile.
    pub fn attach_sendmsg_hooks(&self) -> Result<Vec<Link>> {
        let mut links = Vec::new();
        if let UdpSend::Process { skel } = &self.udp_send {
            attach_sendmsg(skel, &open_cgroup2_root()?, &mut links)?;
        }
        Ok(links)
    }

    pub fn udp_packet_mode(&self) -> bool {
        matches!(self.udp_send, UdpSend::Packet { .. })
    }

    /// Every entry of the kernel's UDP flow table: (raw key, last packet ns).
    pub fn udp_flow_entries(&self) -> Vec<(Vec<u8>, u64)> {
        let map = &self.udp_recv.maps.udp_flows;
        let last_seen = |v: &[u8]| Some(u64::from_ne_bytes(v.get(..8)?.try_into().ok()?));
        // Batches of 4096 until the kernel says the walk is over;
        // key-by-key where batching is not supported.
        match walk_hash_map(map, 4096) {
            Ok(all) => all.into_iter().filter_map(|(k, v)| Some((k, last_seen(&v)?))).collect(),
            Err(e) => {
                tracing::debug!("UDP flow table batch walk: {e:#}; key by key");
                map.keys()
                    .filter_map(|k| {
                        let v = map.lookup(&k, MapFlags::ANY).ok()??;
                        Some((k, last_seen(&v)?))
                    })
                    .collect()
            }
        }
    }

    pub fn udp_forget(&self, keys: &[Vec<u8>]) {
        for k in keys {
            // Already gone (raced with nothing else deleting) is fine.
            let _ = self.udp_recv.maps.udp_flows.delete(k);
        }
    }

    /// Puts a flow userspace reported into the kernel table, so its next
    /// packets are suppressed there.
    pub fn udp_record(&self, key: &[u8], last_ns: u64) -> Result<()> {
        self.udp_recv
            .maps
            .udp_flows
            .update(key, &last_ns.to_ne_bytes(), MapFlags::ANY)
            .context("recording a UDP flow in the kernel table")
    }

    pub fn attached(&self) -> usize {
        self.links.len()
    }

    /// Every counter the kernel side keeps, summed over CPUs (a counter that
    /// cannot be read counts 0).
    pub fn counters(&self) -> KernelCounters {
        let mut udp = [0u64; UDP_KERNEL_COUNTERS];
        for (i, slot) in udp.iter_mut().enumerate() {
            *slot = per_cpu_sum(&self.udp_recv.maps.udp_counters, i as u32);
        }
        KernelCounters {
            ringbuf_drops: per_cpu_sum(&self.tcp_state.maps.ringbuf_drops, 0),
            udp,
            tcp: TcpKernelCounters {
                inbound_handshakes: per_cpu_sum(&self.tcp_state.maps.tcp_inbound_handshakes, 0),
                accepts_unresolved: per_cpu_sum(&self.tcp_accept.maps.accepts_unresolved, 0),
            },
            excluded: per_cpu_sum(&self.tcp_state.maps.excluded_in_kernel, 0),
        }
    }
}

/// Every counter the kernel side keeps, summed over CPUs.
#[derive(Debug, Default, Clone, Copy)]
pub struct KernelCounters {
    /// Ring-buffer reservations the kernel side could not make.
    pub ringbuf_drops: u64,
    /// Suppressed, table full, peer unknown, shed, send destination unknown
    /// (enum udp_counter).
    pub udp: [u64; UDP_KERNEL_COUNTERS],
    pub tcp: TcpKernelCounters,
    /// Events config exclusions dropped in the kernel.
    pub excluded: u64,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct TcpKernelCounters {
    /// Inbound handshakes that ended ESTABLISHED.
    pub inbound_handshakes: u64,
    /// Accepted sockets the probes could not name (lost).
    pub accepts_unresolved: u64,
}

/// Entry `index` of a per-CPU array of u64, summed over CPUs (0 if it
/// cannot be read).
/// Every (key, value) of a hash map, batch by batch, to the end of the map.
/// (libbpf-rs 0.27's batch iterator stops after the first batch a hash map
/// returns short, which it does at bucket boundaries: the first ~4095 only.)
fn walk_hash_map(map: &impl MapCore, batch: u32) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    use std::os::fd::AsRawFd;
    let key_size = map.key_size() as usize;
    let value_size = map.value_size() as usize;
    let max = map.max_entries() as usize;
    let mut batch = batch.max(1);
    let mut out = Vec::new();
    // Hash maps' batch token is a bucket index (u32); room for any layout.
    let mut token_in = [0u8; 64];
    let mut token_out = [0u8; 64];
    let mut first = true;
    // Bounded: the table holds at most `max` entries; each call returns at
    // least one bucket or ends the walk. Entries can move while it goes.
    for _ in 0..(max + 64) {
        let mut keys = vec![0u8; batch as usize * key_size];
        let mut values = vec![0u8; batch as usize * value_size];
        let mut count = batch;
        let opts = libbpf_rs::libbpf_sys::bpf_map_batch_opts {
            sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_map_batch_opts>() as _,
            ..Default::default()
        };
        // SAFETY: the buffers hold `count` keys and values of the map's sizes,
        // the tokens are larger than the kernel's (4 bytes for hash maps).
        let ret = unsafe {
            libbpf_rs::libbpf_sys::bpf_map_lookup_batch(
                map.as_fd().as_raw_fd(),
                if first { std::ptr::null_mut() } else { token_in.as_mut_ptr().cast() },
                token_out.as_mut_ptr().cast(),
                keys.as_mut_ptr().cast(),
                values.as_mut_ptr().cast(),
                &mut count,
                &opts,
            )
        };
        let got = (count as usize).min(batch as usize);
        let errno = if ret < 0 { -ret } else { 0 };
        if errno == libc::ENOSPC && got == 0 {
            // One bucket holds more than a batch: a bigger batch.
            batch = batch.saturating_mul(2);
            continue;
        }
        if errno != 0 && errno != libc::ENOENT {
            return Err(std::io::Error::from_raw_os_error(errno)).context("walking a BPF hash map");
        }
        out.extend(
            keys.chunks_exact(key_size)
                .zip(values.chunks_exact(value_size))
                .take(got)
                .map(|(k, v)| (k.to_vec(), v.to_vec())),
        );
        if errno == libc::ENOENT || out.len() > max * 2 {
            return Ok(out);
        }
        token_in = token_out;
        first = false;
    }
    Ok(out)
}

fn per_cpu_sum(map: &impl MapCore, index: u32) -> u64 {
    let per_cpu = map.lookup_percpu(&index.to_ne_bytes(), MapFlags::ANY).ok().flatten().unwrap_or_default();
    per_cpu.iter().filter_map(|v| v.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_ne_bytes)).sum()
}

struct SharedUdpMaps<'a> {
    shed_above: u64,
    sendmsg_hook: bool,
    hook_floor: bool,
    maps: Vec<(&'static str, BorrowedFd<'a>)>,
}

/// Makes the maps of `open` named in `shared` use those existing maps.
fn share_maps(open: &mut OpenObject, shared: &[(&str, BorrowedFd<'_>)]) -> Result<()> {
    for mut map in open.maps_mut() {
        let name = map.name().to_string_lossy().into_owned();
        if let Some((_, fd)) = shared.iter().find(|(n, _)| *n == name) {
            map.reuse_fd(*fd).with_context(|| format!("sharing map {name}"))?;
        }
    }
    Ok(())
}

/// The io_uring accept probes: optional, as io_uring may be built out.
fn load_tcp_accept_uring<'obj>(
    storage: &'obj mut MaybeUninit<OpenObject>,
    common: &[(&'static str, BorrowedFd<'_>)],
    hook_floor: bool,
    links: &mut Vec<Link>,
) -> Result<TcpAcceptUringSkel<'obj>> {
    let mut open =
        TcpAcceptUringSkelBuilder::default().open(storage).context("opening eBPF object tcp_accept_uring")?;
    share_maps(open.open_object_mut(), common)?;
    set_hook_floor!(open, hook_floor, "tcp_accept_uring");
    let skel = open
        .load()
        .context("the kernel refused eBPF object tcp_accept_uring (tp_btf/io_uring_submit_req, io_uring_complete)")?;
    let mut mine = Vec::new();
    attach(&skel.progs.uring_submit, &mut mine)?;
    attach(&skel.progs.uring_complete, &mut mine)?;
    links.append(&mut mine);
    Ok(skel)
}

fn load_udp_send<'obj>(
    storage: &'obj mut MaybeUninit<OpenObject>,
    shared: &SharedUdpMaps<'_>,
    cgroup: &std::fs::File,
    links: &mut Vec<Link>,
) -> Result<UdpSendSkel<'obj>> {
    let mut open = UdpSendSkelBuilder::default().open(storage).context("opening eBPF object udp_send")?;
    set_hook_floor!(open, shared.hook_floor, "udp_send");
    if let Some(ro) = open.maps.rodata_data.as_deref_mut() {
        ro.udp_shed_above = shared.shed_above;
    }
    share_maps(open.open_object_mut(), &shared.maps)?;
    let skel = open
        .load()
        .context("the kernel refused eBPF object udp_send (sock_send_length, cgroup_skb/egress, cgroup sendmsg4/6)")?;
    let mut mine = Vec::new();
    attach(&skel.progs.udp_send_done, &mut mine)?;
    attach_cgroup(&skel.progs.udp_egress, cgroup, &mut mine)?;
    if shared.sendmsg_hook {
        attach_sendmsg(&skel, cgroup, &mut mine)?;
    }
    links.append(&mut mine);
    Ok(skel)
}

fn load_udp_packet<'obj>(
    storage: &'obj mut MaybeUninit<OpenObject>,
    shared: &SharedUdpMaps<'_>,
    links: &mut Vec<Link>,
) -> Result<UdpPacketSkel<'obj>> {
    let mut open = UdpPacketSkelBuilder::default().open(storage).context("opening eBPF object udp_packet")?;
    set_hook_floor!(open, shared.hook_floor, "udp_packet");
    if let Some(ro) = open.maps.rodata_data.as_deref_mut() {
        ro.udp_shed_above = shared.shed_above;
    }
    share_maps(open.open_object_mut(), &shared.maps)?;
    let skel = open.load().context("the kernel refused eBPF object udp_packet (tp_btf/consume_skb)")?;
    attach(&skel.progs.udp_packet_out, links)?;
    Ok(skel)
}

/// Tracepoint attachment looks up ids in tracefs; mount it if the host has not.
pub fn ensure_tracefs() -> Result<()> {
    let candidates = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
    if candidates.iter().any(|p| Path::new(p).join("events").is_dir()) {
        return Ok(());
    }
    nix::mount::mount(
        Some("tracefs"),
        "/sys/kernel/tracing",
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .context("tracefs is not mounted and mounting it on /sys/kernel/tracing failed (needs CAP_SYS_ADMIN)")?;
    tracing::info!("mounted tracefs on /sys/kernel/tracing");
    Ok(())
}

/// Routes libbpf's own log (verifier messages, refusals) to our stderr log.
pub fn route_libbpf_log() {
    fn print(level: libbpf_rs::PrintLevel, msg: String) {
        let msg = msg.trim_end();
        match level {
            libbpf_rs::PrintLevel::Warn => tracing::warn!(target: "libbpf", "{msg}"),
            libbpf_rs::PrintLevel::Info => tracing::debug!(target: "libbpf", "{msg}"),
            libbpf_rs::PrintLevel::Debug => tracing::trace!(target: "libbpf", "{msg}"),
        }
    }
    libbpf_rs::set_print(Some((libbpf_rs::PrintLevel::Debug, print)));
}

/// Root, or the capabilities loading and attaching need: CAP_BPF (maps,
/// programs), CAP_PERFMON (tracing programs), CAP_NET_ADMIN (cgroup socket
/// hooks); CAP_SYS_ADMIN stands for all three.
pub fn check_privileges() -> Result<()> {
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .context("no CapEff in /proc/self/status")?;
    let has = |cap: u32| eff & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON) && has(CAP_NET_ADMIN)) {
        return Ok(());
    }
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON"), (CAP_NET_ADMIN, "CAP_NET_ADMIN")]
        .iter()
        .filter(|(c, _)| !has(*c))
        .map(|(_, n)| *n)
        .collect();
    bail!(
        "sockscope must run as root or with the capabilities CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (missing: {})",
        missing.join(", ")
    )
}

#[cfg(test)]
mod tests {
    /// Each program's first statement, for every `SEC("...")` program in `source`.
    fn program_openings(source: &str) -> Vec<(String, String)> {
        let lines: Vec<&str> = source.lines().collect();
        let mut found = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let Some(section) = line.strip_prefix("SEC(\"").and_then(|l| l.strip_suffix("\")")) else { continue };
            if section == "license" || section == ".maps" {
                continue;
            }
            // SEC line, signature, "{", first statement.
            let first = lines.get(i + 3).map(|l| l.trim().to_string()).unwrap_or_default();
            found.push((section.to_string(), first));
        }
        found
    }

    /// The benchmark's hook floor is only a floor if no program does work
    /// before it returns: every program opens with HOOK_FLOOR_RETURN, with
    /// the value that lets the packet or call through.
    #[test]
    fn every_program_opens_with_the_hook_floor_return() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bpf");
        let mut programs = 0;
        for entry in std::fs::read_dir(&dir).expect("src/bpf") {
            let path = entry.expect("dir entry").path();
            if !path.to_string_lossy().ends_with(".bpf.c") {
                continue;
            }
            let source = std::fs::read_to_string(&path).expect("readable source");
            for (section, first) in program_openings(&source) {
                let allow = if section.starts_with("cgroup") { "1" } else { "0" };
                assert_eq!(
                    first,
                    format!("HOOK_FLOOR_RETURN({allow});"),
                    "{}: program {section} must open with HOOK_FLOOR_RETURN({allow})",
                    path.display()
                );
                programs += 1;
            }
        }
        // 16 programs: 13 attached by default, sendmsg4/6 with IPsec, consume_skb in the packet mechanism.
        assert_eq!(programs, 16, "programs found in {}", dir.display());
    }
}
