//! The agent's configuration: a TOML file, merged with command-line flags.
//!
//! Every key is optional, so a router can run the agent with `--lan br-lan` and no file at all;
//! flags win over the file, and a list flag replaces the file's list rather than adding to it, so
//! the command line always says exactly what runs. A mistake is reported on one line that names
//! the file, the line and column, and the key (or the flag), because the agent usually runs
//! under systemd or procd, where a journal line is all the user sees:
//!
//! ```text
//! /etc/egress-monitor.toml:4:17: poll_interval: invalid duration "fast": expected a number like "1s" or "500ms"
//! --flow-map-entries: 8 is out of range: allowed 16 to 16777216
//! ```
//!
//! The file, with every key:
//!
//! ```toml
//! lan = ["br-lan"]                 # LAN interfaces to monitor (TC hooks go on each)
//! listen = "0.0.0.0:10100"          # address of /metrics and /healthz
//! poll_interval = "1s"             # how often the maps are read; 100ms to 1h
//! local_prefixes = ["10.8.0.0/24", "fd00::/8"]   # also "local", besides the interfaces' own
//! flow_map_entries = 65536         # (device, destination) LRU map capacity, 16 to 16777216
//! device_map_entries = 4096        # per-device totals map capacity, 16 to 1048576
//! max_destinations_per_device = 1024   # destinations listed per device, 16 to 1048576
//! attach = "auto"                  # auto, tcx or clsact
//! destination_label = "domain"     # a named destination's label: domain, host or address
//! sniff_ring_bytes = 1048576       # DNS/TLS/DHCP ring buffer, a power of two, 64 KiB to 256 MiB
//! [names]                          # naming destinations from DNS answers and TLS ClientHellos
//! dns_grace = "1m"                 # a DNS name outlives its TTL by this much; 0s to 1d
//! tls_ttl = "1h"                   # how long a TLS server name labels its address; 1s to 7d
//! max_names_per_device = 4096      # (address -> name) bindings kept per device, 16 to 1048576
//! public_resolvers = ["1.1.1.1", "2606:4700:4700::1111"]   # DoH to these is resolver bypass
//! [[leases]]                       # DHCP lease files that name devices; repeat for several
//! format = "dnsmasq"               # dnsmasq, odhcpd, odhcpd-hosts, isc-dhcpd or kea-csv
//! path = "/tmp/dhcp.leases"        # absolute; need not exist yet
//! [devices]                        # names for MAC addresses
//! "00:16:3e:00:00:01" = "phone"
//! "00:16:3e:00:00:02" = { name = "laptop" }
//! "00:16:3e:00:00:03" = { name = "doorbell", group = "iot" }
//! [enrich]                         # country and AS of destinations, from MMDB files
//! country_db = "/usr/share/GeoIP/GeoLite2-Country.mmdb"   # absolute; need not exist yet
//! asn_db = "/usr/share/GeoIP/GeoLite2-ASN.mmdb"           # may be country_db's file
//! country_layout = "auto"          # auto (from the file's metadata), maxmind or ipinfo
//! asn_layout = "auto"              # the same, for asn_db
//! cache_entries = 65536            # addresses whose enrichment is cached, 16 to 16777216
//! ```
//!
//! This module holds [`Config`] and how it is loaded and merged with the flags; its parts are
//! the defaults and ranges (`defaults`), the typed values (`model`), the file as written and
//! its serde glue (`file`), the checks shared by file and flags (`validate`), [`ConfigError`]
//! (`error`), [`Config::to_toml`] (`render`), the `[policy]` table (`policy`) and the
//! `[enrich]` table (`enrich`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use crate::types::MacAddr;

mod defaults;
mod enrich;
mod error;
mod file;
mod model;
mod policy;
mod render;
mod validate;

#[cfg(test)]
mod tests;

pub use defaults::{
    DEFAULT_DEVICE_MAP_ENTRIES, DEFAULT_DNS_GRACE, DEFAULT_ENRICH_CACHE_ENTRIES,
    DEFAULT_FLOW_MAP_ENTRIES, DEFAULT_LISTEN, DEFAULT_MAX_DESTINATIONS_PER_DEVICE,
    DEFAULT_MAX_NAMES_PER_DEVICE, DEFAULT_POLL_INTERVAL, DEFAULT_PUBLIC_RESOLVERS,
    DEFAULT_SNIFF_RING_BYTES, DEFAULT_STATE_DIR, DEFAULT_STATE_WRITE_INTERVAL, DEFAULT_TLS_TTL,
    DEVICE_MAP_ENTRIES_RANGE, DEVICE_NAME_MAX_CHARS, DNS_GRACE_RANGE, ENRICH_CACHE_ENTRIES_RANGE,
    FLOW_MAP_ENTRIES_RANGE, IFACE_NAME_MAX_BYTES, MAX_DESTINATIONS_PER_DEVICE_RANGE,
    MAX_NAMES_PER_DEVICE_RANGE, POLL_INTERVAL_RANGE, SNIFF_RING_BYTES_RANGE,
    STATE_WRITE_INTERVAL_RANGE, TLS_TTL_RANGE,
};
pub use enrich::EnrichConfig;
pub use error::ConfigError;
pub use model::{
    AttachPolicy, DeviceConfig, LabelMode, LeaseFormat, LeaseSource, NamesConfig, Overrides,
};
pub use policy::{
    Applies, DEFAULT_MAX_UNEXPECTED_DESTINATIONS, LEARN_RANGE, MAX_UNEXPECTED_DESTINATIONS_RANGE,
    PolicyConfig, PolicySection,
};
pub(crate) use validate::{
    check_pin_dir, check_state_dir, parse_duration, parse_listen, parse_prefix,
};

use error::locate_top_level_value;
use file::{IfaceName, Prefix, parse_file};
use validate::{check_entries, check_iface_name, check_poll_interval, dedup};

/// The effective configuration: file and flags merged, defaults filled in, every value checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// LAN interfaces to hook, in the order given, without duplicates; never empty.
    pub lan: Vec<String>,
    /// Address of the HTTP server for `/metrics` and `/healthz`.
    pub listen: SocketAddr,
    /// How often the kernel maps are read.
    pub poll_interval: Duration,
    /// Prefixes that count as local (never a destination) besides the LAN interfaces' own
    /// addresses, e.g. a VPN's. Host bits are cleared: `10.8.0.1/24` becomes `10.8.0.0/24`.
    pub local_prefixes: Vec<IpNet>,
    /// Capacity of the kernel's LRU (device, destination) map; what it evicts still shows up
    /// in the device totals.
    pub flow_map_entries: u32,
    /// Capacity of the kernel's per-device totals map.
    pub device_map_entries: u32,
    /// Destinations the agent keeps per device and direction before it retires evicted ones
    /// into `unattributed`: bounds memory and series when a device contacts countless hosts.
    pub max_destinations_per_device: u32,
    /// Destination series across all devices and directions; beyond it, new destinations'
    /// bytes are `unattributed` (exact sums kept).
    pub max_series: u32,
    /// How the programs are attached to the LAN interfaces.
    pub attach: AttachPolicy,
    /// How a destination whose name is known is labelled.
    pub destination_label: LabelMode,
    /// Size of the kernel ring buffer that carries DNS answers, TLS ClientHellos and DHCP
    /// requests to the agent: a power of two within [`SNIFF_RING_BYTES_RANGE`]. Too small, and
    /// a burst of lookups drops names.
    pub sniff_ring_bytes: u32,
    /// How destinations get their names: the `[names]` table.
    pub names: NamesConfig,
    /// DHCP lease files that name devices and their addresses, in the order given; no two with
    /// the same path.
    pub leases: Vec<LeaseSource>,
    /// Names the user gave to devices, by MAC address; never a multicast address.
    pub devices: BTreeMap<MacAddr, DeviceConfig>,
    /// Where the learned baselines (`state.toml`) and the control socket live.
    pub state_dir: PathBuf,
    /// At most one write of the state file per this long, besides shutdown and commands.
    pub state_write_interval: Duration,
    /// Where the counter maps and program links are pinned (bpffs), so the programs count on
    /// while no agent runs and the next one adopts them; None: no pins.
    pub pin_dir: Option<PathBuf>,
    /// What devices may talk to: the `[policy]` table.
    pub policy: PolicyConfig,
    /// Countries and autonomous systems of destinations: the `[enrich]` table.
    pub enrich: EnrichConfig,
}

/// The largest configuration file read: a real one is a few KiB.
pub const CONFIG_FILE_MAX_BYTES: u64 = 1024 * 1024;

/// The configuration file's text: a regular file (a FIFO or a device is refused without
/// waiting on it) of at most [`CONFIG_FILE_MAX_BYTES`].
fn read_file(path: &Path) -> Result<String, ConfigError> {
    crate::regular_file::read_text(path, CONFIG_FILE_MAX_BYTES).map_err(|e| ConfigError::Read {
        path: path.to_path_buf(),
        source: e.into(),
    })
}

impl Config {
    /// Reads the file at `path`, if any, and merges `overrides` into it. Without a file, the
    /// flags and defaults make the whole configuration.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            return Config::from_toml_str("", None, overrides);
        };
        let src = read_file(path)?;
        Config::from_toml_str(&src, Some(path), overrides)
    }

    /// Parses `src` as the configuration file and merges `overrides` into it.
    /// `path_for_messages` only names the file in errors.
    pub fn from_toml_str(
        src: &str,
        path_for_messages: Option<&Path>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        Self::parse_with(src, path_for_messages, overrides, true)
    }

    /// [`Config::load`] for commands that do not touch the network (`baseline`): no LAN
    /// interface is needed.
    pub fn load_without_lan(
        path: Option<&Path>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let src = match path {
            None => String::new(),
            Some(path) => read_file(path)?,
        };
        Self::parse_with(&src, path, overrides, false)
    }

    fn parse_with(
        src: &str,
        path_for_messages: Option<&Path>,
        overrides: &Overrides,
        require_lan: bool,
    ) -> Result<Config, ConfigError> {
        let file = parse_file(src)
            .map_err(|e| ConfigError::in_file(src, path_for_messages, e.span, e.key, e.message))?;
        let file_has_lan = file.lan.is_some();

        let lan = match &overrides.lan {
            Some(names) => {
                for name in names {
                    check_iface_name(name).map_err(|m| ConfigError::flag("--lan", m))?;
                }
                names.clone()
            }
            None => file
                .lan
                .unwrap_or_default()
                .into_iter()
                .map(|IfaceName(name)| name)
                .collect(),
        };
        let lan = dedup(lan);
        if lan.is_empty() && require_lan {
            if overrides.lan.is_none() && file_has_lan {
                // `lan = []`: point at it, so the user sees which file emptied the list.
                return Err(ConfigError::in_file(
                    src,
                    path_for_messages,
                    locate_top_level_value(src, "lan"),
                    "lan".to_owned(),
                    "the list is empty; at least one LAN interface is required".to_owned(),
                ));
            }
            return Err(ConfigError::NoLanInterface);
        }

        let poll_interval = match overrides.poll_interval {
            Some(interval) => check_poll_interval(interval)
                .map_err(|m| ConfigError::flag("--poll-interval", m))?,
            None => file.poll_interval.unwrap_or(DEFAULT_POLL_INTERVAL),
        };
        let flow_map_entries = match overrides.flow_map_entries {
            Some(n) => check_entries(i64::from(n), &FLOW_MAP_ENTRIES_RANGE)
                .map_err(|m| ConfigError::flag("--flow-map-entries", m))?,
            None => file.flow_map_entries.unwrap_or(DEFAULT_FLOW_MAP_ENTRIES),
        };
        let local_prefixes = match &overrides.local_prefixes {
            Some(prefixes) => prefixes.clone(),
            None => file
                .local_prefixes
                .unwrap_or_default()
                .into_iter()
                .map(|Prefix(net)| net)
                .collect(),
        };

        let state_dir = match &overrides.state_dir {
            Some(dir) => check_state_dir(&dir.to_string_lossy())
                .map_err(|m| ConfigError::flag("--state-dir", m))?,
            None => file
                .state_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
        };
        let policy = policy::resolve(src, file.policy, &file.devices)
            .map_err(|e| ConfigError::in_file(src, path_for_messages, e.span, e.key, e.message))?;
        let enrich = enrich::resolve(src, file.enrich)
            .map_err(|e| ConfigError::in_file(src, path_for_messages, e.span, e.key, e.message))?;

        Ok(Config {
            lan,
            listen: overrides.listen.or(file.listen).unwrap_or(DEFAULT_LISTEN),
            poll_interval,
            local_prefixes: local_prefixes.iter().map(IpNet::trunc).collect(),
            flow_map_entries,
            device_map_entries: file
                .device_map_entries
                .unwrap_or(DEFAULT_DEVICE_MAP_ENTRIES),
            max_destinations_per_device: file
                .max_destinations_per_device
                .unwrap_or(DEFAULT_MAX_DESTINATIONS_PER_DEVICE),
            max_series: file.max_series.unwrap_or(defaults::DEFAULT_MAX_SERIES),
            attach: overrides.attach.or(file.attach).unwrap_or_default(),
            destination_label: overrides
                .destination_label
                .or(file.destination_label)
                .unwrap_or_default(),
            sniff_ring_bytes: file.sniff_ring_bytes.unwrap_or(DEFAULT_SNIFF_RING_BYTES),
            names: file.names.into_config(),
            leases: file.leases,
            devices: file.devices,
            state_dir,
            pin_dir: match &overrides.pin_dir {
                Some(dir) => check_pin_dir(dir).map_err(|m| ConfigError::flag("--pin-dir", m))?,
                None => file
                    .pin_dir
                    .unwrap_or_else(|| Some(PathBuf::from(defaults::DEFAULT_PIN_DIR))),
            },
            state_write_interval: file
                .state_write_interval
                .unwrap_or(defaults::DEFAULT_STATE_WRITE_INTERVAL),
            policy,
            enrich,
        })
    }

    /// The name the user gave the device with this MAC address, if any.
    pub fn device_name(&self, mac: &MacAddr) -> Option<&str> {
        self.devices.get(mac).map(|device| device.name.as_str())
    }
}
