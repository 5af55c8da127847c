//! A bounded map whose entries age off: the memory behind every "seen this
//! socket, waiting for its other half" decision.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

struct Slot<V> {
    seq: u64,
    value: V,
}

/// Insertion-ordered, bounded, with age-off. Times are the caller's clock
/// (kernel boot-time ns), so behaviour is deterministic and testable.
pub struct AgeingTable<K, V> {
    entries: HashMap<K, Slot<V>>,
    /// Insertion order; may hold stale (key, seq) pairs of removed entries.
    order: VecDeque<(u64, u64, K)>,
    next_seq: u64,
    capacity: usize,
}

/// What an insert pushed out.
pub struct Displaced<K, V> {
    /// The entry that had the same key before.
    pub replaced: Option<V>,
    /// The oldest entry, evicted because the table was full.
    pub evicted: Option<(K, V)>,
}

impl<K: Eq + Hash + Clone, V> AgeingTable<K, V> {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self { entries: HashMap::new(), order: VecDeque::new(), next_seq: 0, capacity }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn insert(&mut self, key: K, value: V, now_ns: u64) -> Displaced<K, V> {
        let replaced = self.entries.remove(&key).map(|s| s.value);
        let evicted = if self.entries.len() >= self.capacity { self.pop_oldest() } else { None };
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.push_back((seq, now_ns, key.clone()));
        self.entries.insert(key, Slot { seq, value });
        self.compact_if_stale();
        Displaced { replaced, evicted }
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        self.entries.remove(key).map(|s| s.value)
    }

    pub fn contains(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    #[cfg(test)]
    pub fn get(&self, key: &K) -> Option<&V> {
        self.entries.get(key).map(|s| &s.value)
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.entries.get_mut(key).map(|s| &mut s.value)
    }

    /// Removes and returns every entry, oldest first.
    pub fn drain(&mut self) -> Vec<(K, V)> {
        let mut all = Vec::with_capacity(self.entries.len());
        while let Some(entry) = self.pop_oldest() {
            all.push(entry);
        }
        self.order.clear();
        all
    }

    /// Removes and returns every entry inserted before `now_ns - max_age_ns`.
    pub fn expire(&mut self, now_ns: u64, max_age_ns: u64) -> Vec<(K, V)> {
        let cutoff = now_ns.saturating_sub(max_age_ns);
        let mut gone = Vec::new();
        while let Some((seq, inserted_ns, key)) = self.order.front() {
            let live = self.entries.get(key).is_some_and(|s| s.seq == *seq);
            if live && *inserted_ns >= cutoff {
                break;
            }
            if let Some((_, _, key)) = self.order.pop_front() {
                if live {
                    if let Some(slot) = self.entries.remove(&key) {
                        gone.push((key, slot.value));
                    }
                }
            }
        }
        gone
    }

    fn pop_oldest(&mut self) -> Option<(K, V)> {
        while let Some((seq, _, key)) = self.order.pop_front() {
            if self.entries.get(&key).is_some_and(|s| s.seq == seq) {
                return self.entries.remove(&key).map(|s| (key, s.value));
            }
        }
        None
    }

    /// Keeps the order log from growing without bound under remove-heavy use.
    fn compact_if_stale(&mut self) {
        if self.order.len() > 2 * self.entries.len() + 64 {
            let entries = &self.entries;
            self.order.retain(|(seq, _, key)| entries.get(key).is_some_and(|s| s.seq == *seq));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_then_match_removes() {
        let mut t = AgeingTable::new(8);
        t.insert(1u64, "a", 100);
        assert_eq!(t.get(&1), Some(&"a"));
        assert_eq!(t.remove(&1), Some("a"));
        assert_eq!(t.remove(&1), None);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn reinsert_replaces_and_restarts_age() {
        let mut t = AgeingTable::new(8);
        t.insert(1u64, "old", 0);
        let d = t.insert(1u64, "new", 50);
        assert_eq!(d.replaced, Some("old"));
        assert!(d.evicted.is_none());
        assert!(t.expire(60, 20).is_empty(), "the stale order record of the old value must not expire the new one");
        assert_eq!(t.expire(100, 20), vec![(1, "new")]);
    }

    #[test]
    fn ages_off_only_old_entries() {
        let mut t = AgeingTable::new(8);
        t.insert(1u64, 'a', 10);
        t.insert(2u64, 'b', 20);
        t.insert(3u64, 'c', 30);
        assert_eq!(t.expire(45, 20), vec![(1, 'a'), (2, 'b')]);
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(&3), Some(&'c'));
    }

    #[test]
    fn bounded_evicts_oldest() {
        let mut t = AgeingTable::new(3);
        for k in 0..3u64 {
            assert!(t.insert(k, k * 10, k).evicted.is_none());
        }
        t.remove(&0);
        assert!(t.insert(3, 30, 3).evicted.is_none(), "room was made by the remove");
        let d = t.insert(4, 40, 4);
        assert_eq!(d.evicted, Some((1, 10)));
        assert_eq!(t.len(), 3);
        for k in 5..1000u64 {
            t.insert(k, k, k);
            t.remove(&k);
        }
        assert!(t.order.len() <= 2 * t.len() + 65, "order log stays bounded");
    }
}
