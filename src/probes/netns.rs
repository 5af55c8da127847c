//! For the packet-socket UDP mechanism: one filtered AF_PACKET raw socket in
//! every network namespace, opened as namespaces appear and closed when they
//! go (the socket itself would otherwise keep a dead namespace alive).
//!
//! Namespaces are found by scanning /proc/*/ns/net and /run/netns; a
//! namespace is covered from the first scan after it appears, so packets
//! sent in its first moments can be missed. The process-context mechanism
//! has no such gap, which is one reason it is preferred.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

const ETH_P_ALL: u16 = 0x0003;

pub struct NetnsTaps {
    taps: HashMap<u64, OwnedFd>,
    /// Namespaces whose tap could not be opened and was warned about.
    warned: std::collections::HashSet<u64>,
}

impl Default for NetnsTaps {
    fn default() -> Self {
        Self::new()
    }
}

impl NetnsTaps {
    pub fn new() -> Self {
        Self { taps: HashMap::new(), warned: std::collections::HashSet::new() }
    }

    /// Opens a tap in each new namespace and closes those of vanished ones.
    pub fn refresh(&mut self) {
        let live = live_namespaces();
        self.warned.retain(|inode| live.contains_key(inode));
        self.taps.retain(|inode, _| {
            let keep = live.contains_key(inode);
            if !keep {
                tracing::info!(netns = inode, "network namespace gone: closed its packet socket");
            }
            keep
        });
        for (inode, path) in live {
            if self.taps.contains_key(&inode) {
                continue;
            }
            match open_tap_in(&path) {
                Ok(fd) => {
                    tracing::info!(netns = inode, "watching network namespace");
                    self.taps.insert(inode, fd);
                }
                // The namespace may have died between the scan and now; if it
                // lives on, its UDP sends go unreported: said once, tried again.
                Err(e) if path.exists() && self.warned.insert(inode) => tracing::warn!(
                    netns = inode,
                    "no packet socket in this network namespace, so its UDP sends are not reported \
                     (the packet-socket mechanism needs CAP_NET_RAW and CAP_SYS_ADMIN): {e:#}"
                ),
                Err(e) => tracing::debug!(netns = inode, "no packet socket: {e:#}"),
            }
        }
    }
}

/// inode -> a path that opens it.
pub fn live_namespaces() -> HashMap<u64, PathBuf> {
    let mut found = HashMap::new();
    let mut add = |path: PathBuf| {
        if let Ok(meta) = std::fs::metadata(&path) {
            found.entry(meta.ino()).or_insert(path);
        }
    };
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.filter_map(|e| e.ok()) {
            let name = entry.file_name();
            if name.to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())) {
                add(entry.path().join("ns/net"));
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir("/run/netns") {
        for entry in dir.filter_map(|e| e.ok()) {
            add(entry.path());
        }
    }
    found
}

/// Runs `work` inside the network namespace at `ns_path`. setns() changes
/// only the calling thread: it runs in a short-lived one.
pub fn in_namespace<T: Send>(ns_path: &Path, work: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let ns = File::open(ns_path).with_context(|| format!("opening {}", ns_path.display()))?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
                work()
            })
            .join()
            .map_err(|_| anyhow::anyhow!("namespace thread panicked"))?
    })
}

fn open_tap_in(ns_path: &Path) -> Result<OwnedFd> {
    in_namespace(ns_path, open_tap)
}

/// A raw socket whose filter accepts nothing: its only job is to make the
/// kernel clone outgoing packets for it (and free the clones in the sender's
/// context). Created with protocol 0 so nothing is queued before the filter
/// is in place; bound to ETH_P_ALL after.
fn open_tap() -> Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the fd is owned right after.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error()).context("socket(AF_PACKET, SOCK_RAW)");
    }
    // SAFETY: raw is a new, valid fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut reject_all = [libc::sock_filter { code: 0x06 /* BPF_RET|BPF_K */, jt: 0, jf: 0, k: 0 }];
    let prog = libc::sock_fprog { len: 1, filter: reject_all.as_mut_ptr() };
    // SAFETY: prog points at a valid one-instruction filter for the duration of the call.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&prog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).context("SO_ATTACH_FILTER");
    }
    // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = ETH_P_ALL.to_be();
    // SAFETY: sll is a valid sockaddr_ll of the stated size.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).context("bind(ETH_P_ALL)");
    }
    Ok(fd)
}
