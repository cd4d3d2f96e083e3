//! The Prometheus exposition, written from the latest [`Snapshot`]. Traffic and kernel
//! statistics are written at scrape time straight into the text format (they mirror totals kept elsewhere, which the
//! client library's own counters cannot do; and building a protobuf object per sample first
//! took most of the time and memory of a scrape with 100k series); the agent's own
//! measurements are ordinary metrics of the client library (where the target allows, see
//! [`own`]), appended after them. The device
//! and policy families are rendered when the snapshot's device table is built (see
//! [`device_families`]), not at each scrape.

use std::sync::Arc;

use std::fmt::Write as _;

use bytes::Bytes;

mod own;
mod places;
mod policy;

pub use own::{MetricsError, SelfMetrics};

use crate::{
    naming::KINDS,
    snapshot::{DeviceTable, Published, Snapshot},
    types::{Count, Direction},
};

/// The `destination` label of what the device total holds beyond its exported destinations.
pub const UNATTRIBUTED: &str = "unattributed";

/// The registry and everything in it.
pub struct Metrics {
    registry: own::Registry,
    published: Published,
    pub self_metrics: SelfMetrics,
    /// Counted by the web configuration's watcher, written after the agent's own metrics.
    pub web_reloads: Arc<crate::http::web_config::Reloads>,
}

impl Metrics {
    pub fn new(published: Published) -> Result<Self, MetricsError> {
        let (registry, self_metrics) = own::new()?;
        Ok(Self {
            registry,
            published,
            self_metrics,
            web_reloads: Arc::default(),
        })
    }

    /// The text exposition format, version 0.0.4, in pieces: the device table's families are
    /// shared with the snapshot, not copied, so their weight costs a scrape only the bytes sent.
    pub fn render_chunks(&self) -> Vec<Bytes> {
        let snapshot = self.published.latest();
        let (traffic, mut rest) = state_families(&snapshot);
        self.registry.render(&mut rest);
        self.web_reloads.render(&mut rest);
        // The table's families last: the pieces rendered now leave at once.
        vec![
            Bytes::from(traffic),
            Bytes::from(rest),
            snapshot.devices.families.clone(),
        ]
    }

    /// The whole exposition as one text.
    pub fn render(&self) -> String {
        let chunks = self.render_chunks();
        let mut text = String::with_capacity(chunks.iter().map(Bytes::len).sum());
        for chunk in &chunks {
            text.push_str(std::str::from_utf8(chunk).expect("the text format is UTF-8"));
        }
        text
    }
}

/// Every family the collector emits, by name, so that filling them reads like the exposition.
struct Families {
    resolver_bypass: Family,
    build_info: Family,
    sniff_records: Family,
    sniff_parse_errors: Family,
    sniff_dropped: Family,
    names_held: Family,
    lease_reads: Family,
    lease_skipped_lines: Family,
    lease_read_errors: Family,
    kernel_frames: Family,
    kernel_flow_update_errors: Family,
    kernel_flows_created: Family,
    kernel_header_pulls: Family,
    map_entries: Family,
    map_max_entries: Family,
    local_prefixes: Family,
    interface_attached: Family,
    kernel_start: Family,
    hardware_offload: Family,
    last_poll: Family,
}

impl Families {
    fn new() -> Self {
        use MetricType::{Counter as COUNTER, Gauge as GAUGE};
        Self {
            resolver_bypass: Family::new(
                "egress_resolver_bypass_total",
                "DNS lookups a device made around the router's resolver: queries to another resolver (protocol dns), TLS handshakes on port 853 (dot), TLS handshakes to a listed public resolver on port 443 (doh).",
                COUNTER,
            ),
            build_info: Family::new(
                "egress_monitor_build_info",
                "Version of the running agent; always 1.",
                GAUGE,
            ),
            kernel_frames: Family::new(
                "egress_monitor_kernel_frames_total",
                "Frames the kernel programs ran on, by what became of them (counted, not_ip, local, parse_error, device_map_full).",
                COUNTER,
            ),
            kernel_flow_update_errors: Family::new(
                "egress_monitor_kernel_flow_update_errors_total",
                "Counted frames whose destination entry could not be created; their bytes show as destination=\"unattributed\".",
                COUNTER,
            ),
            kernel_flows_created: Family::new(
                "egress_monitor_kernel_flows_created_total",
                "Destination entries the kernel created, including re-creations after LRU eviction.",
                COUNTER,
            ),
            kernel_header_pulls: Family::new(
                "egress_monitor_kernel_header_pulls_total",
                "Frames whose headers lay outside the skb's linear data and had to be pulled in (a cost, not an error).",
                COUNTER,
            ),
            sniff_records: Family::new(
                "egress_monitor_sniff_records_total",
                "Packets the kernel copied to the agent for naming, by kind (dns_response, dns_query, tls_client_hello, dhcp).",
                COUNTER,
            ),
            sniff_parse_errors: Family::new(
                "egress_monitor_sniff_parse_errors_total",
                "Copied packets the agent could not parse, by kind; their bytes are counted all the same.",
                COUNTER,
            ),
            sniff_dropped: Family::new(
                "egress_monitor_sniff_dropped_total",
                "Packets the kernel could not copy because the ring buffer was full (raise sniff_ring_bytes); their bytes are counted, only names may be missed.",
                COUNTER,
            ),
            names_held: Family::new(
                "egress_monitor_destination_names",
                "Address-to-name bindings held, over all devices.",
                GAUGE,
            ),
            lease_reads: Family::new(
                "egress_monitor_lease_file_reads_total",
                "Times a DHCP lease file was read (at start and whenever it changed).",
                COUNTER,
            ),
            lease_skipped_lines: Family::new(
                "egress_monitor_lease_file_skipped_lines_total",
                "Malformed lines or entries skipped in a DHCP lease file.",
                COUNTER,
            ),
            lease_read_errors: Family::new(
                "egress_monitor_lease_file_read_errors_total",
                "Attempts to read a DHCP lease file that failed (missing, no permission).",
                COUNTER,
            ),
            map_entries: Family::new(
                "egress_monitor_map_entries",
                "Entries in a kernel map at the last poll.",
                GAUGE,
            ),
            map_max_entries: Family::new(
                "egress_monitor_map_max_entries",
                "Capacity of a kernel map.",
                GAUGE,
            ),
            local_prefixes: Family::new(
                "egress_monitor_local_prefixes",
                "Prefixes treated as local (not a destination), by address family.",
                GAUGE,
            ),
            interface_attached: Family::new(
                "egress_monitor_interface_attached",
                "1 for each device the programs are attached to (a LAN interface, or a port of a LAN bridge; `lan` names the configured interface), with the attach mode (tcx or clsact); 0 with mode none while a device cannot be attached or a configured interface is gone or has no ports.",
                GAUGE,
            ),
            kernel_start: Family::new(
                "egress_monitor_kernel_start_info",
                "1, with how the kernel side began: fresh (new pinned maps), adopted (an earlier agent's pinned maps and links, counting on), resized (new map sizes, the old totals carried over), replaced (pins of an unknown layout, their counts lost) or unpinned (pin_dir off or not on bpffs: counting stops with the agent).",
                GAUGE,
            ),
            hardware_offload: Family::new(
                "egress_monitor_hardware_offload",
                "1 for a device the programs are attached to whose packets hardware offload may hide from every hook (hw-tc-offload on, or in an nftables flowtable with flags offload): flows the hardware forwards are not counted.",
                GAUGE,
            ),
            last_poll: Family::new(
                "egress_monitor_last_poll_timestamp_seconds",
                "Unix time of the last successful poll of the kernel maps.",
                GAUGE,
            ),
        }
    }

    /// Appends the exposition of every family with samples, in order.
    fn write_into(self, out: &mut String) {
        let families = [
            self.resolver_bypass,
            self.build_info,
            self.sniff_records,
            self.sniff_parse_errors,
            self.sniff_dropped,
            self.names_held,
            self.lease_reads,
            self.lease_skipped_lines,
            self.lease_read_errors,
            self.kernel_frames,
            self.kernel_flow_update_errors,
            self.kernel_flows_created,
            self.kernel_header_pulls,
            self.map_entries,
            self.map_max_entries,
            self.local_prefixes,
            self.interface_attached,
            self.kernel_start,
            self.hardware_offload,
            self.last_poll,
        ];
        write_families(out, families);
    }
}

/// Appends the exposition of every family with samples, in order.
fn write_families(out: &mut String, families: impl IntoIterator<Item = Family>) {
    {
        for f in families.into_iter().filter(|f| !f.body.is_empty()) {
            let kind = match f.kind {
                MetricType::Counter => "counter",
                MetricType::Gauge => "gauge",
            };
            let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(f.help));
            let _ = writeln!(out, "# TYPE {} {kind}", f.name);
            out.push_str(&f.body);
        }
    }
}

/// The two kinds of family the state has.
#[derive(Clone, Copy, PartialEq, Eq)]
enum MetricType {
    Counter,
    Gauge,
}

/// Accumulates the samples of one family, as lines of the text format.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    body: String,
}

impl Family {
    fn new(name: &'static str, help: &'static str, kind: MetricType) -> Self {
        Self {
            name,
            help,
            kind,
            body: String::new(),
        }
    }

    fn push(&mut self, labels: &[(&str, &str)], value: f64) {
        write_sample(&mut self.body, self.name, labels, value);
    }
}

/// One sample line of the text format.
fn write_sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push_str("=\"");
            escape_label_value(out, v);
            out.push('"');
        }
        out.push('}');
    }
    // Integral values print without a fraction or exponent, exactly up to 2^53.
    let _ = writeln!(out, " {value}");
}

/// A family written straight into the exposition: the traffic families are most of a scrape
/// (two lines per destination), so they are never held twice.
fn write_family(
    out: &mut String,
    name: &str,
    help: &str,
    kind: &str,
    samples: impl FnOnce(&mut dyn FnMut(&[(&str, &str)], f64)),
) {
    let header_at = out.len();
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let body_at = out.len();
    samples(&mut |labels, value| write_sample(out, name, labels, value));
    if out.len() == body_at {
        // No samples: no family.
        out.truncate(header_at);
    }
}

/// A label value in the text format: backslash, double quote and line feed escaped.
fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A HELP text: backslash and line feed escaped.
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

const DEVICE_BYTES_HELP: &str = "IP-layer bytes a LAN device sent out of the network (egress) or received from outside (ingress).";
const DEVICE_PACKETS_HELP: &str = "IP packets a LAN device sent out of the network (egress) or received from outside (ingress); a GSO/GRO super-packet counts as its segments.";
const DESTINATION_BYTES_HELP: &str = "IP-layer bytes between a LAN device and one remote destination; destination=\"unattributed\" holds what the device total has beyond its listed destinations.";
const DESTINATION_PACKETS_HELP: &str = "IP packets between a LAN device and one remote destination; destination=\"unattributed\" holds what the device total has beyond its listed destinations.";

/// The traffic families: one pass over the ledger per family, written straight into `out`.
fn traffic_families(out: &mut String, snapshot: &Snapshot) {
    let table = &snapshot.devices;
    // (device label, mac label, direction, ledger) per device and direction.
    let devices: Vec<places::DeviceLine<'_>> = snapshot
        .traffic
        .devices()
        .map(|(id, ledger)| {
            (
                table.label(id.mac),
                id.mac.to_string(),
                id.direction,
                ledger,
            )
        })
        .collect();
    let bytes: fn(Count) -> u64 = |c| c.bytes;
    let packets: fn(Count) -> u64 = |c| c.packets;
    for (family, help, field) in [
        ("egress_device_bytes_total", DEVICE_BYTES_HELP, bytes),
        ("egress_device_packets_total", DEVICE_PACKETS_HELP, packets),
    ] {
        write_family(out, family, help, "counter", |push| {
            for (name, mac, direction, ledger) in &devices {
                let labels = [
                    ("device", name.as_str()),
                    ("mac", mac.as_str()),
                    ("direction", direction.as_str()),
                ];
                push(&labels, field(ledger.total()) as f64);
            }
        });
    }
    for (family, help, field) in [
        (
            "egress_destination_bytes_total",
            DESTINATION_BYTES_HELP,
            bytes,
        ),
        (
            "egress_destination_packets_total",
            DESTINATION_PACKETS_HELP,
            packets,
        ),
    ] {
        write_family(out, family, help, "counter", |push| {
            // Address labels are written out here, into one reused buffer.
            let mut text = String::with_capacity(64);
            for (name, mac, direction, ledger) in &devices {
                let mut one = |destination: &str, count: Count| {
                    let labels = [
                        ("device", name.as_str()),
                        ("mac", mac.as_str()),
                        ("direction", direction.as_str()),
                        ("destination", destination),
                    ];
                    push(&labels, field(count) as f64);
                };
                for (label, destination) in ledger.destinations() {
                    text.clear();
                    let _ = write!(text, "{label}");
                    one(&text, destination.count);
                }
                one(UNATTRIBUTED, ledger.unattributed());
            }
        });
    }
    if snapshot.agent.enrich.enabled {
        places::write_traffic(out, &devices);
    }
}

/// The families of the device table: what is known of each device, and its policy. Rendered
/// when the table is built, so a scrape only copies them.
pub fn device_families(table: &DeviceTable, now: std::time::SystemTime) -> String {
    let mut out = String::with_capacity(table.rows().count() * 320 + 4096);
    policy::write_devices(&mut out, table, now);
    let mut device_info = Family::new(
        "egress_device_info",
        "One series per known device: its name, where the name comes from (config, lease, dhcp, or mac when none), its group, and whether its MAC is locally administered (randomised); always 1.",
        MetricType::Gauge,
    );
    for (mac, row) in table.rows() {
        let mac_s = mac.to_string();
        let (name, source) = row
            .name
            .as_ref()
            .map_or((mac_s.as_str(), "mac"), |(n, s)| (n.as_str(), s.as_str()));
        let local = if mac.is_locally_administered() {
            "true"
        } else {
            "false"
        };
        device_info.push(
            &[
                ("device", name),
                ("mac", &mac_s),
                ("name_source", source),
                ("group", row.group.as_deref().unwrap_or("")),
                ("locally_administered", local),
            ],
            1.0,
        );
    }
    write_families(&mut out, [device_info]);
    out
}

/// The families built from the snapshot at scrape time, in the text format: the traffic,
/// then everything else.
fn state_families(snapshot: &Snapshot) -> (String, String) {
    // Room for the traffic lines (about 160 bytes each) and the rest, so nothing is copied.
    let lines: usize = snapshot
        .traffic
        .devices()
        .map(|(_, d)| 2 * (d.tracked_labels() + 2))
        .sum();
    let table = &snapshot.devices;
    let mut traffic = String::with_capacity(lines * 160);
    traffic_families(&mut traffic, snapshot);
    let mut out = String::with_capacity(64 * 1024);
    let agent = &snapshot.agent;
    policy::write_health(&mut out, agent);
    places::write_status(&mut out, &agent.enrich);
    let mut f = Families::new();
    for (mac, resolver, protocol, n) in &agent.bypass {
        let mac_s = mac.to_string();
        let name = table.label(*mac);
        f.resolver_bypass.push(
            &[
                ("device", &name),
                ("mac", &mac_s),
                ("resolver", resolver),
                ("protocol", protocol.as_str()),
            ],
            *n as f64,
        );
    }
    f.build_info
        .push(&[("version", env!("CARGO_PKG_VERSION"))], 1.0);
    for (i, (_, kind)) in KINDS.iter().enumerate() {
        f.sniff_records
            .push(&[("kind", kind)], agent.sniff.records[i] as f64);
        f.sniff_parse_errors
            .push(&[("kind", kind)], agent.sniff.parse_errors[i] as f64);
    }
    let dropped = agent.kernel[0].sniff_drops + agent.kernel[1].sniff_drops;
    f.sniff_dropped.push(&[], dropped as f64);
    f.names_held.push(&[], agent.names_held as f64);
    for file in &agent.lease_files {
        let labels = [("path", file.path.as_str()), ("format", file.format)];
        f.lease_reads.push(&labels, file.reads as f64);
        f.lease_skipped_lines
            .push(&labels, file.skipped_lines as f64);
        f.lease_read_errors.push(&labels, file.read_errors as f64);
    }
    for direction in Direction::ALL {
        let k = &agent.kernel[direction as usize];
        let d = direction.as_str();
        for (result, value) in [
            ("counted", k.counted),
            ("not_ip", k.not_ip),
            ("local", k.local),
            ("parse_error", k.parse_errors),
            ("device_map_full", k.device_update_errors),
        ] {
            f.kernel_frames
                .push(&[("direction", d), ("result", result)], value as f64);
        }
        f.kernel_flow_update_errors
            .push(&[("direction", d)], k.flow_update_errors as f64);
        f.kernel_flows_created
            .push(&[("direction", d)], k.flows_created as f64);
        f.kernel_header_pulls
            .push(&[("direction", d)], k.header_pulls as f64);
    }
    for (map, usage) in [("flows", agent.flows), ("devices", agent.devices)] {
        f.map_entries.push(&[("map", map)], usage.entries as f64);
        f.map_max_entries
            .push(&[("map", map)], usage.capacity as f64);
    }
    let (v4, v6) = agent.local_prefixes;
    f.local_prefixes.push(&[("family", "ipv4")], v4 as f64);
    f.local_prefixes.push(&[("family", "ipv6")], v6 as f64);
    for a in &agent.attachments {
        let (mode, up) = a.mode.map_or(("none", 0.0), |m| (m.as_str(), 1.0));
        f.interface_attached.push(
            &[("interface", &a.interface), ("lan", &a.lan), ("mode", mode)],
            up,
        );
    }
    if !agent.kernel_start.is_empty() {
        f.kernel_start.push(&[("start", agent.kernel_start)], 1.0);
    }
    for (interface, on) in &agent.hardware_offload {
        f.hardware_offload
            .push(&[("interface", interface)], f64::from(u8::from(*on)));
    }
    if let Some(t) = snapshot.polled_at {
        let secs = t
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        f.last_poll.push(&[], secs);
    }
    f.write_into(&mut out);
    (traffic, out)
}

/// Shared handle for the HTTP layer.
pub type SharedMetrics = Arc<Metrics>;

#[cfg(test)]
mod tests {
    use std::{
        net::{IpAddr, Ipv4Addr},
        time::SystemTime,
    };

    use super::*;
    use crate::{
        config::Config,
        ledger::Reading,
        runtime::state::State,
        types::MacAddr,
        types::{DeviceId, Label},
    };

    #[test]
    fn state_renders_as_text_with_escaped_labels_and_exact_integers() {
        let config = Config::from_toml_str(
            "lan = [\"br-lan\"]\n[devices]\n\"00:16:3e:00:00:01\" = 'say \"hi\" \\ now'\n",
            None,
            &Default::default(),
        )
        .unwrap();
        let mut state = State::new(&config);
        let device = DeviceId {
            mac: MacAddr([0, 0x16, 0x3e, 0, 0, 1]),
            direction: Direction::Egress,
        };
        let big = (1u64 << 53) - 1;
        let reading = Reading {
            flows: vec![(
                device,
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
                Count::new(big, 3),
            )],
            devices: vec![(device, Count::new(big, 3))],
        };
        for _ in 0..2 {
            state
                .ledger
                .apply(&reading, SystemTime::now(), &mut |_, a| Label::Addr(a));
        }
        let published = Published::default();
        published.publish(state.snapshot(&Snapshot::default(), SystemTime::now()));
        let metrics = Metrics::new(published).unwrap();
        let text = metrics.render();
        let want = format!(
            "egress_destination_bytes_total{{device=\"say \\\"hi\\\" \\\\ now\",mac=\"00:16:3e:00:00:01\",direction=\"egress\",destination=\"192.0.2.10\"}} {big}\n"
        );
        assert!(text.contains(&want), "{text}");
        assert!(text.contains("# TYPE egress_device_bytes_total counter\n"));
        // Families without samples are left out; the client library's own come after.
        assert!(!text.contains("egress_resolver_bypass_total"));
        let state_part = text.find("egress_device_bytes_total").unwrap();
        assert!(text.find("egress_monitor_polls_total").unwrap() > state_part);
    }

    #[test]
    fn new_countries_render_per_device_with_the_deny_verdicts_of_country_and_as_rules() {
        let config = Config::from_toml_str(
            "lan = [\"br-lan\"]\n[devices]\n\"00:16:3e:00:00:01\" = \"phone\"\n\
             [policy.devices.phone]\ndeny = [\"country:CN\", \"asn:4134\"]\nlearn = \"1s\"\n",
            None,
            &Default::default(),
        )
        .unwrap();
        let mut state = State::new(&config);
        let mac = MacAddr([0, 0x16, 0x3e, 0, 0, 1]);
        let id = DeviceId {
            mac,
            direction: Direction::Egress,
        };
        // Past its learning (which starts at the first bytes), so new countries count.
        let learned = SystemTime::now() - std::time::Duration::from_secs(10);
        let warm_up = Label::Addr("192.0.2.1".parse().unwrap());
        let unknown = crate::enrich::Enrichment::default();
        let first = crate::policy::Target {
            addr: "192.0.2.1".parse().unwrap(),
            host: None,
            label: &warm_up,
            enrichment: &unknown,
        };
        state
            .policy
            .observe(id, None, &first, Count::new(1, 1), learned);
        let now = SystemTime::now();
        for (addr, country, asn) in [
            ("192.0.2.10", Some("CN"), None),
            ("192.0.2.11", Some("DE"), Some(4134)),
            ("192.0.2.12", None, None),
        ] {
            let label = Label::Addr(addr.parse().unwrap());
            let enrichment = crate::enrich::Enrichment {
                country: country.and_then(crate::enrich::Country::parse),
                asn: asn.map(crate::enrich::Asn),
                org: None,
            };
            let target = crate::policy::Target {
                addr: addr.parse().unwrap(),
                host: None,
                label: &label,
                enrichment: &enrichment,
            };
            state
                .policy
                .observe(id, None, &target, Count::new(100, 1), now);
        }
        let published = Published::default();
        published.publish(state.snapshot(&Snapshot::default(), now));
        let text = Metrics::new(published).unwrap().render();
        for line in [
            "# TYPE egress_new_countries_total counter\n",
            "egress_new_countries_total{device=\"phone\",mac=\"00:16:3e:00:00:01\"} 2\n",
            "egress_new_destinations_total{device=\"phone\",mac=\"00:16:3e:00:00:01\"} 3\n",
            "egress_unexpected_bytes_total{device=\"phone\",mac=\"00:16:3e:00:00:01\",direction=\"egress\",destination=\"192.0.2.10\",rule=\"deny:country\"} 100\n",
            "egress_unexpected_bytes_total{device=\"phone\",mac=\"00:16:3e:00:00:01\",direction=\"egress\",destination=\"192.0.2.11\",rule=\"deny:asn\"} 100\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        // Unknown: no rule by country or AS matches it; past learning, it is outside the baseline.
        assert!(
            text.contains("destination=\"192.0.2.12\",rule=\"not-in-baseline\"} 100\n"),
            "{text}"
        );
    }
}
