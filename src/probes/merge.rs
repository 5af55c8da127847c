//! The per-CPU ring buffers merged back into one stream, in the order the
//! kernel produced the facts.
//!
//! Each CPU's ring is in order; across rings the facts' boot-clock stamps
//! decide. A fact is handed on only when no ring can still deliver an earlier
//! one: it is older than the reader's round start minus `REORDER_NS` (a fact
//! is stamped just before its reservation and committed within microseconds),
//! and no older than the last fact read from any ring that still has unread
//! data (what that ring holds next is at least that recent).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

/// Longest assumed time from a fact's stamp to its commit in the ring.
pub const REORDER_NS: u64 = 1_000_000;

/// A fact's stamp: `struct fact_header`'s ts_boot_ns (after kind, detail).
const TS_OFFSET: usize = 8;

struct Queue {
    /// Facts read from the ring and not handed on, oldest first: (stamp, bytes).
    facts: VecDeque<(u64, Vec<u8>)>,
    /// The stamp of the last fact read from the ring (0: none yet).
    last_ts: u64,
}

pub struct RingMerge {
    queues: Vec<Queue>,
    /// Emptied fact buffers, reused (a fact is copied out of its ring).
    spare: Vec<Vec<u8>>,
    held: usize,
}

impl RingMerge {
    pub fn new(rings: usize) -> Self {
        let queues = (0..rings).map(|_| Queue { facts: VecDeque::new(), last_ts: 0 }).collect();
        Self { queues, spare: Vec::new(), held: 0 }
    }

    /// A fact read from ring `ring` (copied: the ring's space is given back).
    pub fn push(&mut self, ring: usize, data: &[u8]) {
        let Some(q) = self.queues.get_mut(ring) else { return };
        // A record too short for a stamp sorts first; decode rejects it.
        let ts = data.get(TS_OFFSET..TS_OFFSET + 8).and_then(|b| b.try_into().ok()).map_or(0, u64::from_ne_bytes);
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(data);
        q.facts.push_back((ts, buf));
        q.last_ts = q.last_ts.max(ts);
        self.held += 1;
    }

    /// Facts read and not yet handed on.
    pub fn held(&self) -> usize {
        self.held
    }

    /// The newest stamp that can be handed on after a read round that began
    /// at `round_start_ns`; `unread(i)` tells whether ring i still has data
    /// in the kernel.
    pub fn watermark(&self, round_start_ns: u64, unread: impl Fn(usize) -> bool) -> u64 {
        let mut mark = round_start_ns.saturating_sub(REORDER_NS);
        for (i, q) in self.queues.iter().enumerate() {
            if unread(i) {
                mark = mark.min(q.last_ts);
            }
        }
        mark
    }

    /// Hands on, oldest first, every fact stamped at or before `watermark`
    /// while `take` accepts them (it returns false to stop: the fact it was
    /// given is handed on, the rest stays held). Returns how many.
    pub fn release(&mut self, watermark: u64, mut take: impl FnMut(&[u8]) -> bool) -> u64 {
        let mut heads: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::with_capacity(self.queues.len());
        for (i, q) in self.queues.iter().enumerate() {
            if let Some(&(ts, _)) = q.facts.front() {
                heads.push(Reverse((ts, i)));
            }
        }
        let mut n = 0;
        while let Some(Reverse((ts, i))) = heads.pop() {
            if ts > watermark {
                break;
            }
            let q = &mut self.queues[i];
            let Some((_, fact)) = q.facts.pop_front() else { continue };
            self.held -= 1;
            n += 1;
            let more = take(&fact);
            self.spare.push(fact);
            if !more {
                break;
            }
            if let Some(&(next, _)) = q.facts.front() {
                heads.push(Reverse((next, i)));
            }
        }
        self.spare.truncate(1024);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fact stamped `ts` whose payload says `tag`.
    fn fact(ts: u64, tag: u8) -> Vec<u8> {
        let mut f = vec![0u8; 16];
        f[TS_OFFSET..].copy_from_slice(&ts.to_ne_bytes());
        f.push(tag);
        f
    }

    fn tags(m: &mut RingMerge, watermark: u64) -> Vec<u8> {
        let mut out = Vec::new();
        m.release(watermark, |f| {
            out.push(f[16]);
            true
        });
        out
    }

    #[test]
    fn rings_are_merged_by_stamp() {
        let mut m = RingMerge::new(2);
        m.push(0, &fact(10, 1));
        m.push(0, &fact(30, 3));
        m.push(1, &fact(20, 2));
        m.push(1, &fact(40, 4));
        assert_eq!(tags(&mut m, 100), vec![1, 2, 3, 4]);
        assert_eq!(m.held(), 0);
    }

    #[test]
    fn a_ring_keeps_its_own_order() {
        // Stamped before its reservation: within a CPU an interrupting fact
        // may be reserved first with a later stamp. The ring's order stands.
        let mut m = RingMerge::new(1);
        m.push(0, &fact(20, 1));
        m.push(0, &fact(10, 2));
        assert_eq!(tags(&mut m, 100), vec![1, 2]);
    }

    #[test]
    fn facts_newer_than_the_watermark_wait() {
        let mut m = RingMerge::new(2);
        m.push(0, &fact(10, 1));
        m.push(1, &fact(50, 2));
        assert_eq!(tags(&mut m, 20), vec![1]);
        m.push(0, &fact(40, 3));
        assert_eq!(tags(&mut m, 60), vec![3, 2]);
    }

    #[test]
    fn a_ring_with_unread_data_holds_back_what_is_newer_than_its_last_fact() {
        let mut m = RingMerge::new(2);
        m.push(0, &fact(100 * REORDER_NS, 1));
        m.push(1, &fact(101 * REORDER_NS, 2));
        m.push(1, &fact(150 * REORDER_NS, 3));
        // Ring 0 was not read to its end: its next fact is at least as recent
        // as the one at 100 ms, which may still come before ring 1's.
        let mark = m.watermark(200 * REORDER_NS, |i| i == 0);
        assert_eq!(mark, 100 * REORDER_NS);
        assert_eq!(tags(&mut m, mark), vec![1]);
        // Read to its end: up to the round's start less REORDER_NS.
        let mark = m.watermark(200 * REORDER_NS, |_| false);
        assert_eq!(mark, 199 * REORDER_NS);
        assert_eq!(tags(&mut m, mark), vec![2, 3]);
    }

    #[test]
    fn a_ring_never_read_blocks_nothing_until_it_has_data() {
        let m = RingMerge::new(2);
        assert_eq!(m.watermark(5 * REORDER_NS, |_| false), 4 * REORDER_NS);
        assert_eq!(m.watermark(5 * REORDER_NS, |i| i == 1), 0, "unread, nothing read from it yet");
    }

    #[test]
    fn release_stops_when_the_taker_says_so() {
        let mut m = RingMerge::new(2);
        for (ring, ts, tag) in [(0, 1, 1), (1, 2, 2), (0, 3, 3), (1, 4, 4)] {
            m.push(ring, &fact(ts, tag));
        }
        let mut seen = Vec::new();
        let n = m.release(100, |f| {
            seen.push(f[16]);
            seen.len() < 2
        });
        assert_eq!((n, seen), (2, vec![1, 2]));
        assert_eq!(m.held(), 2);
        assert_eq!(tags(&mut m, 100), vec![3, 4]);
    }

    #[test]
    fn short_records_are_handed_on_first() {
        let mut m = RingMerge::new(1);
        m.push(0, &[1, 2, 3]);
        let mut lens = Vec::new();
        m.release(0, |f| {
            lens.push(f.len());
            true
        });
        assert_eq!(lens, vec![3]);
    }
}
