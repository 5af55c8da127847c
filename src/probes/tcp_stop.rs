//! At sensor stop: the kernel's report of the reported TCP connections still
//! open (tcp_stop.bpf.c, an iter/tcp program), run once in every network
//! namespace, since a TCP iterator walks the namespace of the thread that
//! opens it. Each marked socket writes a closed fact (sensor-stop) with its
//! counters so far, which the final drain then reads.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use anyhow::{Context, Result};

use super::netns::{in_namespace, live_namespaces};

/// bpf(2) command (include/uapi/linux/bpf.h).
const BPF_ITER_CREATE: libc::c_long = 33;

/// `union bpf_attr` for BPF_ITER_CREATE.
#[repr(C)]
struct IterCreateAttr {
    link_fd: u32,
    flags: u32,
}

/// Opens an iterator of `link` (in the calling thread's namespace) and reads
/// it to the end: that runs the program over every socket.
fn run_iterator(link_fd: i32) -> Result<()> {
    let attr = IterCreateAttr { link_fd: u32::try_from(link_fd).context("link fd")?, flags: 0 };
    // SAFETY: BPF_ITER_CREATE reads `attr` (of the size given) and returns a new fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_ITER_CREATE,
            &attr as *const IterCreateAttr,
            std::mem::size_of::<IterCreateAttr>() as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("creating a TCP socket iterator");
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    let iter = unsafe { OwnedFd::from_raw_fd(i32::try_from(fd).context("iterator fd")?) };
    let mut file = std::fs::File::from(iter);
    let mut sink = Vec::new();
    // The program prints nothing: reading only drives it over the sockets.
    file.read_to_end(&mut sink).context("running the TCP socket iterator")?;
    Ok(())
}

/// Runs the iterator in every live network namespace; returns how many it
/// ran in and the failures (a namespace gone meanwhile, ...).
pub fn report_open_connections(link: &libbpf_rs::Link) -> (usize, Vec<String>) {
    let link_fd = link.as_fd().as_raw_fd();
    let mut ran = 0;
    let mut failed = Vec::new();
    for (inode, path) in live_namespaces() {
        match in_namespace(&path, || run_iterator(link_fd)) {
            Ok(()) => ran += 1,
            Err(e) => failed.push(format!("network namespace {inode}: {e:#}")),
        }
    }
    (ran, failed)
}
