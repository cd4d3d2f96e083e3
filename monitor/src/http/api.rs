//! The JSON API: `/api/devices` and `/api/devices/{mac}/destinations`, built from the same
//! snapshot the metrics show, so the two always agree.

use std::{
    collections::BTreeMap,
    time::{SystemTime, UNIX_EPOCH},
};

use serde_json::{Value, json};

use crate::{
    snapshot::Snapshot,
    types::{Count, DeviceId, Direction, MacAddr},
};

/// Why an API request failed; rendered as `{"error": "..."}` with the status.
#[derive(Debug, PartialEq, Eq)]
pub enum ApiError {
    BadMac(String),
    UnknownDevice(MacAddr),
}

impl ApiError {
    pub fn status(&self) -> u16 {
        match self {
            ApiError::BadMac(_) => 400,
            ApiError::UnknownDevice(_) => 404,
        }
    }

    pub fn body(&self) -> Value {
        let message = match self {
            ApiError::BadMac(e) => e.clone(),
            ApiError::UnknownDevice(mac) => format!("no device with MAC address {mac}"),
        };
        json!({ "error": message })
    }
}

fn count(c: Count) -> Value {
    json!({ "bytes": c.bytes, "packets": c.packets })
}

fn time(t: Option<SystemTime>) -> Value {
    match t {
        Some(t) => json!(humantime::format_rfc3339_seconds(t).to_string()),
        None => Value::Null,
    }
}

fn unix(t: Option<SystemTime>) -> Value {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(Value::Null, |d| json!(d.as_secs()))
}

/// Every device: the ones with traffic and the ones known from configuration, leases, DHCP or
/// the neighbour table.
pub fn devices(snapshot: &Snapshot) -> Value {
    let list: Vec<Value> = snapshot
        .devices
        .rows()
        .map(|(mac, _)| device(snapshot, *mac))
        .collect();
    json!({ "devices": list })
}

fn device(snapshot: &Snapshot, mac: MacAddr) -> Value {
    let row = snapshot.devices.row(mac);
    let (name, source) = row
        .and_then(|r| r.name.as_ref())
        .map_or((None, None), |(n, s)| (Some(n.as_str()), Some(s.as_str())));
    let mut first: Option<SystemTime> = None;
    let mut last: Option<SystemTime> = None;
    let mut totals = serde_json::Map::new();
    for direction in Direction::ALL {
        let ledger = snapshot.traffic.device(&DeviceId { mac, direction });
        let total = ledger.map(|d| d.total()).unwrap_or_default();
        totals.insert(direction.as_str().to_owned(), count(total));
        if let Some((f, l)) = ledger.and_then(|d| d.seen()) {
            first = Some(first.map_or(f, |x| x.min(f)));
            last = Some(last.map_or(l, |x| x.max(l)));
        }
    }
    let mut unexpected = serde_json::Map::new();
    for direction in Direction::ALL {
        let sum = row.map(|r| r.unexpected[direction as usize]);
        unexpected.insert(
            direction.as_str().to_owned(),
            count(sum.unwrap_or_default()),
        );
    }
    let now = SystemTime::now();
    let status = row.map(|r| &r.status);
    let learning = status.and_then(|s| s.learning);
    let policy = json!({
        "section": status.map(|s| s.policy.as_str()),
        "learning": learning.map(|l| l.active(now)),
        "learning_until": time(learning.and_then(|l| l.until())),
        "baseline": status.map_or(0, |s| s.baseline),
        "new_destinations": row.map_or(0, |r| r.new_destinations),
        "unexpected": unexpected,
    });
    let addresses: Vec<String> = row
        .map(|r| r.addresses.iter().map(ToString::to_string).collect())
        .unwrap_or_default();
    let mut countries = serde_json::Map::new();
    if snapshot.agent.enrich.enabled {
        for direction in Direction::ALL {
            let Some(ledger) = snapshot.traffic.device(&DeviceId { mac, direction }) else {
                continue;
            };
            let mut by_country = serde_json::Map::new();
            let mut unknown = ledger.lost();
            for (country, n) in ledger.places().countries() {
                match country {
                    Some(c) => {
                        by_country.insert(c.to_string(), count(n));
                    }
                    None => unknown = unknown.saturating_add(n),
                }
            }
            if unknown != Count::default() {
                by_country.insert("unknown".to_owned(), count(unknown));
            }
            countries.insert(direction.as_str().to_owned(), Value::Object(by_country));
        }
    }
    json!({
        "mac": mac.to_string(),
        "name": name,
        "policy": policy,
        "countries": countries,
        "name_source": source,
        "group": row.and_then(|r| r.group.as_deref()),
        "locally_administered": mac.is_locally_administered(),
        "addresses": addresses,
        "totals": totals,
        "first_seen": time(first),
        "last_seen": time(last),
        "first_seen_unix": unix(first),
        "last_seen_unix": unix(last),
    })
}

/// A device's destinations, both directions merged by label.
pub fn destinations(snapshot: &Snapshot, mac: &str) -> Result<Value, ApiError> {
    let mac: MacAddr = mac
        .parse()
        .map_err(|e: crate::types::mac::ParseMacError| ApiError::BadMac(e.to_string()))?;
    #[derive(Default)]
    struct Merged {
        addresses: std::collections::BTreeSet<std::net::IpAddr>,
        counts: BTreeMap<Direction, Count>,
        first: Option<SystemTime>,
        last: Option<SystemTime>,
    }
    let mut merged: BTreeMap<String, Merged> = BTreeMap::new();
    let mut found = false;
    let mut unattributed = serde_json::Map::new();
    for direction in Direction::ALL {
        let Some(ledger) = snapshot.traffic.device(&DeviceId { mac, direction }) else {
            continue;
        };
        found = true;
        unattributed.insert(direction.as_str().to_owned(), count(ledger.unattributed()));
        for (label, d) in ledger.destinations() {
            let m = merged.entry(label.to_string()).or_default();
            m.addresses.extend(d.addresses.iter().copied());
            m.counts.insert(direction, d.count);
            m.first = Some(m.first.map_or(d.first_seen, |x| x.min(d.first_seen)));
            m.last = Some(m.last.map_or(d.last_seen, |x| x.max(d.last_seen)));
        }
    }
    if !found && snapshot.devices.row(mac).is_none() {
        return Err(ApiError::UnknownDevice(mac));
    }
    let databases = &snapshot.agent.enrich.databases;
    let enriched = snapshot.agent.enrich.enabled;
    let place = |addr: &std::net::IpAddr| {
        let (found, _) = databases.lookup(*addr);
        json!({
            "address": addr.to_string(),
            "country": found.country.map(|c| c.to_string()),
            "asn": found.asn.map(|a| a.0),
            "as_org": found.org.as_deref(),
        })
    };
    let list: Vec<Value> = merged
        .into_iter()
        .map(|(label, m)| {
            let places: Vec<Value> = if enriched {
                m.addresses.iter().map(place).collect()
            } else {
                Vec::new()
            };
            let mut v = json!({
                "name": label,
                "addresses": m.addresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "places": places,
                "first_seen": time(m.first),
                "last_seen": time(m.last),
            });
            for direction in Direction::ALL {
                v[direction.as_str()] =
                    count(m.counts.get(&direction).copied().unwrap_or_default());
            }
            v
        })
        .collect();
    Ok(json!({
        "mac": mac.to_string(),
        "destinations": list,
        "unattributed": unattributed,
    }))
}
