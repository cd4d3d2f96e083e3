//! A parsed `/metrics` page of the agent ([`Scrape`]), and the readings the tests take from it:
//! a device's totals, its destinations, its unexpected traffic, the attached interfaces.

use std::collections::BTreeMap;

/// One sample of the text exposition.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    /// Whether this is a sample of `name` whose labels include all of `labels`.
    pub fn is(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.name == name
            && labels
                .iter()
                .all(|(k, v)| self.labels.get(*k).map(String::as_str) == Some(*v))
    }
}

/// How a [`Scrape`] helper picks a device's series. A name (`"phone"`) is the `device` label:
/// the name the agent gives the device, or its MAC when it has none. [`Mac`] is the `mac` label,
/// whatever the device is called.
pub trait DeviceLabel {
    /// The label and its value.
    fn label(&self) -> (&'static str, &str);
}

impl DeviceLabel for &str {
    fn label(&self) -> (&'static str, &str) {
        ("device", self)
    }
}

impl DeviceLabel for &String {
    fn label(&self) -> (&'static str, &str) {
        ("device", self.as_str())
    }
}

/// A device picked by its MAC (`00:16:3e:00:00:01`, as [`crate::Device::mac_string`] gives it),
/// for the [`Scrape`] helpers.
#[derive(Clone, Copy, Debug)]
pub struct Mac<'a>(pub &'a str);

impl DeviceLabel for Mac<'_> {
    fn label(&self) -> (&'static str, &str) {
        ("mac", self.0)
    }
}

/// A parsed `/metrics` page.
#[derive(Clone, Debug)]
pub struct Scrape {
    pub text: String,
    pub samples: Vec<Sample>,
}

impl Scrape {
    /// Parses the text format (samples only; comments are kept in `text`).
    pub fn parse(text: &str) -> Scrape {
        let samples = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| parse_sample(l).unwrap_or_else(|| panic!("unparsable sample line: {l}")))
            .collect();
        Scrape {
            text: text.to_owned(),
            samples,
        }
    }

    /// Samples of `name` whose labels include all of `labels`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.is(name, labels))
    }

    /// The single sample of `name` with these labels; None if there is none. Panics if several
    /// match: the caller's labels are not specific enough.
    pub fn sample(&self, name: &str, labels: &[(&str, &str)]) -> Option<&Sample> {
        let found: Vec<&Sample> = self.samples.iter().filter(|s| s.is(name, labels)).collect();
        assert!(
            found.len() <= 1,
            "{name}{labels:?} matches {} samples",
            found.len()
        );
        found.first().copied()
    }

    /// The value of the single sample of `name` with these labels (see [`Scrape::sample`]);
    /// None if there is none.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.sample(name, labels).map(|s| s.value)
    }

    /// The value as an integer, 0 when absent.
    pub fn count(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.value(name, labels).unwrap_or(0.0) as u64
    }

    /// The value as an integer of a sample that must be there: panics if `name` with these
    /// labels is not exported (where [`Scrape::count`] would say 0).
    pub fn exported(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.value(name, labels)
            .unwrap_or_else(|| panic!("{name}{labels:?} is not exported")) as u64
    }

    /// The sum over every sample of `name` with these labels.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.matching(name, labels).map(|s| s.value as u64).sum()
    }

    /// (bytes, packets) of a device in a direction (`egress_device_*_total`).
    pub fn device_total(&self, device: impl DeviceLabel, direction: &str) -> (u64, u64) {
        let labels = [device.label(), ("direction", direction)];
        (
            self.count("egress_device_bytes_total", &labels),
            self.count("egress_device_packets_total", &labels),
        )
    }

    /// (bytes, packets) between a device and a destination (`egress_destination_*_total`).
    pub fn destination(
        &self,
        device: impl DeviceLabel,
        direction: &str,
        destination: &str,
    ) -> (u64, u64) {
        let labels = [
            device.label(),
            ("direction", direction),
            ("destination", destination),
        ];
        (
            self.count("egress_destination_bytes_total", &labels),
            self.count("egress_destination_packets_total", &labels),
        )
    }

    /// The destinations a device sent (`egress`) or received (`ingress`) bytes to or from, by
    /// label, with their bytes (`egress_destination_bytes_total`), sorted by label. Series
    /// without a byte (the `unattributed` one, mostly) are left out.
    pub fn destinations(&self, device: impl DeviceLabel, direction: &str) -> Vec<(String, u64)> {
        let labels = [device.label(), ("direction", direction)];
        let mut found: Vec<(String, u64)> = self
            .matching("egress_destination_bytes_total", &labels)
            .filter(|m| m.value > 0.0)
            .map(|m| (m.labels["destination"].clone(), m.value as u64))
            .collect();
        found.sort();
        found
    }

    /// A device's traffic in a direction that its policy did not expect
    /// (`egress_unexpected_*_total`): (destination, rule, bytes, packets) per series, sorted.
    pub fn unexpected(
        &self,
        device: impl DeviceLabel,
        direction: &str,
    ) -> Vec<(String, String, u64, u64)> {
        let labels = [device.label(), ("direction", direction)];
        let mut found: Vec<_> = self
            .matching("egress_unexpected_bytes_total", &labels)
            .map(|m| {
                let (destination, rule) = (&m.labels["destination"], &m.labels["rule"]);
                let packets = self.count(
                    "egress_unexpected_packets_total",
                    &[
                        labels[0],
                        labels[1],
                        ("destination", destination),
                        ("rule", rule),
                    ],
                );
                (destination.clone(), rule.clone(), m.value as u64, packets)
            })
            .collect();
        found.sort();
        found
    }

    /// How many series of traffic outside a policy there are, of every device and direction
    /// (`egress_unexpected_bytes_total`): 0 when nothing was unexpected.
    pub fn unexpected_series(&self) -> usize {
        self.matching("egress_unexpected_bytes_total", &[]).count()
    }

    /// Whether the agent hooked `interface` for `lan` in `mode` (`tcx` or `clsact`), as
    /// `egress_monitor_interface_attached` says: Some(1.0) when attached.
    pub fn attached(&self, interface: &str, lan: &str, mode: &str) -> Option<f64> {
        self.value(
            "egress_monitor_interface_attached",
            &[("interface", interface), ("lan", lan), ("mode", mode)],
        )
    }

    /// Asserts that `device`'s traffic with `server` is, both ways, exactly what the WAN end of
    /// the uplink counted for that server.
    pub fn assert_matches_wan(&self, device: &str, server: std::net::IpAddr, wan: crate::WanCount) {
        let dest = server.to_string();
        assert!(
            wan.rx_packets > 0 && wan.tx_packets > 0,
            "{server}: traffic crossed the uplink both ways"
        );
        assert_eq!(
            self.destination(device, "egress", &dest),
            (wan.rx_bytes, wan.rx_packets),
            "{device} -> {server}: egress equals what arrived at the server"
        );
        assert_eq!(
            self.destination(device, "ingress", &dest),
            (wan.tx_bytes, wan.tx_packets),
            "{device} <- {server}: ingress equals what the server sent"
        );
    }

    /// Asserts that, per device and direction, the destinations (`unattributed` included) sum
    /// to the device's total, in bytes and in packets.
    pub fn assert_destinations_add_up(&self) {
        for total in self.matching("egress_device_bytes_total", &[]) {
            let device = &total.labels["device"];
            let direction = &total.labels["direction"];
            for (family, total_name) in [
                (
                    "egress_destination_bytes_total",
                    "egress_device_bytes_total",
                ),
                (
                    "egress_destination_packets_total",
                    "egress_device_packets_total",
                ),
            ] {
                let labels = [
                    ("device", device.as_str()),
                    ("direction", direction.as_str()),
                ];
                assert_eq!(
                    self.sum(family, &labels),
                    self.count(total_name, &labels),
                    "{family} of {device} {direction} does not add up to {total_name}"
                );
            }
        }
    }

    /// Asserts that `promtool check metrics` finds nothing to complain about in the page.
    pub fn assert_passes_promtool(&self) {
        let (ok, complaints) = promtool_check_metrics(&self.text);
        assert!(
            ok && complaints.trim().is_empty(),
            "promtool check metrics:\n{complaints}"
        );
    }
}

fn parse_sample(line: &str) -> Option<Sample> {
    let (name_and_labels, value) = line.rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    let (name, labels) = match name_and_labels.split_once('{') {
        None => (name_and_labels.to_owned(), BTreeMap::new()),
        Some((name, rest)) => (name.to_owned(), parse_labels(rest.strip_suffix('}')?)?),
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

fn parse_labels(mut s: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    while !s.is_empty() {
        let (key, rest) = s.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.to_owned(), value);
        s = rest[end + 1..].trim_start_matches(',');
    }
    Some(labels)
}

/// Runs `promtool check metrics` on an exposition; (success, what it printed).
pub fn promtool_check_metrics(text: &str) -> (bool, String) {
    use std::{
        io::Write,
        process::{Command, Stdio},
    };
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect(
            "promtool (Debian package prometheus) must be installed: cargo xtask setup does it",
        );
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let mut printed = String::from_utf8_lossy(&out.stdout).into_owned();
    printed.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), printed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_samples_with_escaped_labels() {
        let s = Scrape::parse(
            "# HELP x y\nx_total{a=\"1\",b=\"q\\\"uote\"} 12\nplain 3.5\nh_bucket{le=\"+Inf\"} 2\n",
        );
        assert_eq!(s.count("x_total", &[("a", "1")]), 12);
        assert_eq!(
            s.samples[0].labels.get("b").map(String::as_str),
            Some("q\"uote")
        );
        assert_eq!(s.value("plain", &[]), Some(3.5));
        assert_eq!(s.count("h_bucket", &[("le", "+Inf")]), 2);
    }

    #[test]
    fn device_helpers_pick_by_name_or_mac() {
        let s = Scrape::parse(concat!(
            "egress_device_bytes_total{device=\"cam\",mac=\"00:16:3e:00:00:01\",direction=\"egress\"} 300\n",
            "egress_device_packets_total{device=\"cam\",mac=\"00:16:3e:00:00:01\",direction=\"egress\"} 3\n",
            "egress_destination_bytes_total{device=\"cam\",mac=\"00:16:3e:00:00:01\",direction=\"egress\",destination=\"b.example\"} 200\n",
            "egress_destination_bytes_total{device=\"cam\",mac=\"00:16:3e:00:00:01\",direction=\"egress\",destination=\"a.example\"} 100\n",
            "egress_destination_bytes_total{device=\"cam\",mac=\"00:16:3e:00:00:01\",direction=\"egress\",destination=\"unattributed\"} 0\n",
            "egress_unexpected_bytes_total{device=\"cam\",direction=\"egress\",destination=\"b.example\",rule=\"not-allowed\"} 200\n",
            "egress_unexpected_packets_total{device=\"cam\",direction=\"egress\",destination=\"b.example\",rule=\"not-allowed\"} 2\n",
            "egress_monitor_interface_attached{interface=\"lan1\",lan=\"br-lan\",mode=\"tcx\"} 1\n",
        ));
        let mac = "00:16:3e:00:00:01";
        assert_eq!(s.device_total("cam", "egress"), (300, 3));
        assert_eq!(s.device_total(Mac(mac), "egress"), (300, 3));
        assert_eq!(s.device_total(Mac("00:16:3e:00:00:02"), "egress"), (0, 0));
        assert_eq!(s.destination(Mac(mac), "egress", "a.example"), (100, 0));
        let want = vec![("a.example".to_owned(), 100), ("b.example".to_owned(), 200)];
        assert_eq!(s.destinations(Mac(mac), "egress"), want);
        assert_eq!(s.destinations(&"cam".to_owned(), "egress"), want);
        assert_eq!(s.destinations("cam", "ingress"), []);
        assert_eq!(
            s.unexpected("cam", "egress"),
            [("b.example".into(), "not-allowed".into(), 200, 2)]
        );
        assert_eq!(s.unexpected("cam", "ingress"), []);
        assert_eq!(s.unexpected_series(), 1);
        assert_eq!(Scrape::parse("").unexpected_series(), 0);
        assert_eq!(s.attached("lan1", "br-lan", "tcx"), Some(1.0));
        assert_eq!(s.attached("lan1", "br-lan", "clsact"), None);
        assert_eq!(
            s.exported("egress_device_packets_total", &[("device", "cam")]),
            3
        );
    }

    #[test]
    #[should_panic(expected = "is not exported")]
    fn exported_panics_for_a_missing_series() {
        Scrape::parse("a_total 1\n").exported("b_total", &[]);
    }
}
