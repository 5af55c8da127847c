//! The maps while the sensor runs: the kernel's counters, the UDP flow table
//! userspace ages, and the config exclusions the kernel applies.

use anyhow::{Context, Result};
use libbpf_rs::{MapCore, MapFlags};

use super::Probes;
use crate::contract::udp_counter;
use crate::filter::kernel::KernelExclusions;

/// Entries of the kernel's `udp_counters` (enum udp_counter in facts.h).
pub const UDP_KERNEL_COUNTERS: usize = udp_counter::UDP_COUNTERS.0 as usize;

impl<'obj> Probes<'obj> {
    /// Replaces the config exclusions the kernel applies (src/filter/kernel.rs).
    pub fn set_exclusions(&self, exclusions: &KernelExclusions) -> Result<()> {
        let ports = &self.tcp_state.maps.config_exclusions;
        let addrs = &self.tcp_state.maps.config_addr_exclusions;
        let count = &self.tcp_state.maps.config_exclusion_count;
        let set_count = |index: u32, n: usize| {
            let n = u32::try_from(n).unwrap_or(u32::MAX);
            count.update(&index.to_ne_bytes(), &n.to_ne_bytes(), MapFlags::ANY).context("counting kernel exclusions")
        };
        // While the tables change the kernel applies none: userspace applies
        // every rule anyway, so nothing is excluded twice or wrongly.
        set_count(0, 0)?;
        set_count(1, 0)?;
        for map in [ports, addrs] {
            for key in map.keys().collect::<Vec<_>>() {
                map.delete(&key).context("clearing kernel exclusions")?;
            }
        }
        for e in &exclusions.ports {
            let mut key = [0u8; 4];
            key[0] = e.protocol;
            key[1] = e.side as u8;
            key[2..].copy_from_slice(&e.port.to_ne_bytes());
            ports.update(&key, &[1u8], MapFlags::ANY).context("loading kernel exclusions")?;
        }
        for e in &exclusions.addrs {
            // struct addr_exclusion_key: protocol, side, pad, 16-byte address.
            let mut key = [0u8; 20];
            key[0] = e.protocol;
            key[1] = e.side as u8;
            key[4..].copy_from_slice(&e.addr);
            addrs.update(&key, &[1u8], MapFlags::ANY).context("loading kernel address exclusions")?;
        }
        set_count(0, exclusions.ports.len())?;
        set_count(1, exclusions.addrs.len())
    }

    /// Every entry of the kernel's UDP flow table: (raw key, last packet ns).
    pub fn udp_flow_entries(&self) -> Vec<(Vec<u8>, u64)> {
        let map = &self.udp_recv.maps.udp_flows;
        let last_seen = |v: &[u8]| Some(u64::from_ne_bytes(v.get(..8)?.try_into().ok()?));
        // One syscall per 4096 entries; key-by-key where batching is not supported.
        match map.lookup_batch(4096, MapFlags::ANY, MapFlags::ANY) {
            Ok(batch) => batch.filter_map(|(k, v)| Some((k, last_seen(&v)?))).collect(),
            Err(_) => map
                .keys()
                .filter_map(|k| {
                    let v = map.lookup(&k, MapFlags::ANY).ok()??;
                    Some((k, last_seen(&v)?))
                })
                .collect(),
        }
    }

    pub fn udp_forget(&self, keys: &[Vec<u8>]) {
        for k in keys {
            // Already gone (raced with nothing else deleting) is fine.
            let _ = self.udp_recv.maps.udp_flows.delete(k);
        }
    }

    /// Puts a flow userspace reported into the kernel table, so its next
    /// packets are suppressed there.
    pub fn udp_record(&self, key: &[u8], last_ns: u64) -> Result<()> {
        self.udp_recv
            .maps
            .udp_flows
            .update(key, &last_ns.to_ne_bytes(), MapFlags::ANY)
            .context("recording a UDP flow in the kernel table")
    }

    /// Every counter the kernel side keeps, summed over CPUs (a counter that
    /// cannot be read counts 0).
    pub fn counters(&self) -> KernelCounters {
        let mut udp = [0u64; UDP_KERNEL_COUNTERS];
        for (i, slot) in udp.iter_mut().enumerate() {
            *slot = per_cpu_sum(&self.udp_recv.maps.udp_counters, i as u32);
        }
        KernelCounters {
            ringbuf_drops: per_cpu_sum(&self.tcp_state.maps.ringbuf_drops, 0),
            udp,
            tcp: TcpKernelCounters {
                inbound_handshakes: per_cpu_sum(&self.tcp_state.maps.tcp_inbound_handshakes, 0),
                accepts_unresolved: per_cpu_sum(&self.tcp_accept.maps.accepts_unresolved, 0),
            },
            excluded: per_cpu_sum(&self.tcp_state.maps.excluded_in_kernel, 0),
        }
    }
}

/// Every counter the kernel side keeps, summed over CPUs.
#[derive(Debug, Default, Clone, Copy)]
pub struct KernelCounters {
    /// Ring-buffer reservations the kernel side could not make.
    pub ringbuf_drops: u64,
    /// Indexed by enum udp_counter (`udp()` reads one).
    pub udp: [u64; UDP_KERNEL_COUNTERS],
    pub tcp: TcpKernelCounters,
    /// Events config exclusions dropped in the kernel.
    pub excluded: u64,
}

impl KernelCounters {
    pub fn udp(&self, which: udp_counter) -> u64 {
        self.udp.get(which.0 as usize).copied().unwrap_or(0)
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct TcpKernelCounters {
    /// Inbound handshakes that ended ESTABLISHED.
    pub inbound_handshakes: u64,
    /// Accepted sockets the probes could not name (lost).
    pub accepts_unresolved: u64,
}

/// Entry `index` of a per-CPU array of u64, summed over CPUs (0 if it
/// cannot be read).
fn per_cpu_sum(map: &impl MapCore, index: u32) -> u64 {
    let per_cpu = map.lookup_percpu(&index.to_ne_bytes(), MapFlags::ANY).ok().flatten().unwrap_or_default();
    per_cpu.iter().filter_map(|v| v.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_ne_bytes)).sum()
}
