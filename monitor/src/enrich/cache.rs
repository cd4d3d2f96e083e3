//! A bounded cache of enrichments by address, so that a database is read once per address
//! and not once per flow and poll.
//!
//! Two generations of at most half the capacity each: new entries go into the current one;
//! when it is full, it becomes the old one and the old one is dropped. A hit in the old
//! generation moves the entry into the current one, so what is used survives and what is
//! not goes within two generations. Every step is O(1), and after the first turn the maps
//! reuse their memory: a hit costs a hash lookup and an `Arc` clone, never an allocation.

use std::collections::HashMap;
use std::mem;
use std::net::IpAddr;

use super::Enrichment;

#[derive(Debug)]
pub struct Cache {
    /// Entries per generation: half the capacity, at least one.
    generation: usize,
    current: HashMap<IpAddr, Enrichment>,
    old: HashMap<IpAddr, Enrichment>,
}

impl Cache {
    /// A cache of at most `capacity` entries (at least 2).
    pub fn new(capacity: usize) -> Cache {
        Cache {
            generation: (capacity / 2).max(1),
            current: HashMap::new(),
            old: HashMap::new(),
        }
    }

    /// The most entries held at once.
    pub fn capacity(&self) -> usize {
        self.generation * 2
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.current.len() + self.old.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&mut self, addr: &IpAddr) -> Option<Enrichment> {
        if let Some(found) = self.current.get(addr) {
            return Some(found.clone());
        }
        let (addr, found) = self.old.remove_entry(addr)?;
        self.insert(addr, found.clone());
        Some(found)
    }

    pub fn insert(&mut self, addr: IpAddr, enrichment: Enrichment) {
        if self.current.len() >= self.generation && !self.current.contains_key(&addr) {
            // The old generation's map, emptied, becomes the current one, keeping its memory.
            self.old.clear();
            mem::swap(&mut self.current, &mut self.old);
        }
        self.current.insert(addr, enrichment);
    }

    /// Forgets everything: the databases changed.
    pub fn clear(&mut self) {
        self.current.clear();
        self.old.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::super::Asn;
    use super::*;

    fn addr(i: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
    }

    fn value(i: u32) -> Enrichment {
        Enrichment {
            asn: Asn::from_number(i + 1),
            ..Enrichment::default()
        }
    }

    #[test]
    fn never_holds_more_than_its_capacity() {
        let mut cache = Cache::new(100);
        assert_eq!(cache.capacity(), 100);
        for i in 0..10_000 {
            cache.insert(addr(i), value(i));
            assert!(cache.len() <= 100, "{} after {i}", cache.len());
            // Re-reading recent entries promotes them but adds nothing.
            let _ = cache.get(&addr(i / 2));
            assert!(cache.len() <= 100, "{} after get {i}", cache.len());
        }
        // The last generation's entries are all there, with their own values.
        for i in 9_950..10_000 {
            assert_eq!(cache.get(&addr(i)), Some(value(i)));
        }
        assert_eq!(cache.get(&addr(0)), None);
        assert_eq!(Cache::new(0).capacity(), 2);
    }

    #[test]
    fn what_is_used_survives_what_is_not_goes() {
        let mut cache = Cache::new(8);
        cache.insert(addr(0), value(0));
        for i in 1..1_000 {
            cache.insert(addr(i), value(i));
            // A hot address, read between inserts, is never evicted.
            assert_eq!(cache.get(&addr(0)), Some(value(0)), "after {i}");
        }
        // A cold one is gone after two generations (8 inserts).
        let mut cold = Cache::new(8);
        cold.insert(addr(0), value(0));
        for i in 1..=8 {
            cold.insert(addr(i), value(i));
        }
        assert_eq!(cold.get(&addr(0)), None);
    }

    #[test]
    fn an_update_replaces_and_clear_forgets() {
        let mut cache = Cache::new(4);
        cache.insert(addr(1), value(1));
        cache.insert(addr(1), value(2));
        assert_eq!(cache.get(&addr(1)), Some(value(2)));
        assert_eq!(cache.len(), 1);
        cache.insert(addr(2), value(2));
        cache.insert(addr(3), value(3));
        cache.clear();
        assert!(cache.is_empty());
        assert_eq!(cache.get(&addr(1)), None);
    }
}
