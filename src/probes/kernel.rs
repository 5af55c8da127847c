//! What the running kernel offers the probes (BTF, tp_btf tracepoints,
//! fentry/fexit, kprobes, the sock and io_uring tracepoints, what a
//! cgroup_skb program may ask), found at start without loading anything that
//! stays, and the mechanism chosen for each kind of event from that: the
//! start report and `--check`.

use std::ffi::CString;
use std::fmt;
use std::path::Path;

use super::UdpMechanism;

/// What the kernel allows, as measured at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub btf: bool,
    /// fentry/fexit programs load and attach (refused under lockdown, or
    /// without ftrace's direct calls).
    pub fentry: bool,
    /// Why `fentry` is false, when it is.
    pub fentry_refusal: Option<String>,
    pub kprobes: bool,
    pub sock_send_length: bool,
    pub sock_recv_length: bool,
    pub io_uring_submit_req: bool,
    pub io_uring_complete: bool,
    /// The kfunc bpf_rdonly_cast (6.2+): the syscall accept probes walk
    /// task -> file -> sock with it.
    pub rdonly_cast: bool,
    /// cgroup_skb programs may call bpf_get_current_pid_tgid and _uid_gid.
    pub cgroup_skb_task: bool,
    /// inet_csk_accept takes a struct proto_accept_arg (6.10+).
    pub accept_arg: bool,
    /// What the UDP process-context programs need besides their hooks:
    /// atomic fetch operations (5.12), bpf_ktime_get_coarse_ns in cgroup_skb
    /// and socket storage in tracing programs (5.11). Not on 5.10.
    pub udp_process_bpf: bool,
}

impl Capabilities {
    /// Probes the running kernel (needs the privileges loading needs).
    pub fn detect() -> Self {
        let btf = Path::new("/sys/kernel/btf/vmlinux").exists();
        let (fentry, fentry_refusal) = if btf {
            match probe_fexit("udp_sendmsg") {
                Ok(()) => (true, None),
                Err(e) => (false, Some(e)),
            }
        } else {
            (false, Some("no kernel BTF".into()))
        };
        Self {
            btf,
            fentry,
            fentry_refusal,
            kprobes: Path::new("/sys/bus/event_source/devices/kprobe/type").exists(),
            sock_send_length: btf && has_btf_tracepoint("sock_send_length"),
            sock_recv_length: btf && has_btf_tracepoint("sock_recv_length"),
            io_uring_submit_req: btf && has_btf_tracepoint("io_uring_submit_req"),
            io_uring_complete: btf && has_btf_tracepoint("io_uring_complete"),
            rdonly_cast: btf && has_btf_func("bpf_rdonly_cast"),
            accept_arg: btf && has_btf_struct("proto_accept_arg"),
            udp_process_bpf: atomic_fetch_allowed()
                && helper_allowed(
                    libbpf_rs::libbpf_sys::BPF_PROG_TYPE_CGROUP_SKB,
                    libbpf_rs::libbpf_sys::BPF_FUNC_ktime_get_coarse_ns,
                ),
            // 6.12 allows the first in cgroup_skb and refuses the second.
            cgroup_skb_task: [
                libbpf_rs::libbpf_sys::BPF_FUNC_get_current_pid_tgid,
                libbpf_rs::libbpf_sys::BPF_FUNC_get_current_uid_gid,
            ]
            .iter()
            .all(|h| helper_allowed(libbpf_rs::libbpf_sys::BPF_PROG_TYPE_CGROUP_SKB, *h)),
        }
    }
}

fn vmlinux_btf_id(name: &str, attach: libbpf_rs::libbpf_sys::bpf_attach_type) -> Option<u32> {
    let name = CString::new(name).ok()?;
    // SAFETY: a valid C string; libbpf reads the kernel's BTF and returns an id or -errno.
    let id = unsafe { libbpf_rs::libbpf_sys::libbpf_find_vmlinux_btf_id(name.as_ptr(), attach) };
    u32::try_from(id).ok().filter(|id| *id > 0)
}

/// A `btf_trace_NAME` type: a tp_btf program can attach to NAME.
fn has_btf_tracepoint(name: &str) -> bool {
    vmlinux_btf_id(name, libbpf_rs::libbpf_sys::BPF_TRACE_RAW_TP).is_some()
}

/// A struct in the kernel's BTF.
fn has_btf_struct(name: &str) -> bool {
    libbpf_rs::Btf::from_vmlinux()
        .map(|btf| btf.type_by_name::<libbpf_rs::btf::types::Struct<'_>>(name).is_some())
        .unwrap_or(false)
}

/// A function (or kfunc) in the kernel's BTF.
fn has_btf_func(name: &str) -> bool {
    vmlinux_btf_id(name, libbpf_rs::libbpf_sys::BPF_TRACE_FEXIT).is_some()
}

fn helper_allowed(prog_type: libbpf_rs::libbpf_sys::bpf_prog_type, helper: libbpf_rs::libbpf_sys::bpf_func_id) -> bool {
    // SAFETY: libbpf loads a two-instruction program of that type and closes it.
    unsafe { libbpf_rs::libbpf_sys::libbpf_probe_bpf_helper(prog_type, helper, std::ptr::null()) == 1 }
}

/// Whether the verifier takes an atomic fetch-or (5.12+): a socket filter
/// that does one on its stack, loaded and closed.
fn atomic_fetch_allowed() -> bool {
    use libbpf_rs::libbpf_sys as sys;
    let insn = |code: u32, dst: u8, src: u8, off: i16, imm: i32| {
        let mut i = sys::bpf_insn { code: code as u8, off, imm, ..Default::default() };
        i.set_dst_reg(dst);
        i.set_src_reg(src);
        i
    };
    let insns = [
        insn(sys::BPF_ALU64 | sys::BPF_MOV | sys::BPF_K, 1, 0, 0, 0), // r1 = 0
        insn(sys::BPF_STX | sys::BPF_MEM | sys::BPF_DW, 10, 1, -8, 0), // *(u64 *)(r10 - 8) = r1
        insn(sys::BPF_ALU64 | sys::BPF_MOV | sys::BPF_K, 1, 0, 0, 1), // r1 = 1
        insn(sys::BPF_STX | sys::BPF_ATOMIC | sys::BPF_DW, 10, 1, -8, (sys::BPF_OR | sys::BPF_FETCH) as i32),
        insn(sys::BPF_ALU64 | sys::BPF_MOV | sys::BPF_K, 0, 0, 0, 0), // r0 = 0
        insn(sys::BPF_JMP | sys::BPF_EXIT, 0, 0, 0, 0),
    ];
    // SAFETY: valid instructions and strings that outlive the call; no options.
    let fd = unsafe {
        sys::bpf_prog_load(
            sys::BPF_PROG_TYPE_SOCKET_FILTER,
            c"sockscope_probe".as_ptr(),
            c"GPL".as_ptr(),
            insns.as_ptr(),
            insns.len() as _,
            std::ptr::null_mut(),
        )
    };
    if fd >= 0 {
        // SAFETY: our own fd.
        unsafe { libc::close(fd) };
    }
    fd >= 0
}

/// Loads a do-nothing fexit program on `func`, attaches it and closes both:
/// whether the kernel lets fentry/fexit programs run at all.
fn probe_fexit(func: &str) -> Result<(), String> {
    use libbpf_rs::libbpf_sys as sys;
    let Some(btf_id) = vmlinux_btf_id(func, sys::BPF_TRACE_FEXIT) else {
        return Err(format!("{func} is not in the kernel's BTF"));
    };
    // r0 = 0; exit
    let insns = [
        sys::bpf_insn { code: (sys::BPF_ALU64 | sys::BPF_MOV | sys::BPF_K) as u8, ..Default::default() },
        sys::bpf_insn { code: (sys::BPF_JMP | sys::BPF_EXIT) as u8, ..Default::default() },
    ];
    let mut opts = sys::bpf_prog_load_opts {
        sz: std::mem::size_of::<sys::bpf_prog_load_opts>() as _,
        expected_attach_type: sys::BPF_TRACE_FEXIT,
        attach_btf_id: btf_id,
        ..Default::default()
    };
    let license = c"GPL";
    let name = c"sockscope_probe";
    // SAFETY: valid instructions, strings and options that outlive the call.
    let prog = unsafe {
        sys::bpf_prog_load(sys::BPF_PROG_TYPE_TRACING, name.as_ptr(), license.as_ptr(), insns.as_ptr(), 2, &mut opts)
    };
    if prog < 0 {
        return Err(format!("the kernel refuses fexit programs: {}", std::io::Error::from_raw_os_error(-prog)));
    }
    // SAFETY: `prog` is our fd; the link is closed at once.
    let link = unsafe { sys::bpf_link_create(prog, 0, sys::BPF_TRACE_FEXIT, std::ptr::null()) };
    let result = if link < 0 {
        Err(format!("the kernel refuses to attach fexit programs: {}", std::io::Error::from_raw_os_error(-link)))
    } else {
        // SAFETY: our own fd.
        unsafe { libc::close(link) };
        Ok(())
    };
    // SAFETY: our own fd.
    unsafe { libc::close(prog) };
    result
}

/// How TCP accepts are attributed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpIn {
    /// fexit/inet_csk_accept: every accept (syscalls and io_uring) in the
    /// accepting task; `arg`: its 6.10+ arguments.
    Fexit { arg: bool },
    /// accept/accept4 syscall-exit tracepoints (fd -> sock with bpf_rdonly_cast),
    /// io_uring accepts from io_uring's tracepoints where they have the needed form.
    SyscallExit { io_uring: bool },
}

/// How UDP sends are seen (the process-context mechanism's hook, or the seed's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpOut {
    /// tp_btf/sock_send_length + cgroup_skb/egress.
    SendTracepoint,
    /// fexit/udp_sendmsg and udpv6_sendmsg + cgroup_skb/egress.
    SendFexit,
    /// consume_skb behind a raw packet socket per namespace.
    Packet,
}

/// How UDP receives are attributed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpIn {
    /// cgroup_skb/ingress + tp_btf/sock_recv_length.
    RecvTracepoint,
    /// cgroup_skb/ingress + fexit/udp_recvmsg and udpv6_recvmsg.
    RecvFexit,
    /// Not seen.
    None,
}

/// The mechanism for each kind of event, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub tcp_in: TcpIn,
    pub udp_out: UdpOut,
    pub udp_in: UdpIn,
    /// A corked UDP datagram that leaves in setsockopt(UDP_CORK, 0) is
    /// reported by cgroup_skb/egress (it may ask for the task).
    pub uncork_reported: bool,
    /// Each line of the report: what serves what, and why.
    pub lines: Vec<String>,
    /// What is not covered (empty: full coverage).
    pub gaps: Vec<String>,
}

impl Plan {
    /// Picks, per kind of event, the process-context mechanism the kernel
    /// allows at the lowest cost. `udp` is the user's setting.
    pub fn choose(caps: &Capabilities, udp: UdpMechanism) -> Self {
        let mut lines = Vec::new();
        let mut gaps = Vec::new();
        let fentry_why = caps.fentry_refusal.as_deref().unwrap_or("allowed");
        lines.push(
            "TCP out: tp_btf/inet_sock_set_state (the connecting task at CLOSE -> SYN_SENT; every kernel with BTF)"
                .to_string(),
        );
        let tcp_in = if caps.fentry {
            lines.push(
                "TCP in: fexit/inet_csk_accept (the accepting task, syscalls and io_uring alike; fexit allowed, \
                 cheaper than syscall-exit tracepoints, which slow every syscall)"
                    .to_string(),
            );
            TcpIn::Fexit { arg: caps.accept_arg }
        } else {
            let io_uring = caps.io_uring_submit_req && caps.io_uring_complete && caps.rdonly_cast;
            lines.push(format!(
                "TCP in: syscalls/sys_exit_accept{{,4}} (fexit: {fentry_why}){}",
                if io_uring {
                    "; io_uring accepts: tp_btf/io_uring_submit_req + io_uring_complete"
                } else {
                    "; io_uring accepts: not seen (no io_uring_submit_req tracepoint, or no bpf_rdonly_cast)"
                }
            ));
            if !caps.rdonly_cast {
                gaps.push("TCP in: no fexit and no kfunc bpf_rdonly_cast (6.2+) for the accept syscall probes".into());
            }
            if !io_uring {
                gaps.push("TCP in: io_uring accepts are not seen (counted as never accepted)".into());
            }
            TcpIn::SyscallExit { io_uring }
        };
        let udp_out = match udp {
            UdpMechanism::Packet => {
                lines.push("UDP out: packet (consume_skb + raw packet sockets; asked for)".into());
                UdpOut::Packet
            }
            UdpMechanism::Process | UdpMechanism::Auto if caps.sock_send_length && caps.udp_process_bpf => {
                lines.push("UDP out: process: tp_btf/sock_send_length + cgroup_skb/egress".into());
                UdpOut::SendTracepoint
            }
            UdpMechanism::Process | UdpMechanism::Auto if caps.fentry && caps.udp_process_bpf => {
                lines.push(
                    "UDP out: process: fexit/udp_sendmsg + fexit/udpv6_sendmsg + cgroup_skb/egress \
                     (no sock_send_length: before 6.3)"
                        .into(),
                );
                UdpOut::SendFexit
            }
            _ => {
                lines.push(if caps.udp_process_bpf {
                    format!("UDP out: packet (consume_skb + raw packet sockets): no sock_send_length and fexit {fentry_why}")
                } else {
                    "UDP out: packet (consume_skb + raw packet sockets): the process-context programs need 5.12's BPF \
                     (atomic fetch, coarse clock and socket storage in tracing programs)"
                        .to_string()
                });
                gaps.push("UDP out: only the packet mechanism (softirq sends misattributed)".into());
                UdpOut::Packet
            }
        };
        let udp_in = if !caps.udp_process_bpf {
            lines.push(
                "UDP in: not seen (the receive programs need 5.12's BPF: atomic fetch, coarse clock, socket storage \
                 in tracing programs)"
                    .into(),
            );
            gaps.push("UDP in: this kernel's BPF is too old (before 5.12): UDP receives are not reported".into());
            UdpIn::None
        } else if caps.sock_recv_length {
            lines.push("UDP in: cgroup_skb/ingress + tp_btf/sock_recv_length".into());
            UdpIn::RecvTracepoint
        } else if caps.fentry {
            lines.push(
                "UDP in: cgroup_skb/ingress + fexit/udp_recvmsg + fexit/udpv6_recvmsg (no sock_recv_length: before 6.3)"
                    .into(),
            );
            UdpIn::RecvFexit
        } else {
            lines.push(format!("UDP in: not seen (no sock_recv_length, fexit {fentry_why})"));
            gaps.push("UDP in: no sock_recv_length and no fexit: UDP receives are not reported".into());
            UdpIn::None
        };
        let uncork_reported = caps.cgroup_skb_task;
        if udp_out != UdpOut::Packet && !uncork_reported {
            lines.push(
                "UDP out, uncorked by setsockopt(UDP_CORK, 0): not seen (cgroup_skb may not ask for the task here)"
                    .into(),
            );
            gaps.push("UDP out: a corked datagram sent by setsockopt(UDP_CORK, 0) is not seen".into());
        }
        lines.push("process identity: tp_btf/sched_process_{exec,fork,exit}, cgroup_attach_task".into());
        if !caps.btf {
            gaps.insert(0, "no kernel BTF (/sys/kernel/btf/vmlinux): no probe can load".into());
        }
        lines.push(format!(
            "kernel: BTF {}, fentry/fexit {}, kprobes {}, sock_send_length {}, sock_recv_length {}, \
             io_uring_submit_req {}, bpf_rdonly_cast {}, cgroup_skb task helpers {}, 5.12 BPF {}",
            yes(caps.btf),
            if caps.fentry { "yes" } else { fentry_why },
            yes(caps.kprobes),
            yes(caps.sock_send_length),
            yes(caps.sock_recv_length),
            yes(caps.io_uring_submit_req),
            yes(caps.rdonly_cast),
            yes(caps.cgroup_skb_task),
            yes(caps.udp_process_bpf),
        ));
        Self { tcp_in, udp_out, udp_in, uncork_reported, lines, gaps }
    }

    pub fn full_coverage(&self) -> bool {
        self.gaps.is_empty()
    }
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.lines {
            writeln!(f, "  {line}")?;
        }
        if self.gaps.is_empty() {
            write!(f, "  coverage: full")
        } else {
            write!(f, "  coverage: partial: {}", self.gaps.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_6_18() -> Capabilities {
        Capabilities {
            btf: true,
            fentry: false,
            fentry_refusal: Some("the kernel refuses fexit programs: EPERM".into()),
            kprobes: false,
            sock_send_length: true,
            sock_recv_length: true,
            io_uring_submit_req: true,
            io_uring_complete: true,
            rdonly_cast: true,
            cgroup_skb_task: true,
            accept_arg: true,
            udp_process_bpf: true,
        }
    }

    #[test]
    fn lockdown_6_18_keeps_todays_tracepoints() {
        let plan = Plan::choose(&host_6_18(), UdpMechanism::Auto);
        assert_eq!(plan.tcp_in, TcpIn::SyscallExit { io_uring: true });
        assert_eq!(plan.udp_out, UdpOut::SendTracepoint);
        assert_eq!(plan.udp_in, UdpIn::RecvTracepoint);
        assert!(plan.full_coverage(), "{plan}");
    }

    #[test]
    fn debian_6_1_uses_fexit() {
        let caps = Capabilities {
            btf: true,
            fentry: true,
            kprobes: true,
            io_uring_complete: true,
            udp_process_bpf: true,
            ..Default::default()
        };
        let plan = Plan::choose(&caps, UdpMechanism::Auto);
        assert_eq!(plan.tcp_in, TcpIn::Fexit { arg: false });
        assert_eq!(plan.udp_out, UdpOut::SendFexit);
        assert_eq!(plan.udp_in, UdpIn::RecvFexit);
        assert!(!plan.uncork_reported);
        assert_eq!(plan.gaps.len(), 1, "{plan}");
    }

    #[test]
    fn debian_6_12_prefers_the_sock_tracepoints() {
        let caps = Capabilities {
            btf: true,
            fentry: true,
            sock_send_length: true,
            sock_recv_length: true,
            rdonly_cast: true,
            accept_arg: true,
            udp_process_bpf: true,
            ..Default::default()
        };
        let plan = Plan::choose(&caps, UdpMechanism::Auto);
        assert_eq!(plan.tcp_in, TcpIn::Fexit { arg: true });
        assert_eq!(plan.udp_out, UdpOut::SendTracepoint);
        assert_eq!(plan.udp_in, UdpIn::RecvTracepoint);
    }

    #[test]
    fn debian_5_10_sends_by_packet_and_sees_no_receives() {
        let caps = Capabilities { btf: true, fentry: true, kprobes: true, ..Default::default() };
        let plan = Plan::choose(&caps, UdpMechanism::Auto);
        assert_eq!(plan.tcp_in, TcpIn::Fexit { arg: false });
        assert_eq!(plan.udp_out, UdpOut::Packet);
        assert_eq!(plan.udp_in, UdpIn::None);
        assert!(!plan.full_coverage());
    }

    #[test]
    fn nothing_but_tracepoints_before_6_3_degrades_udp() {
        let caps = Capabilities { btf: true, udp_process_bpf: true, ..Default::default() };
        let plan = Plan::choose(&caps, UdpMechanism::Auto);
        assert_eq!(plan.udp_out, UdpOut::Packet);
        assert_eq!(plan.udp_in, UdpIn::None);
        assert!(!plan.full_coverage());
        assert!(plan.to_string().contains("UDP in: not seen"), "{plan}");
    }
}
