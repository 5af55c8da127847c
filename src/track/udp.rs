//! UDP new-flow tracking. The kernel's flow table does the per-packet
//! de-duplication; userspace owns its policy: the window (entries whose flow
//! was idle longer are deleted, so the flow is reported again), and room
//! (a full table is thinned to a low-water mark, oldest first, counted).

use std::sync::Arc;

use super::process::ProcessInfo;
use super::table::AgeingTable;
use super::tcp::{Attribution, Connection, Owner, Protocol};
use crate::decode::{Endpoints, TaskIds, UdpFlowKey, UdpSeenBy};

#[derive(Debug, Default, Clone, Copy)]
pub struct UdpStats {
    pub flows_reported: u64,
    /// Flows idle longer than the window, forgotten (next packet reports again).
    pub flows_expired: u64,
    /// Flows forgotten early to make room in a full table.
    pub flows_evicted: u64,
    /// Flows the kernel reported while its table was full.
    pub reported_while_full: u64,
    /// Repeats of such flows dropped in userspace until the table had room.
    pub repeats_suppressed: u64,
    /// The most entries one sweep found in the kernel table (it walks all).
    pub walked_peak: u64,
}

pub struct UdpTracker {
    window_ns: u64,
    capacity: usize,
    /// Flows reported without a kernel table entry, so their next packets
    /// (which the kernel cannot suppress) are not reported again.
    unrecorded: AgeingTable<Vec<u8>, ()>,
    /// Raw keys (and first-seen time) to put in the kernel table once room is made.
    pub to_record: Vec<(Vec<u8>, u64)>,
    /// Entries in the kernel table at the last sweep.
    pub tracked: usize,
    pub stats: UdpStats,
}

/// What a sweep of the kernel table should delete.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SweepPlan {
    pub expired: Vec<Vec<u8>>,
    pub evicted: Vec<Vec<u8>>,
}

impl UdpTracker {
    pub fn new(window_ns: u64, capacity: usize) -> Self {
        Self {
            window_ns,
            capacity,
            unrecorded: AgeingTable::new(capacity.max(1024)),
            to_record: Vec::new(),
            tracked: 0,
            stats: UdpStats::default(),
        }
    }

    pub fn on_flow(
        &mut self,
        ts_ns: u64,
        key: UdpFlowKey,
        task: TaskIds,
        recorded: bool,
        seen_by: UdpSeenBy,
        process: Option<Arc<ProcessInfo>>,
    ) -> Option<Connection> {
        if recorded && self.unrecorded.contains(&key.raw) {
            // Reported once already, unrecorded (the kernel's insert failed:
            // a full table, or -EBUSY when a program on the same CPU
            // interrupted another's update of that bucket, measured on 6.1
            // under the packet mechanism); now the kernel has it.
            self.stats.repeats_suppressed += 1;
            return None;
        }
        if !recorded {
            if self.unrecorded.contains(&key.raw) {
                self.stats.repeats_suppressed += 1;
                return None;
            }
            self.stats.reported_while_full += 1;
            self.unrecorded.insert(key.raw.clone(), (), ts_ns);
            self.to_record.push((key.raw.clone(), ts_ns));
        }
        self.stats.flows_reported += 1;
        let attribution = match seen_by {
            UdpSeenBy::Send => Attribution::Send,
            UdpSeenBy::Packet => Attribution::Packet,
            UdpSeenBy::Recv => Attribution::Receive,
        };
        Some(Connection {
            sk: 0,
            protocol: Protocol::Udp,
            established_ns: ts_ns,
            endpoints: Endpoints { netns: key.netns, local: key.local, remote: key.remote },
            initiated: key.outbound,
            owner: Some(Owner { task, process }),
            attribution,
        })
    }

    /// The table needs room now (a flow could not be recorded).
    pub fn needs_room(&self) -> bool {
        !self.to_record.is_empty()
    }

    /// Decides which kernel entries go: idle past the window, then, above
    /// 90% of capacity, the least recently used down to 75%.
    pub fn plan_sweep(&mut self, mut entries: Vec<(Vec<u8>, u64)>, now_ns: u64) -> SweepPlan {
        let cutoff = now_ns.saturating_sub(self.window_ns);
        self.stats.walked_peak = self.stats.walked_peak.max(entries.len() as u64);
        let mut plan = SweepPlan::default();
        entries.retain(|(key, last)| {
            let idle = *last < cutoff;
            if idle {
                plan.expired.push(key.clone());
            }
            !idle
        });
        let high = self.capacity * 9 / 10;
        let wanted_free = self.to_record.len();
        if entries.len() + wanted_free > high {
            let low = (self.capacity * 3 / 4).saturating_sub(wanted_free);
            entries.sort_by_key(|(_, last)| *last);
            let excess = entries.len().saturating_sub(low);
            plan.evicted.extend(entries.drain(..excess).map(|(k, _)| k));
        }
        self.tracked = entries.len();
        self.stats.flows_expired += plan.expired.len() as u64;
        self.stats.flows_evicted += plan.evicted.len() as u64;
        self.unrecorded.expire(now_ns, self.window_ns);
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> UdpFlowKey {
        UdpFlowKey {
            netns: 1,
            tgid: 10,
            outbound: true,
            local: "127.0.0.1:5000".parse().expect("addr"),
            remote: format!("127.0.0.{n}:53").parse().expect("addr"),
            raw: vec![n],
        }
    }

    fn task() -> TaskIds {
        TaskIds { tgid: 10, tid: 10, uid: 0 }
    }

    #[test]
    fn recorded_flow_is_reported_as_udp() {
        let mut t = UdpTracker::new(1000, 100);
        let c = t.on_flow(5, key(1), task(), true, UdpSeenBy::Send, None).expect("reported");
        assert_eq!(c.protocol, Protocol::Udp);
        assert!(c.initiated);
        assert_eq!(c.attribution, Attribution::Send);
        assert!(!t.needs_room());
    }

    #[test]
    fn unrecorded_flow_is_reported_once_and_queued_for_the_table() {
        let mut t = UdpTracker::new(1000, 100);
        assert!(t.on_flow(5, key(1), task(), false, UdpSeenBy::Packet, None).is_some());
        assert!(t.on_flow(6, key(1), task(), false, UdpSeenBy::Packet, None).is_none());
        assert_eq!(t.stats.repeats_suppressed, 1);
        assert!(t.needs_room());
        assert_eq!(t.to_record, vec![(vec![1], 5)]);
    }

    #[test]
    fn a_flow_reported_unrecorded_is_not_reported_again_once_recorded() {
        let mut t = UdpTracker::new(1000, 100);
        assert!(t.on_flow(5, key(1), task(), false, UdpSeenBy::Packet, None).is_some());
        assert!(t.on_flow(6, key(1), task(), true, UdpSeenBy::Packet, None).is_none());
        assert!(t.on_flow(7, key(2), task(), true, UdpSeenBy::Packet, None).is_some());
    }

    #[test]
    fn sweep_expires_idle_flows() {
        let mut t = UdpTracker::new(100, 1000);
        let plan = t.plan_sweep(vec![(vec![1], 10), (vec![2], 150), (vec![3], 90)], 200);
        assert_eq!(plan.expired, vec![vec![1], vec![3]]);
        assert!(plan.evicted.is_empty());
        assert_eq!(t.stats.flows_expired, 2);
    }

    #[test]
    fn full_table_is_thinned_oldest_first() {
        let mut t = UdpTracker::new(1_000_000, 20);
        let entries: Vec<(Vec<u8>, u64)> = (0..19u8).map(|n| (vec![n], 1000 - u64::from(n))).collect();
        let plan = t.plan_sweep(entries, 2000);
        assert!(plan.expired.is_empty());
        // 19 > 18 (90%): down to 15 (75%), the least recently used first.
        assert_eq!(plan.evicted.len(), 4);
        assert_eq!(plan.evicted, vec![vec![18], vec![17], vec![16], vec![15]]);
        assert_eq!(t.stats.flows_evicted, 4);
    }

    #[test]
    fn pending_records_make_room_for_themselves() {
        let mut t = UdpTracker::new(1_000_000, 20);
        for n in 0..3u8 {
            t.on_flow(5, key(100 + n), task(), false, UdpSeenBy::Send, None);
        }
        let entries: Vec<(Vec<u8>, u64)> = (0..17u8).map(|n| (vec![n], u64::from(n))).collect();
        let plan = t.plan_sweep(entries, 10);
        assert_eq!(plan.evicted.len(), 17 - (15 - 3));
    }
}
