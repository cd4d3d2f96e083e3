//! Exact per-device totals, kept by the kernel in two places: a per-CPU hash (`DEVICES`) for a
//! device the agent has not yet given a slot, and a per-CPU array (`DEVICE_TOTALS`) indexed by
//! the slot the agent writes into `DEVICE_SLOTS`. The array is what makes a known flow cost a
//! single hash lookup per packet (the flow entry caches its device's slot); the agent is the
//! only allocator, so the kernel needs no atomics. A device's total is the sum of both parts.

use std::collections::{BTreeMap, BTreeSet};

use aya::maps::{HashMap, MapData, MapError, PerCpuArray, PerCpuHashMap};
use monitor_common::{Counters, DeviceKey};

use crate::types::Count;

/// The three device maps and the slot allocator.
pub struct DeviceTotals {
    hash: PerCpuHashMap<MapData, DeviceKey, Counters>,
    slots: HashMap<MapData, DeviceKey, u32>,
    totals: PerCpuArray<MapData, Counters>,
    /// Totals of maps that were replaced (a restart with other sizes), added to each device's.
    carried: BTreeMap<DeviceKey, Count>,
    /// Slots given so far; slots are never taken back (device entries are never deleted).
    given: u32,
    capacity: u32,
}

/// One reading of every device's total.
#[derive(Debug, Default)]
pub struct DeviceReading {
    pub totals: Vec<(DeviceKey, Count)>,
    /// Devices counted in the hash without a slot yet.
    pub without_slot: Vec<DeviceKey>,
}

impl DeviceTotals {
    pub fn new(
        hash: PerCpuHashMap<MapData, DeviceKey, Counters>,
        slots: HashMap<MapData, DeviceKey, u32>,
        totals: PerCpuArray<MapData, Counters>,
        capacity: u32,
    ) -> Self {
        // Adopted maps (see `pins`) come with the slots an earlier agent gave.
        let given = slots
            .iter()
            .filter_map(Result::ok)
            .map(|(_, slot)| slot + 1)
            .max()
            .unwrap_or(0);
        Self {
            hash,
            slots,
            totals,
            carried: BTreeMap::new(),
            given,
            capacity,
        }
    }

    /// Adds totals carried over from replaced maps to every reading.
    pub fn with_carried(mut self, carried: BTreeMap<DeviceKey, Count>) -> Self {
        self.carried = carried;
        self
    }

    /// The hash part, for benchmarks and tests that write totals as the kernel would.
    pub fn hash_mut(&mut self) -> &mut PerCpuHashMap<MapData, DeviceKey, Counters> {
        &mut self.hash
    }

    /// Reads every device's total: what was carried over, its hash part and its slot part.
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
        for entry in self.hash.iter() {
            let (key, values) = entry?;
            let part = sum(values.iter());
            let total = totals.entry(key).or_default();
            *total = total.saturating_add(part);
            if !slotted.contains(&key) {
                without_slot.push(key);
            }
        }
        Ok(DeviceReading {
            totals: totals.into_iter().collect(),
            without_slot,
        })
    }

    /// Gives each of `keys` the next free slot; stops quietly when none is left (the device
    /// then stays on the slower hash path, still exact).
    pub fn assign(&mut self, keys: &[DeviceKey]) -> Result<usize, MapError> {
        let mut assigned = 0;
        for key in keys {
            if self.given >= self.capacity {
                break;
            }
            // The slot's array entry is zero: slots are never reused.
            self.slots.insert(key, self.given, 0)?;
            self.given += 1;
            assigned += 1;
        }
        Ok(assigned)
    }
}

fn sum<'a>(values: impl Iterator<Item = &'a Counters>) -> Count {
    let c = values.fold(Counters::default(), |acc, c| acc.merged(c));
    Count::new(c.bytes, c.packets)
}
