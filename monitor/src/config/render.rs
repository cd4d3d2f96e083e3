//! [`Config::to_toml`]: the effective configuration written back as a file.

use std::fmt;
use std::time::Duration;

use super::Config;

impl Config {
    /// The effective configuration as a TOML file that [`Config::from_toml_str`] reads back to
    /// the same value: what `--check-config` prints, so the user sees what flags and defaults
    /// made of their file.
    pub fn to_toml(&self) -> String {
        fn quoted(s: &str) -> String {
            toml::Value::String(s.to_owned()).to_string()
        }
        fn list<T: fmt::Display>(items: &[T]) -> String {
            let items: Vec<String> = items.iter().map(|i| quoted(&i.to_string())).collect();
            format!("[{}]", items.join(", "))
        }
        fn duration(d: Duration) -> String {
            quoted(&humantime::format_duration(d).to_string())
        }

        let mut lines = vec![
            format!("lan = {}", list(&self.lan)),
            format!("listen = {}", quoted(&self.listen.to_string())),
            format!("poll_interval = {}", duration(self.poll_interval)),
            format!("local_prefixes = {}", list(&self.local_prefixes)),
            format!("flow_map_entries = {}", self.flow_map_entries),
            format!("device_map_entries = {}", self.device_map_entries),
            format!(
                "max_destinations_per_device = {}",
                self.max_destinations_per_device
            ),
            format!("max_series = {}", self.max_series),
            format!("attach = {}", quoted(self.attach.as_str())),
            format!(
                "destination_label = {}",
                quoted(self.destination_label.as_str())
            ),
            format!("sniff_ring_bytes = {}", self.sniff_ring_bytes),
            format!(
                "state_dir = {}",
                quoted(&self.state_dir.display().to_string())
            ),
            format!(
                "pin_dir = {}",
                quoted(
                    &self
                        .pin_dir
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                )
            ),
            format!(
                "state_write_interval = {}",
                duration(self.state_write_interval)
            ),
            String::new(),
            "[names]".to_owned(),
            format!("dns_grace = {}", duration(self.names.dns_grace)),
            format!("tls_ttl = {}", duration(self.names.tls_ttl)),
            format!("max_names_per_device = {}", self.names.max_names_per_device),
        ];
        // One address a line: the default list is long.
        if self.names.public_resolvers.is_empty() {
            lines.push("public_resolvers = []".to_owned());
        } else {
            lines.push("public_resolvers = [".to_owned());
            lines.extend(
                self.names
                    .public_resolvers
                    .iter()
                    .map(|addr| format!("    {},", quoted(&addr.to_string()))),
            );
            lines.push("]".to_owned());
        }
        for lease in &self.leases {
            lines.extend([
                String::new(),
                "[[leases]]".to_owned(),
                format!("format = {}", quoted(lease.format.as_str())),
                format!("path = {}", quoted(&lease.path.display().to_string())),
            ]);
        }
        lines.extend([String::new(), "[devices]".to_owned()]);
        lines.extend(self.devices.iter().map(|(mac, device)| {
            let group = match &device.group {
                Some(group) => format!(", group = {}", quoted(group)),
                None => String::new(),
            };
            format!("\"{mac}\" = {{ name = {}{group} }}", quoted(&device.name))
        }));
        self.policy.to_toml(&mut lines);
        self.enrich.to_toml(&mut lines);
        lines.join("\n") + "\n"
    }
}
