//! Process identity against the real kernel: exec after fork, pid reuse,
//! processes older than the sensor, pid and network namespaces, cgroups,
//! and hostile command lines.

mod common;

use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{s, u, Peer, Sensor, PEER};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

fn listen(count: usize) -> (Peer, String) {
    let mut l = Peer::spawn(None, &["listen", "--bind", "127.0.0.1:0", "--count", &count.to_string()]);
    let port: u16 = l.expect("listening").parse().expect("port");
    (l, format!("127.0.0.1:{port}"))
}

/// The one outbound event of the connection from `local`.
fn outbound_from(sensor: &Sensor, local: &str) -> Value {
    let port = local.parse::<SocketAddr>().expect("addr").port();
    let got = sensor.wait_for(1, WAIT, |e| e["Initiated"] == true && u(e, "SourcePort") == u64::from(port));
    assert_eq!(got.len(), 1, "one outbound event from {local}: {got:?}\nstderr:\n{}", sensor.stderr_text());
    got[0].clone()
}

#[test]
fn exec_after_fork_reports_new_image_and_command_line() {
    let sensor = Sensor::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = dir.path().join("exec-after-fork");
    std::fs::copy(PEER, &exe).expect("copy peer");
    let (mut l, to) = listen(1);
    // sh forks a child that execs the copy (the "; true" keeps sh from exec'ing itself).
    let mut sh = Peer::spawn_program(
        None,
        Path::new("/bin/sh"),
        &["-c", "\"$0\" connect --to \"$1\"; true", exe.to_str().expect("utf8"), &to],
    );
    let child_pid: u64 = sh.expect("pid").parse().expect("pid");
    let local = sh.expect("local");
    sh.wait_ok();
    l.wait_ok();
    let e = outbound_from(&sensor, &local);
    assert_eq!(u(&e, "ProcessId"), child_pid);
    assert_ne!(child_pid, u64::from(sh.pid()), "a forked child connected");
    assert_eq!(s(&e, "Image"), exe.to_str().expect("utf8"));
    assert_eq!(s(&e, "CommandLine"), format!("{} connect --to {to}", exe.display()));
    assert_eq!(u(&e, "ParentProcessId"), u64::from(sh.pid()));
    let sh_image = std::fs::canonicalize("/bin/sh").expect("sh");
    assert_eq!(s(&e, "ParentImage"), sh_image.to_str().expect("utf8"));
}

#[test]
fn pid_reuse_gives_a_new_process_guid() {
    let sensor = Sensor::start(&[]);
    let (_l, to) = listen(100);
    let mut first = Peer::spawn(None, &["connect", "--to", &to]);
    let pid = first.pid();
    let local1 = first.expect("local");
    first.wait_ok();
    // Ask the kernel to hand out the same pid again (bounded retries: other
    // threads may take it first).
    let mut second = None;
    for _ in 0..100 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).expect("ns_last_pid");
        let mut p = Peer::spawn(None, &["connect", "--to", &to]);
        p.wait_ok();
        if p.pid() == pid {
            second = Some(p);
            break;
        }
    }
    let mut second = second.expect("the pid was reused within 100 tries");
    let local2 = second.expect("local");
    let (a, b) = (outbound_from(&sensor, &local1), outbound_from(&sensor, &local2));
    assert_eq!(u(&a, "ProcessId"), u64::from(pid));
    assert_eq!(u(&b, "ProcessId"), u64::from(pid));
    assert_ne!(s(&a, "ProcessGuid"), s(&b, "ProcessGuid"), "same pid, new process, new GUID");
    let machine = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
    if machine.len() >= 8 {
        assert!(s(&a, "ProcessGuid").starts_with(&format!("{{{}-", &machine[..8])), "{a}");
    }
}

#[test]
fn process_started_before_the_sensor() {
    let (mut l, to) = listen(1);
    let listener_pid = u64::from(l.pid());
    let sensor = Sensor::start(&[]);
    let mut c = Peer::spawn(None, &["connect", "--to", &to]);
    let local: SocketAddr = c.expect("local").parse().expect("addr");
    c.wait_ok();
    l.wait_ok();
    let got = sensor.wait_for(1, WAIT, |e| e["Initiated"] == false && u(e, "SourcePort") == u64::from(local.port()));
    assert_eq!(got.len(), 1, "{got:?}");
    let e = &got[0];
    assert_eq!(u(e, "ProcessId"), listener_pid);
    assert_eq!(s(e, "Image"), PEER);
    assert!(s(e, "CommandLine").starts_with(&format!("{PEER} listen --bind 127.0.0.1:0")), "{e}");
    assert_eq!(s(e, "User"), "root");
    assert_ne!(s(e, "ProcessGuid"), "-");
}

/// Two sensors (each with its own wall-clock offset) that both saw the
/// processes start: the same ProcessGuids, so events of different sensors
/// correlate.
#[test]
fn every_sensor_gives_a_process_the_same_guid() {
    let early = Sensor::start(&[]);
    let late = Sensor::start(&[]);
    let (mut l, to) = listen(1);
    let mut c = Peer::spawn(None, &["connect", "--to", &to]);
    let local: SocketAddr = c.expect("local").parse().expect("addr");
    c.wait_ok();
    l.wait_ok();
    let port = u64::from(local.port());
    let both = |sensor: &Sensor| {
        let got = sensor.wait_for(2, WAIT, |e| {
            (e["Initiated"] == false && u(e, "SourcePort") == port)
                || (e["Initiated"] == true && u(e, "SourcePort") == port)
        });
        assert_eq!(got.len(), 2, "{got:?}\n{}", sensor.stderr_text());
        let mut guids: Vec<(bool, String)> =
            got.iter().map(|e| (e["Initiated"] == true, s(e, "ProcessGuid"))).collect();
        guids.sort();
        guids
    };
    let (a, b) = (both(&early), both(&late));
    assert_eq!(a, b, "listener and connector GUIDs from two sensors");
    assert_ne!(a[0].1, a[1].1);
}

#[test]
fn own_pid_and_network_namespace() {
    let sensor = Sensor::start(&[]);
    let mut p = Peer::spawn_program(
        None,
        Path::new("unshare"),
        &["--pid", "--net", "--fork", "/bin/sh", "-c", "ip link set lo up && exec \"$0\" pair", PEER],
    );
    let nspid = p.expect("nspid");
    let pids: Vec<u64> = nspid.split_whitespace().map(|v| v.parse().expect("pid")).collect();
    assert_eq!(pids.len(), 2, "host and namespace pid: {nspid}");
    let netns: u64 = p.expect("netns").parse().expect("inode");
    let local = p.expect("local");
    p.wait_ok();
    let port = local.parse::<SocketAddr>().expect("addr").port();
    let both = sensor.wait_for(2, WAIT, |e| u(e, "SourcePort") == u64::from(port));
    assert_eq!(both.len(), 2, "outbound and inbound: {both:?}");
    for e in &both {
        assert_eq!(u(e, "ProcessId"), pids[0], "host pid: {e}");
        assert_eq!(u(e, "ProcessIdInNamespace"), pids[1], "namespace pid: {e}");
        assert_eq!(pids[1], 1);
        assert_eq!(u(e, "NetNs"), netns);
        assert_eq!(s(e, "Image"), PEER);
    }
    assert_ne!(netns, common::host_netns_inode());
}

#[test]
fn hostile_argv_round_trips_escaped() {
    let sensor = Sensor::start(&[]);
    let (mut l, to) = listen(1);
    let note: &[u8] = b"sp ace \"dq\" 'sq' new\nline\ttab back\\slash bad\xff\xfe <x>&y end";
    let mut c = Peer::spawn_args(
        None,
        Path::new(PEER),
        &["connect".as_ref(), "--to".as_ref(), to.as_ref(), "--note".as_ref(), std::ffi::OsStr::from_bytes(note)],
    );
    let local = c.expect("local");
    c.wait_ok();
    l.wait_ok();
    let e = outbound_from(&sensor, &local);
    // Documented form: UTF-8 as is, backslash doubled, other bytes \xHH.
    let expected = format!(
        "{PEER} connect --to {to} --note sp ace \"dq\" 'sq' new\nline\ttab back\\\\slash bad\\xff\\xfe <x>&y end"
    );
    assert_eq!(s(&e, "CommandLine"), expected);
    assert_eq!(e["CommandLineTruncated"], false);
}

#[test]
fn long_argv_is_truncated_and_marked() {
    let sensor = Sensor::start(&["--argv-limit", "64"]);
    let (mut l, to) = listen(1);
    let long = "z".repeat(500);
    let mut c = Peer::spawn(None, &["connect", "--to", &to, "--note", &long]);
    let local = c.expect("local");
    c.wait_ok();
    l.wait_ok();
    let e = outbound_from(&sensor, &local);
    let cmd = s(&e, "CommandLine");
    assert_eq!(e["CommandLineTruncated"], true);
    assert!(cmd.len() <= 64 && cmd.starts_with(PEER), "{cmd}");
}

/// Issue 21.5: an executable whose path is longer than the kernel captures
/// (2 KiB): `Image` keeps the path's beginning (so a rule on a prefix such
/// as `begin with /tmp/` still holds) and `ImageTruncated` says so; a short
/// path is whole and not flagged.
#[test]
fn long_executable_path_keeps_its_beginning_and_is_flagged() {
    let sensor = Sensor::start(&[]);
    let top = tempfile::Builder::new().prefix("sockscope-long-").tempdir_in("/tmp").expect("tempdir");
    let mut dir = top.path().to_path_buf();
    for _ in 0..12 {
        dir.push("d".repeat(200));
    }
    std::fs::create_dir_all(&dir).expect("deep dirs");
    let exe = dir.join("evil");
    std::fs::copy(PEER, &exe).expect("copy peer");
    assert!(exe.as_os_str().len() > 2048);
    let (mut l, to) = listen(1);
    let mut c = Peer::spawn_program(None, &exe, &["connect", "--to", &to]);
    let local = c.expect("local");
    c.wait_ok();
    l.wait_ok();
    let e = outbound_from(&sensor, &local);
    let image = s(&e, "Image");
    assert_eq!(e["ImageTruncated"], true, "{image}");
    assert!(image.starts_with(&format!("{}/ddd", top.path().display())), "the beginning kept: {image}");
    assert!(exe.to_string_lossy().starts_with(&image), "a prefix of the real path: {image}");
    assert!(image.len() <= 2048 && image.len() > 1500, "{}", image.len());

    let (mut l, to) = listen(1);
    let mut c = Peer::spawn(None, &["connect", "--to", &to]);
    let local = c.expect("local");
    c.wait_ok();
    l.wait_ok();
    let e = outbound_from(&sensor, &local);
    assert_eq!(s(&e, "Image"), PEER);
    assert_eq!(e["ImageTruncated"], false);
}

/// A cgroup v2 directory named like a runtime's container scope.
struct TestCgroup(PathBuf);

impl TestCgroup {
    fn new(name: &str) -> TestCgroup {
        let mounts = std::fs::read_to_string("/proc/mounts").expect("mounts");
        let root = mounts
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() > 2 && f[2] == "cgroup2").then(|| PathBuf::from(f[1]))
            })
            .expect("a cgroup2 mount");
        let dir = root.join(name);
        std::fs::create_dir(&dir).expect("mkdir cgroup");
        TestCgroup(dir)
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Empties once its processes are reaped.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A 64-hex-digit container id of this test run; `salt` keeps tests that
/// run at the same time apart.
fn test_container_id(salt: u64) -> String {
    format!("{:016x}", u64::from(std::process::id()).wrapping_mul(salt)).repeat(4)
}

#[test]
fn container_id_from_the_cgroup_path() {
    let sensor = Sensor::start(&[]);
    let id = test_container_id(0x9e37_79b9_7f4a_7c15);
    let cg = TestCgroup::new(&format!("docker-{id}.scope"));
    let (mut l, to) = listen(1);
    let procs = cg.0.join("cgroup.procs");
    let mut c = Peer::spawn_program(
        None,
        Path::new("/bin/sh"),
        &["-c", "echo $$ > \"$0\" && exec \"$1\" connect --to \"$2\"", procs.to_str().expect("utf8"), PEER, &to],
    );
    let local = c.expect("local");
    c.wait_ok();
    l.wait_ok();
    let e = outbound_from(&sensor, &local);
    assert_eq!(s(&e, "ContainerId"), id);
    let listener = u64::from(l.pid());
    let host = sensor.wait_for(1, WAIT, |e| e["Initiated"] == false && u(e, "ProcessId") == listener);
    assert_eq!(s(&host[0], "ContainerId"), "-", "the listener is not in a container");
}

/// A process moved into a container's cgroup after its exec (as `cgroup.procs`
/// writes do) is reported with the container's id from then on.
#[test]
fn container_id_follows_a_move_after_exec() {
    let sensor = Sensor::start(&[]);
    let id = test_container_id(0xc2b2_ae3d_27d4_eb4f);
    let cg = TestCgroup::new(&format!("cri-containerd-{id}.scope"));
    let (mut l, to) = listen(1);
    // The listener exec'd in the test's cgroup; move it now, while it waits.
    std::fs::write(cg.0.join("cgroup.procs"), l.pid().to_string()).expect("moving the listener");
    let mut c = Peer::spawn(None, &["connect", "--to", &to]);
    let local = c.expect("local");
    c.wait_ok();
    l.wait_ok();
    let port = local.parse::<SocketAddr>().expect("addr").port();
    let inbound = sensor.wait_for(1, WAIT, |e| e["Initiated"] == false && u(e, "SourcePort") == u64::from(port));
    assert_eq!(inbound.len(), 1, "{inbound:?}\n{}", sensor.stderr_text());
    assert_eq!(u(&inbound[0], "ProcessId"), u64::from(l.pid()));
    assert_eq!(s(&inbound[0], "ContainerId"), id, "{}", inbound[0]);
    assert_eq!(s(&outbound_from(&sensor, &local), "ContainerId"), "-", "the connector stayed outside");
}
