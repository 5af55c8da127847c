//! sockscope-peer: makes real TCP connections the way the tests (and later the
//! benchmark) need them, and prints what it did so a test can check the
//! sensor's events against it. Every wait is bounded by --timeout-secs.
//!
//! Output lines: `pid N`, `tid N`, `listening PORT`, `local ADDR`, `accepted N`.

use std::io::{Read, Write};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use socket2::{Domain, SockAddr, Socket, Type};

#[derive(Parser)]
#[command(name = "sockscope-peer", about = "Real TCP connections for sockscope's tests")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Give up after this long.
    #[arg(long, default_value_t = 20, global = true)]
    timeout_secs: u64,
    /// Ignored: lets a test put any bytes into argv.
    #[arg(long, global = true)]
    note: Option<std::ffi::OsString>,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum AcceptWith {
    /// accept(fd, &addr, &len)
    Accept,
    /// accept(fd, NULL, NULL)
    AcceptNull,
    /// accept4(fd, &addr, &len, SOCK_CLOEXEC)
    Accept4,
    /// io_uring IORING_OP_ACCEPT, one request per connection (no syscall accept).
    IoUring,
    /// io_uring multishot accept: one request, a completion per connection.
    IoUringMultishot,
    /// As io-uring, into direct descriptors (the ring's file table, slots
    /// 0, 1, ... named by each request; no fd).
    IoUringDirect,
    /// As io-uring-multishot, into direct descriptors the kernel allocates.
    IoUringMultishotDirect,
    /// As io-uring-multishot, naming the listener as fixed file 0; fd 0 is
    /// then another listening socket (a mix-up of the two shows).
    IoUringMultishotFixed,
}

impl AcceptWith {
    fn uring(self) -> Option<UringAccept> {
        match self {
            AcceptWith::IoUring => Some(UringAccept { multishot: false, direct: false, fixed_listener: false }),
            AcceptWith::IoUringMultishot => Some(UringAccept { multishot: true, direct: false, fixed_listener: false }),
            AcceptWith::IoUringDirect => Some(UringAccept { multishot: false, direct: true, fixed_listener: false }),
            AcceptWith::IoUringMultishotDirect => {
                Some(UringAccept { multishot: true, direct: true, fixed_listener: false })
            }
            AcceptWith::IoUringMultishotFixed => {
                Some(UringAccept { multishot: true, direct: false, fixed_listener: true })
            }
            AcceptWith::Accept | AcceptWith::AcceptNull | AcceptWith::Accept4 => None,
        }
    }
}

#[derive(Clone, Copy)]
struct UringAccept {
    multishot: bool,
    /// Into the ring's file table instead of the fd table.
    direct: bool,
    /// The listener named as fixed file 0 (not with `direct`).
    fixed_listener: bool,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Via {
    /// The main thread connects.
    Main,
    /// A second thread connects.
    Thread,
    /// The parent creates the socket; a forked child connects it.
    ForkChild,
    /// The main thread connects through io_uring IORING_OP_CONNECT (no connect syscall).
    IoUring,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum SendWith {
    Sendto,
    Sendmsg,
    Sendmmsg,
    /// send() on a connected socket
    Send,
    /// write() on a connected socket
    Write,
    /// io_uring IORING_OP_SENDMSG (no send syscall)
    IoUring,
    /// each datagram in two sendto calls, the first with MSG_MORE
    MsgMore,
    /// each datagram corked (UDP_CORK on, two sendto calls, UDP_CORK off:
    /// it leaves in the setsockopt call)
    Cork,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum RecvWith {
    /// recvfrom with an address buffer
    Recvfrom,
    /// recvfrom(fd, buf, len, 0, NULL, NULL)
    RecvfromNull,
    Recvmsg,
    /// recvmsg with msg_name NULL
    RecvmsgNull,
    Recvmmsg,
    Recv,
    Read,
    /// io_uring IORING_OP_RECVMSG with an address buffer (no receive syscall)
    IoUring,
}

#[derive(Subcommand)]
enum Cmd {
    /// Listen, accept COUNT connections, close them, exit.
    Listen {
        #[arg(long)]
        bind: SocketAddr,
        #[arg(long, value_enum, default_value_t = AcceptWith::Accept)]
        accept: AcceptWith,
        #[arg(long, default_value_t = 1)]
        count: usize,
        /// Enable TCP Fast Open on the listener and read the data it carries.
        #[arg(long)]
        fastopen: bool,
        /// With --accept io-uring*: also connect to ourselves and poll a TCP
        /// socket (multishot) under the accept's user_data, moved to fd
        /// DECOY_FD, so the poll's completions carry a number that is that
        /// socket's fd: the outbound end (`outbound`: never accepted) or the
        /// accepted end (`accepted`: accepted just before). Prints "decoy
        /// LOCAL" (the outbound end's address); the connection is accepted too.
        #[arg(long, value_enum)]
        uring_decoy: Option<DecoyKind>,
    },
    /// Connect COUNT sockets concurrently, print their local addresses, exit.
    Connect {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 1)]
        count: usize,
        #[arg(long, value_enum, default_value_t = Via::Main)]
        via: Via,
        /// Non-blocking connect() then poll (always so when COUNT > 1).
        #[arg(long)]
        nonblocking: bool,
        /// Open with sendto(MSG_FASTOPEN) instead of connect().
        #[arg(long)]
        fastopen: bool,
        /// Exit 0 only if the connection is refused.
        #[arg(long)]
        expect_refused: bool,
        /// Bind the connecting socket here first (a fixed source port).
        #[arg(long)]
        bind: Option<SocketAddr>,
        /// TCP_SYNCNT: SYN retransmissions before the connect times out.
        #[arg(long)]
        syn_count: Option<i32>,
        /// Exit 0 only if the connect fails; prints "failed ERRNO".
        #[arg(long)]
        expect_failure: bool,
        /// Non-blocking connect, then close the socket before the handshake
        /// can end (prints "aborted LOCAL").
        #[arg(long)]
        abort: bool,
    },
    /// Send UDP datagrams: COUNT to each destination, from each of SOCKETS sockets.
    UdpSend {
        #[arg(long, required = true)]
        to: Vec<SocketAddr>,
        #[arg(long, default_value_t = 1)]
        count: usize,
        #[arg(long, value_enum, default_value_t = SendWith::Sendto)]
        via: SendWith,
        /// Bind each socket here first (port 0: any).
        #[arg(long)]
        bind: Option<SocketAddr>,
        #[arg(long, default_value_t = 1)]
        sockets: usize,
        /// Use an IPv6 socket even for IPv4 destinations (given as ::ffff:a.b.c.d).
        #[arg(long)]
        v6_socket: bool,
        /// Wait this long, then send the same again from the same sockets.
        #[arg(long)]
        repeat_after_ms: Option<u64>,
        /// IPv6: every datagram carries a Destination Options extension
        /// header of this many bytes (IPV6_DSTOPTS; a multiple of 8, 8..=2040).
        #[arg(long, value_parser = dstopts_len)]
        ipv6_dstopts: Option<usize>,
    },
    /// Receive COUNT UDP datagrams on BIND.
    UdpRecv {
        #[arg(long)]
        bind: SocketAddr,
        #[arg(long, default_value_t = 1)]
        count: usize,
        #[arg(long, value_enum, default_value_t = RecvWith::Recvfrom)]
        via: RecvWith,
        /// connect() the socket to this peer first (needed for recv/read).
        #[arg(long)]
        connect: Option<SocketAddr>,
    },
    /// COUNT sockets bound to IP:FIRST_PORT.. each send one datagram to a
    /// receiver socket of this process at IP:RECV_PORT, paced so the
    /// receiver keeps up: COUNT outbound and COUNT inbound UDP flows. Prints
    /// "sent N received M". With --again K: waits for GO_FILE, then the last
    /// K sockets' flows again, then one new flow (port FIRST_PORT+COUNT),
    /// prints "resent K received M".
    UdpFan {
        #[arg(long)]
        ip: std::net::IpAddr,
        #[arg(long)]
        first_port: u16,
        #[arg(long)]
        count: u16,
        #[arg(long)]
        recv_port: u16,
        #[arg(long, default_value_t = 0)]
        again: u16,
        #[arg(long)]
        go_file: Option<std::path::PathBuf>,
    },
    /// Listen on loopback, connect to itself, accept: one process, both ends.
    /// Prints its pids (host and namespace) and network namespace inode.
    Pair,
    /// A tiny DNS responder on BIND, UDP and TCP (the tests' own, never the
    /// host's resolver). Answers from --record NAME=TYPE:VALUE (A, AAAA,
    /// CNAME; CNAME chains followed); names by their first label: `nx.*`
    /// NXDOMAIN, `tc.*` over UDP a truncated (TC) response without answers
    /// (answers over TCP), `bad.*` an answer whose name is a pointer loop,
    /// `cut.*` a response cut short inside its answer, `silent.*` none.
    /// Prints `listening PORT`; serves until --timeout-secs.
    DnsServe {
        #[arg(long)]
        bind: SocketAddr,
        #[arg(long = "record")]
        records: Vec<String>,
    },
    /// Sends one DNS query for NAME to SERVER (UDP; TCP with --tcp, or after
    /// a TC response), prints `pid N`, `local ADDR` (the query's socket),
    /// `rcode N`, `answer IP` per address; then, with --connect-port, connects
    /// over TCP to the first address and prints `connected LOCAL`.
    ResolveConnect {
        #[arg(long)]
        server: SocketAddr,
        #[arg(long)]
        name: String,
        /// A or AAAA.
        #[arg(long, default_value = "A")]
        qtype: String,
        #[arg(long)]
        tcp: bool,
        #[arg(long)]
        connect_port: Option<u16>,
        /// Seconds to wait for the response (none is an answer too: `rcode none`).
        #[arg(long, default_value_t = 3)]
        wait_secs: u64,
    },
}

fn main() {
    let cli = Cli::parse();
    let deadline = Instant::now() + Duration::from_secs(cli.timeout_secs);
    let result = match cli.cmd {
        Cmd::Listen { bind, accept, count, fastopen, uring_decoy } => {
            listen(bind, ListenOpts { with: accept, count, fastopen, uring_decoy }, deadline)
        }
        Cmd::Connect {
            to,
            count,
            via,
            nonblocking,
            fastopen,
            expect_refused,
            bind,
            syn_count,
            expect_failure,
            abort,
        } => {
            if expect_failure || abort {
                failing_connect(to, syn_count, abort, deadline)
            } else {
                let opts = ConnectOpts { nonblocking: nonblocking || count > 1, fastopen, expect_refused, bind };
                connect(to, count, via, opts, deadline)
            }
        }
        Cmd::Pair => pair(deadline),
        Cmd::UdpSend { to, count, via, bind, sockets, v6_socket, repeat_after_ms, ipv6_dstopts } => {
            let setup = SendSocket { bind, v6_socket, ipv6_dstopts };
            udp_send(&to, count, via, &setup, sockets, repeat_after_ms)
        }
        Cmd::UdpRecv { bind, count, via, connect } => udp_recv(bind, count, via, connect, deadline),
        Cmd::UdpFan { ip, first_port, count, recv_port, again, go_file } => {
            udp_fan(FanOpts { ip, first_port, count, recv_port, again, go_file }, deadline)
        }
        Cmd::DnsServe { bind, records } => dns::serve(bind, &records, deadline),
        Cmd::ResolveConnect { server, name, qtype, tcp, connect_port, wait_secs } => {
            dns::resolve_connect(server, &name, &qtype, tcp, connect_port, Duration::from_secs(wait_secs))
        }
    };
    if let Err(e) = result {
        eprintln!("sockscope-peer: {e:#}");
        std::process::exit(1);
    }
}

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    // A test reads these lines; if it went away there is no one to tell.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn domain(addr: &SocketAddr) -> Domain {
    if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    }
}

fn wait_readable(fd: i32, deadline: Instant) -> Result<()> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("timed out");
        }
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n > 0 {
            return Ok(());
        }
        if n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return Err(std::io::Error::last_os_error()).context("poll");
        }
    }
}

fn accept_one(listener: &Socket, with: AcceptWith) -> Result<OwnedFd> {
    let fd = listener.as_raw_fd();
    let mut storage = MaybeUninit::<libc::sockaddr_storage>::zeroed();
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let addr = storage.as_mut_ptr().cast::<libc::sockaddr>();
    // SAFETY: addr/len describe a sockaddr_storage we own, or are NULL.
    let ret = unsafe {
        match with {
            AcceptWith::Accept => libc::accept(fd, addr, &mut len),
            AcceptWith::AcceptNull => libc::accept(fd, std::ptr::null_mut(), std::ptr::null_mut()),
            AcceptWith::Accept4 => libc::accept4(fd, addr, &mut len, libc::SOCK_CLOEXEC),
            _ => bail!("io_uring accepts go through uring_accept"),
        }
    };
    if ret < 0 {
        return Err(std::io::Error::last_os_error()).context("accept");
    }
    // SAFETY: accept returned a new fd that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(ret) })
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum DecoyKind {
    Outbound,
    Accepted,
}

/// Poll events asked of the decoy: a connected socket is writable at once,
/// so its completions carry exactly this mask, which is also its fd.
const DECOY_FD: i32 = (libc::POLLOUT | libc::POLLWRNORM) as i32;

/// A connection to ourselves (`to`: our listener). Prints "decoy LOCAL".
fn self_connection(to: SocketAddr) -> Result<OwnedFd> {
    let s = Socket::new(domain(&to), Type::STREAM, None).context("socket")?;
    s.connect(&to.into()).with_context(|| format!("connect {to}"))?;
    say(format!("decoy {}", s.local_addr()?.as_socket().map_or_else(String::new, |a| a.to_string())));
    Ok(OwnedFd::from(s))
}

/// `fd` again as DECOY_FD.
fn to_decoy_fd(fd: &OwnedFd) -> Result<OwnedFd> {
    // SAFETY: dup2 onto a fixed number this process does not otherwise use;
    // the result is checked and owned below.
    let new = unsafe { libc::dup2(fd.as_raw_fd(), DECOY_FD) };
    if new != DECOY_FD {
        return Err(std::io::Error::last_os_error()).context("dup2 to the decoy fd");
    }
    // SAFETY: dup2 returned a new fd that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// A multishot poll on the decoy under the accept's user_data (7).
fn poll_decoy(ring: &mut io_uring::IoUring, decoy: &OwnedFd) -> Result<()> {
    use io_uring::{opcode, types};
    let mask = u32::try_from(DECOY_FD).context("mask")?;
    let poll = opcode::PollAdd::new(types::Fd(decoy.as_raw_fd()), mask).multi(true).build().user_data(7);
    // SAFETY: the SQE points at nothing that must outlive it.
    unsafe { ring.submission().push(&poll) }.map_err(|_| anyhow::anyhow!("submission queue full"))
}

/// Accepts `count` connections through io_uring: a request per connection,
/// or one multishot request; into fds, or into the ring's file table. Returns
/// the fds (none for direct descriptors: they live as long as the ring).
/// `decoy`: see `listen --uring-decoy`.
fn uring_accept(
    listener: &Socket,
    how: UringAccept,
    count: usize,
    decoy: Option<DecoyKind>,
    deadline: Instant,
) -> Result<Vec<OwnedFd>> {
    use io_uring::{cqueue, opcode, types, IoUring};
    let mut ring = IoUring::new(8).context("io_uring_setup")?;
    if how.direct {
        let slots = u32::try_from(count).context("too many connections")?;
        ring.submitter().register_files_sparse(slots).context("registering a sparse file table")?;
    }
    // Fd 0 becomes another listener, so that reading the fixed index as an
    // fd names the wrong socket. Kept open until we return.
    let _other_listener = if how.fixed_listener {
        ring.submitter().register_files(&[listener.as_raw_fd()]).context("registering the listener")?;
        let other = Socket::new(Domain::IPV4, Type::STREAM, None).context("socket")?;
        other.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).context("bind")?;
        other.listen(1).context("listen")?;
        // SAFETY: dup2 onto fd 0 (stdin, unused here); checked below.
        if unsafe { libc::dup2(other.as_raw_fd(), 0) } != 0 {
            return Err(std::io::Error::last_os_error()).context("dup2 to fd 0");
        }
        Some(other)
    } else {
        None
    };
    let fd = types::Fd(listener.as_raw_fd());
    // The decoy's connection is made before the accept is submitted, so it
    // is the first one accepted. Its outbound end stays open until we return.
    let outbound_end = match decoy {
        Some(_) => {
            let port = listener.local_addr()?.as_socket().map_or(0, |a| a.port());
            let ip = listener.local_addr()?.as_socket().map(|a| a.ip()).context("listener address")?;
            Some(self_connection(SocketAddr::new(ip, port)).context("decoy connection")?)
        }
        None => None,
    };
    let mut decoy_fd = None;
    if let (Some(DecoyKind::Outbound), Some(end)) = (decoy, &outbound_end) {
        let d = to_decoy_fd(end)?;
        poll_decoy(&mut ring, &d)?;
        decoy_fd = Some(d);
    }
    // The decoy's own connection is accepted too; an accepted decoy is done
    // once its poll completed.
    let count = count + usize::from(decoy.is_some());
    let mut decoy_polled = decoy != Some(DecoyKind::Accepted);
    let mut accepted = Vec::with_capacity(count);
    let mut done = 0usize;
    let mut pending = false;
    while done < count || !decoy_polled {
        if !pending {
            let sqe = match (how.multishot, how.direct) {
                (true, _) if how.fixed_listener => opcode::AcceptMulti::new(types::Fixed(0)).build(),
                (true, direct) => opcode::AcceptMulti::new(fd).allocate_file_index(direct).build(),
                (false, false) => opcode::Accept::new(fd, std::ptr::null_mut(), std::ptr::null_mut()).build(),
                (false, true) => {
                    let slot = u32::try_from(done).context("slot")?;
                    let slot = types::DestinationSlot::try_from_slot_target(slot)
                        .map_err(|s| anyhow::anyhow!("no file slot {s}"))?;
                    opcode::Accept::new(fd, std::ptr::null_mut(), std::ptr::null_mut()).file_index(Some(slot)).build()
                }
            };
            // SAFETY: the SQE points at nothing that must outlive it (no address buffer).
            unsafe { ring.submission().push(&sqe.user_data(7)) }
                .map_err(|_| anyhow::anyhow!("submission queue full"))?;
            pending = true;
        }
        if Instant::now() >= deadline {
            bail!("io_uring accept: deadline passed with {done} of {count}");
        }
        let wait = types::Timespec::new().nsec(100_000_000);
        match ring.submitter().submit_with_args(1, &types::SubmitArgs::new().timespec(&wait)) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ETIME) || e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("io_uring_enter"),
        }
        let cqes: Vec<cqueue::Entry> = ring.completion().collect();
        for cqe in cqes {
            if decoy_fd.is_some() && cqe.result() == DECOY_FD {
                decoy_polled = true; // the decoy's poll, under the accept's user_data
                continue;
            }
            if cqe.result() < 0 {
                return Err(std::io::Error::from_raw_os_error(-cqe.result())).context("io_uring accept");
            }
            if !how.direct {
                // SAFETY: a successful accept completion is a new fd that we now own.
                let new = unsafe { OwnedFd::from_raw_fd(cqe.result()) };
                if decoy == Some(DecoyKind::Accepted) && decoy_fd.is_none() {
                    let d = to_decoy_fd(&new)?;
                    poll_decoy(&mut ring, &d)?;
                    decoy_fd = Some(d);
                }
                accepted.push(new);
            }
            done += 1;
            pending = how.multishot && cqueue::more(cqe.flags());
        }
    }
    say(format!("accepted {done}"));
    Ok(accepted)
}

struct ListenOpts {
    with: AcceptWith,
    count: usize,
    fastopen: bool,
    uring_decoy: Option<DecoyKind>,
}

fn listen(bind: SocketAddr, opts: ListenOpts, deadline: Instant) -> Result<()> {
    let ListenOpts { with, count, fastopen, uring_decoy } = opts;
    let listener = Socket::new(domain(&bind), Type::STREAM, None).context("socket")?;
    listener.set_reuse_address(true)?;
    if bind.is_ipv6() {
        // [::] accepts IPv4 clients too (dual stack).
        listener.set_only_v6(false)?;
    }
    listener.bind(&bind.into()).with_context(|| format!("bind {bind}"))?;
    if fastopen {
        let qlen: libc::c_int = 16;
        // SAFETY: valid fd and an int option value of the right size.
        let r = unsafe {
            libc::setsockopt(
                listener.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_FASTOPEN,
                (&qlen as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error()).context("TCP_FASTOPEN");
        }
    }
    listener.listen(1024)?;
    let port = listener.local_addr()?.as_socket().map_or(0, |a| a.port());
    say(format!("pid {}", std::process::id()));
    say(format!("listening {port}"));
    if let Some(how) = with.uring() {
        uring_accept(&listener, how, count, uring_decoy, deadline)?;
        return Ok(());
    }
    let mut accepted = Vec::with_capacity(count);
    while accepted.len() < count {
        wait_readable(listener.as_raw_fd(), deadline)?;
        let fd = accept_one(&listener, with)?;
        if fastopen {
            let mut s = std::fs::File::from(fd.try_clone()?);
            let mut byte = [0u8; 1];
            s.read_exact(&mut byte).context("reading fast-open data")?;
        }
        accepted.push(fd);
    }
    say(format!("accepted {}", accepted.len()));
    Ok(())
}

/// How `connect` opens its sockets.
#[derive(Clone, Copy)]
struct ConnectOpts {
    nonblocking: bool,
    fastopen: bool,
    expect_refused: bool,
    bind: Option<SocketAddr>,
}

fn connect(to: SocketAddr, count: usize, via: Via, opts: ConnectOpts, deadline: Instant) -> Result<()> {
    say(format!("pid {}", std::process::id()));
    match via {
        Via::Main => connect_many(to, count, opts, deadline),
        Via::Thread => std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            say(format!("tid {}", unsafe { libc::gettid() }));
            connect_many(to, count, opts, deadline)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("connecting thread panicked"))?,
        Via::ForkChild => fork_child_connect(to, deadline),
        Via::IoUring => uring_connect(to, count),
    }
}

/// `count` connections, each opened by an io_uring CONNECT request.
fn uring_connect(to: SocketAddr, count: usize) -> Result<()> {
    let mut ring = io_uring::IoUring::new(4).context("io_uring_setup")?;
    let addr = SockAddr::from(to);
    let mut socks = Vec::with_capacity(count);
    for _ in 0..count {
        let s = open_socket(to, false)?;
        let sqe = io_uring::opcode::Connect::new(io_uring::types::Fd(s.as_raw_fd()), addr.as_ptr(), addr.len()).build();
        uring_once(&mut ring, &sqe).with_context(|| format!("io_uring connect {to}"))?;
        socks.push(s);
    }
    say_locals(&socks)
}

/// `local ADDR` for each connected socket.
fn say_locals(socks: &[Socket]) -> Result<()> {
    for s in socks {
        if let Some(local) = s.local_addr()?.as_socket() {
            say(format!("local {local}"));
        }
    }
    Ok(())
}

fn open_socket(to: SocketAddr, nonblocking: bool) -> Result<Socket> {
    let s = Socket::new(domain(&to), Type::STREAM, None).context("socket")?;
    s.set_nonblocking(nonblocking)?;
    Ok(s)
}

fn start_connect(s: &Socket, to: SocketAddr, fastopen: bool) -> std::io::Result<()> {
    let addr = SockAddr::from(to);
    if fastopen {
        s.send_to_with_flags(b"x", &addr, libc::MSG_FASTOPEN).map(|_| ())
    } else {
        s.connect(&addr)
    }
}

fn connect_many(to: SocketAddr, count: usize, opts: ConnectOpts, deadline: Instant) -> Result<()> {
    let ConnectOpts { nonblocking, fastopen, expect_refused, bind } = opts;
    let mut socks = Vec::with_capacity(count);
    for _ in 0..count {
        let s = open_socket(to, nonblocking)?;
        if let Some(local) = bind {
            s.set_reuse_address(true)?;
            s.bind(&local.into()).with_context(|| format!("bind {local}"))?;
        }
        match start_connect(&s, to, fastopen) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) if expect_refused && e.kind() == std::io::ErrorKind::ConnectionRefused => {
                say(format!("refused {to}"));
                return Ok(());
            }
            Err(e) => return Err(e).with_context(|| format!("connect {to}")),
        }
        socks.push(s);
    }
    for s in &socks {
        wait_connected(s, deadline)?;
    }
    if expect_refused {
        bail!("connection to {to} was not refused");
    }
    say_locals(&socks)
}

/// One connect that must fail (`abort`: closed by us before it can end).
fn failing_connect(to: SocketAddr, syn_count: Option<i32>, abort: bool, deadline: Instant) -> Result<()> {
    say(format!("pid {}", std::process::id()));
    let s = open_socket(to, abort)?;
    if let Some(n) = syn_count {
        // SAFETY: valid fd and an int option value of the right size.
        let r = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_SYNCNT,
                (&n as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error()).context("TCP_SYNCNT");
        }
    }
    let result = s.connect(&SockAddr::from(to));
    if abort {
        match result {
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            other => bail!("non-blocking connect to {to} did not stay in progress: {other:?}"),
        }
        let local = s.local_addr()?.as_socket().map_or_else(String::new, |a| a.to_string());
        drop(s);
        say(format!("aborted {local}"));
        return Ok(());
    }
    match result {
        Ok(()) => bail!("connect to {to} succeeded"),
        Err(e) => {
            if Instant::now() > deadline {
                bail!("connect to {to} outlasted the deadline");
            }
            say(format!("failed {}", e.raw_os_error().unwrap_or(0)));
            Ok(())
        }
    }
}

fn wait_connected(s: &Socket, deadline: Instant) -> Result<()> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("timed out connecting");
        }
        let mut pfd = libc::pollfd { fd: s.as_raw_fd(), events: libc::POLLOUT, revents: 0 };
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n > 0 {
            if let Some(e) = s.take_error()? {
                return Err(e).context("connect");
            }
            return Ok(());
        }
    }
}

fn fork_child_connect(to: SocketAddr, deadline: Instant) -> Result<()> {
    let s = open_socket(to, false)?;
    // SAFETY: single-threaded here; the child only makes syscalls and exits.
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()).context("fork"),
        0 => {
            say(format!("child {}", std::process::id()));
            let code = match s.connect(&SockAddr::from(to)) {
                Ok(()) => {
                    if let Ok(Some(local)) = s.local_addr().map(|a| a.as_socket()) {
                        say(format!("local {local}"));
                    }
                    0
                }
                Err(e) => {
                    eprintln!("sockscope-peer: child connect: {e}");
                    1
                }
            };
            // SAFETY: leave the child without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        child => {
            let mut status = 0;
            while Instant::now() < deadline {
                // SAFETY: waiting for our own child.
                let r = unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) };
                if r == child {
                    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
                        return Ok(());
                    }
                    bail!("child failed with status {status}");
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            // SAFETY: our own child.
            unsafe { libc::kill(child, libc::SIGKILL) };
            bail!("child timed out")
        }
    }
}

fn pair(deadline: Instant) -> Result<()> {
    // Through the host's /proc (not remounted), NSpid lists host pid first.
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    if let Some(nspid) = status.lines().find_map(|l| l.strip_prefix("NSpid:")) {
        say(format!("nspid {}", nspid.split_whitespace().collect::<Vec<_>>().join(" ")));
    }
    let netns = std::fs::metadata("/proc/self/ns/net").context("own netns")?;
    say(format!("netns {}", std::os::unix::fs::MetadataExt::ino(&netns)));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind loopback (is lo up?)")?;
    let port = listener.local_addr()?.port();
    say(format!("listening {port}"));
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).context("connect")?;
    wait_readable(listener.as_raw_fd(), deadline)?;
    let _accepted = listener.accept().context("accept")?;
    say(format!("local {}", stream.local_addr()?));
    Ok(())
}

fn sockaddr_parts(addr: &SockAddr) -> (*const libc::sockaddr, libc::socklen_t) {
    (addr.as_ptr().cast(), addr.len())
}

fn check(ret: isize, what: &str) -> Result<usize> {
    if ret < 0 {
        return Err(std::io::Error::last_os_error()).context(what.to_string());
    }
    Ok(ret as usize)
}

/// How udp-send sets up each of its sockets.
struct SendSocket {
    bind: Option<SocketAddr>,
    v6_socket: bool,
    ipv6_dstopts: Option<usize>,
}

fn dstopts_len(text: &str) -> std::result::Result<usize, String> {
    let n: usize = text.parse().map_err(|e| format!("{e}"))?;
    if n % 8 != 0 || !(8..=2040).contains(&n) {
        return Err("a multiple of 8 from 8 to 2040 (the most setsockopt takes)".into());
    }
    Ok(n)
}

/// A Destination Options header of `len` bytes on every datagram the socket
/// sends (the kernel fills in the next-header byte): options of the
/// experimental type 0x1e (skipped by receivers), padding for the rest.
fn set_ipv6_dstopts(s: &Socket, len: usize) -> Result<()> {
    let mut header = vec![0u8; len];
    header[1] = u8::try_from(len / 8 - 1).context("header length")?;
    let mut at = 2;
    while at < len {
        let left = len - at;
        if left == 1 {
            at += 1; // Pad1: a zero byte
        } else if left <= 7 {
            header[at] = 1; // PadN (receivers take at most 7 bytes of padding)
            header[at + 1] = (left - 2) as u8;
            at += left;
        } else {
            let data = (left - 2).min(255);
            header[at] = 0x1e;
            header[at + 1] = data as u8;
            at += 2 + data;
        }
    }
    // SAFETY: header is a valid buffer of the given length for the call.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_DSTOPTS,
            header.as_ptr().cast(),
            header.len() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).context("setsockopt(IPV6_DSTOPTS)");
    }
    Ok(())
}

fn udp_send(
    to: &[SocketAddr],
    count: usize,
    via: SendWith,
    setup: &SendSocket,
    sockets: usize,
    repeat_after_ms: Option<u64>,
) -> Result<()> {
    say(format!("pid {}", std::process::id()));
    let connected = matches!(via, SendWith::Send | SendWith::Write);
    if connected && to.len() != 1 {
        bail!("send/write need exactly one --to");
    }
    let family = if setup.v6_socket { Domain::IPV6 } else { domain(&to[0]) };
    let mut socks = Vec::with_capacity(sockets);
    for _ in 0..sockets {
        let s = Socket::new(family, Type::DGRAM, None).context("socket")?;
        if family == Domain::IPV6 {
            s.set_only_v6(false)?;
        }
        if let Some(len) = setup.ipv6_dstopts {
            set_ipv6_dstopts(&s, len)?;
        }
        if let Some(b) = setup.bind {
            s.bind(&b.into()).with_context(|| format!("bind {b}"))?;
        }
        if connected {
            s.connect(&to[0].into()).context("connect")?;
        }
        send_all(&s, to, count, via)?;
        if let Some(local) = s.local_addr()?.as_socket() {
            say(format!("local {local}"));
        }
        socks.push(s);
    }
    if let Some(ms) = repeat_after_ms {
        std::thread::sleep(Duration::from_millis(ms));
        for s in &socks {
            send_all(s, to, count, via)?;
        }
    }
    Ok(())
}

/// One datagram from two corked sendto calls; it leaves when uncorked.
/// SAFETY: `name`/`namelen` must describe a live socket address.
unsafe fn corked_send(fd: i32, payload: &[u8], name: *const libc::sockaddr, namelen: libc::socklen_t) -> isize {
    let cork = |on: libc::c_int| {
        // SAFETY: a valid fd and an int option of the right size.
        unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_UDP,
                libc::UDP_CORK,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        }
    };
    if cork(1) != 0 {
        return -1;
    }
    let (head, tail) = payload.split_at(payload.len() / 2);
    for part in [head, tail] {
        // SAFETY: the caller's address and a live buffer.
        if unsafe { libc::sendto(fd, part.as_ptr().cast(), part.len(), 0, name, namelen) } < 0 {
            return -1;
        }
    }
    if cork(0) != 0 {
        return -1;
    }
    payload.len() as isize
}

/// One io_uring request, waited for: its result, or the error it carries.
fn uring_once(ring: &mut io_uring::IoUring, sqe: &io_uring::squeue::Entry) -> Result<isize> {
    // SAFETY: the caller keeps every buffer the entry points at alive until
    // this returns, and this waits for the completion.
    unsafe { ring.submission().push(sqe) }.map_err(|_| anyhow::anyhow!("submission queue full"))?;
    ring.submit_and_wait(1).context("io_uring_enter")?;
    let cqe = ring.completion().next().ok_or_else(|| anyhow::anyhow!("no io_uring completion"))?;
    if cqe.result() < 0 {
        return Err(std::io::Error::from_raw_os_error(-cqe.result())).context("io_uring request");
    }
    Ok(cqe.result() as isize)
}

fn send_all(s: &Socket, to: &[SocketAddr], count: usize, via: SendWith) -> Result<()> {
    let payload = [0x5au8; 64];
    let mut ring =
        if via == SendWith::IoUring { Some(io_uring::IoUring::new(4).context("io_uring_setup")?) } else { None };
    {
        let fd = s.as_raw_fd();
        for dest in to {
            let addr = SockAddr::from(*dest);
            let (name, namelen) = sockaddr_parts(&addr);
            let mut iov = libc::iovec { iov_base: payload.as_ptr() as *mut libc::c_void, iov_len: payload.len() };
            // SAFETY: msghdr is plain data; zeroed is valid before we fill it.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_name = name as *mut libc::c_void;
            msg.msg_namelen = namelen;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            let mut sent = 0;
            while sent < count {
                // SAFETY: every pointer passed refers to live, correctly sized buffers above.
                let n = unsafe {
                    match via {
                        SendWith::Sendto => libc::sendto(fd, payload.as_ptr().cast(), payload.len(), 0, name, namelen),
                        SendWith::Sendmsg => libc::sendmsg(fd, &msg, 0),
                        SendWith::Send => libc::send(fd, payload.as_ptr().cast(), payload.len(), 0),
                        SendWith::Write => libc::write(fd, payload.as_ptr().cast(), payload.len()),
                        SendWith::IoUring => match ring.as_mut() {
                            Some(ring) => uring_once(
                                ring,
                                &io_uring::opcode::SendMsg::new(io_uring::types::Fd(fd), &msg).build(),
                            )?,
                            None => bail!("no io_uring"),
                        },
                        SendWith::MsgMore => {
                            let (head, tail) = payload.split_at(payload.len() / 2);
                            let r = libc::sendto(fd, head.as_ptr().cast(), head.len(), libc::MSG_MORE, name, namelen);
                            if r < 0 {
                                r
                            } else {
                                libc::sendto(fd, tail.as_ptr().cast(), tail.len(), 0, name, namelen)
                            }
                        }
                        SendWith::Cork => corked_send(fd, &payload, name, namelen),
                        SendWith::Sendmmsg => {
                            let batch = (count - sent).min(16);
                            let mut msgs: Vec<libc::mmsghdr> =
                                (0..batch).map(|_| libc::mmsghdr { msg_hdr: msg, msg_len: 0 }).collect();
                            let r = libc::sendmmsg(fd, msgs.as_mut_ptr(), batch as libc::c_uint, 0);
                            if r > 0 {
                                sent += r as usize - 1;
                            }
                            r as isize
                        }
                    }
                };
                check(n, "send")?;
                sent += 1;
            }
        }
    }
    Ok(())
}

fn udp_recv(
    bind: SocketAddr,
    count: usize,
    via: RecvWith,
    connect: Option<SocketAddr>,
    deadline: Instant,
) -> Result<()> {
    let s = Socket::new(domain(&bind), Type::DGRAM, None).context("socket")?;
    if bind.is_ipv6() {
        s.set_only_v6(false)?;
    }
    s.bind(&bind.into()).with_context(|| format!("bind {bind}"))?;
    if let Some(peer) = connect {
        s.connect(&peer.into()).context("connect")?;
    }
    let port = s.local_addr()?.as_socket().map_or(0, |a| a.port());
    say(format!("pid {}", std::process::id()));
    say(format!("listening {port}"));
    let fd = s.as_raw_fd();
    let mut ring =
        if via == RecvWith::IoUring { Some(io_uring::IoUring::new(4).context("io_uring_setup")?) } else { None };
    let mut got = 0;
    while got < count {
        wait_readable(fd, deadline)?;
        let mut buf = [0u8; 2048];
        let mut from = MaybeUninit::<libc::sockaddr_storage>::zeroed();
        let mut fromlen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        // SAFETY: msghdr is plain data; zeroed is valid before we fill it.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if via != RecvWith::RecvmsgNull {
            msg.msg_name = from.as_mut_ptr().cast();
            msg.msg_namelen = fromlen;
        }
        // SAFETY: every pointer passed refers to live, correctly sized buffers above.
        let n = unsafe {
            match via {
                RecvWith::Recvfrom => {
                    libc::recvfrom(fd, buf.as_mut_ptr().cast(), buf.len(), 0, from.as_mut_ptr().cast(), &mut fromlen)
                }
                RecvWith::RecvfromNull => libc::recvfrom(
                    fd,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                ),
                RecvWith::Recvmsg | RecvWith::RecvmsgNull => libc::recvmsg(fd, &mut msg, 0),
                RecvWith::Recv => libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0),
                RecvWith::Read => libc::read(fd, buf.as_mut_ptr().cast(), buf.len()),
                RecvWith::IoUring => match ring.as_mut() {
                    Some(ring) => {
                        uring_once(ring, &io_uring::opcode::RecvMsg::new(io_uring::types::Fd(fd), &mut msg).build())?
                    }
                    None => bail!("no io_uring"),
                },
                RecvWith::Recvmmsg => {
                    let mut one = [libc::mmsghdr { msg_hdr: msg, msg_len: 0 }];
                    let r = libc::recvmmsg(fd, one.as_mut_ptr(), 1, libc::MSG_DONTWAIT, std::ptr::null_mut());
                    r as isize
                }
            }
        };
        check(n, "receive")?;
        got += 1;
    }
    say(format!("received {got}"));
    Ok(())
}

struct FanOpts {
    ip: std::net::IpAddr,
    first_port: u16,
    count: u16,
    recv_port: u16,
    again: u16,
    go_file: Option<std::path::PathBuf>,
}

/// See `Cmd::UdpFan`.
fn udp_fan(o: FanOpts, deadline: Instant) -> Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let to = SocketAddr::new(o.ip, o.recv_port);
    let receiver = std::net::UdpSocket::bind(to).with_context(|| format!("bind {to}"))?;
    let _ = Socket::from(receiver.try_clone()?).set_recv_buffer_size(8 << 20);
    receiver.set_read_timeout(Some(Duration::from_millis(200)))?;
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (received, stop) = (Arc::clone(&received), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                if receiver.recv_from(&mut buf).is_ok() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let send_from = |port: u16| -> Result<()> {
        let s = std::net::UdpSocket::bind(SocketAddr::new(o.ip, port)).with_context(|| format!("bind port {port}"))?;
        s.send_to(b"fan", to).with_context(|| format!("send from port {port}"))?;
        Ok(())
    };
    // Waits (bounded) until the receiver has read `n` datagrams: one at a
    // time, as the sensor remembers a few unread senders per socket only.
    let caught_up = |n: u64| {
        let until = (Instant::now() + Duration::from_secs(2)).min(deadline);
        while received.load(Ordering::Relaxed) < n && Instant::now() < until {
            std::thread::yield_now();
        }
    };
    let mut sent = 0u64;
    for i in 0..o.count {
        send_from(o.first_port.checked_add(i).context("port range")?)?;
        sent += 1;
        caught_up(sent);
    }
    caught_up(sent);
    println!("sent {sent} received {}", received.load(Ordering::Relaxed));
    std::io::stdout().flush()?;
    if o.again > 0 {
        let go = o.go_file.context("--again needs --go-file")?;
        while !go.exists() {
            if Instant::now() >= deadline {
                bail!("{} never appeared", go.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for i in o.count.saturating_sub(o.again)..o.count {
            send_from(o.first_port + i)?;
            sent += 1;
            caught_up(sent);
        }
        send_from(o.first_port.checked_add(o.count).context("port range")?)?;
        sent += 1;
        caught_up(sent);
        println!("resent {} received {}", o.again, received.load(Ordering::Relaxed));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = reader.join();
    Ok(())
}

/// The DNS responder and client of the tests.
mod dns {
    use std::io::{Read, Write};
    use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
    use std::time::{Duration, Instant};

    use anyhow::{bail, Context, Result};
    use sockscope::dns::parse::{self, build, RData, TYPE_A, TYPE_AAAA, TYPE_CNAME};

    use super::say;

    struct Zone(Vec<(String, u16, Vec<u8>)>);

    impl Zone {
        fn parse(records: &[String]) -> Result<Zone> {
            let mut out = Vec::new();
            for r in records {
                let (name, rest) = r.split_once('=').with_context(|| format!("record {r}: NAME=TYPE:VALUE"))?;
                let (kind, value) = rest.split_once(':').with_context(|| format!("record {r}: NAME=TYPE:VALUE"))?;
                let (t, data) = match kind {
                    "A" => (TYPE_A, value.parse::<std::net::Ipv4Addr>().context("A value")?.octets().to_vec()),
                    "AAAA" => (TYPE_AAAA, value.parse::<std::net::Ipv6Addr>().context("AAAA value")?.octets().to_vec()),
                    "CNAME" => (TYPE_CNAME, build::name(value)),
                    other => bail!("record type {other}"),
                };
                out.push((name.to_ascii_lowercase(), t, data));
            }
            Ok(Zone(out))
        }

        /// The answers for `name`/`qtype`, CNAMEs first.
        fn answers(&self, name: &str, qtype: u16) -> Vec<Vec<u8>> {
            let mut out = Vec::new();
            let mut at = name.to_ascii_lowercase();
            for _ in 0..8 {
                if let Some((_, _, target)) = self.0.iter().find(|(n, t, _)| *n == at && *t == TYPE_CNAME) {
                    out.push(build::record(Some(&at), TYPE_CNAME, 300, target));
                    match parse::read_name(target, 0, "target") {
                        Ok((next, _)) => at = next.to_ascii_lowercase(),
                        Err(_) => break,
                    }
                    continue;
                }
                for (_, _, data) in self.0.iter().filter(|(n, t, _)| *n == at && *t == qtype) {
                    out.push(build::record(Some(&at), qtype, 60, data));
                }
                break;
            }
            out
        }

        /// The response to `query`, or none (`silent.*`).
        fn respond(&self, query: &[u8], tcp: bool) -> Option<Vec<u8>> {
            let msg = parse::parse(query).ok()?;
            let q = msg.questions.first()?;
            let first = q.name.split('.').next().unwrap_or_default();
            match first {
                "silent" => None,
                "nx" => Some(build::response(query, 3, false, &[])),
                "tc" if !tcp => Some(build::response(query, 0, true, &[])),
                "bad" => {
                    // One answer whose name points at itself.
                    let at = 12 + query.len() - 12;
                    let mut looped = vec![0xc0 | ((at >> 8) as u8 & 0x3f), at as u8];
                    looped.extend_from_slice(&build::record(None, TYPE_A, 60, &[192, 0, 2, 1])[2..]);
                    Some(build::response(query, 0, false, &[looped]))
                }
                "cut" => {
                    let mut r = build::response(query, 0, false, &self.answers(&q.name, q.qtype));
                    r.truncate(r.len().saturating_sub(3));
                    Some(r)
                }
                _ => Some(build::response(query, 0, false, &self.answers(&q.name, q.qtype))),
            }
        }
    }

    pub fn serve(bind: SocketAddr, records: &[String], deadline: Instant) -> Result<()> {
        let zone = std::sync::Arc::new(Zone::parse(records)?);
        let udp = UdpSocket::bind(bind).with_context(|| format!("bind udp {bind}"))?;
        let tcp = TcpListener::bind(bind).with_context(|| format!("bind tcp {bind}"))?;
        say(format!("listening {}", udp.local_addr()?.port()));
        let tcp_zone = std::sync::Arc::clone(&zone);
        std::thread::spawn(move || {
            for stream in tcp.incoming().map_while(Result::ok) {
                if let Err(e) = serve_tcp(stream, &tcp_zone) {
                    eprintln!("sockscope-peer: dns tcp: {e:#}");
                }
            }
        });
        let mut buf = [0u8; 1500];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            udp.set_read_timeout(Some(left))?;
            let (n, from) = match udp.recv_from(&mut buf) {
                Ok(got) => got,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    return Ok(())
                }
                Err(e) => return Err(e).context("recv"),
            };
            if let Some(r) = zone.respond(&buf[..n], false) {
                udp.send_to(&r, from).context("send")?;
            }
        }
    }

    fn serve_tcp(mut stream: TcpStream, zone: &Zone) -> Result<()> {
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len)?;
        let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut query)?;
        if let Some(r) = zone.respond(&query, true) {
            let mut framed = (r.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&r);
            stream.write_all(&framed)?;
        }
        Ok(())
    }

    pub fn resolve_connect(
        server: SocketAddr,
        name: &str,
        qtype: &str,
        tcp: bool,
        connect_port: Option<u16>,
        wait: Duration,
    ) -> Result<()> {
        let qtype = if qtype.eq_ignore_ascii_case("AAAA") { TYPE_AAAA } else { TYPE_A };
        say(format!("pid {}", std::process::id()));
        let id = (std::process::id() & 0xffff) as u16;
        let query = build::query(id, name, qtype);
        let mut response = if tcp { None } else { ask_udp(server, &query, wait)? };
        if tcp || response.as_ref().is_some_and(|r| parse::parse(r).is_ok_and(|m| m.truncated)) {
            if let Some(r) = &response {
                report(r);
            }
            response = ask_tcp(server, &query, wait)?;
        }
        let Some(response) = response else {
            say("rcode none".into());
            return Ok(());
        };
        let first = report(&response);
        if let (Some(port), Some(ip)) = (connect_port, first) {
            let stream = TcpStream::connect_timeout(&SocketAddr::new(ip, port), wait).context("connect")?;
            say(format!("connected {}", stream.local_addr()?));
        }
        Ok(())
    }

    /// Prints a response's rcode and addresses; the first address.
    fn report(response: &[u8]) -> Option<IpAddr> {
        let Ok(m) = parse::parse(response) else {
            say("rcode unparsed".into());
            return None;
        };
        say(format!("rcode {}", m.rcode));
        let mut first = None;
        for a in &m.answers {
            let ip = match a.data {
                RData::A(v4) => IpAddr::V4(v4),
                RData::Aaaa(v6) => IpAddr::V6(v6),
                _ => continue,
            };
            say(format!("answer {ip}"));
            first = first.or(Some(ip));
        }
        first
    }

    fn ask_udp(server: SocketAddr, query: &[u8], wait: Duration) -> Result<Option<Vec<u8>>> {
        let bind: SocketAddr = if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse()?;
        let sock = UdpSocket::bind(bind)?;
        sock.connect(server)?;
        say(format!("local {}", sock.local_addr()?));
        sock.send(query)?;
        sock.set_read_timeout(Some(wait))?;
        let mut buf = vec![0u8; 4096];
        match sock.recv(&mut buf) {
            Ok(n) => Ok(Some(buf[..n].to_vec())),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => Ok(None),
            Err(e) => Err(e).context("recv"),
        }
    }

    fn ask_tcp(server: SocketAddr, query: &[u8], wait: Duration) -> Result<Option<Vec<u8>>> {
        let mut stream = TcpStream::connect_timeout(&server, wait).context("dns tcp connect")?;
        say(format!("local {}", stream.local_addr()?));
        let mut framed = (query.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(query);
        stream.write_all(&framed)?;
        stream.set_read_timeout(Some(wait))?;
        let mut len = [0u8; 2];
        if stream.read_exact(&mut len).is_err() {
            return Ok(None);
        }
        let mut r = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut r).context("dns tcp response")?;
        Ok(Some(r))
    }
}
