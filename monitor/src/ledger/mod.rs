//! From raw kernel counters to monotonic totals that always add up.
//!
//! The kernel keeps exact per-device totals (`DEVICES`) and a detail map per destination
//! (`FLOWS`) whose LRU may evict an entry and later re-create it from zero. Two promises hold at
//! every poll, for every device and direction:
//!
//! * every exported counter is monotonic (an evicted and re-created entry neither makes it go
//!   backwards nor counts twice), and
//! * the destinations, `unattributed` included, sum exactly to the device total.
//!
//! The maps cannot be read atomically, so the device total of poll *t* is the one read at poll
//! *t-1*: every byte in it was added to its flow before the flows are read again at poll *t*
//! (the kernel adds to the device first, then to the flow), or was lost with an evicted entry.
//! So `previous device total - sum of flows read now` is a lower bound of the bytes lost to
//! eviction, and `unattributed` only ever rises to such a bound. The price is one poll interval
//! of delay; after two quiet polls every number is exact.
//!
//! Destinations are labels: an address, or the name the device resolved for it (see `names`).
//! Each poll's newly exported bytes of an address go to the label it has *at that poll*, so a
//! name that appears or expires never moves bytes already exported: every label only grows.
//!
//! Memory stays bounded whatever a device does (a camera scanning the internet creates a new
//! destination per packet): beyond a per-device limit, addresses the kernel has evicted and
//! whose every byte is exported are forgotten, and the longest idle labels are retired, what
//! they held moving into `unattributed`.

use std::{collections::BTreeMap, net::IpAddr, sync::Arc, time::SystemTime};

use crate::{
    enrich::Enrichment,
    types::{Count, DeviceId, Label, MacAddr},
};

mod places;

pub use places::{AsCount, Places};

/// One poll's reading of the kernel maps, per-CPU values summed. A key may be missing (an
/// evicted flow); the ledger never reads absence as zero.
#[derive(Debug, Default)]
pub struct Reading {
    pub flows: Vec<(DeviceId, IpAddr, Count)>,
    pub devices: Vec<(DeviceId, Count)>,
}

/// Polls a destination must be absent from the kernel map before it may be retired: one
/// absence could be a map walk that restarted, and retiring a live entry would count it twice
/// when it is read again.
const ABSENT_POLLS_BEFORE_RETIRING: u64 = 3;

/// Addresses remembered per label, for the API: a CDN name may stand for many.
const ADDRESSES_PER_LABEL: usize = 16;

/// One exported destination (a label) of one device and direction.
#[derive(Debug, Clone)]
pub struct Destination {
    pub count: Count,
    /// Addresses whose bytes went to this label (at most [`ADDRESSES_PER_LABEL`], the first),
    /// sorted. A boxed slice, not a set: most labels have one address, and a B-tree node for
    /// it would cost a few hundred bytes per destination.
    pub addresses: Box<[IpAddr]>,
    pub first_seen: SystemTime,
    pub last_seen: SystemTime,
    /// The last poll at which it grew: retirement takes the longest idle first.
    last_grew: u64,
}

/// The exported state of one remote address of one device.
#[derive(Debug, Default, Clone)]
struct FlowLedger {
    /// The kernel's value at the last read, to tell growth from re-creation.
    last_raw: Count,
    /// Everything ever read for this key, across evictions.
    read: Count,
    /// What is exported: between the previous export and `read`.
    exported: Count,
    /// The last poll whose reading held this key.
    last_seen: u64,
    /// The last poll at which it grew: retirement takes the longest idle first.
    last_grew: u64,
    /// Where the address is, as the databases said under a generation of theirs: looked up
    /// once per address (not per poll), again only when the databases change. Boxed: without
    /// enrichment it costs a pointer per address.
    place: Option<Box<(u64, Enrichment)>>,
}

/// The exported state of one device in one direction.
#[derive(Debug, Default, Clone)]
pub struct DeviceLedger {
    /// The kernel's device total at the previous poll: this poll's settled total.
    last_kernel_total: Count,
    total: Count,
    /// What evictions lost: the total beyond everything read.
    unattributed: Count,
    /// What forgotten addresses had read (all of it exported, into labels, before).
    retired: Count,
    /// What retired labels held: part of `unattributed()`.
    retired_labels: Count,
    flows: BTreeMap<IpAddr, FlowLedger>,
    /// Shared with the published snapshots (see [`Ledger::view`]) and copied on the first
    /// write after a publication: a device whose destinations did not grow costs a snapshot
    /// nothing, and a scrape reading them never holds up the poll.
    labels: Arc<BTreeMap<Label, Destination>>,
    /// By country and AS, shared with the snapshots as `labels` is; empty while nothing
    /// enriches.
    places: Arc<Places>,
    /// When the total first and last grew.
    first_seen: Option<SystemTime>,
    last_seen: Option<SystemTime>,
}

impl DeviceLedger {
    /// The device total, settled.
    pub fn total(&self) -> Count {
        self.total
    }

    /// Bytes and packets of the total that no exported destination holds: evicted from the
    /// kernel before they were read (or the flow map was full), or held by destinations retired
    /// to bound memory.
    pub fn unattributed(&self) -> Count {
        self.unattributed.saturating_add(self.retired_labels)
    }

    /// Exported destinations by label; those with nothing settled yet are not there.
    pub fn destinations(&self) -> impl Iterator<Item = (&Label, &Destination)> + '_ {
        self.labels.iter()
    }

    /// Number of addresses kept in memory for this device.
    pub fn tracked_destinations(&self) -> usize {
        self.flows.len()
    }

    /// Number of labels kept for this device.
    pub fn tracked_labels(&self) -> usize {
        self.labels.len()
    }

    /// When the device's total first and last grew, if it ever did.
    pub fn seen(&self) -> Option<(SystemTime, SystemTime)> {
        self.first_seen.zip(self.last_seen)
    }

    /// Gives each address's newly exported bytes to its label of the moment, and to its
    /// country and AS of the moment when something enriches (`enrich` gives Some).
    fn attribute(
        &mut self,
        steps: Vec<(IpAddr, Count, Option<Enrichment>)>,
        (now, poll): (SystemTime, u64),
        label: &mut dyn FnMut(IpAddr) -> Label,
        places: &Placing<'_>,
        bounds: &mut SeriesBounds,
        observe: &mut dyn FnMut(IpAddr, &Label, &Enrichment, Count),
    ) {
        if steps.is_empty() {
            return;
        }
        let labels = Arc::make_mut(&mut self.labels);
        let unknown = Enrichment::default();
        for (addr, step, enrichment) in steps {
            let label = label(addr);
            if let Some(found) = &enrichment {
                Arc::make_mut(&mut self.places).add(found, step, places.max_ases);
            }
            observe(addr, &label, enrichment.as_ref().unwrap_or(&unknown), step);
            // A new label beyond a bound never becomes a series, not even for a poll: its
            // bytes go straight to `unattributed`, so every bound holds at every scrape.
            if !labels.contains_key(&label) {
                if labels.len() >= bounds.per_device || bounds.room == 0 {
                    self.retired_labels = self.retired_labels.saturating_add(step);
                    continue;
                }
                bounds.room -= 1;
            }
            let dest = labels.entry(label).or_insert_with(|| Destination {
                count: Count::default(),
                addresses: Box::default(),
                first_seen: now,
                last_seen: now,
                last_grew: poll,
            });
            dest.count = dest.count.saturating_add(step);
            dest.last_seen = now;
            dest.last_grew = poll;
            if dest.addresses.len() < ADDRESSES_PER_LABEL
                && let Err(at) = dest.addresses.binary_search(&addr)
            {
                // Exactly sized: a label gains an address rarely, and it is read on every scrape.
                let mut grown = std::mem::take(&mut dest.addresses).into_vec();
                grown.insert(at, addr);
                dest.addresses = grown.into_boxed_slice();
            }
        }
    }

    /// Settles the total; returns what each address newly exports, with where the address is
    /// when something enriches.
    fn settle(
        &mut self,
        now: SystemTime,
        placing: &mut Placing<'_>,
    ) -> Vec<(IpAddr, Count, Option<Enrichment>)> {
        if self.last_kernel_total != self.total {
            self.first_seen.get_or_insert(now);
            self.last_seen = Some(now);
        }
        let settled_total = self.last_kernel_total;
        // Retired destinations were read and exported in full: they stay in both sums.
        let read = self
            .flows
            .values()
            .fold(self.retired, |sum, flow| sum.saturating_add(flow.read));
        let exported = self
            .flows
            .values()
            .fold(self.retired, |sum, flow| sum.saturating_add(flow.exported));
        let [total_bytes, total_packets] = settled_total.fields();
        let mut unattributed = self.unattributed.fields();
        let mut release = [0u64; 2];
        for (i, total) in [total_bytes, total_packets].into_iter().enumerate() {
            // A lower bound of what evictions lost: the settled total minus all flow reads.
            let lost_at_least = total.saturating_sub(read.fields()[i]);
            unattributed[i] = unattributed[i].max(lost_at_least);
            // What the destinations must show now, beyond what they showed before.
            let budget = total.saturating_sub(unattributed[i]);
            release[i] = budget.saturating_sub(exported.fields()[i]);
        }
        let mut steps = Vec::new();
        for (addr, flow) in self.flows.iter_mut() {
            let mut exported = flow.exported.fields();
            let read = flow.read.fields();
            let mut step = [0u64; 2];
            for i in 0..2 {
                step[i] = (read[i] - exported[i]).min(release[i]);
                exported[i] += step[i];
                release[i] -= step[i];
            }
            flow.exported = Count::from_fields(exported);
            if step != [0, 0] {
                let place = placing.place(*addr, &mut flow.place);
                steps.push((*addr, Count::from_fields(step), place));
            }
        }
        self.total = settled_total;
        self.unattributed = Count::from_fields(unattributed);
        steps
    }

    /// Retires destinations beyond `limit`: only those the kernel no longer holds and whose
    /// every byte is exported, the longest idle first. A retired destination that comes back is
    /// a new kernel entry counted from zero, so nothing is counted twice.
    fn retire(&mut self, limit: usize, poll: u64) {
        if self.flows.len() <= limit {
            return;
        }
        let mut candidates: Vec<(u64, IpAddr)> = self
            .flows
            .iter()
            .filter(|(_, f)| {
                f.last_seen + ABSENT_POLLS_BEFORE_RETIRING <= poll && f.exported == f.read
            })
            .map(|(addr, f)| (f.last_grew, *addr))
            .collect();
        candidates.sort_unstable();
        let excess = self.flows.len() - limit;
        for (_, addr) in candidates.into_iter().take(excess) {
            if let Some(flow) = self.flows.remove(&addr) {
                self.retired = self.retired.saturating_add(flow.exported);
            }
        }
    }

    /// Retires labels beyond `limit`, the longest idle first, never one that grew in the last
    /// few polls. What they held moves into `unattributed`; a label that comes back is a new
    /// series.
    fn retire_labels(&mut self, limit: usize, poll: u64) {
        // New labels beyond the limit are never listed (see `attribute`): at the limit, the
        // idle ones retire down to nine tenths of it, so that newer destinations get listed.
        if self.labels.len() < limit {
            return;
        }
        let limit = (limit - limit / 10).min(limit.saturating_sub(1));
        let mut candidates: Vec<(u64, Label)> = self
            .labels
            .iter()
            .filter(|(_, d)| d.last_grew + ABSENT_POLLS_BEFORE_RETIRING <= poll)
            .map(|(label, d)| (d.last_grew, label.clone()))
            .collect();
        candidates.sort_unstable();
        let excess = self.labels.len() - limit;
        if candidates.is_empty() {
            return;
        }
        let labels = Arc::make_mut(&mut self.labels);
        for (_, label) in candidates.into_iter().take(excess) {
            if let Some(dest) = labels.remove(&label) {
                self.retired_labels = self.retired_labels.saturating_add(dest.count);
            }
        }
    }
}

/// How a poll places addresses: `enrich` gives what the databases say of an address (None when
/// nothing enriches), under the databases' `generation`; at most `max_ases` ASes are named per
/// device and direction.
pub struct Placing<'a> {
    pub enrich: &'a mut dyn FnMut(IpAddr) -> Option<Enrichment>,
    pub generation: u64,
    pub max_ases: usize,
}

impl Placing<'_> {
    /// Where `addr` is: from `cached` when it was looked up under this generation, else
    /// looked up (and cached).
    fn place(
        &mut self,
        addr: IpAddr,
        cached: &mut Option<Box<(u64, Enrichment)>>,
    ) -> Option<Enrichment> {
        if let Some(c) = cached.as_deref()
            && c.0 == self.generation
        {
            return Some(c.1.clone());
        }
        let found = (self.enrich)(addr)?;
        *cached = Some(Box::new((self.generation, found.clone())));
        Some(found)
    }
}

/// The bounds on destination series at one poll: per device and direction, and what is left
/// of the bound across all devices.
pub struct SeriesBounds {
    pub per_device: usize,
    pub room: usize,
}

/// All devices' exported state; fed one [`Reading`] per poll.
#[derive(Debug)]
pub struct Ledger {
    devices: BTreeMap<DeviceId, DeviceLedger>,
    /// Destinations kept per device and direction before evicted ones are retired.
    max_destinations: usize,
    /// Destination series across all devices; beyond, new destinations are `unattributed`.
    max_series: usize,
    /// Readings applied so far.
    poll: u64,
}

impl Default for Ledger {
    fn default() -> Self {
        Self::new(usize::MAX)
    }
}

impl Ledger {
    /// A ledger that keeps at most about `max_destinations` destinations per device and
    /// direction (more while the kernel still holds them).
    pub fn new(max_destinations: usize) -> Self {
        Self {
            devices: BTreeMap::new(),
            max_destinations,
            max_series: usize::MAX,
            poll: 0,
        }
    }

    /// At most `max_series` destination series across all devices and directions.
    pub fn with_max_series(mut self, max_series: usize) -> Self {
        self.max_series = max_series;
        self
    }

    /// Destination series listed now, across all devices.
    pub fn series(&self) -> usize {
        self.devices.values().map(|d| d.labels.len()).sum()
    }

    /// Takes one poll's reading and settles every device; `label` names an address of a
    /// device at this moment.
    pub fn apply(
        &mut self,
        reading: &Reading,
        now: SystemTime,
        label: &mut dyn FnMut(MacAddr, IpAddr) -> Label,
    ) {
        let mut nothing = |_| None;
        let mut placing = Placing {
            enrich: &mut nothing,
            generation: 0,
            max_ases: 0,
        };
        self.apply_observed(reading, now, label, &mut placing, &mut |_, _, _, _, _| {});
    }

    /// [`Ledger::apply`], placing addresses in countries and ASes by `placing`, and `observe`
    /// sees every address's newly exported bytes with the label they went to and what the
    /// databases say of the address (the policy judges them there).
    pub fn apply_observed(
        &mut self,
        reading: &Reading,
        now: SystemTime,
        label: &mut dyn FnMut(MacAddr, IpAddr) -> Label,
        placing: &mut Placing<'_>,
        observe: &mut dyn FnMut(DeviceId, IpAddr, &Label, &Enrichment, Count),
    ) {
        self.poll += 1;
        let poll = self.poll;
        for (device, addr, raw) in &reading.flows {
            let flow = self.flow_mut(*device, *addr);
            let recreated = raw.bytes < flow.last_raw.bytes || raw.packets < flow.last_raw.packets;
            // A re-created entry started from zero: all of it is new. Growth is the difference.
            // A re-created entry that already outgrew the old value passes for growth: that
            // undercounts (the rest shows as unattributed), it never counts twice.
            let delta = if recreated {
                *raw
            } else {
                Count::new(
                    raw.bytes - flow.last_raw.bytes,
                    raw.packets - flow.last_raw.packets,
                )
            };
            flow.read = flow.read.saturating_add(delta);
            flow.last_raw = *raw;
            flow.last_seen = poll;
            if delta != Count::default() {
                flow.last_grew = poll;
            }
        }
        let mut bounds = SeriesBounds {
            per_device: self.max_destinations,
            room: self.max_series.saturating_sub(self.series()),
        };
        for (id, ledger) in self.devices.iter_mut() {
            let steps = ledger.settle(now, placing);
            ledger.attribute(
                steps,
                (now, poll),
                &mut |addr| label(id.mac, addr),
                placing,
                &mut bounds,
                &mut |addr, label, place, step| observe(*id, addr, label, place, step),
            );
            ledger.retire(self.max_destinations, poll);
            ledger.retire_labels(self.max_destinations, poll);
        }
        // The new device totals are settled at the next poll, after the flows are read again.
        for (device, total) in &reading.devices {
            let ledger = self.devices.entry(*device).or_default();
            // Device entries are never deleted, so a smaller value can only be a torn read;
            // keeping the larger one keeps the total monotonic.
            ledger.last_kernel_total = Count::new(
                ledger.last_kernel_total.bytes.max(total.bytes),
                ledger.last_kernel_total.packets.max(total.packets),
            );
        }
    }

    /// Adds totals carried over from kernel maps that were replaced (a restart with other map
    /// sizes) to their addresses, before the first poll: the next poll exports them with what
    /// the new maps counted, so no counter goes back. The device totals carry theirs in the
    /// kernel reading.
    pub fn carry(&mut self, flows: &[(DeviceId, IpAddr, Count)]) {
        for (device, addr, count) in flows {
            let flow = self.flow_mut(*device, *addr);
            flow.read = flow.read.saturating_add(*count);
        }
    }

    /// The state of one address of one device, made empty when new.
    fn flow_mut(&mut self, device: DeviceId, addr: IpAddr) -> &mut FlowLedger {
        self.devices
            .entry(device)
            .or_default()
            .flows
            .entry(addr)
            .or_default()
    }

    /// Every device seen, in MAC then direction order.
    pub fn devices(&self) -> impl Iterator<Item = (&DeviceId, &DeviceLedger)> {
        self.devices.iter()
    }

    /// Devices and directions held.
    pub fn device_count(&self) -> usize {
        self.devices.len()
    }

    /// The ledger of one device and direction.
    pub fn device(&self, id: &DeviceId) -> Option<&DeviceLedger> {
        self.devices.get(id)
    }

    /// What is exported now, for a snapshot: the totals copied, the destinations shared.
    /// Costs a few words per device, whatever the number of destinations.
    pub fn view(&self) -> LedgerView {
        LedgerView {
            devices: self
                .devices
                .iter()
                .map(|(id, d)| {
                    let view = DeviceView {
                        total: d.total,
                        unattributed: d.unattributed(),
                        seen: d.seen(),
                        labels: Arc::clone(&d.labels),
                        places: Arc::clone(&d.places),
                        lost: d.unattributed,
                    };
                    (*id, view)
                })
                .collect(),
        }
    }
}

/// The exported numbers of every device at one poll, immutable: what scrapes and the API read.
#[derive(Clone, Debug, Default)]
pub struct LedgerView {
    devices: BTreeMap<DeviceId, DeviceView>,
}

impl LedgerView {
    /// Every device seen, in MAC then direction order.
    pub fn devices(&self) -> impl Iterator<Item = (&DeviceId, &DeviceView)> {
        self.devices.iter()
    }

    /// One device and direction.
    pub fn device(&self, id: &DeviceId) -> Option<&DeviceView> {
        self.devices.get(id)
    }
}

/// The exported numbers of one device and direction at one poll.
#[derive(Clone, Debug)]
pub struct DeviceView {
    total: Count,
    unattributed: Count,
    seen: Option<(SystemTime, SystemTime)>,
    labels: Arc<BTreeMap<Label, Destination>>,
    places: Arc<Places>,
    /// What evictions lost before it was read: bytes without an address, so without a place.
    lost: Count,
}

impl DeviceView {
    /// The device total, settled.
    pub fn total(&self) -> Count {
        self.total
    }

    /// See [`DeviceLedger::unattributed`].
    pub fn unattributed(&self) -> Count {
        self.unattributed
    }

    /// Exported destinations by label.
    pub fn destinations(&self) -> impl Iterator<Item = (&Label, &Destination)> + '_ {
        self.labels.iter()
    }

    /// Number of exported destinations.
    pub fn tracked_labels(&self) -> usize {
        self.labels.len()
    }

    /// When the device's total first and last grew, if it ever did.
    pub fn seen(&self) -> Option<(SystemTime, SystemTime)> {
        self.seen
    }

    /// By country and AS: with [`DeviceView::lost`] in `unknown`, each sums to the total.
    pub fn places(&self) -> &Places {
        &self.places
    }

    /// Bytes the kernel lost before they were read: in no destination's address, so in no
    /// country or AS but `unknown`.
    pub fn lost(&self) -> Count {
        self.lost
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::types::Direction;

    const MAC: MacAddr = MacAddr([0, 0x16, 0x3e, 0, 0, 1]);
    const DEV: DeviceId = DeviceId {
        mac: MAC,
        direction: Direction::Egress,
    };

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    fn reading(flows: &[(u8, u64, u64)], device: (u64, u64)) -> Reading {
        Reading {
            flows: flows
                .iter()
                .map(|&(last, b, p)| (DEV, ip(last), Count::new(b, p)))
                .collect(),
            devices: vec![(DEV, Count::new(device.0, device.1))],
        }
    }

    /// Labels every address by itself, as with `destination_label = "address"`.
    fn apply(ledger: &mut Ledger, reading: &Reading) {
        ledger.apply(reading, SystemTime::now(), &mut |_, addr| Label::Addr(addr));
    }

    /// The sum of the destinations and `unattributed` equals the total.
    fn assert_adds_up(ledger: &Ledger) {
        let dev = ledger.device(&DEV).expect("device");
        let sum = dev
            .destinations()
            .fold(dev.unattributed(), |s, (_, d)| s.saturating_add(d.count));
        assert_eq!(sum, dev.total(), "destinations + unattributed != total");
    }

    fn exported(ledger: &Ledger, last: u8) -> Count {
        ledger
            .device(&DEV)
            .and_then(|d| {
                d.destinations()
                    .find(|(a, _)| **a == Label::Addr(ip(last)))
                    .map(|(_, d)| d.count)
            })
            .unwrap_or_default()
    }

    #[test]
    fn quiet_traffic_is_exact_after_two_polls() {
        let mut ledger = Ledger::default();
        apply(
            &mut ledger,
            &reading(&[(1, 1000, 10), (2, 500, 5)], (1500, 15)),
        );
        // First poll: the device total is not settled yet.
        assert_eq!(ledger.device(&DEV).unwrap().total(), Count::default());
        assert_adds_up(&ledger);
        apply(
            &mut ledger,
            &reading(&[(1, 1000, 10), (2, 500, 5)], (1500, 15)),
        );
        assert_eq!(ledger.device(&DEV).unwrap().total(), Count::new(1500, 15));
        assert_eq!(exported(&ledger, 1), Count::new(1000, 10));
        assert_eq!(exported(&ledger, 2), Count::new(500, 5));
        assert_eq!(
            ledger.device(&DEV).unwrap().unattributed(),
            Count::default()
        );
        assert_adds_up(&ledger);
    }

    #[test]
    fn carried_totals_continue_in_the_new_maps_counts() {
        let mut ledger = Ledger::default();
        // Replaced maps held 1000 bytes to .1 and 300 to .9, which the new maps never saw.
        ledger.carry(&[
            (DEV, ip(1), Count::new(1000, 10)),
            (DEV, ip(9), Count::new(300, 3)),
        ]);
        // The new maps: 200 more to .1; the device total carries the old 1300.
        let now = reading(&[(1, 200, 2)], (1500, 15));
        apply(&mut ledger, &now);
        apply(&mut ledger, &now);
        assert_eq!(exported(&ledger, 1), Count::new(1200, 12));
        assert_eq!(exported(&ledger, 9), Count::new(300, 3));
        assert_eq!(ledger.device(&DEV).unwrap().total(), Count::new(1500, 15));
        assert_adds_up(&ledger);
    }

    #[test]
    fn eviction_shows_as_unattributed_and_never_goes_backwards() {
        let mut ledger = Ledger::default();
        apply(&mut ledger, &reading(&[(1, 1000, 10)], (1000, 10)));
        apply(&mut ledger, &reading(&[(1, 1000, 10)], (1000, 10)));
        assert_eq!(exported(&ledger, 1), Count::new(1000, 10));
        // Flow 1 grows by 300 bytes, is evicted before the agent reads it; flow 2 appears.
        apply(&mut ledger, &reading(&[(2, 200, 2)], (1500, 14)));
        apply(&mut ledger, &reading(&[(2, 200, 2)], (1500, 14)));
        let dev = ledger.device(&DEV).unwrap();
        assert_eq!(dev.total(), Count::new(1500, 14));
        assert_eq!(exported(&ledger, 1), Count::new(1000, 10));
        assert_eq!(exported(&ledger, 2), Count::new(200, 2));
        assert_eq!(dev.unattributed(), Count::new(300, 2));
        assert_adds_up(&ledger);
        // Flow 1 is re-created from zero with 50 bytes: its counter continues from 1000.
        apply(
            &mut ledger,
            &reading(&[(1, 50, 1), (2, 200, 2)], (1550, 15)),
        );
        apply(
            &mut ledger,
            &reading(&[(1, 50, 1), (2, 200, 2)], (1550, 15)),
        );
        assert_eq!(exported(&ledger, 1), Count::new(1050, 11));
        assert_eq!(
            ledger.device(&DEV).unwrap().unattributed(),
            Count::new(300, 2)
        );
        assert_adds_up(&ledger);
    }

    #[test]
    fn bytes_between_the_two_reads_are_not_misattributed() {
        // Poll 1 reads flow 1 at 100, then the device at 150: 50 bytes arrived in between.
        let mut ledger = Ledger::default();
        apply(&mut ledger, &reading(&[(1, 100, 1)], (150, 2)));
        // Poll 2 sees them in the flow. Nothing may be "unattributed" and then taken back.
        apply(&mut ledger, &reading(&[(1, 150, 2)], (150, 2)));
        let dev = ledger.device(&DEV).unwrap();
        assert_eq!(dev.unattributed(), Count::default());
        assert_eq!(exported(&ledger, 1), Count::new(150, 2));
        assert_adds_up(&ledger);
    }

    #[test]
    fn destinations_beyond_the_limit_are_never_listed_and_idle_ones_make_room() {
        let mut ledger = Ledger::new(2);
        // Five destinations at once: only two become series, at no poll more; the rest go
        // straight to unattributed.
        let all: Vec<(u8, u64, u64)> = (1..=5).map(|i| (i, 100 * i as u64, i as u64)).collect();
        apply(&mut ledger, &reading(&all, (1500, 15)));
        apply(&mut ledger, &reading(&all, (1500, 15)));
        let dev = ledger.device(&DEV).unwrap();
        assert_eq!(dev.tracked_labels(), 2, "bounded at every poll");
        assert_eq!(exported(&ledger, 1), Count::new(100, 1));
        assert_eq!(exported(&ledger, 2), Count::new(200, 2));
        assert_eq!(exported(&ledger, 5), Count::default());
        assert_eq!(dev.unattributed(), Count::new(1200, 12));
        assert_adds_up(&ledger);
        // Destination 5 keeps growing, the listed ones go idle: they retire (down to nine
        // tenths of the limit, so one here), and 5's new bytes get a series.
        for step in 0..=ABSENT_POLLS_BEFORE_RETIRING + 1 {
            let grown = 500 + 10 * (step + 1);
            apply(
                &mut ledger,
                &reading(
                    &[(5, grown, 5 + step + 1)],
                    (1000 + grown, 10 + 5 + step + 1),
                ),
            );
            assert!(ledger.device(&DEV).unwrap().tracked_labels() <= 2);
            assert_adds_up(&ledger);
        }
        let dev = ledger.device(&DEV).unwrap();
        assert!(
            exported(&ledger, 5).bytes > 0,
            "a newer destination is listed"
        );
        assert!(dev.tracked_labels() <= 2);
        assert_eq!(
            dev.total(),
            Count::new(
                1000 + 500 + 10 * (ABSENT_POLLS_BEFORE_RETIRING + 1),
                10 + 5 + ABSENT_POLLS_BEFORE_RETIRING + 1
            )
        );
        assert_adds_up(&ledger);
    }

    #[test]
    fn the_bound_across_devices_holds_at_every_poll() {
        let mut ledger = Ledger::new(100).with_max_series(3);
        for poll in 0..3u64 {
            let mut r = reading(
                &[(1, 10 + poll, 1 + poll), (2, 10, 1), (3, 10, 1)],
                (30 + poll, 3 + poll),
            );
            let other = DeviceId {
                mac: MacAddr([2, 0, 0, 0, 0, 2]),
                direction: crate::types::Direction::Egress,
            };
            r.flows.push((other, ip(9), Count::new(50, 5)));
            r.flows.push((other, ip(8), Count::new(50, 5)));
            r.devices.push((other, Count::new(100, 10)));
            apply(&mut ledger, &r);
            assert!(ledger.series() <= 3, "{} series", ledger.series());
            assert_adds_up(&ledger);
        }
        let other = ledger
            .device(&DeviceId {
                mac: MacAddr([2, 0, 0, 0, 0, 2]),
                direction: crate::types::Direction::Egress,
            })
            .unwrap();
        assert_eq!(
            other.total(),
            other
                .destinations()
                .fold(other.unattributed(), |sum, (_, d)| sum
                    .saturating_add(d.count))
        );
    }

    #[test]
    fn a_missing_entry_that_returns_unchanged_is_not_counted_twice() {
        let mut ledger = Ledger::default();
        apply(&mut ledger, &reading(&[(1, 100, 1)], (100, 1)));
        apply(&mut ledger, &reading(&[], (100, 1)));
        apply(&mut ledger, &reading(&[(1, 100, 1)], (100, 1)));
        apply(&mut ledger, &reading(&[(1, 100, 1)], (100, 1)));
        assert_eq!(exported(&ledger, 1), Count::new(100, 1));
        assert_adds_up(&ledger);
    }

    /// A random walk of traffic, evictions and reads interleaved with traffic: every exported
    /// counter is monotonic, the sums always add up, and after quiet polls everything that was
    /// not evicted is attributed exactly.
    #[test]
    fn random_walk_keeps_every_promise() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for run in 0..200 {
            // Half the runs with a tight destination limit, so retirement is exercised too.
            let retiring = run % 2 == 0;
            let mut ledger = Ledger::new(if retiring { 2 } else { usize::MAX });
            let mut kernel_flows: BTreeMap<u8, Count> = BTreeMap::new();
            let mut kernel_total = Count::default();
            let mut true_per_dest: BTreeMap<u8, Count> = BTreeMap::new();
            let mut previous: BTreeMap<IpAddr, Count> = BTreeMap::new();
            let mut previous_unattributed = Count::default();
            for step in 0..60 {
                let quiet = step >= 55;
                // Traffic, then maybe an eviction, while the "agent" reads flows...
                let mut flows_read: Vec<(u8, Count)> = Vec::new();
                for phase in 0..2 {
                    if !quiet {
                        for _ in 0..rand(4) {
                            let dest = rand(5) as u8 + 1;
                            let c = Count::new(rand(1500) + 40, 1);
                            kernel_total = kernel_total.saturating_add(c);
                            let e = kernel_flows.entry(dest).or_default();
                            *e = e.saturating_add(c);
                            let t = true_per_dest.entry(dest).or_default();
                            *t = t.saturating_add(c);
                        }
                        if rand(6) == 0 {
                            let victim = rand(5) as u8 + 1;
                            kernel_flows.remove(&victim);
                        }
                    }
                    if phase == 0 {
                        flows_read = kernel_flows.iter().map(|(k, v)| (*k, *v)).collect();
                    }
                }
                // ...and reads the device total after more traffic arrived.
                let flows: Vec<(u8, u64, u64)> = flows_read
                    .iter()
                    .map(|(k, c)| (*k, c.bytes, c.packets))
                    .collect();
                apply(
                    &mut ledger,
                    &reading(&flows, (kernel_total.bytes, kernel_total.packets)),
                );
                assert_adds_up(&ledger);
                let dev = ledger.device(&DEV).unwrap();
                assert!(dev.unattributed().bytes >= previous_unattributed.bytes);
                assert!(dev.unattributed().packets >= previous_unattributed.packets);
                previous_unattributed = dev.unattributed();
                let current: BTreeMap<IpAddr, Count> = dev
                    .destinations()
                    .map(|(label, d)| match label {
                        Label::Addr(addr) => (*addr, d.count),
                        Label::Name(_) => unreachable!("only address labels here"),
                    })
                    .collect();
                if !retiring {
                    // Without a limit, a listed destination stays listed.
                    assert!(previous.keys().all(|a| current.contains_key(a)));
                }
                // A retired destination's series ends; one that comes back is a new series.
                for (addr, count) in &current {
                    if let Some(before) = previous.get(addr) {
                        assert!(count.bytes >= before.bytes && count.packets >= before.packets);
                    }
                    let last = match addr {
                        IpAddr::V4(v4) => v4.octets()[3],
                        IpAddr::V6(_) => unreachable!(),
                    };
                    let truth = true_per_dest[&last];
                    assert!(count.bytes <= truth.bytes, "a destination overcounts");
                }
                previous = current;
            }
            let dev = ledger.device(&DEV).unwrap();
            assert_eq!(dev.total(), kernel_total, "quiet polls settle the total");
        }
    }

    #[test]
    fn a_view_keeps_what_it_saw_and_shares_what_did_not_change() {
        let mut ledger = Ledger::default();
        let first = reading(&[(1, 100, 1)], (100, 1));
        apply(&mut ledger, &first);
        apply(&mut ledger, &first);
        let view = ledger.view();
        let seen = |v: &LedgerView| {
            let d = v.device(&DEV).expect("device");
            (
                d.total(),
                d.destinations().map(|(_, d)| d.count).collect::<Vec<_>>(),
            )
        };
        let before = seen(&view);
        assert_eq!(before, (Count::new(100, 1), vec![Count::new(100, 1)]));
        // A quiet poll copies nothing: the new view shares the destinations.
        apply(&mut ledger, &first);
        let quiet = ledger.view();
        let shared = |a: &LedgerView, b: &LedgerView| {
            Arc::ptr_eq(
                &a.device(&DEV).unwrap().labels,
                &b.device(&DEV).unwrap().labels,
            )
        };
        assert!(shared(&view, &quiet));
        // Growth copies the destinations once; the old view still shows what it saw.
        let grown = reading(&[(1, 300, 3), (2, 50, 1)], (350, 4));
        apply(&mut ledger, &grown);
        apply(&mut ledger, &grown);
        let after = ledger.view();
        assert!(!shared(&view, &after));
        assert_eq!(seen(&view), before);
        assert_eq!(
            seen(&after),
            (
                Count::new(350, 4),
                vec![Count::new(300, 3), Count::new(50, 1)]
            )
        );
    }
}
