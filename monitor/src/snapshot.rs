//! What scrapes and the API read: an immutable picture of the agent, built by the poller at
//! the end of each poll and published by swapping one `Arc`.
//!
//! The rule: the state has one owner, the poller's thread, and no lock. Everything else sees
//! it only through the latest [`Snapshot`], so a render, however large, never holds up the
//! poller, the sniffer or another scrape, and a poll never waits for a render. The only lock
//! here guards the pointer swap itself.
//!
//! Building a snapshot must stay cheap whatever the state weighs: the ledger's destinations
//! are shared, not copied (see [`LedgerView`]), and the per-device table with its families
//! rendered once (names, groups, policy) is rebuilt only when a device, a name or the policy
//! changed, or a learning period ended. A scrape with 16,000 leases then costs what one with 16
//! does, plus the bytes.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::SystemTime,
};

use monitor_common::KernelStats;

use crate::{
    kernel::hooks::Attachment,
    ledger::{Ledger, LedgerView},
    naming::{BypassProtocol, Naming, SniffStats, devices::NameSource},
    policy::{DeviceStatus, FAILURE, Policy, SUCCESS},
    types::{Count, Direction, Label, MacAddr},
};

/// Sizes of one kernel map.
#[derive(Clone, Copy, Debug, Default)]
pub struct MapUsage {
    pub entries: u64,
    pub capacity: u64,
}

/// Everything one scrape or API request shows.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// When the kernel maps were last read successfully.
    pub polled_at: Option<SystemTime>,
    pub traffic: LedgerView,
    pub devices: Arc<DeviceTable>,
    pub agent: AgentStats,
}

/// The agent's own numbers: kernel statistics, maps, hooks, naming and policy health.
#[derive(Clone, Debug, Default)]
pub struct AgentStats {
    /// Per direction (`DIRECTION_EGRESS`, `DIRECTION_INGRESS`), summed over CPUs.
    pub kernel: [KernelStats; 2],
    pub flows: MapUsage,
    pub devices: MapUsage,
    /// Local prefixes written to the kernel: (IPv4, IPv6).
    pub local_prefixes: (usize, usize),
    pub attachments: Vec<Attachment>,
    /// How the kernel side began: `kernel::pins::Start` as a label value.
    pub kernel_start: &'static str,
    /// Per hook device: whether hardware offload may hide its packets.
    pub hardware_offload: Vec<(String, bool)>,
    pub sniff: SniffStats,
    /// Address-to-name bindings held.
    pub names_held: usize,
    pub lease_files: Vec<LeaseFileStats>,
    /// (device, resolver label, protocol, count).
    pub bypass: Vec<(MacAddr, String, BypassProtocol, u64)>,
    /// Reloads of the configuration: [success, failure].
    pub reloads: [u64; 2],
    pub last_reload_ok: bool,
    /// State file writes: [success, failure].
    pub writes: [u64; 2],
    pub enrich: EnrichStatus,
}

/// How enrichment stands: which databases are open, what they cost, how lookups went.
#[derive(Debug, Clone, Default)]
pub struct EnrichStatus {
    /// `[enrich]` names a database.
    pub enabled: bool,
    pub country_open: bool,
    pub asn_open: bool,
    /// Bytes the open databases hold in memory.
    pub memory_bytes: u64,
    /// Database files that failed to open or re-open.
    pub failures: u64,
    pub stats: crate::enrich::EnrichStats,
    /// Addresses in the cache now.
    pub cached: usize,
    /// The open databases (shared, immutable), for the API to place the addresses it lists.
    pub databases: crate::enrich::Databases,
}

/// One lease file's counters.
#[derive(Clone, Debug)]
pub struct LeaseFileStats {
    pub path: String,
    pub format: &'static str,
    pub reads: u64,
    pub skipped_lines: u64,
    pub read_errors: u64,
}

/// What is known of one device, for its series and the API.
#[derive(Clone, Debug)]
pub struct DeviceRow {
    pub name: Option<(String, NameSource)>,
    pub group: Option<String>,
    pub addresses: Vec<IpAddr>,
    pub status: DeviceStatus,
    pub new_destinations: u64,
    /// Countries talked to for the first time (see [`Policy::new_countries`]).
    pub new_countries: u64,
    /// Unexpected traffic, per direction (egress, ingress).
    pub unexpected: [Count; 2],
}

/// One unexpected series.
#[derive(Clone, Debug)]
pub struct UnexpectedRow {
    pub mac: MacAddr,
    pub direction: Direction,
    /// `None` is `other`.
    pub destination: Option<Label>,
    pub rule: &'static str,
    pub count: Count,
}

/// What the table was built from: a change of any part means build it again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct TableKey {
    devices: u64,
    policy: u64,
    ledger_devices: usize,
}

/// Every device known (configured, leased, seen, with traffic or a policy record), with the
/// families that describe them rendered once.
#[derive(Debug, Default)]
pub struct DeviceTable {
    rows: BTreeMap<MacAddr, DeviceRow>,
    pub unexpected: Vec<UnexpectedRow>,
    /// The text exposition of the device and policy families (see `http::metrics`), shared
    /// by every scrape of this table.
    pub families: bytes::Bytes,
    key: TableKey,
    /// The next time a learning period ends: the `learning` gauge changes then.
    next_change: Option<SystemTime>,
}

impl DeviceTable {
    /// The rows, by MAC.
    pub fn rows(&self) -> impl Iterator<Item = (&MacAddr, &DeviceRow)> {
        self.rows.iter()
    }

    pub fn row(&self, mac: MacAddr) -> Option<&DeviceRow> {
        self.rows.get(&mac)
    }

    /// The `device` label: its name, or its MAC.
    pub fn label(&self, mac: MacAddr) -> String {
        match self.rows.get(&mac).and_then(|r| r.name.as_ref()) {
            Some((name, _)) => name.clone(),
            None => mac.to_string(),
        }
    }

    /// Whether the table built now from these parts would differ from this one.
    fn is_current(&self, key: TableKey, now: SystemTime) -> bool {
        self.key == key && self.next_change.is_none_or(|t| now < t)
    }

    /// Builds the table and renders its families.
    fn build(
        naming: &Naming,
        policy: &Policy,
        ledger: &Ledger,
        key: TableKey,
        now: SystemTime,
    ) -> Self {
        let devices = &naming.devices;
        let mut macs = devices.known();
        macs.extend(ledger.devices().map(|(id, _)| id.mac));
        macs.extend(policy.records().keys());
        let mut unexpected = Vec::new();
        let mut unexpected_sums: BTreeMap<MacAddr, [Count; 2]> = BTreeMap::new();
        for s in policy.unexpected() {
            let sum = &mut unexpected_sums.entry(s.mac).or_default()[s.direction as usize];
            *sum = Count::new(sum.bytes + s.count.bytes, sum.packets + s.count.packets);
            unexpected.push(UnexpectedRow {
                mac: s.mac,
                direction: s.direction,
                destination: s.destination.cloned(),
                rule: s.rule,
                count: s.count,
            });
        }
        let mut next_change: Option<SystemTime> = None;
        let rows: BTreeMap<MacAddr, DeviceRow> = macs
            .into_iter()
            .map(|mac| {
                let group = devices.group(mac);
                let status = policy.status(mac, group);
                if let Some(until) = status.learning.and_then(|l| l.until())
                    && until > now
                {
                    next_change = Some(next_change.map_or(until, |t| t.min(until)));
                }
                let row = DeviceRow {
                    name: devices.name(mac).map(|(n, s)| (n.to_owned(), s)),
                    group: group.map(str::to_owned),
                    addresses: devices.addresses(mac).into_iter().collect(),
                    status,
                    new_destinations: policy.new_destinations(mac),
                    new_countries: policy.new_countries(mac),
                    unexpected: unexpected_sums.get(&mac).copied().unwrap_or_default(),
                };
                (mac, row)
            })
            .collect();
        let mut table = Self {
            rows,
            unexpected,
            families: bytes::Bytes::new(),
            key,
            next_change,
        };
        table.families = crate::http::metrics::device_families(&table, now).into();
        table
    }
}

/// The parts of the state a snapshot is built from; the poller owns them.
pub struct Sources<'a> {
    pub ledger: &'a Ledger,
    pub naming: &'a Naming,
    pub policy: &'a Policy,
}

/// Builds the snapshot of now; `previous` lends its device table when nothing it shows moved.
pub fn take(
    sources: &Sources<'_>,
    previous: &Snapshot,
    mut agent: AgentStats,
    polled_at: Option<SystemTime>,
    now: SystemTime,
) -> Snapshot {
    let Sources {
        ledger,
        naming,
        policy,
    } = *sources;
    let key = TableKey {
        devices: naming.devices.generation(),
        policy: policy.generation(),
        ledger_devices: ledger.device_count(),
    };
    let devices = if previous.devices.is_current(key, now) {
        Arc::clone(&previous.devices)
    } else {
        Arc::new(DeviceTable::build(naming, policy, ledger, key, now))
    };
    agent.sniff = naming.stats;
    agent.names_held = naming.destinations.len();
    agent.lease_files = naming
        .devices
        .lease_files()
        .iter()
        .map(|f| LeaseFileStats {
            path: f.source.path.to_str().unwrap_or("(not UTF-8)").to_owned(),
            format: f.source.format.as_str(),
            reads: f.reads,
            skipped_lines: f.skipped_lines,
            read_errors: f.read_errors,
        })
        .collect();
    agent.bypass = naming
        .bypass()
        .map(|(mac, resolver, protocol, n)| (mac, resolver.to_owned(), protocol, n))
        .collect();
    agent.reloads = [policy.reloads[SUCCESS], policy.reloads[FAILURE]];
    agent.last_reload_ok = policy.last_reload_ok;
    agent.writes = [policy.writes[SUCCESS], policy.writes[FAILURE]];
    Snapshot {
        polled_at,
        traffic: ledger.view(),
        devices,
        agent,
    }
}

/// The latest snapshot, shared by the poller (which publishes) and every reader.
#[derive(Clone, Default)]
pub struct Published(Arc<Mutex<Arc<Snapshot>>>);

impl Published {
    /// The latest snapshot. The lock is held for one reference count increment.
    pub fn latest(&self) -> Arc<Snapshot> {
        Arc::clone(&self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Makes `snapshot` the latest. The one it replaces is freed after the lock is released
    /// (by the last reader still holding it, if any).
    pub fn publish(&self, snapshot: Snapshot) {
        let snapshot = Arc::new(snapshot);
        let replaced = {
            let mut latest = self.0.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::replace(&mut *latest, snapshot)
        };
        drop(replaced);
    }
}
