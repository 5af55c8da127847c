//! What the running kernel was built with, from the files libbpf reads too:
//! `/boot/config-$(uname -r)`, else `/proc/config.gz`.

use std::io::Read;

/// The kernel's build configuration, if this host has it.
pub fn kernel_config() -> Option<String> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    if let Ok(text) = std::fs::read_to_string(format!("/boot/config-{}", release.trim())) {
        return Some(text);
    }
    let packed = std::fs::File::open("/proc/config.gz").ok()?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(packed).read_to_string(&mut text).ok()?;
    Some(text)
}

/// Transforms after which a UDP datagram leaves as something else (IPsec
/// ESP/AH, IPComp), built in or as a module.
const PACKET_TRANSFORMS: [&str; 6] = [
    "CONFIG_INET_ESP",
    "CONFIG_INET6_ESP",
    "CONFIG_INET_AH",
    "CONFIG_INET6_AH",
    "CONFIG_INET_IPCOMP",
    "CONFIG_INET6_IPCOMP",
];

/// Whether `config` lets the kernel transform outgoing packets (IPsec).
pub fn can_transform_packets(config: &str) -> bool {
    config.lines().any(|line| {
        line.split_once('=')
            .is_some_and(|(name, value)| PACKET_TRANSFORMS.contains(&name) && matches!(value, "y" | "m"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipsec_built_in_or_module_counts() {
        assert!(can_transform_packets("CONFIG_XFRM=y\nCONFIG_INET_ESP=m\n"));
        assert!(can_transform_packets("CONFIG_INET6_IPCOMP=y"));
        assert!(!can_transform_packets("CONFIG_XFRM=y\n# CONFIG_INET_ESP is not set\nCONFIG_INET_ESPINTCP=y\n"));
        assert!(!can_transform_packets(""));
    }

    #[test]
    fn this_kernels_config_is_read_when_the_host_has_it() {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
        let published = std::path::Path::new(&format!("/boot/config-{}", release.trim())).exists()
            || std::path::Path::new("/proc/config.gz").exists();
        let config = kernel_config();
        assert_eq!(config.is_some(), published, "read exactly when the host publishes it");
        if let Some(config) = config {
            assert!(config.contains("CONFIG_BPF=y"), "not a kernel config");
        }
    }
}
