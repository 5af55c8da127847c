//! Container id from a cgroup v2 path, for the runtimes' usual layouts:
//!
//! - Docker:      /system.slice/docker-<id>.scope, /docker/<id>
//! - containerd:  .../cri-containerd-<id>.scope, /kubepods/.../<id>
//! - CRI-O:       .../crio-<id>.scope (crio-conmon-<id>.scope is the monitor, not the container)
//! - Podman:      .../libpod-<id>.scope, .../libpod-<id>.scope/container (libpod-conmon-* is the monitor)
//!
//! The id is the 64 hex digits; the innermost path component that carries
//! one wins, so a nested "container" leaf still resolves to its scope.

const ID_LEN: usize = 64;

/// Prefixes that mark a runtime's monitor process rather than a container.
const MONITOR_PREFIXES: &[&str] = &["crio-conmon-", "libpod-conmon-"];

pub fn container_id(cgroup_path: &[u8]) -> Option<String> {
    let path = std::str::from_utf8(cgroup_path).ok()?;
    path.rsplit('/').filter(|c| !c.is_empty()).find_map(component_id)
}

fn component_id(component: &str) -> Option<String> {
    if MONITOR_PREFIXES.iter().any(|p| component.starts_with(p)) {
        return None;
    }
    let name = component.strip_suffix(".scope").unwrap_or(component);
    // The id ends the name: "<prefix>-<id>" or just "<id>".
    let id = name.rsplit('-').next()?;
    (id.len() == ID_LEN && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899";

    fn id_of(path: &str) -> Option<String> {
        container_id(path.as_bytes())
    }

    #[test]
    fn runtimes_layouts() {
        for path in [
            format!("/system.slice/docker-{ID}.scope"),
            format!("/docker/{ID}"),
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-pod9.slice/cri-containerd-{ID}.scope"),
            format!("/kubepods/besteffort/pod1234/{ID}"),
            format!("/machine.slice/crio-{ID}.scope"),
            format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"),
            format!("/machine.slice/libpod-{ID}.scope/container"),
        ] {
            assert_eq!(id_of(&path).as_deref(), Some(ID), "{path}");
        }
    }

    #[test]
    fn not_containers() {
        assert_eq!(id_of("/"), None);
        assert_eq!(id_of("/user.slice/user-0.slice/session-3.scope"), None);
        assert_eq!(id_of(&format!("/machine.slice/crio-conmon-{ID}.scope")), None);
        assert_eq!(id_of(&format!("/machine.slice/libpod-conmon-{ID}.scope")), None);
        assert_eq!(id_of(&format!("/docker/{}", &ID[1..])), None, "63 digits");
        assert_eq!(container_id(b"/docker/\xff"), None);
    }
}
