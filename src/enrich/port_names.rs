//! Port -> service name (`SourcePortName` / `DestinationPortName`) from a file
//! in `/etc/services` format: `name port/proto [aliases...] [# comment]`.
//! Read once at start; a lookup is a hash probe, no NSS call per event.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};

pub const DEFAULT_PATH: &str = "/etc/services";

#[derive(Debug, Default, Clone)]
pub struct Services {
    tcp: HashMap<u16, String>,
    udp: HashMap<u16, String>,
}

impl Services {
    /// Reads and parses `path`. Lines that are not valid UTF-8 or not of the
    /// form above are skipped.
    pub fn load(path: &Path) -> Result<Self> {
        let raw = std::fs::read(path).with_context(|| format!("reading services file {}", path.display()))?;
        let mut s = Self::default();
        for line in raw.split(|&b| b == b'\n') {
            if let Ok(line) = std::str::from_utf8(line) {
                s.add_line(line);
            }
        }
        Ok(s)
    }

    /// Parses `/etc/services` text; malformed lines are skipped.
    #[cfg(test)]
    pub fn parse(text: &str) -> Self {
        let mut s = Self::default();
        for line in text.lines() {
            s.add_line(line);
        }
        s
    }

    /// The service name of `port` for `proto` (`"tcp"` or `"udp"`); other
    /// protocols have none.
    pub fn lookup(&self, port: u16, proto: &str) -> Option<&str> {
        let map = match proto {
            "tcp" => &self.tcp,
            "udp" => &self.udp,
            _ => return None,
        };
        map.get(&port).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.tcp.len() + self.udp.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn add_line(&mut self, line: &str) {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let (Some(name), Some(port_proto)) = (words.next(), words.next()) else {
            return;
        };
        let Some((port, proto)) = port_proto.split_once('/') else {
            return;
        };
        // Port 0 is not a service port; a number out of range is malformed.
        let Ok(port) = port.parse::<u16>() else {
            return;
        };
        if port == 0 {
            return;
        }
        let map = match proto {
            "tcp" => &mut self.tcp,
            "udp" => &mut self.udp,
            _ => return,
        };
        // The first entry wins, as getservbyport(3) returns the first match.
        map.entry(port).or_insert_with(|| name.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
# Network services, Internet style
tcpmux\t\t1/tcp\t\t\t\t# TCP port service multiplexer
echo\t\t7/tcp
echo\t\t7/udp
ssh\t\t22/tcp\t\t\t\t# SSH Remote Login Protocol
domain\t\t53/tcp\t\t\t\t# Domain Name Server
domain\t\t53/udp
http\t\t80/tcp\t\twww\t\t# WorldWideWeb HTTP
www-dup\t\t80/tcp
sctp-only\t9/sctp
  https   443/tcp   # leading blanks
broken-no-port
bad-port\tx80/tcp
too-big\t70000/tcp
no-slash\t81
zero\t0/tcp
#commented\t82/tcp
odd\t83/tcp#comment glued on
";

    #[test]
    fn parses_names_by_port_and_protocol() {
        let s = Services::parse(SAMPLE);
        assert_eq!(s.lookup(22, "tcp"), Some("ssh"));
        assert_eq!(s.lookup(22, "udp"), None);
        assert_eq!(s.lookup(53, "udp"), Some("domain"));
        assert_eq!(s.lookup(1, "tcp"), Some("tcpmux"));
        assert_eq!(s.lookup(443, "tcp"), Some("https"));
        assert_eq!(s.lookup(83, "tcp"), Some("odd"));
    }

    #[test]
    fn first_entry_wins_and_aliases_are_not_names() {
        let s = Services::parse(SAMPLE);
        assert_eq!(s.lookup(80, "tcp"), Some("http"));
    }

    #[test]
    fn malformed_and_other_protocols_are_skipped() {
        let s = Services::parse(SAMPLE);
        for (port, proto) in [(9, "tcp"), (9, "sctp"), (81, "tcp"), (0, "tcp"), (82, "tcp"), (80, "TCP")] {
            assert_eq!(s.lookup(port, proto), None, "{port}/{proto}");
        }
        // tcp: 1, 7, 22, 53, 80, 443, 83; udp: 7, 53.
        assert_eq!(s.len(), 9);
    }

    #[test]
    fn load_skips_non_utf8_lines_and_names_the_missing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("services");
        std::fs::write(&path, b"ssh 22/tcp\nbad\xff 23/tcp\nsmtp 25/tcp\n").expect("write");
        let s = Services::load(&path).expect("load");
        assert_eq!(s.lookup(22, "tcp"), Some("ssh"));
        assert_eq!(s.lookup(23, "tcp"), None);
        assert_eq!(s.lookup(25, "tcp"), Some("smtp"));
        let err = Services::load(&dir.path().join("nope")).expect_err("missing");
        assert!(format!("{err:#}").contains("nope"), "{err:#}");
    }
}
