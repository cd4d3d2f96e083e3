//! The country and AS families, and the agent's own enrichment metrics.
//!
//! `egress_country_{bytes,packets}_total{device,mac,direction,country}` and
//! `egress_asn_{bytes,packets}_total{device,mac,direction,asn,as_org}`: per device and
//! direction, each family sums exactly to the device total (`unknown` holds what no database
//! places, and what the kernel lost before it was read; `asn="other"` what the per-device bound
//! folded). Written only while `[enrich]` names a database: without one, every byte would be
//! `unknown`, a second copy of the device totals.

use std::fmt::Write as _;

use super::{Family, MetricType, write_families, write_family};
use crate::{
    ledger::DeviceView,
    snapshot::EnrichStatus,
    types::{Count, Direction},
};

/// The label value of what no database knows.
pub const UNKNOWN: &str = "unknown";
/// The `asn` and `as_org` of the ASes the bound folded.
pub const OTHER: &str = "other";

const COUNTRY_BYTES_HELP: &str = "IP-layer bytes between a LAN device and the addresses of one country (ISO 3166 alpha-2, from the country database); country=\"unknown\" holds what no database places. Sums to egress_device_bytes_total.";
const COUNTRY_PACKETS_HELP: &str = "IP packets between a LAN device and the addresses of one country; country=\"unknown\" holds what no database places. Sums to egress_device_packets_total.";
const ASN_BYTES_HELP: &str = "IP-layer bytes between a LAN device and the addresses of one autonomous system (asn is the bare number, as_org its organisation, from the AS database); asn=\"unknown\" holds what no database knows, asn=\"other\" the smallest ASes beyond enrich.max_as_per_device. Sums to egress_device_bytes_total.";
const ASN_PACKETS_HELP: &str = "IP packets between a LAN device and the addresses of one autonomous system; asn=\"unknown\" and asn=\"other\" as for the bytes. Sums to egress_device_packets_total.";

/// One device and direction, with its labels.
pub(super) type DeviceLine<'a> = (String, String, Direction, &'a DeviceView);

/// The four families, into `out`.
pub(super) fn write_traffic(out: &mut String, devices: &[DeviceLine<'_>]) {
    let bytes: fn(Count) -> u64 = |c| c.bytes;
    let packets: fn(Count) -> u64 = |c| c.packets;
    for (family, help, field) in [
        ("egress_country_bytes_total", COUNTRY_BYTES_HELP, bytes),
        (
            "egress_country_packets_total",
            COUNTRY_PACKETS_HELP,
            packets,
        ),
    ] {
        write_family(out, family, help, "counter", |push| {
            for (name, mac, direction, view) in devices {
                let places = view.places();
                let mut unknown = view.lost();
                let mut one = |country: &str, count: Count| {
                    let labels = [
                        ("device", name.as_str()),
                        ("mac", mac.as_str()),
                        ("direction", direction.as_str()),
                        ("country", country),
                    ];
                    push(&labels, field(count) as f64);
                };
                for (country, count) in places.countries() {
                    match country {
                        Some(c) => one(c.as_str(), count),
                        None => unknown = unknown.saturating_add(count),
                    }
                }
                if unknown != Count::default() {
                    one(UNKNOWN, unknown);
                }
            }
        });
    }
    for (family, help, field) in [
        ("egress_asn_bytes_total", ASN_BYTES_HELP, bytes),
        ("egress_asn_packets_total", ASN_PACKETS_HELP, packets),
    ] {
        write_family(out, family, help, "counter", |push| {
            let mut number = String::with_capacity(12);
            for (name, mac, direction, view) in devices {
                let places = view.places();
                let mut unknown = view.lost();
                let mut one = |asn: &str, org: &str, count: Count| {
                    let labels = [
                        ("device", name.as_str()),
                        ("mac", mac.as_str()),
                        ("direction", direction.as_str()),
                        ("asn", asn),
                        ("as_org", org),
                    ];
                    push(&labels, field(count) as f64);
                };
                for (asn, entry) in places.ases() {
                    match asn {
                        Some(asn) => {
                            number.clear();
                            let _ = write!(number, "{asn}");
                            one(&number, entry.org.as_deref().unwrap_or(""), entry.count);
                        }
                        None => unknown = unknown.saturating_add(entry.count),
                    }
                }
                if places.other_as() != Count::default() {
                    one(OTHER, OTHER, places.other_as());
                }
                if unknown != Count::default() {
                    one(UNKNOWN, UNKNOWN, unknown);
                }
            }
        });
    }
}

/// The agent's own enrichment metrics.
pub(super) fn write_status(out: &mut String, status: &EnrichStatus) {
    use MetricType::{Counter, Gauge};
    if !status.enabled {
        return;
    }
    let mut open = Family::new(
        "egress_monitor_enrich_database_open",
        "1 while the MMDB database of a role (country, asn) is open and used, 0 while it is missing or broken (its addresses are unknown).",
        Gauge,
    );
    let mut failures = Family::new(
        "egress_monitor_enrich_database_failures_total",
        "Times an MMDB database file could not be opened or re-opened (missing, not a regular file, too large, corrupt); the last good one stays in use.",
        Counter,
    );
    let mut memory = Family::new(
        "egress_monitor_enrich_database_bytes",
        "Bytes of memory the open MMDB databases hold (a file serving both roles counted once).",
        Gauge,
    );
    let mut lookups = Family::new(
        "egress_monitor_enrich_lookups_total",
        "Addresses looked up for their country and AS, by where the answer came from (cache or database).",
        Counter,
    );
    let mut errors = Family::new(
        "egress_monitor_enrich_lookup_errors_total",
        "Records of an open database that failed to decode; their addresses are unknown.",
        Counter,
    );
    let mut cached = Family::new(
        "egress_monitor_enrich_cache_entries",
        "Addresses whose country and AS are cached (bounded by enrich.cache_entries).",
        Gauge,
    );
    let flag = |on: bool| if on { 1.0 } else { 0.0 };
    open.push(&[("role", "country")], flag(status.country_open));
    open.push(&[("role", "asn")], flag(status.asn_open));
    failures.push(&[], status.failures as f64);
    memory.push(&[], status.memory_bytes as f64);
    let stats = status.stats;
    lookups.push(&[("source", "cache")], stats.cache_hits as f64);
    lookups.push(
        &[("source", "database")],
        stats.lookups.saturating_sub(stats.cache_hits) as f64,
    );
    errors.push(&[], stats.lookup_errors as f64);
    cached.push(&[], status.cached as f64);
    write_families(out, [open, failures, memory, lookups, errors, cached]);
}
