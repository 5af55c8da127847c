//! Loading the eBPF objects, making them share one ring buffer and the maps
//! every object declares, and attaching every program (naming any the kernel
//! refuses, with its reason).

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd};

use anyhow::{Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, OpenObject, ProgramMut};

use super::host::cgroup2_root;
use super::kernel::{Plan, TcpIn, UdpIn, UdpOut};
use super::skel::process::{ProcessSkel, ProcessSkelBuilder};
use super::skel::tcp_accept::{TcpAcceptSkel, TcpAcceptSkelBuilder};
use super::skel::tcp_accept_uring::{TcpAcceptUringSkel, TcpAcceptUringSkelBuilder};
use super::skel::tcp_state::{TcpStateSkel, TcpStateSkelBuilder};
use super::skel::tcp_stop::{TcpStopSkel, TcpStopSkelBuilder};
use super::skel::udp_packet::{UdpPacketSkel, UdpPacketSkelBuilder};
use super::skel::udp_recv::{UdpRecvSkel, UdpRecvSkelBuilder};
use super::skel::udp_send::{UdpSendSkel, UdpSendSkelBuilder};

pub struct ProbeOptions {
    pub ringbuf_bytes: u32,
    pub argv_limit: u32,
    /// Testing aid: the accept probes act as if no accepted fd resolved.
    pub pretend_unresolved_accepts: bool,
    /// The mechanism per kind of event (kernel.rs), chosen from what the kernel allows.
    pub plan: Plan,
    /// The user's UDP mechanism setting (`process`: no fallback to the packet one).
    pub udp_asked: super::UdpMechanism,
    pub udp_flow_capacity: u32,
    /// Unread ring-buffer bytes above which new UDP flows are shed (0: never).
    pub udp_shed_above: u64,
    /// Attach cgroup sendmsg4/6 (the destination of unconnected sends whose
    /// packet leaves IPsec-transformed).
    pub udp_sendmsg_hook: bool,
    /// Benchmark aid: every program returns at once (hook_floor.bpf.h).
    pub hook_floor: bool,
    /// Mark reported TCP connections and write their close (event 253).
    pub lifecycle_closed: bool,
    /// Copy DNS messages on port 53 (dns_capture.bpf.h, in the UDP
    /// objects' cgroup_skb programs).
    pub dns_capture: bool,
}

/// The UDP send mechanism that is running (held so its object stays loaded).
pub enum UdpSend<'obj> {
    Process { skel: UdpSendSkel<'obj> },
    Packet { _skel: UdpPacketSkel<'obj> },
}

pub struct Probes<'obj> {
    pub(super) tcp_state: TcpStateSkel<'obj>,
    pub(super) tcp_accept: TcpAcceptSkel<'obj>,
    /// Held so the object stays loaded while its links are attached.
    _process: ProcessSkel<'obj>,
    /// io_uring accepts; absent when the kernel has no io_uring tracepoints.
    _uring: Option<TcpAcceptUringSkel<'obj>>,
    pub(super) udp_recv: UdpRecvSkel<'obj>,
    pub(super) udp_send: UdpSend<'obj>,
    /// The iterator of open connections run at stop (close events on, and
    /// the kernel has iter/tcp), and its link.
    pub(super) tcp_stop: Option<(TcpStopSkel<'obj>, Link)>,
    pub(super) links: Vec<Link>,
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
    tcp_stop: MaybeUninit<OpenObject>,
    tcp_accept: MaybeUninit<OpenObject>,
    tcp_accept_uring: MaybeUninit<OpenObject>,
    process: MaybeUninit<OpenObject>,
    udp_recv: MaybeUninit<OpenObject>,
    udp_send: MaybeUninit<OpenObject>,
    udp_packet: MaybeUninit<OpenObject>,
}

impl Default for ObjectStorage {
    fn default() -> Self {
        Self::new()
    }
}

impl ObjectStorage {
    pub fn new() -> Self {
        Self {
            tcp_state: MaybeUninit::uninit(),
            tcp_stop: MaybeUninit::uninit(),
            tcp_accept: MaybeUninit::uninit(),
            tcp_accept_uring: MaybeUninit::uninit(),
            process: MaybeUninit::uninit(),
            udp_recv: MaybeUninit::uninit(),
            udp_send: MaybeUninit::uninit(),
            udp_packet: MaybeUninit::uninit(),
        }
    }
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
    keep_link(prog, " to the cgroup2 root", prog.attach_cgroup(cgroup.as_raw_fd()), links)
}

fn attach(prog: &ProgramMut<'_>, links: &mut Vec<Link>) -> Result<()> {
    keep_link(prog, "", prog.attach(), links)
}

/// Keeps the link of an attach, or names the probe the kernel refused.
fn keep_link(
    prog: &ProgramMut<'_>,
    place: &str,
    attached: libbpf_rs::Result<Link>,
    links: &mut Vec<Link>,
) -> Result<()> {
    let link = attached.with_context(|| {
        format!(
            "the kernel refused to attach probe {} ({}){place}",
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
        if let Some(ro) = open.maps.rodata_data.as_deref_mut() {
            ro.lifecycle_closed = opts.lifecycle_closed;
        }
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
        let (fexit, accept_arg) = match opts.plan.tcp_in {
            TcpIn::Fexit { arg } => (true, arg),
            TcpIn::SyscallExit { .. } => (false, false),
        };
        open.progs.accept_fexit.set_autoload(fexit && !accept_arg);
        open.progs.accept_arg_fexit.set_autoload(fexit && accept_arg);
        open.progs.accept_exit.set_autoload(!fexit);
        open.progs.accept4_exit.set_autoload(!fexit);
        let tcp_accept = open.load().context(if fexit {
            "the kernel refused eBPF object tcp_accept (fexit/inet_csk_accept); see the libbpf log above"
        } else {
            "the kernel refused eBPF object tcp_accept (syscalls/sys_exit_accept{,4}); see the libbpf log above"
        })?;

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
            ro.dns_capture_on = opts.dns_capture;
        }
        let udp_in = opts.plan.udp_in;
        open.progs.udp_ingress.set_autoload(udp_in != UdpIn::None);
        open.progs.udp_recv_done.set_autoload(udp_in == UdpIn::RecvTracepoint);
        open.progs.udp_recvmsg_exit.set_autoload(udp_in == UdpIn::RecvFexit);
        open.progs.udpv6_recvmsg_exit.set_autoload(udp_in == UdpIn::RecvFexit);
        let udp_recv = open.load().context(
            "the kernel refused eBPF object udp_recv (cgroup_skb/ingress, sock_recv_length or fexit/udp{,v6}_recvmsg); \
             see the libbpf log above",
        )?;

        let cgroup = open_cgroup2_root()?;

        let mut links = Vec::new();
        match udp_in {
            UdpIn::RecvTracepoint => {
                attach_cgroup(&udp_recv.progs.udp_ingress, &cgroup, &mut links)?;
                attach(&udp_recv.progs.udp_recv_done, &mut links)?;
            }
            UdpIn::RecvFexit => {
                attach_cgroup(&udp_recv.progs.udp_ingress, &cgroup, &mut links)?;
                attach(&udp_recv.progs.udp_recvmsg_exit, &mut links)?;
                attach(&udp_recv.progs.udpv6_recvmsg_exit, &mut links)?;
            }
            UdpIn::None => {}
        }

        let mut maps = common.to_vec();
        maps.push(("udp_flows", udp_recv.maps.udp_flows.as_fd()));
        maps.push(("udp_counters", udp_recv.maps.udp_counters.as_fd()));
        let shared = SharedUdpMaps {
            fexit: opts.plan.udp_out == UdpOut::SendFexit,
            uncork_reported: opts.plan.uncork_reported,
            shed_above: opts.udp_shed_above,
            sendmsg_hook: opts.udp_sendmsg_hook,
            hook_floor: opts.hook_floor,
            dns_capture: opts.dns_capture,
            maps,
        };
        let forced = opts.udp_asked != super::UdpMechanism::Auto;
        if opts.udp_asked == super::UdpMechanism::Process && opts.plan.udp_out == UdpOut::Packet {
            anyhow::bail!(
                "--udp-mechanism process is not available on this kernel (no sock_send_length and no fexit, \
                 or BPF before 5.12; see the probe report above)"
            );
        }
        let udp_send = match (opts.plan.udp_out, forced) {
            (UdpOut::Packet, _) => {
                UdpSend::Packet { _skel: load_udp_packet(&mut storage.udp_packet, &shared, &mut links)? }
            }
            (_, true) => UdpSend::Process { skel: load_udp_send(&mut storage.udp_send, &shared, &cgroup, &mut links)? },
            (_, false) => match load_udp_send(&mut storage.udp_send, &shared, &cgroup, &mut links) {
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
                "UDP sends: process-context mechanism ({} + cgroup_skb/egress{}), every network namespace",
                if shared.fexit { "fexit/udp{,v6}_sendmsg" } else { "sock_send_length" },
                if opts.udp_sendmsg_hook { " + cgroup sendmsg4/6" } else { "; no sendmsg hook" }
            ),
            UdpSend::Packet { .. } => {
                tracing::info!(
                    "UDP sends: packet-socket mechanism (consume_skb + one raw AF_PACKET socket per network namespace)"
                );
                if opts.dns_capture {
                    tracing::warn!(
                        "DNS queries are taken at the process mechanism's cgroup_skb/egress, not loaded with the \
                         packet mechanism: no DNS query events, no host names"
                    );
                }
            }
        }

        attach(&tcp_state.progs.tcp_state_change, &mut links)?;
        if fexit && accept_arg {
            attach(&tcp_accept.progs.accept_arg_fexit, &mut links)?;
        } else if fexit {
            attach(&tcp_accept.progs.accept_fexit, &mut links)?;
        } else {
            attach(&tcp_accept.progs.accept_exit, &mut links)?;
            attach(&tcp_accept.progs.accept4_exit, &mut links)?;
        }
        attach(&process.progs.process_exec, &mut links)?;
        attach(&process.progs.process_fork, &mut links)?;
        attach(&process.progs.process_exit, &mut links)?;
        attach(&process.progs.process_cgroup, &mut links)?;
        let uring = match opts.plan.tcp_in {
            TcpIn::SyscallExit { io_uring: true } => {
                match load_tcp_accept_uring(&mut storage.tcp_accept_uring, &common, opts.hook_floor, &mut links) {
                    Ok(skel) => Some(skel),
                    Err(e) => {
                        tracing::warn!("io_uring accepts not seen ({e:#}): they count as never accepted");
                        None
                    }
                }
            }
            TcpIn::SyscallExit { io_uring: false } => {
                tracing::warn!(
                    "io_uring accepts not seen (this kernel's io_uring tracepoints): they count as never accepted"
                );
                None
            }
            TcpIn::Fexit { .. } => None, // inet_csk_accept sees them
        };
        let tcp_stop = if opts.lifecycle_closed {
            let mut maps = common.to_vec();
            maps.push(("tcp_reported", tcp_state.maps.tcp_reported.as_fd()));
            match load_tcp_stop(&mut storage.tcp_stop, &maps, opts.hook_floor) {
                Ok(loaded) => Some(loaded),
                Err(e) => {
                    tracing::warn!(
                        "connections open at stop cannot be read ({e:#}): they are reported without figures"
                    );
                    None
                }
            }
        } else {
            None
        };
        Ok(Self { tcp_state, tcp_accept, _process: process, _uring: uring, udp_recv, udp_send, tcp_stop, links })
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
}

struct SharedUdpMaps<'a> {
    /// fexit/udp{,v6}_sendmsg instead of sock_send_length.
    fexit: bool,
    uncork_reported: bool,
    shed_above: u64,
    sendmsg_hook: bool,
    hook_floor: bool,
    dns_capture: bool,
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

/// The iterator over TCP sockets run at stop (tcp_stop.bpf.c): optional, as
/// a kernel may refuse iterators.
fn load_tcp_stop<'obj>(
    storage: &'obj mut MaybeUninit<OpenObject>,
    shared: &[(&'static str, BorrowedFd<'_>)],
    hook_floor: bool,
) -> Result<(TcpStopSkel<'obj>, Link)> {
    let mut open = TcpStopSkelBuilder::default().open(storage).context("opening eBPF object tcp_stop")?;
    share_maps(open.open_object_mut(), shared)?;
    set_hook_floor!(open, hook_floor, "tcp_stop");
    let skel = open.load().context("the kernel refused eBPF object tcp_stop (iter/tcp)")?;
    let link = skel.progs.tcp_open_at_stop.attach().context("attaching iter/tcp")?;
    Ok((skel, link))
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
        ro.dns_capture_on = shared.dns_capture;
        ro.egress_knows_task = shared.uncork_reported;
    }
    open.progs.udp_send_done.set_autoload(!shared.fexit);
    open.progs.udp_sendmsg_exit.set_autoload(shared.fexit);
    open.progs.udpv6_sendmsg_exit.set_autoload(shared.fexit);
    share_maps(open.open_object_mut(), &shared.maps)?;
    let skel = open
        .load()
        .context("the kernel refused eBPF object udp_send (sock_send_length, cgroup_skb/egress, cgroup sendmsg4/6)")?;
    let mut mine = Vec::new();
    if shared.fexit {
        attach(&skel.progs.udp_sendmsg_exit, &mut mine)?;
        attach(&skel.progs.udpv6_sendmsg_exit, &mut mine)?;
    } else {
        attach(&skel.progs.udp_send_done, &mut mine)?;
    }
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
        // The 23 of today at least: 13 attached by default, sendmsg4/6 with
        // IPsec, consume_skb in the packet mechanism, the iter/tcp run at stop
        // with close events on, and the fexit forms of the accept (2), send and
        // receive probes (4) where the kernel allows them.
        assert!(programs >= 23, "programs found in {}: {programs}", dir.display());
    }
}
