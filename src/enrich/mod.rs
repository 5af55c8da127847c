//! Enrich: a tracked connection + the process table -> a complete event
//! (wall-clock time, user name, ProcessGuid, addresses in Sysmon's direction).

pub mod container;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use nix::time::{clock_gettime, ClockId};
use time::{format_description::FormatItem, macros::format_description, OffsetDateTime};

use crate::event::{NetworkConnect, Shared, NETWORK_CONNECT};
use crate::format::community_id::community_id_v1;
use crate::format::services::Services;
use crate::text::{command_line, or_dash};
use crate::track::process::{ProcessInfo, ProcessTable};
use crate::track::tcp::{Connection, Protocol};

const UTC_TIME: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:3]");

fn clock_ns(id: ClockId) -> Result<i128> {
    let ts = clock_gettime(id).with_context(|| format!("clock_gettime({id})"))?;
    Ok(i128::from(ts.tv_sec()) * 1_000_000_000 + i128::from(ts.tv_nsec()))
}

/// Now on the clock of bpf_ktime_get_boot_ns().
pub fn boot_now_ns() -> u64 {
    clock_ns(ClockId::CLOCK_BOOTTIME).map_or(0, |ns| u64::try_from(ns).unwrap_or(0))
}

/// Converts kernel boot-clock timestamps to wall-clock time. The boot clock
/// keeps counting across suspend, so one offset holds; it is re-synced
/// periodically to follow wall-clock adjustments (NTP, settimeofday).
pub struct WallClock {
    offset_ns: i128,
    synced_at_boot_ns: u64,
    resync_ns: u64,
    /// The last second formatted, "YYYY-MM-DD hh:mm:ss": events come many
    /// per second, and only the milliseconds change between them.
    second: Option<(i128, String)>,
}

impl WallClock {
    pub fn new(resync_ns: u64) -> Result<Self> {
        let mut c = Self { offset_ns: 0, synced_at_boot_ns: 0, resync_ns, second: None };
        c.sync()?;
        Ok(c)
    }

    fn sync(&mut self) -> Result<()> {
        // Bracket the realtime read with boot-clock reads to halve the skew.
        let b1 = clock_ns(ClockId::CLOCK_BOOTTIME)?;
        let real = clock_ns(ClockId::CLOCK_REALTIME)?;
        let b2 = clock_ns(ClockId::CLOCK_BOOTTIME)?;
        let boot = (b1 + b2) / 2;
        self.offset_ns = real - boot;
        self.synced_at_boot_ns = u64::try_from(boot).unwrap_or(0);
        Ok(())
    }

    pub fn maybe_resync(&mut self, now_boot_ns: u64) {
        if now_boot_ns.saturating_sub(self.synced_at_boot_ns) >= self.resync_ns {
            if let Err(e) = self.sync() {
                tracing::warn!("wall clock resync failed: {e:#}");
            }
        }
    }

    pub fn unix_ns(&self, boot_ns: u64) -> i128 {
        i128::from(boot_ns) + self.offset_ns
    }

    /// UtcTime of a boot-clock instant, as `format_utc` writes it.
    pub fn utc_time(&mut self, boot_ns: u64) -> String {
        let unix_ns = self.unix_ns(boot_ns);
        let (second, ms) = (unix_ns.div_euclid(1_000_000_000), unix_ns.rem_euclid(1_000_000_000) / 1_000_000);
        if self.second.as_ref().is_none_or(|(s, _)| *s != second) {
            let full = format_utc(unix_ns);
            // "-" when out of range: nothing to reuse.
            let Some(prefix) = full.get(..19) else {
                return full;
            };
            self.second = Some((second, prefix.to_string()));
        }
        let prefix = self.second.as_ref().map_or("", |(_, p)| p.as_str());
        let mut out = String::with_capacity(23);
        out.push_str(prefix);
        out.push('.');
        for digit in [ms / 100, ms / 10 % 10, ms % 10] {
            out.push(char::from(b'0' + u8::try_from(digit).unwrap_or(0)));
        }
        out
    }
}

pub fn format_utc(unix_ns: i128) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(unix_ns)
        .ok()
        .and_then(|t| t.format(UTC_TIME).ok())
        .unwrap_or_else(|| "-".to_string())
}

/// An address as events write it; IPv4 without the formatting machinery
/// (every event has two addresses), IPv6 in std's RFC 5952 form.
pub fn ip_text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut s = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            s.push('.');
        }
        if octet >= 100 {
            s.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            s.push(char::from(b'0' + octet / 10 % 10));
        }
        s.push(char::from(b'0' + octet % 10));
    }
    s
}

/// IPv4-mapped IPv6 (a dual-stack socket talking IPv4) is reported as IPv4.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Sysmon's ProcessGuid: {machine-id[0..8]-start_lo16-start_hi16-Data4},
/// start in epoch seconds, Data4 = pid and start time in microseconds,
/// which differ for a new process that reuses a pid.
pub fn process_guid(machine_prefix: u32, pid: u32, start_unix_ns: i128) -> String {
    let secs = u32::try_from(start_unix_ns.div_euclid(1_000_000_000)).unwrap_or(0);
    let micros = (start_unix_ns.div_euclid(1000) & 0xffff_ffff) as u32;
    let d4 = (u64::from(pid) << 32) | u64::from(micros);
    format!(
        "{{{machine_prefix:08x}-{:04x}-{:04x}-{:04x}-{:012x}}}",
        secs & 0xffff,
        secs >> 16,
        d4 >> 48,
        d4 & 0xffff_ffff_ffff
    )
}

pub fn read_machine_prefix() -> u32 {
    ["/etc/machine-id", "/var/lib/dbus/machine-id"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .and_then(|id| id.get(..8).and_then(|h| u32::from_str_radix(h, 16).ok()))
        .unwrap_or(0)
}

/// uid -> user name, cached (NSS lookups can be slow).
#[derive(Default)]
pub struct UserNames {
    cache: HashMap<u32, Shared>,
}

impl UserNames {
    pub fn name(&mut self, uid: u32) -> Shared {
        self.cache
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map_or_else(|| "-".into(), |u| u.name.into())
            })
            .clone()
    }
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

pub struct Enricher {
    pub clock: WallClock,
    users: UserNames,
    machine_prefix: u32,
    /// Port names, when enabled (`--port-names`); else "-" as Sysmon writes.
    services: Option<Services>,
    /// "-", Sysmon's unknown value, shared by every event.
    dash: Shared,
}

impl Enricher {
    pub fn new(clock: WallClock, machine_prefix: u32, services: Option<Services>) -> Self {
        Self { clock, users: UserNames::default(), machine_prefix, services, dash: Arc::from("-") }
    }

    fn port_name(&self, port: u16, protocol: Protocol) -> Shared {
        self.services
            .as_ref()
            .and_then(|s| s.lookup(port, protocol.as_str()))
            .map_or_else(|| self.dash.clone(), Shared::from)
    }

    fn or_dash(&self, raw: &[u8]) -> Shared {
        if raw.is_empty() {
            self.dash.clone()
        } else {
            or_dash(raw).into()
        }
    }

    /// `p`'s rendered fields, rendering them at the first call.
    pub fn process_text<'p>(&self, p: &'p ProcessInfo) -> &'p ProcessText {
        p.text.get_or_init(|| ProcessText {
            guid: process_guid(self.machine_prefix, p.pid, self.clock.unix_ns(p.start_boot_ns)).into(),
            image: self.or_dash(&p.image),
            command_line: if p.argv.is_empty() { self.dash.clone() } else { command_line(&p.argv).into() },
            container_id: p.container_id.as_deref().map_or_else(|| self.dash.clone(), Shared::from),
        })
    }

    pub fn network_connect(&mut self, conn: &Connection, procs: &ProcessTable) -> NetworkConnect {
        let ep = &conn.endpoints;
        let (src, dst) = if conn.initiated { (ep.local, ep.remote) } else { (ep.remote, ep.local) };
        let (src_ip, dst_ip) = (canonical_ip(src.ip()), canonical_ip(dst.ip()));
        let owner = conn.owner.as_ref();
        let process: Option<&ProcessInfo> = owner.and_then(|o| o.process.as_deref());
        let pid = owner.map_or(0, |o| o.task.tgid);
        let uid = owner.map_or(u32::MAX, |o| o.task.uid);
        let ppid = process.map_or(0, |p| p.ppid);
        // The table only: a parent it does not know has usually exited, and a
        // /proc read per event for it would be wasted.
        let parent_image = match procs.get(ppid) {
            Some(parent) if ppid != 0 => self.process_text(&parent).image.clone(),
            _ => self.dash.clone(),
        };
        let text = process.map(|p| self.process_text(p));
        let dash = &self.dash;
        NetworkConnect {
            event_id: NETWORK_CONNECT,
            rule_name: dash.clone(),
            utc_time: self.clock.utc_time(conn.established_ns),
            process_guid: text.map_or_else(|| dash.clone(), |t| t.guid.clone()),
            process_id: pid,
            image: text.map_or_else(|| dash.clone(), |t| t.image.clone()),
            user: if owner.is_some() { self.users.name(uid) } else { dash.clone() },
            protocol: conn.protocol.as_str(),
            initiated: conn.initiated,
            source_is_ipv6: src_ip.is_ipv6(),
            source_ip: ip_text(src_ip),
            source_hostname: dash.clone(),
            source_port: src.port(),
            source_port_name: self.port_name(src.port(), conn.protocol),
            destination_is_ipv6: dst_ip.is_ipv6(),
            destination_ip: ip_text(dst_ip),
            destination_hostname: dash.clone(),
            destination_port: dst.port(),
            destination_port_name: self.port_name(dst.port(), conn.protocol),
            command_line: text.map_or_else(|| dash.clone(), |t| t.command_line.clone()),
            command_line_truncated: process.is_some_and(|p| p.argv_truncated),
            image_truncated: process.is_some_and(|p| p.image_truncated),
            parent_process_id: ppid,
            parent_image,
            user_id: uid,
            thread_id: owner.map_or(0, |o| o.task.tid),
            process_id_in_namespace: process.map(|p| p.ns_pid).filter(|&ns| ns != pid && ns != 0),
            container_id: text.map_or_else(|| dash.clone(), |t| t.container_id.clone()),
            net_ns: ep.netns,
            community_id: community_id_v1(conn.protocol.ip_protocol(), src, dst),
            attribution: conn.attribution.as_str(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_time_has_millisecond_precision() {
        assert_eq!(format_utc(1_764_434_274_640_999_999), "2025-11-29 16:37:54.640");
        assert_eq!(format_utc(0), "1970-01-01 00:00:00.000");
    }

    #[test]
    fn ip_text_is_std_display() {
        for octet in 0..=255u8 {
            for ip in [[octet, 0, 10, 255], [1, octet, 99, 100], [127, 0, octet, 1], [9, 10, 11, octet]] {
                let ip = IpAddr::from(ip);
                assert_eq!(ip_text(ip), ip.to_string());
            }
        }
        let v6: IpAddr = "fd00::1".parse().expect("ip");
        assert_eq!(ip_text(v6), "fd00::1");
    }

    #[test]
    fn mapped_ipv4_becomes_ipv4() {
        let mapped: IpAddr = "::ffff:169.254.0.1".parse().expect("ip");
        assert_eq!(canonical_ip(mapped), "169.254.0.1".parse::<IpAddr>().expect("ip"));
        let v6: IpAddr = "fd00::1".parse().expect("ip");
        assert_eq!(canonical_ip(v6), v6);
        // RFC 5952: lowercase, longest zero run compressed.
        let long: IpAddr = "FD00:0:0:0:0:0:0:1".parse().expect("ip");
        assert_eq!(long.to_string(), "fd00::1");
    }

    #[test]
    fn process_guid_layout_and_pid_reuse() {
        let start = 0x6b0c_54e2_i128 * 1_000_000_000 + 123_456_000;
        let g = process_guid(0x3d12_19c7, 30533, start);
        assert!(g.starts_with("{3d1219c7-54e2-6b0c-"), "{g}");
        assert_eq!(g.len(), 38);
        assert_ne!(g, process_guid(0x3d12_19c7, 30533, start + 5_000_000));
    }

    #[test]
    fn cached_second_formats_like_format_utc() {
        let mut c = WallClock::new(1_000_000_000).expect("clock");
        let base = boot_now_ns();
        // Within one second, across a second boundary, and far apart.
        for delta in [0, 1_000_000, 999_000_000, 1_000_000_000, 1_001_500_000, 86_400_000_000_000, 7] {
            let boot = base + delta;
            assert_eq!(c.utc_time(boot), format_utc(c.unix_ns(boot)), "delta {delta}");
        }
    }

    #[test]
    fn wall_clock_tracks_realtime() {
        let c = WallClock::new(1_000_000_000).expect("clock");
        let real = clock_ns(ClockId::CLOCK_REALTIME).expect("realtime");
        let converted = c.unix_ns(boot_now_ns());
        assert!((converted - real).abs() < 50_000_000, "off by {} ns", converted - real);
    }
}
