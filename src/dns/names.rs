//! The host names of addresses, as DNS answers seen in each network namespace
//! gave them: (netns, address) -> the name that was asked for. Bounded
//! (`capacity` entries; when full the entry that expires first goes,
//! counted), TTL-aware: an entry lives for its record's TTL, at least
//! `TTL_FLOOR_S` (a connection usually follows its answer at once, and a TTL
//! of 0 would otherwise never name one) and at most the cap. No lookups of
//! its own: only what the host's own traffic answered.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use crate::event::Shared;
use crate::text::canonical_ip;

/// Shortest life of an entry, seconds.
pub const TTL_FLOOR_S: u32 = 30;

#[derive(Debug, Default, Clone, Copy)]
pub struct NameStats {
    pub learned: u64,
    pub expired: u64,
    pub evicted: u64,
}

struct Entry {
    name: Shared,
    expires_ns: u64,
    seq: u64,
}

pub struct NameCache {
    map: HashMap<(u32, IpAddr), Entry>,
    /// (expiry, insertion sequence, key): what goes first.
    order: BTreeSet<(u64, u64, u32, IpAddr)>,
    capacity: usize,
    ttl_cap_s: u32,
    seq: u64,
    pub stats: NameStats,
}

impl NameCache {
    pub fn new(capacity: usize, ttl_cap_s: u32) -> Self {
        Self {
            map: HashMap::new(),
            order: BTreeSet::new(),
            capacity: capacity.max(1),
            ttl_cap_s: ttl_cap_s.max(TTL_FLOOR_S),
            seq: 0,
            stats: NameStats::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// `addr` in `netns` is `name` (an answer with `ttl` seconds), from `now_ns`.
    pub fn learn(&mut self, netns: u32, addr: IpAddr, name: &Shared, ttl: u32, now_ns: u64) {
        let addr = canonical_ip(addr);
        let life = u64::from(ttl.clamp(TTL_FLOOR_S, self.ttl_cap_s)) * 1_000_000_000;
        let expires_ns = now_ns.saturating_add(life);
        self.seq += 1;
        if let Some(old) = self.map.remove(&(netns, addr)) {
            self.order.remove(&(old.expires_ns, old.seq, netns, addr));
        } else if self.map.len() >= self.capacity {
            if let Some(first) = self.order.pop_first() {
                self.map.remove(&(first.2, first.3));
                if first.0 <= now_ns {
                    self.stats.expired += 1;
                } else {
                    self.stats.evicted += 1;
                }
            }
        }
        self.order.insert((expires_ns, self.seq, netns, addr));
        self.map.insert((netns, addr), Entry { name: name.clone(), expires_ns, seq: self.seq });
        self.stats.learned += 1;
    }

    /// The name `addr` had in `netns`, unless it expired.
    pub fn lookup(&self, netns: u32, addr: IpAddr, now_ns: u64) -> Option<Shared> {
        let e = self.map.get(&(netns, canonical_ip(addr)))?;
        (e.expires_ns > now_ns).then(|| e.name.clone())
    }

    /// Drops what expired by `now_ns`.
    pub fn expire(&mut self, now_ns: u64) {
        while let Some(first) = self.order.first().copied() {
            if first.0 > now_ns {
                break;
            }
            self.order.pop_first();
            self.map.remove(&(first.2, first.3));
            self.stats.expired += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn per_netns_ttl_floor_and_cap() {
        let mut c = NameCache::new(10, 100);
        let n: Shared = "example.test".into();
        c.learn(1, ip("192.0.2.1"), &n, 0, 0);
        c.learn(1, ip("192.0.2.2"), &n, 1000, 0);
        assert_eq!(c.lookup(1, ip("192.0.2.1"), 29 * S).as_deref(), Some("example.test"));
        assert_eq!(c.lookup(2, ip("192.0.2.1"), 0), None, "another namespace");
        assert_eq!(c.lookup(1, ip("192.0.2.1"), 30 * S), None, "floor of 30 s");
        assert!(c.lookup(1, ip("192.0.2.2"), 99 * S).is_some());
        assert_eq!(c.lookup(1, ip("192.0.2.2"), 100 * S), None, "capped at 100 s");
        c.expire(100 * S);
        assert!(c.is_empty());
        assert_eq!(c.stats.expired, 2);
    }

    #[test]
    fn mapped_ipv4_is_ipv4_and_full_evicts_the_first_to_expire() {
        let mut c = NameCache::new(2, 3600);
        c.learn(1, ip("::ffff:192.0.2.1"), &"a.test".into(), 50, 0);
        assert_eq!(c.lookup(1, ip("192.0.2.1"), 0).as_deref(), Some("a.test"));
        c.learn(1, ip("fd00::1"), &"b.test".into(), 3000, 0);
        c.learn(1, ip("fd00::2"), &"c.test".into(), 3000, 0);
        assert_eq!(c.len(), 2);
        assert_eq!(c.stats.evicted, 1);
        assert_eq!(c.lookup(1, ip("192.0.2.1"), 0), None);
        // A new answer for an address replaces its name.
        c.learn(1, ip("fd00::1"), &"d.test".into(), 3000, 0);
        assert_eq!(c.lookup(1, ip("fd00::1"), 0).as_deref(), Some("d.test"));
        assert_eq!(c.len(), 2);
    }
}
