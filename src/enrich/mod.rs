//! Enrich: a tracked connection + the process table -> a complete event
//! (wall-clock time, user name, ProcessGuid, addresses in Sysmon's direction).

pub mod community_id;
pub mod port_names;

use std::collections::HashMap;
use std::sync::Arc;

use crate::clock::WallClock;
use crate::dns::names::NameCache;
use crate::dns::parse::{Message, RData};
use crate::dns::{query_results, Answered};
use crate::event::{
    DnsQuery, Extra, LifecycleEvent, NetworkConnect, Shared, CONNECTION_CLOSED, CONNECTION_FAILED, DNS_QUERY,
    NETWORK_CONNECT,
};
use crate::text::{canonical_ip, command_line, ip_text, or_dash};
use crate::track::lifecycle::{CloseFigures, ClosedConnection, FailedConnect};
use crate::track::process::{ProcessInfo, ProcessTable, ProcessText};
use crate::track::tcp::{Connection, Protocol};
use community_id::community_id_v1;
use port_names::Services;

/// Sysmon's ProcessGuid: {machine-id[0..8]-start_lo16-start_hi16-Data4},
/// start in epoch seconds, Data4 = pid and start time in microseconds since
/// boot, which differ for a new process that reuses a pid (even at once,
/// as `ns_last_pid` allows). Both come from the boot clock and the kernel's
/// boot time, not from a conversion through the sensor's own wall clock:
/// every sensor on the host gives a process it learned from the kernel (its
/// exec or fork fact) the same GUID. A process older than the sensor is
/// known from /proc, whose start time has clock-tick precision: its GUID
/// differs from the one a sensor that saw it start gave it.
pub fn process_guid(machine_prefix: u32, pid: u32, boot_epoch_secs: u64, start_boot_ns: u64) -> String {
    let secs = u32::try_from(boot_epoch_secs + start_boot_ns / 1_000_000_000).unwrap_or(0);
    let micros = start_boot_ns / 1000;
    let d4 = (u64::from(pid) << 32) | (micros & 0xffff_ffff);
    format!(
        "{{{machine_prefix:08x}-{:04x}-{:04x}-{:04x}-{:012x}}}",
        secs & 0xffff,
        secs >> 16,
        d4 >> 48,
        d4 & 0xffff_ffff_ffff
    )
}

/// When the host booted, in epoch seconds: the kernel's `btime` in
/// /proc/stat, the same for every reader.
pub fn read_boot_epoch_secs() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines().find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
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

pub struct Enricher {
    pub clock: WallClock,
    users: UserNames,
    machine_prefix: u32,
    /// /proc/stat's btime (ProcessGuid); the wall clock's own when unreadable.
    boot_epoch_secs: u64,
    /// Port names, when enabled (`--port-names`); else "-" as Sysmon writes.
    services: Option<Services>,
    /// "-", Sysmon's unknown value, shared by every event.
    dash: Shared,
    /// Host names from DNS answers (`--dns names|both`).
    pub names: Option<NameCache>,
}

impl Enricher {
    pub fn new(clock: WallClock, machine_prefix: u32, services: Option<Services>) -> Self {
        let boot_epoch_secs = read_boot_epoch_secs().unwrap_or_else(|| {
            tracing::warn!("no btime in /proc/stat: ProcessGuids follow this sensor's wall clock");
            u64::try_from(clock.unix_ns(0).div_euclid(1_000_000_000)).unwrap_or(0)
        });
        Self {
            clock,
            users: UserNames::default(),
            machine_prefix,
            boot_epoch_secs,
            services,
            dash: Arc::from("-"),
            names: None,
        }
    }

    /// Fills host names from DNS answers, kept in `cache`.
    pub fn with_names(mut self, cache: Option<NameCache>) -> Self {
        self.names = cache;
        self
    }

    /// A response seen in `netns` at `ts_ns`: each address it gives is named
    /// by the question (what the process asked for), else by its record.
    pub fn learn_names(&mut self, netns: u32, msg: &Message, ts_ns: u64) {
        let Some(cache) = self.names.as_mut() else { return };
        if msg.rcode != 0 {
            return;
        }
        let asked: Option<Shared> = msg.questions.first().map(|q| Shared::from(q.name.as_str()));
        for a in &msg.answers {
            let addr = match a.data {
                RData::A(v4) => std::net::IpAddr::V4(v4),
                RData::Aaaa(v6) => std::net::IpAddr::V6(v6),
                _ => continue,
            };
            let name = asked.clone().unwrap_or_else(|| Shared::from(a.name.as_str()));
            cache.learn(netns, addr, &name, a.ttl, ts_ns);
        }
    }

    fn host_name(&self, netns: u32, ip: std::net::IpAddr, at_ns: u64) -> Shared {
        self.names.as_ref().and_then(|c| c.lookup(netns, ip, at_ns)).unwrap_or_else(|| self.dash.clone())
    }

    /// A finished DNS query -> DnsQuery (event 22), the process that asked.
    pub fn dns_query(&mut self, done: &Answered, procs: &mut ProcessTable) -> DnsQuery {
        let a = &done.asked;
        let process = a.task.and_then(|t| procs.lookup(t.tgid));
        let text = process.as_deref().map(|p| self.process_text(p).clone());
        let dash = self.dash.clone();
        DnsQuery {
            event_id: DNS_QUERY,
            rule_name: dash.clone(),
            utc_time: self.clock.utc_time(a.ts_ns),
            process_guid: text.as_ref().map_or_else(|| dash.clone(), |t| t.guid.clone()),
            process_id: a.task.map_or(0, |t| t.tgid),
            query_name: a.name.clone(),
            query_status: done.status,
            query_results: query_results(&done.answers),
            image: text.as_ref().map_or_else(|| dash.clone(), |t| t.image.clone()),
            user: a.task.map_or_else(|| dash.clone(), |t| self.users.name(t.uid)),
            net_ns: a.netns,
            container_id: text.as_ref().map_or_else(|| dash.clone(), |t| t.container_id.clone()),
            server_ip: ip_text(canonical_ip(a.server.ip())),
            protocol: if a.tcp { "tcp" } else { "udp" },
        }
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
            guid: process_guid(self.machine_prefix, p.pid, self.boot_epoch_secs, p.start_boot_ns).into(),
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
            // Sysmon's direction: inbound, Source is the remote peer.
            source_hostname: if conn.initiated {
                dash.clone()
            } else {
                self.host_name(ep.netns, src_ip, conn.established_ns)
            },
            source_port: src.port(),
            source_port_name: self.port_name(src.port(), conn.protocol),
            destination_is_ipv6: dst_ip.is_ipv6(),
            destination_ip: ip_text(dst_ip),
            destination_hostname: if conn.initiated {
                self.host_name(ep.netns, dst_ip, conn.established_ns)
            } else {
                dash.clone()
            },
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

impl Enricher {
    /// Event 252: the failed attempt's fields as event 3 would have them,
    /// stamped when it failed, then Failure, Attempts, Count.
    pub fn connection_failed(&mut self, f: &FailedConnect, procs: &ProcessTable) -> LifecycleEvent {
        let mut connect = self.network_connect(&f.conn, procs);
        connect.event_id = CONNECTION_FAILED;
        LifecycleEvent {
            connect,
            extras: vec![
                ("Failure", Extra::Text(f.failure.as_str())),
                ("Attempts", Extra::Num(f.attempts)),
                ("Count", Extra::Num(f.count)),
            ],
        }
    }

    /// Event 253: the connection's event-3 fields (and RuleName), stamped
    /// when it ended, then what it carried and how it ended.
    pub fn connection_closed(&mut self, c: &ClosedConnection, procs: &ProcessTable) -> LifecycleEvent {
        let at_close = Connection { established_ns: c.closed_ns, ..c.conn.clone() };
        let mut connect = self.network_connect(&at_close, procs);
        connect.event_id = CONNECTION_CLOSED;
        connect.rule_name = c.rule_name.clone();
        let mut extras = vec![("Duration", Extra::Num(c.duration_ms()))];
        match c.figures {
            CloseFigures::Tcp { bytes_sent, bytes_received, retransmitted, srtt_us } => extras.extend([
                ("BytesSent", Extra::Num(bytes_sent)),
                ("BytesReceived", Extra::Num(bytes_received)),
                ("SegmentsRetransmitted", Extra::Num(retransmitted)),
                ("SmoothedRttUs", Extra::Num(srtt_us)),
            ]),
            CloseFigures::Udp { bytes_sent, bytes_received, datagrams_sent, datagrams_received } => extras.extend([
                ("BytesSent", Extra::Num(bytes_sent)),
                ("BytesReceived", Extra::Num(bytes_received)),
                ("DatagramsSent", Extra::Num(datagrams_sent)),
                ("DatagramsReceived", Extra::Num(datagrams_received)),
            ]),
        }
        extras.push(("CloseReason", Extra::Text(c.reason.as_str())));
        LifecycleEvent { connect, extras }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_guid_layout_and_pid_reuse() {
        let boot = 0x6b0c_0000;
        let start_ns = 0x54e2 * 1_000_000_000 + 123_456_789;
        let g = process_guid(0x3d12_19c7, 30533, boot, start_ns);
        assert!(g.starts_with("{3d1219c7-54e2-6b0c-"), "{g}");
        assert_eq!(g.len(), 38);
        assert_ne!(g, process_guid(0x3d12_19c7, 30533, boot, start_ns + 5_000), "a new process, same pid");
        // Two sensors with their own wall-clock offsets: nothing of theirs in it.
        assert_eq!(g, process_guid(0x3d12_19c7, 30533, boot, start_ns + 100));
    }
}
