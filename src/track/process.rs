//! The process table: who a pid is, fed by exec/fork/exit facts from the
//! kernel and seeded from /proc for processes older than the sensor.
//! Entries of exited processes stay for a grace period, so connection facts
//! still in flight find their process.

use std::collections::{HashMap, VecDeque};
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, OnceLock};

use super::container::container_id;
use crate::decode::Identity;
use crate::event::Shared;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    /// Absolute path of the executable, raw bytes.
    pub image: Vec<u8>,
    pub image_truncated: bool,
    /// argv, NUL separated (empty when unknown).
    pub argv: Vec<u8>,
    pub argv_truncated: bool,
    /// Process start, boot-clock ns (as /proc/PID/stat and task->start_boottime).
    pub start_boot_ns: u64,
    /// Pid in the process's own pid namespace.
    pub ns_pid: u32,
    /// cgroup v2 path.
    pub cgroup: Vec<u8>,
    /// Derived from `cgroup` once, when the process is learnt.
    pub container_id: Option<String>,
    /// Its fields as events write them, rendered at its first event.
    pub text: OnceLock<ProcessText>,
}

struct Entry {
    info: Arc<ProcessInfo>,
    exited: bool,
}

/// Reads a live process from /proc (or a stand-in in tests).
pub type ProcReader = fn(u32) -> Option<ProcessInfo>;

#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessStats {
    pub from_kernel: u64,
    pub from_proc: u64,
    pub unknown: u64,
    pub dropped_full: u64,
}

pub struct ProcessTable {
    procs: HashMap<u32, Entry>,
    /// (exit time, pid, start) in exit order, for ageing exited entries.
    exited: VecDeque<(u64, u32, u64)>,
    grace_ns: u64,
    capacity: usize,
    read_proc: ProcReader,
    pub stats: ProcessStats,
}

impl ProcessTable {
    pub fn new(capacity: usize, grace_ns: u64, read_proc: ProcReader) -> Self {
        Self {
            procs: HashMap::new(),
            exited: VecDeque::new(),
            grace_ns,
            capacity,
            read_proc,
            stats: ProcessStats::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Seeds the table with every process alive now.
    pub fn scan_proc(&mut self) -> usize {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return 0;
        };
        let pids: Vec<u32> =
            dir.filter_map(|e| e.ok()).filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok())).collect();
        let mut n = 0;
        for pid in pids {
            if let Some(info) = (self.read_proc)(pid) {
                self.put(info);
                n += 1;
            }
        }
        n
    }

    fn put(&mut self, info: ProcessInfo) {
        if self.procs.len() >= self.capacity && !self.procs.contains_key(&info.pid) {
            // Make room from the exited entries first; live processes are
            // bounded by pid_max.
            if !self.drop_oldest_exited() {
                self.stats.dropped_full += 1;
                return;
            }
        }
        self.procs.insert(info.pid, Entry { info: Arc::new(info), exited: false });
    }

    pub fn exec(&mut self, info: ProcessInfo) {
        self.stats.from_kernel += 1;
        self.put(info);
    }

    /// A new process: it runs its parent's image until it execs.
    pub fn fork(&mut self, parent: u32, child: u32, start_boot_ns: u64, uid: u32, identity: Identity) {
        let inherited = self.lookup(parent).map(|p| ProcessInfo {
            pid: child,
            ppid: parent,
            uid,
            start_boot_ns,
            ns_pid: identity.ns_tgid,
            container_id: container_id(&identity.cgroup),
            cgroup: identity.cgroup,
            // Pid and start differ from the parent's, so does the GUID.
            text: OnceLock::new(),
            ..(*p).clone()
        });
        match inherited.or_else(|| (self.read_proc)(child)) {
            Some(info) => self.put(info),
            None => self.stats.unknown += 1,
        }
    }

    pub fn exit(&mut self, pid: u32, now_ns: u64) {
        if let Some(e) = self.procs.get_mut(&pid) {
            e.exited = true;
            self.exited.push_back((now_ns, pid, e.info.start_boot_ns));
        }
    }

    /// The process behind `pid` if the table knows it (never reads /proc).
    /// The process moved to another cgroup (e.g. put into a container's
    /// after its exec): its cgroup and container id change, the rest stays.
    pub fn moved(&mut self, pid: u32, identity: Identity) {
        let Some(entry) = self.procs.get_mut(&pid) else {
            return; // unknown: its next lookup reads /proc, which has the new cgroup
        };
        if entry.info.cgroup == identity.cgroup {
            return;
        }
        entry.info = Arc::new(ProcessInfo {
            container_id: container_id(&identity.cgroup),
            cgroup: identity.cgroup,
            text: OnceLock::new(),
            ..(*entry.info).clone()
        });
    }

    pub fn get(&self, pid: u32) -> Option<Arc<ProcessInfo>> {
        self.procs.get(&pid).map(|e| e.info.clone())
    }

    /// The process behind `pid`: from the table, else from /proc (a process
    /// that started before the sensor and was missed by the scan).
    pub fn lookup(&mut self, pid: u32) -> Option<Arc<ProcessInfo>> {
        if let Some(e) = self.procs.get(&pid) {
            return Some(e.info.clone());
        }
        if pid == 0 {
            return None;
        }
        match (self.read_proc)(pid) {
            Some(info) => {
                self.stats.from_proc += 1;
                self.put(info);
                self.procs.get(&pid).map(|e| e.info.clone())
            }
            None => {
                self.stats.unknown += 1;
                None
            }
        }
    }

    /// Forgets processes that exited more than the grace period ago.
    pub fn expire(&mut self, now_ns: u64) {
        while let Some(&(t, _, _)) = self.exited.front() {
            if now_ns.saturating_sub(t) < self.grace_ns {
                break;
            }
            self.drop_oldest_exited();
        }
    }

    fn drop_oldest_exited(&mut self) -> bool {
        while let Some((_, pid, start)) = self.exited.pop_front() {
            // The pid may have been reused since; only drop the one that exited.
            if self.procs.get(&pid).is_some_and(|e| e.exited && e.info.start_boot_ns == start) {
                self.procs.remove(&pid);
                return true;
            }
        }
        false
    }
}

/// Reads /proc/PID. Racy by nature: used only for processes the kernel
/// facts have not told us about.
pub fn read_proc(pid: u32) -> Option<ProcessInfo> {
    let base = format!("/proc/{pid}");
    let status = std::fs::read_to_string(format!("{base}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u32>().ok())
    };
    // Threads also appear as /proc/TID when addressed directly: report the group.
    let tgid = field("Tgid:")?;
    if tgid != pid {
        return None;
    }
    let image =
        std::fs::read_link(format!("{base}/exe")).map(|p| p.as_os_str().as_bytes().to_vec()).unwrap_or_default();
    let argv = std::fs::read(format!("{base}/cmdline")).unwrap_or_default();
    // "NSpid: <host> ... <innermost>"
    let ns_pid = status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .and_then(|v| v.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(pid);
    // cgroup v2 is the "0::" line.
    let cgroup = std::fs::read(format!("{base}/cgroup"))
        .ok()
        .and_then(|c| c.split(|&b| b == b'\n').find_map(|l| l.strip_prefix(b"0::").map(<[u8]>::to_vec)))
        .unwrap_or_default();
    Some(ProcessInfo {
        pid,
        ppid: field("PPid:").unwrap_or(0),
        uid: field("Uid:").unwrap_or(u32::MAX),
        image,
        image_truncated: false,
        argv,
        argv_truncated: false,
        start_boot_ns: start_boot_ns(&base).unwrap_or(0),
        ns_pid,
        container_id: container_id(&cgroup),
        cgroup,
        text: OnceLock::new(),
    })
}

/// Field 22 of /proc/PID/stat, in clock ticks since boot.
fn start_boot_ns(base: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("{base}/stat")).ok()?;
    // comm (field 2) may hold spaces and parentheses: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let ticks: u64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|&h| h > 0)?;
    Some(ticks * (1_000_000_000 / hz))
}

/// A process's fields as events write them. Rendered once per process (at
/// its first event), because escaping a command line per event is the
/// costliest part of enrichment; it also keeps its ProcessGuid fixed when the
/// wall clock is re-synced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessText {
    pub guid: Shared,
    pub image: Shared,
    pub command_line: Shared,
    pub container_id: Shared,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(pid: u32, image: &str) -> ProcessInfo {
        ProcessInfo {
            pid,
            ppid: 1,
            uid: 0,
            image: image.as_bytes().to_vec(),
            image_truncated: false,
            argv: Vec::new(),
            argv_truncated: false,
            start_boot_ns: u64::from(pid) * 1000,
            ns_pid: pid,
            cgroup: b"/".to_vec(),
            container_id: None,
            text: OnceLock::new(),
        }
    }

    fn no_proc(_: u32) -> Option<ProcessInfo> {
        None
    }

    #[test]
    fn exited_process_stays_for_grace_then_goes() {
        let mut t = ProcessTable::new(100, 1000, no_proc);
        t.exec(info(5, "/bin/a"));
        t.exit(5, 100);
        t.expire(500);
        assert_eq!(t.lookup(5).map(|p| p.image.clone()), Some(b"/bin/a".to_vec()));
        t.expire(1100);
        assert!(t.lookup(5).is_none());
    }

    #[test]
    fn pid_reuse_is_not_dropped_by_old_exit() {
        let mut t = ProcessTable::new(100, 1000, no_proc);
        t.exec(info(5, "/bin/a"));
        t.exit(5, 100);
        let mut again = info(5, "/bin/b");
        again.start_boot_ns = 99_999;
        t.exec(again);
        t.expire(5000);
        assert_eq!(t.lookup(5).map(|p| p.image.clone()), Some(b"/bin/b".to_vec()));
    }

    #[test]
    fn fork_inherits_parent_image() {
        let mut t = ProcessTable::new(100, 1000, no_proc);
        t.exec(info(5, "/bin/a"));
        let cgroup = format!("/docker/{}", "ab".repeat(32)).into_bytes();
        t.fork(5, 6, 777, 1000, Identity { ns_tgid: 1, cgroup });
        let child = t.lookup(6).expect("child known");
        assert_eq!((child.ppid, child.uid, child.start_boot_ns, child.ns_pid), (5, 1000, 777, 1));
        assert_eq!(child.container_id, Some("ab".repeat(32)));
        assert_eq!(child.image, b"/bin/a");
    }

    #[test]
    fn a_move_to_a_container_cgroup_changes_the_container_id() {
        let mut t = ProcessTable::new(100, 1000, no_proc);
        t.exec(info(5, "/bin/a"));
        let before = t.lookup(5).expect("known");
        assert_eq!(before.container_id, None);
        let id = "cd".repeat(32);
        let cgroup = format!("/system.slice/docker-{id}.scope").into_bytes();
        t.moved(5, Identity { ns_tgid: 1, cgroup: cgroup.clone() });
        let after = t.lookup(5).expect("known");
        assert_eq!((after.container_id.as_deref(), &after.cgroup), (Some(id.as_str()), &cgroup));
        assert_eq!((after.image.as_slice(), after.pid), (b"/bin/a".as_slice(), 5), "the rest stays");
        t.moved(6, Identity { ns_tgid: 1, cgroup }); // unknown pid: nothing to do
        assert!(t.get(6).is_none());
    }

    #[test]
    fn fork_does_not_inherit_the_parents_rendered_text() {
        let mut t = ProcessTable::new(100, 1000, no_proc);
        t.exec(info(5, "/bin/a"));
        let parent = t.lookup(5).expect("parent");
        let text = |guid: &str| ProcessText {
            guid: guid.into(),
            image: "/bin/a".into(),
            command_line: "-".into(),
            container_id: "-".into(),
        };
        assert!(parent.text.set(text("{parent}")).is_ok());
        t.fork(5, 6, 777, 0, Identity { ns_tgid: 6, cgroup: Vec::new() });
        let child = t.lookup(6).expect("child");
        assert!(child.text.get().is_none(), "the child has its own pid and start, so its own GUID");
    }

    #[test]
    fn bounded_drops_exited_first() {
        let mut t = ProcessTable::new(2, 1_000_000, no_proc);
        t.exec(info(1, "/a"));
        t.exec(info(2, "/b"));
        t.exit(1, 10);
        t.exec(info(3, "/c"));
        assert_eq!(t.len(), 2);
        assert!(t.lookup(1).is_none());
        t.exec(info(4, "/d"));
        assert_eq!(t.stats.dropped_full, 1);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn reads_own_process_from_proc() {
        let me = std::process::id();
        let p = read_proc(me).expect("own /proc entry");
        assert_eq!(p.pid, me);
        let exe = std::env::current_exe().expect("current exe");
        assert_eq!(p.image, exe.as_os_str().as_bytes());
        assert!(p.start_boot_ns > 0);
    }
}
