//! The configuration's tests, by theme; here the helpers and the example file they share.

use std::net::IpAddr;

use super::*;
use crate::enrich::LayoutSetting;

mod devices;
mod enrich;
mod errors;
mod keys;
mod lan;
mod names;
mod policy;
mod render;

const FILE: &str = "/etc/egress-monitor.toml";

fn load(src: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
    Config::from_toml_str(src, Some(Path::new(FILE)), overrides)
}

fn load_ok(src: &str, overrides: &Overrides) -> Config {
    load(src, overrides).unwrap_or_else(|e| panic!("{src:?}: {e}"))
}

fn load_err(src: &str, overrides: &Overrides) -> ConfigError {
    match load(src, overrides) {
        Ok(config) => panic!("{src:?} loaded as {config:?}"),
        Err(e) => e,
    }
}

fn lan(names: &[&str]) -> Option<Vec<String>> {
    Some(names.iter().map(|n| n.to_string()).collect())
}

fn mac(s: &str) -> MacAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const EXAMPLE: &str = r#"# every key
lan = ["br-lan", "wlan0"]
listen = "[::]:9100"
poll_interval = "2s 500ms"
local_prefixes = ["10.8.0.0/24", "fd00::/8"]
flow_map_entries = 1024
device_map_entries = 256
max_destinations_per_device = 512
attach = "tcx"
destination_label = "host"
sniff_ring_bytes = 4194304
state_dir = "/var/lib/egress-state"
pin_dir = "/sys/fs/bpf/em-test"

[names]
dns_grace = "5m"
tls_ttl = "30m"
max_names_per_device = 128
public_resolvers = ["1.1.1.1", "2606:4700:4700::1111", "1.1.1.1", "192.0.2.53"]

[[leases]]
format = "dnsmasq"
path = "/tmp/dhcp.leases"

[[leases]]
format = "odhcpd"
path = "/tmp/hosts/odhcpd"

[devices]
"00:16:3e:00:00:01" = "phone"
"00-16-3E-00-00-02" = { name = "laptop" }

[devices."00:16:3e:00:00:03"]
name = "laptop"
group = "family"

[policy]
max_unexpected_destinations = 5

[policy.default]
learn = "7d"

[policy.groups.family]
deny = ["ads.example", "198.51.100.0/24"]

[policy.devices.phone]
allow = ["Updates.Vendor.Example.", "192.0.2.7", "2001:db8::/32"]
learn = "1h"

[enrich]
country_db = "/usr/share/GeoIP/GeoLite2-Country.mmdb"
asn_db = "/usr/share/GeoIP/GeoLite2-ASN.mmdb"
asn_layout = "maxmind"
cache_entries = 4096
"#;

/// The default `names.public_resolvers`, as the documentation lists them.
const WELL_KNOWN_RESOLVERS: [&str; 26] = [
    "8.8.8.8",
    "8.8.4.4",
    "2001:4860:4860::8888",
    "2001:4860:4860::8844",
    "1.1.1.1",
    "1.0.0.1",
    "2606:4700:4700::1111",
    "2606:4700:4700::1001",
    "9.9.9.9",
    "149.112.112.112",
    "2620:fe::fe",
    "2620:fe::9",
    "208.67.222.222",
    "208.67.220.220",
    "2620:119:35::35",
    "2620:119:53::53",
    "94.140.14.14",
    "94.140.15.15",
    "2a10:50c0::ad1:ff",
    "2a10:50c0::ad2:ff",
    "185.228.168.9",
    "185.228.169.9",
    "76.76.2.0",
    "76.76.10.0",
    "194.242.2.2",
    "2a07:e340::2",
];
