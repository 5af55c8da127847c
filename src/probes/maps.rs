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
    /// Tables hold so many: what does not fit is left to userspace, which
    /// applies every rule anyway. Returns how many of each were applied.
    pub fn set_exclusions(&self, exclusions: &KernelExclusions) -> Result<(usize, usize)> {
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
        let port_room = ports.max_entries() as usize;
        let addr_room = addrs.max_entries() as usize;
        let mut applied_ports = 0;
        for e in exclusions.ports.iter().take(port_room) {
            let mut key = [0u8; 4];
            key[0] = e.protocol;
            key[1] = e.side as u8;
            key[2..].copy_from_slice(&e.port.to_ne_bytes());
            ports.update(&key, &[1u8], MapFlags::ANY).context("loading kernel exclusions")?;
            applied_ports += 1;
        }
        let mut applied_addrs = 0;
        for e in exclusions.addrs.iter().take(addr_room) {
            // struct addr_exclusion_key: protocol, side, pad, 16-byte address.
            let mut key = [0u8; 20];
            key[0] = e.protocol;
            key[1] = e.side as u8;
            key[4..].copy_from_slice(&e.addr);
            addrs.update(&key, &[1u8], MapFlags::ANY).context("loading kernel address exclusions")?;
            applied_addrs += 1;
        }
        set_count(0, applied_ports)?;
        set_count(1, applied_addrs)?;
        Ok((applied_ports, applied_addrs))
    }

    /// Every entry of the kernel's UDP flow table: (raw key, last packet ns).
    pub fn udp_flow_entries(&self) -> Vec<(Vec<u8>, u64)> {
        let map = &self.udp_recv.maps.udp_flows;
        let last_seen = |v: &[u8]| Some(u64::from_ne_bytes(v.get(..8)?.try_into().ok()?));
        // Batches of 4096 until the kernel says the walk is over;
        // key-by-key where batching is not supported.
        match walk_hash_map(map, 4096) {
            Ok(all) => all.into_iter().filter_map(|(k, v)| Some((k, last_seen(&v)?))).collect(),
            Err(e) => {
                tracing::debug!("UDP flow table batch walk: {e:#}; key by key");
                map.keys()
                    .filter_map(|k| {
                        let v = map.lookup(&k, MapFlags::ANY).ok()??;
                        Some((k, last_seen(&v)?))
                    })
                    .collect()
            }
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

/// Every (key, value) of a hash map, batch by batch, to the end of the map.
/// (libbpf-rs 0.27's batch iterator stops after the first batch a hash map
/// returns short, which it does at bucket boundaries: the first ~4095 only.)
fn walk_hash_map(map: &impl MapCore, batch: u32) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    use std::os::fd::AsRawFd;
    let key_size = map.key_size() as usize;
    let value_size = map.value_size() as usize;
    let max = map.max_entries() as usize;
    let mut batch = batch.max(1);
    let mut out = Vec::new();
    // Hash maps' batch token is a bucket index (u32); room for any layout.
    let mut token_in = [0u8; 64];
    let mut token_out = [0u8; 64];
    let mut first = true;
    // Bounded: the table holds at most `max` entries; each call returns at
    // least one bucket or ends the walk. Entries can move while it goes.
    for _ in 0..(max + 64) {
        let mut keys = vec![0u8; batch as usize * key_size];
        let mut values = vec![0u8; batch as usize * value_size];
        let mut count = batch;
        let opts = libbpf_rs::libbpf_sys::bpf_map_batch_opts {
            sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_map_batch_opts>() as _,
            ..Default::default()
        };
        // SAFETY: the buffers hold `count` keys and values of the map's sizes,
        // the tokens are larger than the kernel's (4 bytes for hash maps).
        let ret = unsafe {
            libbpf_rs::libbpf_sys::bpf_map_lookup_batch(
                map.as_fd().as_raw_fd(),
                if first { std::ptr::null_mut() } else { token_in.as_mut_ptr().cast() },
                token_out.as_mut_ptr().cast(),
                keys.as_mut_ptr().cast(),
                values.as_mut_ptr().cast(),
                &mut count,
                &opts,
            )
        };
        let got = (count as usize).min(batch as usize);
        let errno = if ret < 0 { -ret } else { 0 };
        if errno == libc::ENOSPC && got == 0 {
            // One bucket holds more than a batch: a bigger batch.
            batch = batch.saturating_mul(2);
            continue;
        }
        if errno != 0 && errno != libc::ENOENT {
            return Err(std::io::Error::from_raw_os_error(errno)).context("walking a BPF hash map");
        }
        out.extend(
            keys.chunks_exact(key_size)
                .zip(values.chunks_exact(value_size))
                .take(got)
                .map(|(k, v)| (k.to_vec(), v.to_vec())),
        );
        if errno == libc::ENOENT || out.len() > max * 2 {
            return Ok(out);
        }
        token_in = token_out;
        first = false;
    }
    Ok(out)
}

/// Entry `index` of a per-CPU array of u64, summed over CPUs (0 if it
/// cannot be read).
fn per_cpu_sum(map: &impl MapCore, index: u32) -> u64 {
    let per_cpu = map.lookup_percpu(&index.to_ne_bytes(), MapFlags::ANY).ok().flatten().unwrap_or_default();
    per_cpu.iter().filter_map(|v| v.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_ne_bytes)).sum()
}
