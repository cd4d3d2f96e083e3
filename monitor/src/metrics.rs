//! The Prometheus exposition. Traffic and kernel statistics are read from the shared state at
//! scrape time by a custom collector (they mirror totals kept elsewhere, which the client
//! library's own counters cannot do); the agent's own measurements are ordinary metrics.

use std::{collections::BTreeMap, sync::Arc};

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry, TextEncoder,
    core::{Collector, Desc},
    proto::{self, LabelPair, MetricFamily, MetricType},
};

use crate::{
    ledger::{Count, Direction},
    mac::MacAddr,
    state::Shared,
};

/// The `destination` label of what the device total holds beyond its exported destinations.
pub const UNATTRIBUTED: &str = "unattributed";

/// Measurements of the agent itself, updated by the poller.
#[derive(Clone)]
pub struct SelfMetrics {
    pub poll_duration: Histogram,
    pub polls: IntCounter,
    pub poll_errors: IntCounterVec,
}

/// The registry and everything in it.
pub struct Metrics {
    registry: Registry,
    pub self_metrics: SelfMetrics,
}

impl Metrics {
    /// `names` maps MAC addresses to the configured device names.
    pub fn new(shared: Shared, names: BTreeMap<MacAddr, String>) -> prometheus::Result<Self> {
        let registry = Registry::new();
        let poll_duration = Histogram::with_opts(
            HistogramOpts::new(
                "egress_monitor_poll_duration_seconds",
                "Time to read the kernel maps and settle them into totals.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
        )?;
        let polls = IntCounter::new(
            "egress_monitor_polls_total",
            "Polls of the kernel maps since the agent started.",
        )?;
        let poll_errors = IntCounterVec::new(
            Opts::new(
                "egress_monitor_poll_errors_total",
                "Polls that failed in a stage (read_maps, local_prefixes); the last good totals stay exported.",
            ),
            &["stage"],
        )?;
        for stage in ["read_maps", "local_prefixes"] {
            poll_errors.with_label_values(&[stage]);
        }
        registry.register(Box::new(poll_duration.clone()))?;
        registry.register(Box::new(polls.clone()))?;
        registry.register(Box::new(poll_errors.clone()))?;
        registry.register(Box::new(StateCollector::new(shared, names)?))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Self {
            registry,
            self_metrics: SelfMetrics {
                poll_duration,
                polls,
                poll_errors,
            },
        })
    }

    /// The text exposition format, version 0.0.4.
    pub fn render(&self) -> String {
        let mut out = Vec::with_capacity(64 * 1024);
        let families = self.registry.gather();
        TextEncoder::new()
            .encode(&families, &mut out)
            .expect("encoding to memory cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// Families built from the shared state at each scrape.
struct StateCollector {
    shared: Shared,
    names: BTreeMap<MacAddr, String>,
    descs: Vec<Desc>,
}

/// (name, help, type) of every family the collector emits.
const FAMILIES: &[(&str, &str, MetricType)] = &[
    (
        "egress_device_bytes_total",
        "IP-layer bytes a LAN device sent out of the network (egress) or received from outside (ingress).",
        MetricType::COUNTER,
    ),
    (
        "egress_device_packets_total",
        "IP packets a LAN device sent out of the network (egress) or received from outside (ingress); a GSO/GRO super-packet counts as its segments.",
        MetricType::COUNTER,
    ),
    (
        "egress_destination_bytes_total",
        "IP-layer bytes between a LAN device and one remote destination; destination=\"unattributed\" holds what the device total has beyond its listed destinations.",
        MetricType::COUNTER,
    ),
    (
        "egress_destination_packets_total",
        "IP packets between a LAN device and one remote destination; destination=\"unattributed\" holds what the device total has beyond its listed destinations.",
        MetricType::COUNTER,
    ),
    (
        "egress_monitor_build_info",
        "Version of the running agent; always 1.",
        MetricType::GAUGE,
    ),
    (
        "egress_monitor_kernel_frames_total",
        "Frames the kernel programs ran on, by what became of them (counted, not_ip, local, parse_error, device_map_full).",
        MetricType::COUNTER,
    ),
    (
        "egress_monitor_kernel_flow_update_errors_total",
        "Counted frames whose destination entry could not be created; their bytes show as destination=\"unattributed\".",
        MetricType::COUNTER,
    ),
    (
        "egress_monitor_kernel_flows_created_total",
        "Destination entries the kernel created, including re-creations after LRU eviction.",
        MetricType::COUNTER,
    ),
    (
        "egress_monitor_map_entries",
        "Entries in a kernel map at the last poll.",
        MetricType::GAUGE,
    ),
    (
        "egress_monitor_map_max_entries",
        "Capacity of a kernel map.",
        MetricType::GAUGE,
    ),
    (
        "egress_monitor_local_prefixes",
        "Prefixes treated as local (not a destination), by address family.",
        MetricType::GAUGE,
    ),
    (
        "egress_monitor_interface_attached",
        "1 for each LAN interface the programs are attached to, with the attach mode (tcx or clsact); 0 with mode none while the interface is gone.",
        MetricType::GAUGE,
    ),
    (
        "egress_monitor_last_poll_timestamp_seconds",
        "Unix time of the last successful poll of the kernel maps.",
        MetricType::GAUGE,
    ),
];

impl StateCollector {
    fn new(shared: Shared, names: BTreeMap<MacAddr, String>) -> prometheus::Result<Self> {
        let descs = FAMILIES
            .iter()
            .map(|(name, help, _)| {
                Desc::new(
                    name.to_string(),
                    help.to_string(),
                    vec![],
                    Default::default(),
                )
            })
            .collect::<prometheus::Result<_>>()?;
        Ok(Self {
            shared,
            names,
            descs,
        })
    }
}

/// Accumulates the samples of one family.
struct Family {
    family: MetricFamily,
}

impl Family {
    fn new(index: usize) -> Self {
        let (name, help, kind) = FAMILIES[index];
        let mut family = MetricFamily::default();
        family.set_name(name.to_owned());
        family.set_help(help.to_owned());
        family.set_field_type(kind);
        Self { family }
    }

    fn push(&mut self, labels: &[(&str, &str)], value: f64) {
        let pairs = labels
            .iter()
            .map(|(k, v)| {
                let mut pair = LabelPair::default();
                pair.set_name((*k).to_owned());
                pair.set_value((*v).to_owned());
                pair
            })
            .collect();
        let mut metric = proto::Metric::from_label(pairs);
        if self.family.get_field_type() == MetricType::COUNTER {
            let mut counter = proto::Counter::default();
            counter.set_value(value);
            metric.set_counter(counter);
        } else {
            let mut gauge = proto::Gauge::default();
            gauge.set_value(value);
            metric.set_gauge(gauge);
        }
        self.family.mut_metric().push(metric);
    }
}

impl Collector for StateCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut f: Vec<Family> = (0..FAMILIES.len()).map(Family::new).collect();
        let state = self.shared.read().expect("state lock");
        for (id, device) in state.ledger.devices() {
            let mac = id.mac.to_string();
            let name = self.names.get(&id.mac).map_or(mac.as_str(), String::as_str);
            let base = [
                ("device", name),
                ("mac", mac.as_str()),
                ("direction", id.direction.as_str()),
            ];
            let total = device.total();
            f[0].push(&base, total.bytes as f64);
            f[1].push(&base, total.packets as f64);
            let mut push_destination = |destination: &str, count: Count| {
                let labels = [base[0], base[1], base[2], ("destination", destination)];
                f[2].push(&labels, count.bytes as f64);
                f[3].push(&labels, count.packets as f64);
            };
            for (addr, count) in device.destinations() {
                push_destination(&addr.to_string(), count);
            }
            push_destination(UNATTRIBUTED, device.unattributed());
        }
        f[4].push(&[("version", env!("CARGO_PKG_VERSION"))], 1.0);
        for direction in Direction::ALL {
            let k = &state.kernel[direction as usize];
            let d = direction.as_str();
            for (result, value) in [
                ("counted", k.counted),
                ("not_ip", k.not_ip),
                ("local", k.local),
                ("parse_error", k.parse_errors),
                ("device_map_full", k.device_update_errors),
            ] {
                f[5].push(&[("direction", d), ("result", result)], value as f64);
            }
            f[6].push(&[("direction", d)], k.flow_update_errors as f64);
            f[7].push(&[("direction", d)], k.flows_created as f64);
        }
        for (map, usage) in [("flows", state.flows), ("devices", state.devices)] {
            f[8].push(&[("map", map)], usage.entries as f64);
            f[9].push(&[("map", map)], usage.capacity as f64);
        }
        f[10].push(&[("family", "ipv4")], state.local_prefixes.0 as f64);
        f[10].push(&[("family", "ipv6")], state.local_prefixes.1 as f64);
        for a in &state.attachments {
            let (mode, up) = a.mode.map_or(("none", 0.0), |m| (m.as_str(), 1.0));
            f[11].push(&[("interface", &a.interface), ("mode", mode)], up);
        }
        if let Some(t) = state.last_poll {
            let secs = t
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            f[12].push(&[], secs);
        }
        f.into_iter()
            .map(|f| f.family)
            .filter(|f| !f.get_metric().is_empty())
            .collect()
    }
}

/// Shared handle for the HTTP layer.
pub type SharedMetrics = Arc<Metrics>;
