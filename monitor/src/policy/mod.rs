//! The policy: which destinations each device may talk to, learned baselines, first-seen
//! tracking, and the traffic that broke the rules. Evaluated in the agent on every poll's newly
//! exported bytes, with the names the device itself resolved; the kernel only counts.
//!
//! A verdict for bytes to a destination, in order: a `deny` rule matches -> unexpected
//! (`deny:domain`, `deny:cidr`, `deny:country`, `deny:asn`), even while learning; an `allow` rule or the device's baseline
//! matches -> fine; the device is learning -> the destination joins the baseline; the section
//! has `allow` rules -> unexpected (`not-allowed`); it learns -> unexpected (`not-in-baseline`);
//! otherwise (a deny-only section, or none) fine. Country and AS rules match what the
//! address's enrichment says; an address no database knows matches none of them.
//!
//! Besides destinations, each device's record remembers the countries it talked to:
//! `egress_new_countries_total` counts the first bytes to a country it never talked to, once
//! its learning is over; only for a device whose policy learns (without a history, each
//! device's first countries would all be new).

mod rule;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant, SystemTime},
};

use crate::persist::state_file::{self as store, DeviceRecord, RememberedName, Seen};
pub use rule::{Rule, Target};

use crate::{
    config::{PolicyConfig, PolicySection},
    types::MacAddr,
    types::{Count, DeviceId, Direction, Label},
};

/// The `rule` label values.
pub const RULE_NOT_ALLOWED: &str = "not-allowed";
pub const RULE_NOT_IN_BASELINE: &str = "not-in-baseline";
pub const RULE_DENY_DOMAIN: &str = "deny:domain";
pub const RULE_DENY_CIDR: &str = "deny:cidr";
pub const RULE_DENY_COUNTRY: &str = "deny:country";
pub const RULE_DENY_ASN: &str = "deny:asn";
/// The `destination` label of unexpected traffic beyond the per-device limit.
pub const OTHER: &str = "other";

/// Destinations remembered per device in the state file; beyond it the least recently seen
/// (outside the baseline) are forgotten, and would count as new again.
pub const MAX_SEEN_PER_DEVICE: usize = 10_000;
/// How long a device's address keeps the name it had, after its last bytes, once the name
/// itself is gone (the DNS answer expired, or the agent restarted and never saw it): a long
/// connection or a device's DNS cache outlives the answer's TTL, and must not turn into an
/// unexpected, new destination.
pub const NAME_MEMORY: Duration = Duration::from_secs(24 * 3600);
/// Addresses remembered that way per device.
pub const NAMES_PER_DEVICE: usize = 4096;
/// Countries remembered per device in the state file (ISO 3166 has about 250); beyond it the
/// least recently seen is forgotten, and would count as new again.
pub const MAX_COUNTRIES_PER_DEVICE: usize = 256;
/// Rewrite of the state file when only last-seen times moved, if the write interval is shorter.
const WRITE_LAST_SEEN: Duration = Duration::from_secs(300);

/// Unexpected traffic of one device.
#[derive(Debug, Default)]
struct DeviceUnexpected {
    /// Destinations with their own series; the others are `other`.
    named: BTreeSet<Label>,
    /// (direction, destination or None for `other`, rule) -> traffic.
    counts: BTreeMap<(Direction, Option<Label>, &'static str), Count>,
}

/// One unexpected series, for the exposition.
pub struct UnexpectedSeries<'a> {
    pub mac: MacAddr,
    pub direction: Direction,
    /// `None` is `other`.
    pub destination: Option<&'a Label>,
    pub rule: &'static str,
    pub count: Count,
}

/// How a device stands with the policy, for the exposition and the `baseline` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceStatus {
    /// The `policy` label: device, group:NAME, default or none.
    pub policy: String,
    /// Learning, when the device's policy learns.
    pub learning: Option<Learning>,
    pub baseline: usize,
}

/// A device's learning period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Learning {
    /// When it started: the device's first traffic under a policy that learns; None before.
    pub since: Option<SystemTime>,
    pub period: Duration,
}

impl Learning {
    /// When it ends (or ended), once started.
    pub fn until(&self) -> Option<SystemTime> {
        self.since.map(|since| since + self.period)
    }

    /// Learning now, or about to (not started yet).
    pub fn active(&self, now: SystemTime) -> bool {
        self.until().is_none_or(|until| now < until)
    }
}

/// The policy engine and its persisted state.
#[derive(Debug, Default)]
pub struct Policy {
    config: PolicyConfig,
    devices: BTreeMap<MacAddr, DeviceRecord>,
    unexpected: BTreeMap<MacAddr, DeviceUnexpected>,
    new_destinations: BTreeMap<MacAddr, u64>,
    new_countries: BTreeMap<MacAddr, u64>,
    /// Something other than a last-seen time changed since the last write.
    changed: bool,
    /// Last-seen times moved since the last write.
    touched: bool,
    last_write: Option<Instant>,
    /// At most one write per this long after a change (`state_write_interval`): a scanning
    /// device adds destinations every poll, and the file is on flash.
    write_interval: Duration,
    /// Bumped by every change a metric or the API shows (not by last-seen times): a snapshot
    /// renders the policy's families again only when it moved.
    generation: u64,
    /// Counts of reloads and state writes, for the agent's own metrics.
    pub reloads: [u64; 2],
    pub last_reload_ok: bool,
    pub writes: [u64; 2],
}

/// Index of success and failure in [`Policy::reloads`] and [`Policy::writes`].
pub const SUCCESS: usize = 0;
pub const FAILURE: usize = 1;

impl Policy {
    /// The engine with the state read at start.
    pub fn new(config: PolicyConfig, devices: BTreeMap<MacAddr, DeviceRecord>) -> Self {
        Self {
            config,
            devices,
            last_reload_ok: true,
            write_interval: crate::config::DEFAULT_STATE_WRITE_INTERVAL,
            ..Self::default()
        }
    }

    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// A new policy, from a reload: counts and state stay.
    pub fn set_config(&mut self, config: PolicyConfig) {
        self.config = config;
        self.generation += 1;
    }

    /// A reload of the configuration, and whether it was accepted.
    pub fn reloaded(&mut self, ok: bool) {
        self.reloads[if ok { SUCCESS } else { FAILURE }] += 1;
        self.last_reload_ok = ok;
        self.generation += 1;
    }

    /// Moves whenever what the policy shows changed (see the field).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Judges one poll's newly exported bytes of a device to a destination.
    pub fn observe(
        &mut self,
        id: DeviceId,
        group: Option<&str>,
        target: &Target<'_>,
        step: Count,
        now: SystemTime,
    ) {
        let new_device = !self.devices.contains_key(&id.mac);
        let mut changed = false;
        let counted = self.judge(id, group, target, step, now, &mut changed);
        self.changed |= changed;
        if new_device || changed || counted {
            self.generation += 1;
        }
    }

    /// [`Policy::observe`]; `changed` is set when the persisted state changed, and the result
    /// says whether a new-destination or unexpected counter moved.
    fn judge(
        &mut self,
        id: DeviceId,
        group: Option<&str>,
        target: &Target<'_>,
        step: Count,
        now: SystemTime,
        changed: &mut bool,
    ) -> bool {
        let mac = id.mac;
        let mut counted = false;
        let record = self.devices.entry(mac).or_default();
        // An address whose name is gone is judged (and remembered as seen) by the name it had.
        let remembered = recall_or_remember(record, target, now, changed);
        let target = match &remembered {
            Some(r) => Target {
                addr: target.addr,
                host: Some(&r.host),
                label: &r.label,
                enrichment: target.enrichment,
            },
            None => *target,
        };
        let applies = self.config.applies(mac, group);
        let section = applies.section();
        let learning = learning_now(record, section, now, changed);
        match record.seen.get_mut(target.label) {
            Some(seen) => {
                seen.last = now;
                self.touched = true;
            }
            None => {
                record.seen.insert(
                    target.label.clone(),
                    Seen {
                        first: now,
                        last: now,
                    },
                );
                *changed = true;
                if !learning {
                    *self.new_destinations.entry(mac).or_default() += 1;
                    counted = true;
                }
                if record.seen.len() > MAX_SEEN_PER_DEVICE {
                    forget_oldest(record);
                }
            }
        }
        // An unknown country is never new: the device may have talked to it before.
        if let Some(country) = target.enrichment.country {
            match record.countries.get_mut(&country) {
                Some(seen) => {
                    seen.last = now;
                    self.touched = true;
                }
                None => {
                    record.countries.insert(
                        country,
                        Seen {
                            first: now,
                            last: now,
                        },
                    );
                    *changed = true;
                    // Only a device that learned has a history to compare with: without
                    // `learn`, every device's first countries would all be "new".
                    if !learning && section.is_some_and(|s| s.learn.is_some()) {
                        *self.new_countries.entry(mac).or_default() += 1;
                        counted = true;
                    }
                    if record.countries.len() > MAX_COUNTRIES_PER_DEVICE {
                        forget_oldest_country(record);
                    }
                }
            }
        }
        let Some(section) = section else {
            return counted;
        };
        let rule = match verdict(section, record, &target, learning) {
            Verdict::Fine => return counted,
            Verdict::Learn => {
                if record.baseline.insert(Rule::for_label(target.label)) {
                    *changed = true;
                }
                return counted;
            }
            Verdict::Unexpected(rule) => rule,
        };
        let limit = self.config.max_unexpected_destinations as usize;
        let unexpected = self.unexpected.entry(mac).or_default();
        let destination = if unexpected.named.contains(target.label) {
            Some(target.label.clone())
        } else if unexpected.named.len() < limit {
            unexpected.named.insert(target.label.clone());
            Some(target.label.clone())
        } else {
            None
        };
        let count = unexpected
            .counts
            .entry((id.direction, destination, rule))
            .or_default();
        *count = Count::new(
            count.bytes.saturating_add(step.bytes),
            count.packets.saturating_add(step.packets),
        );
        true
    }

    /// Every unexpected series.
    pub fn unexpected(&self) -> impl Iterator<Item = UnexpectedSeries<'_>> {
        self.unexpected.iter().flat_map(|(mac, u)| {
            u.counts.iter().map(
                move |((direction, destination, rule), count)| UnexpectedSeries {
                    mac: *mac,
                    direction: *direction,
                    destination: destination.as_ref(),
                    rule,
                    count: *count,
                },
            )
        })
    }

    /// Destinations seen for the first time by a device that was not learning, since start.
    pub fn new_destinations(&self, mac: MacAddr) -> u64 {
        self.new_destinations.get(&mac).copied().unwrap_or(0)
    }

    /// Countries a device talked to for the first time while it was not learning, since
    /// start (an unknown country is never one).
    pub fn new_countries(&self, mac: MacAddr) -> u64 {
        self.new_countries.get(&mac).copied().unwrap_or(0)
    }

    /// How a device stands with the policy.
    pub fn status(&self, mac: MacAddr, group: Option<&str>) -> DeviceStatus {
        let applies = self.config.applies(mac, group);
        let record = self.devices.get(&mac);
        let learning = applies
            .section()
            .and_then(|s| s.learn)
            .map(|period| Learning {
                since: record.and_then(|r| r.learning_since),
                period,
            });
        DeviceStatus {
            policy: applies.label(),
            learning,
            baseline: record.map_or(0, |r| r.baseline.len()),
        }
    }

    /// The persisted record of a device.
    pub fn record(&self, mac: MacAddr) -> Option<&DeviceRecord> {
        self.devices.get(&mac)
    }

    /// Every device with a persisted record.
    pub fn records(&self) -> &BTreeMap<MacAddr, DeviceRecord> {
        &self.devices
    }

    /// Adds a destination to a device's baseline. False if it was there already.
    pub fn accept(&mut self, mac: MacAddr, rule: Rule) -> bool {
        let added = self.devices.entry(mac).or_default().baseline.insert(rule);
        self.changed |= added;
        self.generation += 1;
        added
    }

    /// Forgets everything learned about a device: it learns again from its next bytes, if its
    /// policy learns. Its unexpected counters stay (counters never go back).
    pub fn forget(&mut self, mac: MacAddr) -> bool {
        let had = self.devices.remove(&mac).is_some();
        self.changed |= had;
        self.generation += 1;
        had
    }

    /// At most one write per `interval` (`state_write_interval`), besides forced ones.
    pub fn set_write_interval(&mut self, interval: Duration) {
        self.write_interval = interval;
    }

    /// The state file's text when it is due for a write (at most one per write interval), with
    /// the devices' current names; `force` writes whatever changed (at shutdown, after a
    /// command).
    pub fn snapshot_if_due(
        &mut self,
        now: Instant,
        force: bool,
        name: &dyn Fn(MacAddr) -> Option<String>,
    ) -> Option<String> {
        let since = self.last_write.map(|t| now.duration_since(t));
        let due = if force {
            self.changed || self.touched
        } else {
            (self.changed && since.is_none_or(|s| s >= self.write_interval))
                || (self.touched
                    && since.is_none_or(|s| s >= self.write_interval.max(WRITE_LAST_SEEN)))
        };
        if !due {
            return None;
        }
        for (mac, record) in self.devices.iter_mut() {
            if let Some(n) = name(*mac) {
                record.name = Some(n);
            }
        }
        self.changed = false;
        self.touched = false;
        self.last_write = Some(now);
        Some(store::render(&self.devices))
    }

    /// The outcome of writing a snapshot: a failed write is retried at the next due time.
    pub fn wrote(&mut self, ok: bool) {
        self.writes[if ok { SUCCESS } else { FAILURE }] += 1;
        self.generation += 1;
        if !ok {
            self.changed = true;
        }
    }
}

enum Verdict {
    Fine,
    Learn,
    Unexpected(&'static str),
}

fn verdict(
    section: &PolicySection,
    record: &DeviceRecord,
    target: &Target<'_>,
    learning: bool,
) -> Verdict {
    if let Some(rule) = section.deny.iter().find(|r| r.matches(target)) {
        return Verdict::Unexpected(match rule {
            Rule::Domain(_) => RULE_DENY_DOMAIN,
            Rule::Net(_) => RULE_DENY_CIDR,
            Rule::Country(_) => RULE_DENY_COUNTRY,
            Rule::Asn(_) => RULE_DENY_ASN,
        });
    }
    if section
        .allow
        .iter()
        .chain(record.baseline.iter())
        .any(|r| r.matches(target))
    {
        return Verdict::Fine;
    }
    if learning {
        return Verdict::Learn;
    }
    if !section.allow.is_empty() {
        Verdict::Unexpected(RULE_NOT_ALLOWED)
    } else if section.learn.is_some() {
        Verdict::Unexpected(RULE_NOT_IN_BASELINE)
    } else {
        Verdict::Fine
    }
}

/// Whether the device learns now; starts its learning at its first sight under a policy that
/// learns.
fn learning_now(
    record: &mut DeviceRecord,
    section: Option<&PolicySection>,
    now: SystemTime,
    changed: &mut bool,
) -> bool {
    let Some(learn) = section.and_then(|s| s.learn) else {
        return false;
    };
    let since = *record.learning_since.get_or_insert_with(|| {
        *changed = true;
        now
    });
    now < since + learn
}

/// For bytes labelled by a bare address, the name the device last knew that address by (if
/// recent); for bytes with a name, remembers it for the address. The remembered names are part
/// of the state file, so they also bridge an agent restart.
fn recall_or_remember(
    record: &mut DeviceRecord,
    target: &Target<'_>,
    now: SystemTime,
    changed: &mut bool,
) -> Option<RememberedName> {
    let recent = |r: &RememberedName| now.duration_since(r.last).unwrap_or_default() < NAME_MEMORY;
    match (target.host, target.label) {
        (None, Label::Addr(_)) => {
            let r = record.names.get_mut(&target.addr).filter(|r| recent(r))?;
            r.last = now;
            Some(r.clone())
        }
        (Some(host), Label::Name(_)) => {
            if let Some(r) = record.names.get_mut(&target.addr)
                && *r.host == *host
                && r.label == *target.label
            {
                r.last = now;
                return None;
            }
            if record.names.len() >= NAMES_PER_DEVICE && !record.names.contains_key(&target.addr) {
                record.names.retain(|_, r| recent(r));
                if record.names.len() >= NAMES_PER_DEVICE {
                    return None;
                }
            }
            record.names.insert(
                target.addr,
                RememberedName {
                    host: host.into(),
                    label: target.label.clone(),
                    last: now,
                },
            );
            *changed = true;
            None
        }
        _ => None,
    }
}

/// Forgets the least recently seen tenth of a device's destinations, keeping the bound with
/// one sort per many insertions.
fn forget_oldest(record: &mut DeviceRecord) {
    let mut by_age: Vec<(SystemTime, Label)> = record
        .seen
        .iter()
        .map(|(label, seen)| (seen.last, label.clone()))
        .collect();
    by_age.sort_unstable();
    for (_, label) in by_age.into_iter().take(MAX_SEEN_PER_DEVICE / 10) {
        record.seen.remove(&label);
    }
}

/// Forgets the least recently seen country of a device (one over the bound).
fn forget_oldest_country(record: &mut DeviceRecord) {
    if let Some(oldest) = record
        .countries
        .iter()
        .min_by_key(|(_, seen)| seen.last)
        .map(|(country, _)| *country)
    {
        record.countries.remove(&oldest);
    }
}

#[cfg(test)]
mod tests;
