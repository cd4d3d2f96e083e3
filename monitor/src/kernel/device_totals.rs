//! Exact per-device totals, kept by the kernel in two places: a per-CPU hash (`DEVICES`) for a
//! device the agent has not yet given a slot, and a per-CPU array (`DEVICE_TOTALS`) indexed by
//! the slot the agent writes into `DEVICE_SLOTS`. The array is what makes a known flow cost a
//! single hash lookup per packet (the flow entry caches its device's slot); the agent is the
//! only allocator, so the kernel needs no atomics. A device's total is what the agent carried
//! (below) plus both parts.
//!
//! # Floods cannot fill the maps for good
//! A burst of spoofed MACs (or, over months, phones with random MACs) would fill both maps, and
//! a device that joins afterwards would not be counted at all. So the agent frees what it can,
//! keeping every total exact in `carried` (pinned beside the maps, so a restart keeps it too):
//! * **Draining.** Once a device has a slot, the programs no longer touch its hash entry (they
//!   find the slot first), so moments later (programs that missed the new mapping are done)
//!   the agent adds the entry to `carried` and deletes it: the hash only ever holds devices
//!   waiting for a slot, and a poll frees it of those it can give a slot to.
//! * **Recycling.** When more devices wait than there are free slots, the longest idle devices
//!   give theirs back: the agent deletes their slot mapping (new packets go to the hash again),
//!   then every flow entry of theirs (which may cache the slot), waits for programs still
//!   running to finish, reads the slot one last time into `carried`, zeroes it and gives it to
//!   a waiting device. A recycled device that comes back is counted in the hash, on top of what
//!   was carried: its counters carry on.
//!
//! The order of each step keeps the totals exact while the agent runs. A crash in the middle of
//! one (milliseconds, and only while recycling) can lose what that device counted since the
//! last poll, never count it twice.

use std::collections::{BTreeMap, BTreeSet};

use aya::maps::{HashMap, MapData, MapError, PerCpuArray, PerCpuHashMap, PerCpuValues};
use monitor_common::{Counters, DeviceKey};

use crate::{kernel::counters::Flows, types::Count};

/// How long recycling waits, once a device's slot mapping and flows are gone, for programs that
/// looked them up before to finish (one program run lasts microseconds).
const RECYCLE_GRACE: std::time::Duration = std::time::Duration::from_millis(5);

/// The three device maps and the slot allocator.
pub struct DeviceTotals {
    hash: PerCpuHashMap<MapData, DeviceKey, Counters>,
    slots: HashMap<MapData, DeviceKey, u32>,
    totals: PerCpuArray<MapData, Counters>,
    /// What drained hash entries, recycled slots and replaced maps held, by device.
    carried: BTreeMap<DeviceKey, Count>,
    /// Where `carried` is pinned (the agent is its only writer); None without pins.
    carried_pin: Option<HashMap<MapData, DeviceKey, Counters>>,
    carried_pin_full: bool,
    /// Devices with a slot: the slot, and the poll it was given at.
    given: BTreeMap<DeviceKey, (u32, u64)>,
    /// Slots given back, to give again.
    free: Vec<u32>,
    /// Slots below this were given at least once.
    next: u32,
    capacity: u32,
    /// Per device: its total at the last poll and the poll it last changed at.
    activity: BTreeMap<DeviceKey, (Count, u64)>,
    poll: u64,
}

/// One reading of every device's total.
#[derive(Debug, Default)]
pub struct DeviceReading {
    pub totals: Vec<(DeviceKey, Count)>,
    /// Devices counted in the hash without a slot yet.
    pub without_slot: Vec<DeviceKey>,
    /// Devices with a slot that still have a hash entry, and what it holds.
    pub hash_parts: Vec<(DeviceKey, Count)>,
}

/// What one [`DeviceTotals::maintain`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Maintenance {
    pub drained: usize,
    pub recycled: usize,
    pub assigned: usize,
}

impl DeviceTotals {
    pub fn new(
        hash: PerCpuHashMap<MapData, DeviceKey, Counters>,
        slots: HashMap<MapData, DeviceKey, u32>,
        totals: PerCpuArray<MapData, Counters>,
        capacity: u32,
    ) -> Self {
        // Adopted maps (see `pins`) come with the slots an earlier agent gave; a slot below the
        // highest that no device maps to was being recycled, and is free (zeroed when given).
        let given: BTreeMap<DeviceKey, (u32, u64)> = slots
            .iter()
            .filter_map(Result::ok)
            .map(|(key, slot)| (key, (slot, 0)))
            .collect();
        let next = given.values().map(|(slot, _)| slot + 1).max().unwrap_or(0);
        let used: BTreeSet<u32> = given.values().map(|(slot, _)| *slot).collect();
        let free = (0..next).filter(|s| !used.contains(s)).collect();
        Self {
            hash,
            slots,
            totals,
            carried: BTreeMap::new(),
            carried_pin: None,
            carried_pin_full: false,
            given,
            free,
            next,
            capacity,
            activity: BTreeMap::new(),
            poll: 0,
        }
    }

    /// Adds totals carried over (from replaced maps, drained entries, recycled slots) to every
    /// reading, and keeps them in `pin` as they grow.
    pub fn with_carried(
        mut self,
        carried: BTreeMap<DeviceKey, Count>,
        pin: Option<HashMap<MapData, DeviceKey, Counters>>,
    ) -> Self {
        self.carried = carried;
        self.carried_pin = pin;
        self
    }

    /// The hash part, for benchmarks and tests that write totals as the kernel would.
    pub fn hash_mut(&mut self) -> &mut PerCpuHashMap<MapData, DeviceKey, Counters> {
        &mut self.hash
    }

    /// Reads every device's total: what was carried, its hash part and its slot part.
    pub fn read(&self) -> Result<DeviceReading, MapError> {
        let mut totals: BTreeMap<DeviceKey, Count> = self.carried.clone();
        let mut slotted = BTreeSet::new();
        for entry in self.slots.iter() {
            let (key, slot) = entry?;
            let values = self.totals.get(&slot, 0)?;
            let total = totals.entry(key).or_default();
            *total = total.saturating_add(sum(values.iter()));
            slotted.insert(key);
        }
        let mut without_slot = Vec::new();
        let mut hash_parts = Vec::new();
        for entry in self.hash.iter() {
            let (key, values) = entry?;
            let part = sum(values.iter());
            let total = totals.entry(key).or_default();
            *total = total.saturating_add(part);
            if slotted.contains(&key) {
                hash_parts.push((key, part));
            } else {
                without_slot.push(key);
            }
        }
        Ok(DeviceReading {
            totals: totals.into_iter().collect(),
            without_slot,
            hash_parts,
        })
    }

    /// After a reading: drains the hash entries of devices with a slot, recycles the slots of
    /// the longest idle devices when more devices wait than slots are free, and gives waiting
    /// devices a slot. `flows` is the flow map, whose entries of a recycled device go.
    pub fn maintain(
        &mut self,
        reading: &DeviceReading,
        flows: &mut Flows,
    ) -> Result<Maintenance, MapError> {
        self.poll += 1;
        let poll = self.poll;
        for (key, total) in &reading.totals {
            let seen = self.activity.entry(*key).or_insert((*total, poll));
            if seen.0 != *total {
                *seen = (*total, poll);
            }
        }
        let mut done = Maintenance::default();
        let mut changed = BTreeSet::new();
        let waiting: Vec<DeviceKey> = reading
            .without_slot
            .iter()
            .filter(|k| !self.given.contains_key(k))
            .copied()
            .collect();
        let room = self.free.len() + (self.capacity - self.next) as usize;
        if waiting.len() > room {
            let headroom = (self.capacity as usize / 16).max(1);
            let victims = longest_idle(
                &self.given,
                &self.activity,
                poll,
                waiting.len() - room + headroom,
            );
            done.recycled = self.recycle(&victims, flows, &mut changed)?;
        }
        let mut drain: Vec<DeviceKey> = reading
            .hash_parts
            .iter()
            .map(|(key, _)| *key)
            .filter(|key| self.given.contains_key(key))
            .collect();
        for key in waiting {
            let Some(slot) = self.free_slot()? else {
                break;
            };
            self.slots.insert(key, slot, 0)?;
            self.given.insert(key, (slot, poll));
            drain.push(key);
            done.assigned += 1;
        }
        if done.assigned > 0 {
            // Programs that missed the new mappings are done after this: the hash entries of
            // every device with a slot are still, and can go.
            std::thread::sleep(RECYCLE_GRACE);
        }
        for key in drain {
            if let Ok(values) = self.hash.get(&key, 0) {
                self.carry(key, sum(values.iter()), &mut changed);
                remove_if_present(self.hash.remove(&key))?;
                done.drained += 1;
            }
        }
        self.save_carried(&changed);
        Ok(done)
    }

    /// Gives back the slots of `victims` (see the module's documentation); how many.
    fn recycle(
        &mut self,
        victims: &[DeviceKey],
        flows: &mut Flows,
        changed: &mut BTreeSet<DeviceKey>,
    ) -> Result<usize, MapError> {
        let mut slots = Vec::with_capacity(victims.len());
        for key in victims {
            let Some((slot, _)) = self.given.remove(key) else {
                continue;
            };
            // Still mapped, so its hash entry is still: add it before new packets may need one.
            if let Ok(values) = self.hash.get(key, 0) {
                self.carry(*key, sum(values.iter()), changed);
                remove_if_present(self.hash.remove(key))?;
            }
            remove_if_present(self.slots.remove(key))?;
            slots.push((*key, slot));
        }
        // Every flow entry of theirs: one made before the mapping went may cache the slot.
        let devices: BTreeSet<([u8; 6], u8)> =
            victims.iter().map(|k| (k.mac, k.direction)).collect();
        let doomed: Vec<_> = flows
            .keys()
            .filter_map(Result::ok)
            .filter(|k| devices.contains(&(k.mac, k.direction)))
            .collect();
        for key in &doomed {
            remove_if_present(flows.remove(key))?;
        }
        std::thread::sleep(RECYCLE_GRACE);
        for (key, slot) in &slots {
            let last = sum(self.totals.get(slot, 0)?.iter());
            self.zero(*slot)?;
            self.carry(*key, last, changed);
            self.free.push(*slot);
        }
        Ok(slots.len())
    }

    /// A slot for a waiting device: a freed one (zeroed), else one never given.
    fn free_slot(&mut self) -> Result<Option<u32>, MapError> {
        if let Some(slot) = self.free.pop() {
            // A slot freed by a crashed agent may still hold counts of a device gone.
            self.zero(slot)?;
            return Ok(Some(slot));
        }
        if self.next < self.capacity {
            self.next += 1;
            return Ok(Some(self.next - 1));
        }
        Ok(None)
    }

    fn zero(&mut self, slot: u32) -> Result<(), MapError> {
        let cpus = self.totals.get(&slot, 0)?.len();
        let zeros =
            PerCpuValues::try_from(vec![Counters::default(); cpus]).map_err(|io_error| {
                MapError::SyscallError(aya::sys::SyscallError {
                    call: "zero a device slot",
                    io_error,
                })
            })?;
        self.totals.set(slot, zeros, 0)
    }

    fn carry(&mut self, key: DeviceKey, count: Count, changed: &mut BTreeSet<DeviceKey>) {
        if count == Count::default() {
            return;
        }
        let c = self.carried.entry(key).or_default();
        *c = c.saturating_add(count);
        changed.insert(key);
    }

    /// Writes what changed in `carried` to its pin, so a restart carries it too.
    fn save_carried(&mut self, changed: &BTreeSet<DeviceKey>) {
        let Some(pin) = self.carried_pin.as_mut() else {
            return;
        };
        for key in changed {
            let c = self.carried[key];
            let value = Counters {
                bytes: c.bytes,
                packets: c.packets,
            };
            if let Err(e) = pin.insert(key, value, 0)
                && !self.carried_pin_full
            {
                self.carried_pin_full = true;
                tracing::warn!(error = %e, "the pinned carried totals are full: devices drained from now on restart from zero after an agent restart");
            }
        }
    }
}

/// Up to `n` devices with a slot, the longest idle first, that did not grow at this poll.
fn longest_idle(
    given: &BTreeMap<DeviceKey, (u32, u64)>,
    activity: &BTreeMap<DeviceKey, (Count, u64)>,
    poll: u64,
    n: usize,
) -> Vec<DeviceKey> {
    let mut idle: Vec<(u64, DeviceKey)> = given
        .keys()
        .map(|k| (activity.get(k).map_or(0, |(_, at)| *at), *k))
        .filter(|(at, _)| *at < poll)
        .collect();
    idle.sort();
    idle.into_iter().take(n).map(|(_, k)| k).collect()
}

/// A deletion of an entry that may be gone already (the kernel's LRU, a concurrent walk).
fn remove_if_present(result: Result<(), MapError>) -> Result<(), MapError> {
    match result {
        Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other,
    }
}

fn sum<'a>(values: impl Iterator<Item = &'a Counters>) -> Count {
    let c = values.fold(Counters::default(), |acc, c| acc.merged(c));
    Count::new(c.bytes, c.packets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> DeviceKey {
        DeviceKey {
            mac: [2, 0, 0, 0, 0, n],
            direction: 0,
            pad: 0,
        }
    }

    #[test]
    fn the_longest_idle_go_first_and_none_that_grew_now() {
        let given: BTreeMap<_, _> = (1..=4).map(|n| (key(n), (u32::from(n), 1))).collect();
        let activity: BTreeMap<_, _> = [(1, 5), (2, 2), (3, 9), (4, 3)]
            .into_iter()
            .map(|(n, at)| (key(n), (Count::new(1, 1), at)))
            .collect();
        assert_eq!(
            longest_idle(&given, &activity, 9, 3),
            [key(2), key(4), key(1)]
        );
        assert_eq!(
            longest_idle(&given, &activity, 9, 10),
            [key(2), key(4), key(1)],
            "device 3 grew at this poll"
        );
    }
}
