//! The JSON API: `/api/devices` and `/api/devices/{mac}/destinations`, built from the same
//! state the metrics show, so the two always agree.

use std::{
    collections::BTreeMap,
    time::{SystemTime, UNIX_EPOCH},
};

use serde_json::{Value, json};

use crate::{
    runtime::state::State,
    types::MacAddr,
    types::{Count, DeviceId, Direction},
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
pub fn devices(state: &State) -> Value {
    let naming = &state.naming;
    let mut macs = naming.devices.known();
    macs.extend(state.ledger.devices().map(|(id, _)| id.mac));
    let list: Vec<Value> = macs.into_iter().map(|mac| device(state, mac)).collect();
    json!({ "devices": list })
}

fn device(state: &State, mac: MacAddr) -> Value {
    let naming = &state.naming;
    let (name, source) = naming
        .devices
        .name(mac)
        .map_or((None, None), |(n, s)| (Some(n), Some(s.as_str())));
    let mut first: Option<SystemTime> = None;
    let mut last: Option<SystemTime> = None;
    let mut totals = serde_json::Map::new();
    for direction in Direction::ALL {
        let ledger = state.ledger.device(&DeviceId { mac, direction });
        let total = ledger.map(|d| d.total()).unwrap_or_default();
        totals.insert(direction.as_str().to_owned(), count(total));
        if let Some((f, l)) = ledger.and_then(|d| d.seen()) {
            first = Some(first.map_or(f, |x| x.min(f)));
            last = Some(last.map_or(l, |x| x.max(l)));
        }
    }
    let status = state.policy.status(mac, naming.devices.group(mac));
    let mut unexpected = serde_json::Map::new();
    for direction in Direction::ALL {
        let sum = state
            .policy
            .unexpected()
            .filter(|s| s.mac == mac && s.direction == direction)
            .fold(Count::default(), |a, s| {
                Count::new(a.bytes + s.count.bytes, a.packets + s.count.packets)
            });
        unexpected.insert(direction.as_str().to_owned(), count(sum));
    }
    let now = SystemTime::now();
    let policy = json!({
        "section": status.policy,
        "learning": status.learning.map(|l| l.active(now)),
        "learning_until": time(status.learning.and_then(|l| l.until())),
        "baseline": status.baseline,
        "new_destinations": state.policy.new_destinations(mac),
        "unexpected": unexpected,
    });
    json!({
        "mac": mac.to_string(),
        "name": name,
        "policy": policy,
        "name_source": source,
        "group": naming.devices.group(mac),
        "locally_administered": mac.is_locally_administered(),
        "addresses": naming.devices.addresses(mac).iter().map(ToString::to_string).collect::<Vec<_>>(),
        "totals": totals,
        "first_seen": time(first),
        "last_seen": time(last),
        "first_seen_unix": unix(first),
        "last_seen_unix": unix(last),
    })
}

/// A device's destinations, both directions merged by label.
pub fn destinations(state: &State, mac: &str) -> Result<Value, ApiError> {
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
        let Some(ledger) = state.ledger.device(&DeviceId { mac, direction }) else {
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
    if !found && !state.naming.devices.known().contains(&mac) {
        return Err(ApiError::UnknownDevice(mac));
    }
    let list: Vec<Value> = merged
        .into_iter()
        .map(|(label, m)| {
            let mut v = json!({
                "name": label,
                "addresses": m.addresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
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
