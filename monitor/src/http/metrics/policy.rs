//! The policy's families: unexpected traffic, new destinations and countries, learning, and the health of
//! policy reloads and state writes.

use std::{fmt::Write as _, time::SystemTime};

use super::{Family, MetricType, write_families};
use crate::{
    policy::{FAILURE, OTHER, SUCCESS},
    snapshot::{AgentStats, DeviceTable},
};

const UNEXPECTED_BYTES_HELP: &str = "IP-layer bytes to or from destinations the device's policy does not allow (rule: deny:domain, deny:cidr, deny:country, deny:asn, not-allowed, not-in-baseline), since the agent started. Destinations beyond max_unexpected_destinations per device are counted under destination=\"other\".";
const UNEXPECTED_PACKETS_HELP: &str = "Packets to or from destinations the device's policy does not allow; labels as egress_unexpected_bytes_total.";

/// The per-device families: unexpected traffic, new destinations, the policy that applies,
/// learning and baselines.
pub(super) fn write_devices(out: &mut String, table: &DeviceTable, now: SystemTime) {
    use MetricType::{Counter, Gauge};
    let mut bytes = Family::new(
        "egress_unexpected_bytes_total",
        UNEXPECTED_BYTES_HELP,
        Counter,
    );
    let mut packets = Family::new(
        "egress_unexpected_packets_total",
        UNEXPECTED_PACKETS_HELP,
        Counter,
    );
    let mut destination = String::with_capacity(64);
    for s in &table.unexpected {
        let mac = s.mac.to_string();
        let name = table.label(s.mac);
        destination.clear();
        match &s.destination {
            Some(label) => {
                let _ = write!(destination, "{label}");
            }
            None => destination.push_str(OTHER),
        }
        let labels = [
            ("device", name.as_str()),
            ("mac", mac.as_str()),
            ("direction", s.direction.as_str()),
            ("destination", destination.as_str()),
            ("rule", s.rule),
        ];
        bytes.push(&labels, s.count.bytes as f64);
        packets.push(&labels, s.count.packets as f64);
    }

    let mut new_destinations = Family::new(
        "egress_new_destinations_total",
        "Destinations a device talked to for the first time (remembered across restarts in the state file), counted once its learning period, if any, is over; since the agent started.",
        Counter,
    );
    let mut new_countries = Family::new(
        "egress_new_countries_total",
        "Countries a device talked to for the first time, as the country database places the addresses (remembered across restarts in the state file; an unknown country is never new), counted once its learning period, if any, is over; since the agent started.",
        Counter,
    );
    let mut policy_info = Family::new(
        "egress_device_policy_info",
        "The policy section that applies to each device: device, group:NAME, default, or none (only counted); always 1.",
        Gauge,
    );
    let mut learning = Family::new(
        "egress_device_learning",
        "1 while the device learns its baseline (or will, from its first traffic), 0 once learning is over; only for devices whose policy learns.",
        Gauge,
    );
    let mut learning_end = Family::new(
        "egress_device_learning_end_timestamp_seconds",
        "When the device's learning period ends (or ended), in seconds since the epoch; only for devices whose policy learns, once their learning started.",
        Gauge,
    );
    let mut baseline = Family::new(
        "egress_device_baseline_destinations",
        "Entries in the device's baseline (learned or accepted destinations).",
        Gauge,
    );
    for (mac, row) in table.rows() {
        let mac_s = mac.to_string();
        let name = table.label(*mac);
        let labels = [("device", name.as_str()), ("mac", mac_s.as_str())];
        new_destinations.push(&labels, row.new_destinations as f64);
        new_countries.push(&labels, row.new_countries as f64);
        let status = &row.status;
        policy_info.push(
            &[
                ("device", name.as_str()),
                ("mac", mac_s.as_str()),
                ("policy", status.policy.as_str()),
            ],
            1.0,
        );
        if let Some(l) = status.learning {
            learning.push(&labels, if l.active(now) { 1.0 } else { 0.0 });
            if let Some(until) = l.until() {
                learning_end.push(&labels, epoch_seconds(until));
            }
        }
        if status.learning.is_some() || status.baseline > 0 {
            baseline.push(&labels, status.baseline as f64);
        }
    }
    write_families(
        out,
        [
            bytes,
            packets,
            new_destinations,
            new_countries,
            policy_info,
            learning,
            learning_end,
            baseline,
        ],
    );
}

/// The health of reloads and state writes.
pub(super) fn write_health(out: &mut String, agent: &AgentStats) {
    use MetricType::{Counter, Gauge};
    let mut reloads = Family::new(
        "egress_monitor_policy_reloads_total",
        "Reloads of the configuration file (SIGHUP or a change of the file), by result; a failed one leaves the previous policy in force.",
        Counter,
    );
    let mut reload_ok = Family::new(
        "egress_monitor_policy_last_reload_success",
        "1 if the configuration in force is the file as it is now (the last reload succeeded, or none was needed), 0 if the last reload was rejected.",
        Gauge,
    );
    let mut writes = Family::new(
        "egress_monitor_state_writes_total",
        "Writes of the state file (baselines, first-seen times), by result.",
        Counter,
    );
    for (result, i) in [("success", SUCCESS), ("failure", FAILURE)] {
        reloads.push(&[("result", result)], agent.reloads[i] as f64);
        writes.push(&[("result", result)], agent.writes[i] as f64);
    }
    reload_ok.push(&[], if agent.last_reload_ok { 1.0 } else { 0.0 });
    write_families(out, [reloads, reload_ok, writes]);
}

fn epoch_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
