//! The service packaging (packaging/, `make install`, `make deb`): systemd
//! takes the unit without a word, its capability set is all the sensor needs,
//! logrotate takes the policy, `make install` puts each file where it
//! belongs, and the Debian package installs on this machine, runs, reports a
//! real connection, and is removed and purged without a trace.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{s, tcp_connection_a_to_b, Peer, Sensor, TestNet, SENSOR};

const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/sockscope.service");
const LOGROTATE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/sockscope.logrotate");

fn unit_text() -> String {
    std::fs::read_to_string(UNIT).expect("packaging/sockscope.service")
}

/// The value of the unit's first `key=` line.
fn unit_value(key: &str) -> String {
    let prefix = format!("{key}=");
    unit_text()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
        .unwrap_or_else(|| panic!("{key}= in the unit"))
}

#[test]
fn systemd_takes_the_unit_without_a_warning() {
    // verify checks that ExecStart is executable: a copy names the built sensor.
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = dir.path().join("sockscope.service");
    std::fs::write(&unit, unit_text().replace("/usr/local/bin/sockscope", SENSOR)).expect("write unit");
    let out = Command::new("systemd-analyze").arg("verify").arg(&unit).output().expect("systemd-analyze runs");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // It exits 0 even for lines it ignores; what it prints is the finding.
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");
}

/// `CapabilityBoundingSet=CAP_A CAP_B` as setpriv's `-all,+a,+b`.
fn bounding_set() -> String {
    let caps: Vec<String> = unit_value("CapabilityBoundingSet")
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    assert!(!caps.is_empty());
    format!("-all,{}", caps.join(","))
}

/// Under the unit's capability bounding set (and nothing more), the sensor
/// loads, attaches and reports a TCP connection and a UDP flow, with either
/// UDP mechanism (the packet one needs setns, so CAP_SYS_ADMIN).
#[test]
fn the_units_capabilities_are_all_the_sensor_needs() {
    let bounding = format!("--bounding-set={}", bounding_set());
    for mechanism in ["process", "packet"] {
        let net = TestNet::new();
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("events.jsonl");
        let state = dir.path().join("state");
        let sensor =
            Sensor::start_via(&["setpriv", &bounding, "--"], Some(dir), out, &state, &["--udp-mechanism", mechanism]);
        if mechanism == "packet" {
            // That mechanism covers a namespace once it has its socket there.
            let watched = format!("netns={}", TestNet::inode(&net.a));
            assert!(
                sensor.wait_log(&["watching network namespace", &watched], Duration::from_secs(10)),
                "no packet socket in {}: {}",
                net.a,
                sensor.stderr_text()
            );
        }
        tcp_connection_a_to_b(&net);
        let udp_to = format!("{}:9400", net.ip4(2));
        Peer::spawn(Some(&net.a), &["udp-send", "--to", &udp_to]).wait_ok();
        let events = sensor.wait_for(3, Duration::from_secs(10), |e| {
            e["EventID"] == 3 && s(e, "DestinationIp") == net.ip4(2) && s(e, "Image").ends_with("sockscope-peer")
        });
        let (status, stderr) = sensor.stop();
        let kinds: Vec<(String, bool)> =
            events.iter().map(|e| (s(e, "Protocol"), e["Initiated"].as_bool().unwrap_or(false))).collect();
        for want in [("tcp", true), ("tcp", false), ("udp", true)] {
            assert!(
                kinds.iter().any(|(p, i)| p == want.0 && *i == want.1),
                "{mechanism}: {want:?} in {kinds:?}; stderr:\n{stderr}"
            );
        }
        assert!(status.success(), "{mechanism}: {status:?}\n{stderr}");
    }
}

#[test]
fn logrotate_takes_the_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new("logrotate")
        .arg("--debug")
        .arg("--state")
        .arg(dir.path().join("state"))
        .arg(LOGROTATE)
        .output()
        .expect("logrotate runs");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && !said.contains("error"), "logrotate --debug: {said}");
    // It rotates the file the unit writes.
    let output_flag = unit_value("ExecStart");
    let events_file = output_flag.split_whitespace().skip_while(|w| *w != "--output").nth(1).expect("--output FILE");
    assert!(said.contains(&format!("considering log {events_file}")), "{said}");
}

#[test]
fn make_install_puts_the_sensor_the_unit_and_the_policy_in_place() {
    let dest = tempfile::tempdir().expect("tempdir");
    let status = Command::new("make")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["-s", "install-files", "PREFIX=/opt/sockscope"])
        .arg(format!("DESTDIR={}", dest.path().display()))
        .arg(format!("SENSOR_BIN={SENSOR}"))
        .status()
        .expect("make runs");
    assert!(status.success());
    let root = dest.path();
    let bin = root.join("opt/sockscope/bin/sockscope");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&bin).expect("installed sensor").permissions().mode();
    assert_eq!(mode & 0o777, 0o755);
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/sockscope.service")).expect("installed unit");
    assert!(unit.lines().any(|l| l.starts_with("ExecStart=/opt/sockscope/bin/sockscope ")), "{unit}");
    assert!(Path::new(&root.join("etc/logrotate.d/sockscope")).is_file());
}

/// Builds the .deb from the test build of the sensor into `dir`; its path.
fn build_deb(dir: &Path) -> std::path::PathBuf {
    let out = Command::new("make")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["-s", "deb-package"])
        .arg(format!("SENSOR_BIN={SENSOR}"))
        .arg(format!("DEB_DIR={}", dir.display()))
        .output()
        .expect("make runs");
    assert!(out.status.success(), "make deb-package: {}", String::from_utf8_lossy(&out.stderr));
    let path = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().trim().to_owned();
    let path = std::path::PathBuf::from(path);
    assert!(path.is_file() && path.starts_with(dir), "{path:?}");
    path
}

fn output_of(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program} runs: {e}"));
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn deb_package_holds_the_sensor_unit_policy_config_and_man_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    let deb = build_deb(dir.path());
    let deb = deb.to_str().expect("utf8 path");
    let name = deb.rsplit('/').next().unwrap_or_default();
    assert!(
        name.starts_with(&format!("sockscope_{}-1_", env!("CARGO_PKG_VERSION"))) && name.ends_with(".deb"),
        "{name}"
    );
    let (ok, listing) = output_of("dpkg-deb", &["--contents", deb]);
    assert!(ok, "{listing}");
    for (mode, path) in [
        ("-rwxr-xr-x root/root", "./usr/bin/sockscope"),
        ("-rw-r--r-- root/root", "./lib/systemd/system/sockscope.service"),
        ("-rw-r--r-- root/root", "./etc/logrotate.d/sockscope"),
        ("-rw-r--r-- root/root", "./etc/default/sockscope"),
        ("-rw-r--r-- root/root", "./etc/sockscope/sockscope.xml"),
        ("-rw-r--r-- root/root", "./usr/share/man/man8/sockscope.8.gz"),
        ("-rw-r--r-- root/root", "./usr/share/doc/sockscope/copyright"),
    ] {
        assert!(
            listing.lines().any(|l| l.starts_with(mode) && l.ends_with(&format!(" {path}"))),
            "{mode} {path} in\n{listing}"
        );
    }
    let (ok, info) = output_of("dpkg-deb", &["--info", deb, "conffiles"]);
    assert!(ok, "{info}");
    let mut listed: Vec<&str> = info.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    listed.sort_unstable();
    assert_eq!(listed, ["/etc/default/sockscope", "/etc/logrotate.d/sockscope", "/etc/sockscope/sockscope.xml"]);
    let (ok, depends) = output_of("dpkg-deb", &["--field", deb, "Depends"]);
    assert!(ok && depends.contains("libc6 (>=") && depends.contains("libelf1"), "{depends}");
    // The packaged unit runs the packaged binary, and systemd takes it.
    let extract = dir.path().join("root");
    let (ok, said) = output_of("dpkg-deb", &["--extract", deb, extract.to_str().expect("utf8")]);
    assert!(ok, "{said}");
    let unit = std::fs::read_to_string(extract.join("lib/systemd/system/sockscope.service")).expect("unit");
    assert!(unit.lines().any(|l| l.starts_with("ExecStart=/usr/bin/sockscope --output ")), "{unit}");
    // The man page renders and names the options (generated from the CLI).
    let page = extract.join("usr/share/man/man8/sockscope.8.gz");
    let (ok, text) = output_of("man", &["-P", "cat", "-l", page.to_str().expect("utf8")]);
    assert!(ok, "{text}");
    for want in ["sockscope", "--syslog-remote-format", "--json-types", "--output", "rfc3164"] {
        assert!(text.contains(want), "{want} in the man page:\n{text}");
    }
}

/// The installed package's state, undone on drop (also when the test fails):
/// the sensor it started is stopped and the package purged.
struct Installed {
    sensor: Option<std::process::Child>,
}

impl Drop for Installed {
    fn drop(&mut self) {
        if let Some(mut child) = self.sensor.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("dpkg").args(["--purge", "sockscope"]).output();
    }
}

/// dpkg's view of the package: `install ok installed`, `deinstall ok
/// config-files`, or empty when it knows nothing of it.
fn dpkg_status() -> String {
    let out = Command::new("dpkg-query").args(["-W", "-f=${Status}", "sockscope"]).output().expect("dpkg-query runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn apt_get(args: &[&str]) -> String {
    let out = Command::new("apt-get")
        .args(["-y", "-o", "DPkg::Lock::Timeout=120"])
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .expect("apt-get runs");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "apt-get {args:?}: {said}");
    said
}

/// BPF program ids held open by `pid`, from its fds' fdinfo.
fn bpf_prog_ids(pid: u32) -> Vec<u32> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else { return Vec::new() };
    let mut ids: Vec<u32> = fds
        .filter_map(|fd| std::fs::read_to_string(fd.ok()?.path()).ok())
        .filter_map(|info| info.lines().find_map(|l| l.strip_prefix("prog_id:").and_then(|v| v.trim().parse().ok())))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Installs the package on this machine as a user would (`apt-get install
/// ./sockscope_*.deb`), runs the service's command line as systemd would (the
/// unit's ExecStart with /etc/default/sockscope), sees a real connection in
/// the event file, removes the package (the running sensor is stopped and its
/// programs are gone) and purges it (nothing of it left). Where systemd is
/// PID 1 the postinst also starts the unit, which is checked instead.
#[test]
fn deb_installs_runs_a_real_sensor_and_purges_cleanly() {
    common::require_root();
    assert_eq!(dpkg_status(), "", "sockscope is already known to dpkg; `dpkg --purge sockscope` first");
    let dir = tempfile::tempdir().expect("tempdir");
    let deb = build_deb(dir.path());
    let mut installed = Installed { sensor: None };
    let said = apt_get(&["install", "--no-install-recommends", deb.to_str().expect("utf8")]);
    assert_eq!(dpkg_status(), "install ok installed", "{said}");
    let systemd = Path::new("/run/systemd/system").is_dir();

    // Files in place, directories made, the unit enabled.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &str| std::fs::metadata(p).unwrap_or_else(|e| panic!("{p}: {e}")).permissions().mode() & 0o7777;
    assert_eq!(mode("/usr/bin/sockscope"), 0o755);
    assert_eq!(mode("/var/log/sockscope"), 0o750);
    assert_eq!(mode("/var/lib/sockscope"), 0o755);
    for f in ["/etc/default/sockscope", "/etc/sockscope/sockscope.xml", "/etc/logrotate.d/sockscope"] {
        assert_eq!(mode(f), 0o644, "{f}");
    }
    let wants = Path::new("/etc/systemd/system/multi-user.target.wants/sockscope.service");
    assert_eq!(std::fs::read_link(wants).ok(), Some("/lib/systemd/system/sockscope.service".into()), "enabled");
    let (ok, verify) = output_of("systemd-analyze", &["verify", "/lib/systemd/system/sockscope.service"]);
    assert!(ok && verify.trim().is_empty(), "systemd-analyze verify: {verify}");
    let (ok, page) = output_of("man", &["-P", "cat", "8", "sockscope"]);
    assert!(ok && page.contains("--syslog-remote"), "man 8 sockscope: {page}");
    let (ok, version) = output_of("/usr/bin/sockscope", &["--version"]);
    assert!(ok && version.contains(env!("CARGO_PKG_VERSION")), "{version}");

    let events = Path::new("/var/log/sockscope/events.jsonl");
    let sensor_pid = if systemd {
        let (ok, active) = output_of("systemctl", &["is-active", "sockscope.service"]);
        assert!(ok && active.trim() == "active", "postinst started the service: {active}\n{said}");
        let (_, pid) = output_of("systemctl", &["show", "-P", "MainPID", "sockscope.service"]);
        pid.trim().parse().expect("MainPID")
    } else {
        assert!(said.contains("systemd is not running"), "postinst says it did not start the unit: {said}");
        // ExecStart as systemd would run it, with $SOCKSCOPE_ARGS from the
        // EnvironmentFile (unquoted: split on white space).
        let unit = std::fs::read_to_string("/lib/systemd/system/sockscope.service").expect("unit");
        let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("ExecStart");
        let defaults = std::fs::read_to_string("/etc/default/sockscope").expect("defaults");
        let args = defaults
            .lines()
            .find_map(|l| l.strip_prefix("SOCKSCOPE_ARGS="))
            .map(|v| v.trim_matches('"').to_owned())
            .expect("SOCKSCOPE_ARGS");
        let words: Vec<String> = exec.replace("$SOCKSCOPE_ARGS", &args).split_whitespace().map(str::to_owned).collect();
        assert_eq!(words[0], "/usr/bin/sockscope");
        assert!(words.iter().any(|w| w == "/etc/sockscope/sockscope.xml"), "{words:?}");
        let mut child = Command::new(&words[0])
            .args(&words[1..])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the installed sensor starts");
        let pid = child.id();
        let stderr = child.stderr.take().expect("piped");
        installed.sensor = Some(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut log = Vec::new();
        let end = std::time::Instant::now() + Duration::from_secs(30);
        while !log.iter().any(|l: &String| l.contains("ready")) {
            let left = end.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => log.push(line),
                Err(_) => panic!("installed sensor not ready in 30 s:\n{}", log.join("\n")),
            }
        }
        assert!(!log.iter().any(|l| l.contains("WARN") && l.contains("sockscope.xml")), "{}", log.join("\n"));
        pid
    };

    // A real connection, seen in the package's event file.
    let mut l = Peer::spawn(None, &["listen", "--bind", "127.0.0.1:0"]);
    let port: u64 = l.expect("listening").parse().expect("port");
    let mut c = Peer::spawn(None, &["connect", "--to", &format!("127.0.0.1:{port}")]);
    c.wait_ok();
    l.wait_ok();
    let end = std::time::Instant::now() + Duration::from_secs(15);
    let ours = loop {
        let text = std::fs::read_to_string(events).unwrap_or_default();
        let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        let ours: Vec<serde_json::Value> = complete
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["EventID"] == 3 && e["DestinationPort"] == port && s(e, "Image").ends_with("sockscope-peer"))
            .collect();
        if ours.len() >= 2 || std::time::Instant::now() >= end {
            break ours;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(ours.len(), 2, "outbound and inbound in {}", events.display());
    let progs = bpf_prog_ids(sensor_pid);
    assert!(!progs.is_empty(), "the running sensor holds its eBPF programs");

    // Remove: prerm stops the sensor; its programs go with it.
    let said = apt_get(&["remove", "sockscope"]);
    assert_eq!(dpkg_status(), "deinstall ok config-files", "{said}");
    let end = std::time::Instant::now() + Duration::from_secs(20);
    let stopped = loop {
        let gone = match installed.sensor.as_mut() {
            Some(child) => child.try_wait().ok().flatten(),
            None => (!Path::new(&format!("/proc/{sensor_pid}")).exists()).then(std::process::ExitStatus::default),
        };
        if gone.is_some() || std::time::Instant::now() >= end {
            break gone;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let status = stopped.expect("removal stopped the sensor");
    assert!(status.success(), "the sensor ended cleanly on SIGTERM: {status:?}");
    installed.sensor = None;
    for id in &progs {
        let (exists, _) = output_of("bpftool", &["prog", "show", "id", &id.to_string()]);
        assert!(!exists, "program {id} still loaded after removal");
    }
    assert!(!Path::new("/usr/bin/sockscope").exists() && !Path::new("/lib/systemd/system/sockscope.service").exists());
    assert!(Path::new("/etc/default/sockscope").is_file(), "remove keeps the conffiles");

    // Purge: nothing of the package is left.
    let said = apt_get(&["purge", "sockscope"]);
    assert_eq!(dpkg_status(), "", "{said}");
    for gone in [
        "/etc/default/sockscope",
        "/etc/sockscope",
        "/etc/logrotate.d/sockscope",
        "/var/log/sockscope",
        "/var/lib/sockscope",
        "/etc/systemd/system/sockscope.service",
        "/etc/systemd/system/multi-user.target.wants/sockscope.service",
        "/usr/share/man/man8/sockscope.8.gz",
        "/usr/share/doc/sockscope",
    ] {
        assert!(std::fs::symlink_metadata(gone).is_err(), "{gone} left after purge");
    }
    drop(installed);
}
