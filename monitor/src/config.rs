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
//! listen = "0.0.0.0:9750"          # address of /metrics and /healthz
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
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::types::MacAddr;

mod policy;
pub use policy::{
    Applies, DEFAULT_MAX_UNEXPECTED_DESTINATIONS, LEARN_RANGE, MAX_UNEXPECTED_DESTINATIONS_RANGE,
    PolicyConfig, PolicySection,
};

/// Where `/metrics` and `/healthz` are served unless configured: every address, so Prometheus
/// on another host can scrape the router.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 9750);
/// How often the agent reads the kernel maps unless configured.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Allowed `poll_interval`: faster wastes CPU on a small router; slower than an hour risks
/// missing LRU entries evicted between two reads.
pub const POLL_INTERVAL_RANGE: RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(3600);
/// Default capacity of the (device, destination) map; the same as the eBPF object's own.
pub const DEFAULT_FLOW_MAP_ENTRIES: u32 = 65_536;
/// Allowed `flow_map_entries`: at 16M entries the map already takes about 1 GiB per CPU.
pub const FLOW_MAP_ENTRIES_RANGE: RangeInclusive<u32> = 16..=16_777_216;
/// Default capacity of the per-device totals map; the same as the eBPF object's own.
pub const DEFAULT_DEVICE_MAP_ENTRIES: u32 = 4_096;
/// Allowed `device_map_entries`.
pub const DEVICE_MAP_ENTRIES_RANGE: RangeInclusive<u32> = 16..=1_048_576;
/// Default `max_destinations_per_device`.
pub const DEFAULT_MAX_DESTINATIONS_PER_DEVICE: u32 = 1_024;
/// Allowed `max_destinations_per_device`.
pub const MAX_DESTINATIONS_PER_DEVICE_RANGE: RangeInclusive<u32> = 16..=1_048_576;
/// Default `sniff_ring_bytes`: 1 MiB, room for about a thousand 1 KiB records between two
/// reads by the agent.
pub const DEFAULT_SNIFF_RING_BYTES: u32 = 1 << 20;
/// Allowed `sniff_ring_bytes`; the kernel also requires a power of two (a multiple of the page
/// size, which every power of two from 64 KiB is).
pub const SNIFF_RING_BYTES_RANGE: RangeInclusive<u32> = 65_536..=268_435_456;
/// Default `names.dns_grace`.
pub const DEFAULT_DNS_GRACE: Duration = Duration::from_secs(60);
/// Allowed `names.dns_grace`: past a day, a stale name is more likely wrong than useful.
pub const DNS_GRACE_RANGE: RangeInclusive<Duration> = Duration::ZERO..=Duration::from_secs(86_400);
/// Default `names.tls_ttl`.
pub const DEFAULT_TLS_TTL: Duration = Duration::from_secs(3_600);
/// Allowed `names.tls_ttl`.
pub const TLS_TTL_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(7 * 86_400);
/// Default `names.max_names_per_device`.
pub const DEFAULT_MAX_NAMES_PER_DEVICE: u32 = 4_096;
/// Allowed `names.max_names_per_device`.
pub const MAX_NAMES_PER_DEVICE_RANGE: RangeInclusive<u32> = 16..=1_048_576;
/// Default `names.public_resolvers`: the well-known public DNS resolvers that also answer DNS
/// over HTTPS, so a device using them bypasses the router's resolver (and its names).
pub const DEFAULT_PUBLIC_RESOLVERS: &[IpAddr] = &[
    // Google
    v4(8, 8, 8, 8),
    v4(8, 8, 4, 4),
    v6([0x2001, 0x4860, 0x4860, 0, 0, 0, 0, 0x8888]),
    v6([0x2001, 0x4860, 0x4860, 0, 0, 0, 0, 0x8844]),
    // Cloudflare
    v4(1, 1, 1, 1),
    v4(1, 0, 0, 1),
    v6([0x2606, 0x4700, 0x4700, 0, 0, 0, 0, 0x1111]),
    v6([0x2606, 0x4700, 0x4700, 0, 0, 0, 0, 0x1001]),
    // Quad9
    v4(9, 9, 9, 9),
    v4(149, 112, 112, 112),
    v6([0x2620, 0xfe, 0, 0, 0, 0, 0, 0xfe]),
    v6([0x2620, 0xfe, 0, 0, 0, 0, 0, 0x9]),
    // OpenDNS
    v4(208, 67, 222, 222),
    v4(208, 67, 220, 220),
    v6([0x2620, 0x119, 0x35, 0, 0, 0, 0, 0x35]),
    v6([0x2620, 0x119, 0x53, 0, 0, 0, 0, 0x53]),
    // AdGuard
    v4(94, 140, 14, 14),
    v4(94, 140, 15, 15),
    v6([0x2a10, 0x50c0, 0, 0, 0, 0, 0xad1, 0xff]),
    v6([0x2a10, 0x50c0, 0, 0, 0, 0, 0xad2, 0xff]),
    // CleanBrowsing
    v4(185, 228, 168, 9),
    v4(185, 228, 169, 9),
    // Control D
    v4(76, 76, 2, 0),
    v4(76, 76, 10, 0),
    // Mullvad
    v4(194, 242, 2, 2),
    v6([0x2a07, 0xe340, 0, 0, 0, 0, 0, 0x2]),
];
/// Longest device name or group, in characters: they become Prometheus label values, which
/// should stay short.
pub const DEVICE_NAME_MAX_CHARS: usize = 64;
/// Longest interface name the kernel accepts (`IFNAMSIZ` less the NUL).
pub const IFACE_NAME_MAX_BYTES: usize = 15;

/// `v4` and `v6` let [`DEFAULT_PUBLIC_RESOLVERS`] be a `const` that reads like the addresses.
const fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

const fn v6(s: [u16; 8]) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(
        s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7],
    ))
}

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
    /// What devices may talk to: the `[policy]` table.
    pub policy: PolicyConfig,
}

/// Where the agent keeps its state unless told otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/egress-monitor";

/// How a destination is labelled once its name is known (from a DNS answer or a TLS
/// ClientHello); a destination without a name is always labelled by its address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LabelMode {
    /// The registrable domain (`example.co.uk` for `img.cdn.example.co.uk`): one series per
    /// service rather than one per CDN host, which keeps cardinality low.
    #[default]
    Domain,
    /// The full host name, as resolved or sent in the ClientHello.
    Host,
    /// The address alone: names are not used for labels.
    Address,
}

impl LabelMode {
    /// The value as written in the file and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Domain => "domain",
            Self::Host => "host",
            Self::Address => "address",
        }
    }
}

/// The `[names]` table: how long names learnt from the traffic stay bound to addresses, and
/// which resolvers count as a way around the router's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamesConfig {
    /// How long past a DNS record's TTL its name still labels the address: devices keep using
    /// an address after the TTL has run out, and a fresh lookup may never come.
    pub dns_grace: Duration,
    /// How long a name read from a TLS ClientHello (SNI) labels the server's address for the
    /// device that sent it.
    pub tls_ttl: Duration,
    /// Bound on the (address -> name) bindings remembered per device; the oldest go first.
    pub max_names_per_device: u32,
    /// Public DNS resolvers, without duplicates: HTTPS (port 443) to one of them is DNS over
    /// HTTPS, reported as resolver bypass. Empty means none.
    pub public_resolvers: Vec<IpAddr>,
}

impl Default for NamesConfig {
    fn default() -> Self {
        NamesConfig {
            dns_grace: DEFAULT_DNS_GRACE,
            tls_ttl: DEFAULT_TLS_TTL,
            max_names_per_device: DEFAULT_MAX_NAMES_PER_DEVICE,
            public_resolvers: DEFAULT_PUBLIC_RESOLVERS.to_vec(),
        }
    }
}

/// One `[[leases]]` entry: a DHCP server's lease file, read for device names and addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSource {
    /// Which server wrote it, hence how to parse it.
    pub format: LeaseFormat,
    /// Absolute path. The file need not exist at start: the agent watches for it, since the
    /// DHCP server may start later or write it on its first lease.
    pub path: PathBuf,
}

/// The lease file formats the agent reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LeaseFormat {
    /// dnsmasq's lease file (`/tmp/dhcp.leases` on OpenWrt).
    Dnsmasq,
    /// odhcpd's lease file (its `leasefile` option; `/tmp/hosts/odhcpd` on OpenWrt).
    Odhcpd,
    /// A hosts-format file (`ADDRESS NAME` lines), such as odhcpd writes for dnsmasq.
    OdhcpdHosts,
    /// ISC dhcpd's `dhcpd.leases`.
    IscDhcpd,
    /// Kea's memfile lease database (`kea-leases4.csv`, `kea-leases6.csv`).
    KeaCsv,
}

impl LeaseFormat {
    /// Every format, in the order the documentation lists them.
    pub const ALL: [LeaseFormat; 5] = [
        Self::Dnsmasq,
        Self::Odhcpd,
        Self::OdhcpdHosts,
        Self::IscDhcpd,
        Self::KeaCsv,
    ];

    /// The value as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dnsmasq => "dnsmasq",
            Self::Odhcpd => "odhcpd",
            Self::OdhcpdHosts => "odhcpd-hosts",
            Self::IscDhcpd => "isc-dhcpd",
            Self::KeaCsv => "kea-csv",
        }
    }
}

impl fmt::Display for LeaseFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the TC programs are attached: `auto` takes TCX where the kernel has it (6.6 and later)
/// and a clsact qdisc otherwise; the others insist on one, e.g. to share an interface with
/// tools that only know clsact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AttachPolicy {
    #[default]
    Auto,
    Tcx,
    Clsact,
}

impl AttachPolicy {
    /// The value as written in the file and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Tcx => "tcx",
            Self::Clsact => "clsact",
        }
    }
}

/// What the configuration says about one device. A table rather than a bare name so that more
/// per-device settings can be added without breaking existing files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConfig {
    /// The `device` label value: 1 to 64 characters, no control characters. Two MAC addresses
    /// may share a name (a laptop's Wi-Fi and Ethernet).
    pub name: String,
    /// A group the device belongs to (`"iot"`, `"kids"`), so that several devices can be
    /// selected together; the same rules as the name.
    pub group: Option<String>,
}

/// Values given on the command line; each one, when set, wins over the file.
///
/// Separate from the clap `Cli` so that tests and other front ends can build one directly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--lan`: replaces the file's `lan` list.
    pub lan: Option<Vec<String>>,
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--poll-interval`.
    pub poll_interval: Option<Duration>,
    /// `--local-prefix`: replaces the file's `local_prefixes` list.
    pub local_prefixes: Option<Vec<IpNet>>,
    /// `--flow-map-entries`.
    pub flow_map_entries: Option<u32>,
    /// `--attach`.
    pub attach: Option<AttachPolicy>,
    /// `--destination-label`.
    pub destination_label: Option<LabelMode>,
    /// `--state-dir`.
    pub state_dir: Option<PathBuf>,
}

/// Why the configuration could not be loaded. Each variant displays as one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read. The reason is part of the message too, so that printing
    /// the error alone (`{e}`) tells the whole story.
    #[error("cannot read configuration file {}: {source}", path.display())]
    Read {
        /// The file given with `--config`.
        path: PathBuf,
        /// Why it could not be read: missing, not readable, not UTF-8.
        source: std::io::Error,
    },
    /// A value in the file or on the command line is wrong.
    #[error(fmt = fmt_invalid)]
    Invalid {
        /// The file, or `None` for a flag (or a string given without a file name).
        path: Option<PathBuf>,
        /// 1-based line in the file.
        line: Option<usize>,
        /// 1-based column in the file, in characters.
        column: Option<usize>,
        /// The TOML key path (`devices."00:16:3e:00:00:01".name`, `lan[1]`), or the flag
        /// (`--poll-interval`); empty for a TOML syntax error.
        key: String,
        /// What is wrong, including the offending value.
        message: String,
    },
    /// Neither the file nor the flags name a LAN interface, so there is nothing to monitor.
    #[error(
        "no LAN interface to monitor: set lan = [\"br-lan\"] in the configuration file \
         or pass --lan <IFACE>"
    )]
    NoLanInterface,
}

/// `FILE:LINE:COLUMN: KEY: MESSAGE`, the form compilers use, so editors can jump to it; parts
/// that are unknown are left out.
fn fmt_invalid(
    path: &Option<PathBuf>,
    line: &Option<usize>,
    column: &Option<usize>,
    key: &str,
    message: &str,
    f: &mut fmt::Formatter<'_>,
) -> fmt::Result {
    match (path, line) {
        (Some(path), Some(line)) => {
            write!(f, "{}:{line}", path.display())?;
            if let Some(column) = column {
                write!(f, ":{column}")?;
            }
            f.write_str(": ")?;
        }
        (Some(path), None) => write!(f, "{}: ", path.display())?,
        (None, Some(line)) => {
            write!(f, "line {line}")?;
            if let Some(column) = column {
                write!(f, ", column {column}")?;
            }
            f.write_str(": ")?;
        }
        (None, None) => {}
    }
    if !key.is_empty() {
        write!(f, "{key}: ")?;
    }
    // One line, whatever a dependency's message looks like.
    f.write_str(&message.replace('\n', " "))
}

impl ConfigError {
    fn flag(flag: &str, message: String) -> Self {
        ConfigError::Invalid {
            path: None,
            line: None,
            column: None,
            key: flag.to_owned(),
            message,
        }
    }

    fn in_file(
        src: &str,
        path: Option<&Path>,
        span: Option<Range<usize>>,
        key: String,
        message: String,
    ) -> Self {
        let (line, column) = match span {
            Some(span) => {
                let (line, column) = line_column(src, span.start);
                (Some(line), Some(column))
            }
            None => (None, None),
        };
        ConfigError::Invalid {
            path: path.map(Path::to_path_buf),
            line,
            column,
            key,
            message,
        }
    }
}

impl Config {
    /// Reads the file at `path`, if any, and merges `overrides` into it. Without a file, the
    /// flags and defaults make the whole configuration.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            return Config::from_toml_str("", None, overrides);
        };
        let src = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
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
            Some(path) => std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?,
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
            policy,
        })
    }

    /// The name the user gave the device with this MAC address, if any.
    pub fn device_name(&self, mac: &MacAddr) -> Option<&str> {
        self.devices.get(mac).map(|device| device.name.as_str())
    }

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
        lines.join("\n") + "\n"
    }
}

/// The file as written, every key optional. Values are checked while they are deserialized, so
/// toml reports each error with the value's own span and `serde_path_to_error` with its key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default, deserialize_with = "de_lan")]
    lan: Option<Vec<IfaceName>>,
    #[serde(default, deserialize_with = "de_listen")]
    listen: Option<SocketAddr>,
    #[serde(default, deserialize_with = "de_poll_interval")]
    poll_interval: Option<Duration>,
    #[serde(default, deserialize_with = "de_local_prefixes")]
    local_prefixes: Option<Vec<Prefix>>,
    #[serde(default, deserialize_with = "de_flow_map_entries")]
    flow_map_entries: Option<u32>,
    #[serde(default, deserialize_with = "de_device_map_entries")]
    device_map_entries: Option<u32>,
    #[serde(default, deserialize_with = "de_max_destinations_per_device")]
    max_destinations_per_device: Option<u32>,
    #[serde(default)]
    attach: Option<AttachPolicy>,
    #[serde(default)]
    destination_label: Option<LabelMode>,
    #[serde(default, deserialize_with = "de_sniff_ring_bytes")]
    sniff_ring_bytes: Option<u32>,
    #[serde(default)]
    names: FileNames,
    #[serde(default, deserialize_with = "de_leases")]
    leases: Vec<LeaseSource>,
    #[serde(default, deserialize_with = "de_devices")]
    devices: BTreeMap<MacAddr, DeviceConfig>,
    #[serde(default, deserialize_with = "de_state_dir")]
    state_dir: Option<PathBuf>,
    #[serde(default)]
    policy: policy::FilePolicy,
}

/// The `[names]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table of naming settings, like [names]"
)]
struct FileNames {
    #[serde(default, deserialize_with = "de_dns_grace")]
    dns_grace: Option<Duration>,
    #[serde(default, deserialize_with = "de_tls_ttl")]
    tls_ttl: Option<Duration>,
    #[serde(default, deserialize_with = "de_max_names_per_device")]
    max_names_per_device: Option<u32>,
    #[serde(default, deserialize_with = "de_public_resolvers")]
    public_resolvers: Option<Vec<Resolver>>,
}

impl FileNames {
    fn into_config(self) -> NamesConfig {
        let defaults = NamesConfig::default();
        NamesConfig {
            dns_grace: self.dns_grace.unwrap_or(defaults.dns_grace),
            tls_ttl: self.tls_ttl.unwrap_or(defaults.tls_ttl),
            max_names_per_device: self
                .max_names_per_device
                .unwrap_or(defaults.max_names_per_device),
            public_resolvers: match self.public_resolvers {
                Some(list) => dedup(list.into_iter().map(|Resolver(addr)| addr).collect()),
                None => defaults.public_resolvers,
            },
        }
    }
}

/// An error in the file, before it is placed on a line.
struct FileError {
    key: String,
    message: String,
    span: Option<Range<usize>>,
}

fn parse_file(src: &str) -> Result<FileConfig, FileError> {
    let deserializer = toml::Deserializer::parse(src).map_err(|e| FileError {
        key: String::new(),
        message: format!("invalid TOML: {}", e.message()),
        span: e.span(),
    })?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = key_path(e.path());
        let inner = e.into_inner();
        FileError {
            key,
            message: toml_words(inner.message()),
            span: inner.span(),
        }
    })
}

/// Writes a key path the way TOML spells it: `devices."00:16:3e:00:00:01".name`, `lan[1]`.
fn key_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;

    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                let bare = !key.is_empty()
                    && key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if bare {
                    out.push_str(key);
                } else {
                    out.push_str(&toml::Value::String(key.clone()).to_string());
                }
            }
            Segment::Unknown => {}
        }
    }
    out
}

/// serde speaks of fields; a TOML user edits keys.
fn toml_words(message: &str) -> String {
    for (serde, toml) in [
        ("unknown field", "unknown key"),
        ("missing field", "missing key"),
    ] {
        if let Some(rest) = message.strip_prefix(serde) {
            return format!("{toml}{rest}");
        }
    }
    message.to_owned()
}

/// 1-based line and column (in characters) of a byte offset, as editors count them.
fn line_column(src: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(src.len());
    while !src.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Finds where a top-level key's value is written, for errors found after deserialization.
fn locate_top_level_value(src: &str, key: &str) -> Option<Range<usize>> {
    let doc = toml::de::DeTable::parse(src).ok()?;
    doc.get_ref()
        .iter()
        .find(|(k, _)| k.get_ref().as_ref() == key)
        .map(|(_, value)| value.span())
}

/// Drops repeated items, keeping the first of each.
fn dedup<T: PartialEq>(items: Vec<T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(items.len());
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

// Parsers and checks shared by the file and the flags, so both say the same thing.

const EXPECT_DURATION: &str = "a duration like \"1s\" or \"500ms\"";
const EXPECT_LISTEN: &str = "an address like \"0.0.0.0:9750\" or \"[::]:9750\"";
const EXPECT_PREFIX: &str = "a prefix like \"10.8.0.0/24\" or \"fd00::/8\"";
const EXPECT_IFACE: &str = "an interface name like \"br-lan\"";
const EXPECT_DEVICE: &str = "a device name, or a table like { name = \"phone\", group = \"iot\" }";
const EXPECT_RESOLVER: &str = "an IP address like \"1.1.1.1\" or \"2606:4700:4700::1111\"";
const EXPECT_LEASE_PATH: &str = "an absolute path like \"/tmp/dhcp.leases\"";
const EXPECT_LEASE: &str =
    "a lease file table like { format = \"dnsmasq\", path = \"/tmp/dhcp.leases\" }";

/// Parses a humantime duration (`1s`, `500ms`, `1m 30s`).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    use humantime::DurationError as E;

    humantime::parse_duration(s).map_err(|e| {
        let why = match e {
            E::UnknownUnit { unit, value, .. } if unit.is_empty() => {
                format!("a unit is needed, like \"{value}s\" or \"{value}ms\"")
            }
            E::UnknownUnit { unit, .. } => {
                format!("unknown unit {unit:?}; use ms, s, m or h")
            }
            E::NumberOverflow => "the number is too large or too precise".to_owned(),
            _ => "expected a number like \"1s\" or \"500ms\"".to_owned(),
        };
        format!("invalid duration {s:?}: {why}")
    })
}

/// Parses `IP:PORT`; IPv6 addresses go in brackets.
pub(crate) fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| {
        format!(
            "invalid listen address {s:?}: expected IP:PORT like \"0.0.0.0:9750\" or \"[::]:9750\""
        )
    })
}

/// Parses `ADDRESS/LENGTH`; a bare address is a single host (/32 or /128).
pub(crate) fn parse_prefix(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| {
            format!(
                "invalid CIDR prefix {s:?}: expected ADDRESS/LENGTH like \"10.8.0.0/24\" or \"fd00::/8\""
            )
        })
}

/// Parses one `names.public_resolvers` element: a single address, since a resolver is one
/// host; a prefix or a port is refused rather than silently reinterpreted.
fn parse_resolver(s: &str) -> Result<IpAddr, String> {
    if let Ok(addr) = s.parse::<IpAddr>() {
        // `::ffff:1.1.1.1` is how some tools write 1.1.1.1; the traffic carries the latter.
        return Ok(addr.to_canonical());
    }
    let why = if s.parse::<IpNet>().is_ok() {
        "a prefix, not an address; list each resolver's address, like \"1.1.1.1\""
    } else if s.parse::<SocketAddr>().is_ok() {
        "has a port; give the address alone, like \"1.1.1.1\" or \"2606:4700:4700::1111\""
    } else {
        "expected an IP address like \"1.1.1.1\" or \"2606:4700:4700::1111\""
    };
    Err(format!("invalid resolver address {s:?}: {why}"))
}

/// A lease file must be absolute: the agent's working directory is not something a service
/// manager promises.
fn check_lease_path(s: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(s);
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(format!(
            "invalid lease file path {s:?}: must be absolute, like \"/tmp/dhcp.leases\""
        ))
    }
}

const EXPECT_STATE_DIR: &str = "an absolute path like \"/var/lib/egress-monitor\"";

pub(crate) fn check_state_dir(s: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(s);
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(format!(
            "invalid state directory {s:?}: must be absolute, like \"/var/lib/egress-monitor\""
        ))
    }
}

fn de_state_dir<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    de_str(d, EXPECT_STATE_DIR, check_state_dir).map(Some)
}

fn check_poll_interval(interval: Duration) -> Result<Duration, String> {
    check_duration(interval, &POLL_INTERVAL_RANGE)
}

fn check_duration(d: Duration, range: &RangeInclusive<Duration>) -> Result<Duration, String> {
    if range.contains(&d) {
        Ok(d)
    } else {
        Err(format!(
            "{} is out of range: allowed {} to {}",
            humantime::format_duration(d),
            humantime::format_duration(*range.start()),
            humantime::format_duration(*range.end()),
        ))
    }
}

/// The kernel only makes ring buffers whose size is a power of two; suggesting the two nearest
/// saves the user the arithmetic.
fn check_sniff_ring_bytes(n: i64) -> Result<u32, String> {
    let range = &SNIFF_RING_BYTES_RANGE;
    let allowed = format!("powers of two from {} to {}", range.start(), range.end());
    let n = u32::try_from(n)
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| format!("{n} is out of range: allowed {allowed}"))?;
    if n.is_power_of_two() {
        Ok(n)
    } else {
        let below = 1 << n.ilog2();
        Err(format!(
            "{n} is not a power of two: use {below} or {} (allowed {allowed})",
            below * 2
        ))
    }
}

fn check_entries(n: i64, range: &RangeInclusive<u32>) -> Result<u32, String> {
    u32::try_from(n)
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| {
            format!(
                "{n} is out of range: allowed {} to {}",
                range.start(),
                range.end()
            )
        })
}

/// Linux's rules (`dev_valid_name`), checked here so a typo fails at start-up with its key
/// rather than as an attach error.
fn check_iface_name(name: &str) -> Result<(), String> {
    let why = if name.is_empty() {
        "must not be empty".to_owned()
    } else if name.len() > IFACE_NAME_MAX_BYTES {
        format!("longer than {IFACE_NAME_MAX_BYTES} bytes")
    } else if name == "." || name == ".." {
        "not a valid interface name".to_owned()
    } else if name
        .chars()
        .any(|c| c == '/' || c == '\0' || c.is_whitespace())
    {
        "must not contain '/', whitespace or NUL".to_owned()
    } else {
        return Ok(());
    };
    Err(format!("invalid interface name {name:?}: {why}"))
}

fn check_device_name(name: &str) -> Result<String, String> {
    check_label_value("device name", name)
}

fn check_device_group(group: &str) -> Result<String, String> {
    check_label_value("device group", group)
}

/// Rules for values the user writes that become Prometheus label values.
fn check_label_value(what: &str, value: &str) -> Result<String, String> {
    let why = if value.is_empty() {
        "must not be empty".to_owned()
    } else if value.chars().count() > DEVICE_NAME_MAX_CHARS {
        format!("longer than {DEVICE_NAME_MAX_CHARS} characters")
    } else if value.chars().any(char::is_control) {
        "must not contain control characters".to_owned()
    } else {
        return Ok(value.to_owned());
    };
    Err(format!("invalid {what} {value:?}: {why}"))
}

// Deserialization glue.

/// Deserializes a string with `parse`, so its error carries the value's span and key.
fn de_str<'de, D, T, P>(deserializer: D, expecting: &'static str, parse: P) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    P: FnOnce(&str) -> Result<T, String>,
{
    struct StrVisitor<T, P> {
        expecting: &'static str,
        parse: P,
        value: PhantomData<fn() -> T>,
    }

    impl<T, P: FnOnce(&str) -> Result<T, String>> Visitor<'_> for StrVisitor<T, P> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }

        fn visit_str<E: de::Error>(self, s: &str) -> Result<T, E> {
            (self.parse)(s).map_err(E::custom)
        }
    }

    deserializer.deserialize_str(StrVisitor {
        expecting,
        parse,
        value: PhantomData,
    })
}

fn de_listen<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    de_str(d, EXPECT_LISTEN, parse_listen).map(Some)
}

fn de_poll_interval<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_str(d, EXPECT_DURATION, |s| {
        parse_duration(s).and_then(check_poll_interval)
    })
    .map(Some)
}

fn de_dns_grace<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_str(d, EXPECT_DURATION, |s| {
        parse_duration(s).and_then(|d| check_duration(d, &DNS_GRACE_RANGE))
    })
    .map(Some)
}

fn de_tls_ttl<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_str(d, EXPECT_DURATION, |s| {
        parse_duration(s).and_then(|d| check_duration(d, &TLS_TTL_RANGE))
    })
    .map(Some)
}

/// Deserializes an integer with `check`, which sees negative and huge values too so that it
/// can say they are out of range.
fn de_u32<'de, D, C>(deserializer: D, expecting: String, check: C) -> Result<u32, D::Error>
where
    D: Deserializer<'de>,
    C: FnOnce(i64) -> Result<u32, String>,
{
    struct U32Visitor<C> {
        expecting: String,
        check: C,
    }

    impl<C: FnOnce(i64) -> Result<u32, String>> Visitor<'_> for U32Visitor<C> {
        type Value = u32;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(&self.expecting)
        }

        fn visit_i64<E: de::Error>(self, n: i64) -> Result<u32, E> {
            (self.check)(n).map_err(E::custom)
        }

        fn visit_u64<E: de::Error>(self, n: u64) -> Result<u32, E> {
            self.visit_i64(i64::try_from(n).unwrap_or(i64::MAX))
        }
    }

    deserializer.deserialize_u32(U32Visitor { expecting, check })
}

fn de_entries<'de, D: Deserializer<'de>>(
    deserializer: D,
    range: &'static RangeInclusive<u32>,
) -> Result<u32, D::Error> {
    let expecting = format!("a number from {} to {}", range.start(), range.end());
    de_u32(deserializer, expecting, |n| check_entries(n, range))
}

fn de_sniff_ring_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let expecting = format!(
        "a power of two from {} to {}",
        SNIFF_RING_BYTES_RANGE.start(),
        SNIFF_RING_BYTES_RANGE.end()
    );
    de_u32(d, expecting, check_sniff_ring_bytes).map(Some)
}

fn de_max_names_per_device<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    de_entries(d, &MAX_NAMES_PER_DEVICE_RANGE).map(Some)
}

fn de_flow_map_entries<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    de_entries(d, &FLOW_MAP_ENTRIES_RANGE).map(Some)
}

fn de_device_map_entries<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    de_entries(d, &DEVICE_MAP_ENTRIES_RANGE).map(Some)
}

fn de_max_destinations_per_device<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<u32>, D::Error> {
    de_entries(d, &MAX_DESTINATIONS_PER_DEVICE_RANGE).map(Some)
}

/// Deserializes a TOML array, saying what its elements should be when it is not one.
fn de_list<'de, D, T>(deserializer: D, expecting: &'static str) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct ListVisitor<T> {
        expecting: &'static str,
        element: PhantomData<T>,
    }

    impl<'de, T: Deserialize<'de>> Visitor<'de> for ListVisitor<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(item) = seq.next_element()? {
                items.push(item);
            }
            Ok(items)
        }
    }

    deserializer.deserialize_seq(ListVisitor {
        expecting,
        element: PhantomData,
    })
}

fn de_lan<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<IfaceName>>, D::Error> {
    de_list(d, "a list of interface names like [\"br-lan\"]").map(Some)
}

fn de_local_prefixes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Prefix>>, D::Error> {
    de_list(d, "a list of prefixes like [\"10.8.0.0/24\"]").map(Some)
}

fn de_public_resolvers<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Resolver>>, D::Error> {
    de_list(d, "a list of IP addresses like [\"1.1.1.1\"]").map(Some)
}

/// An element of `names.public_resolvers`, checked as it is read so the error names
/// `names.public_resolvers[i]`.
#[derive(Debug)]
struct Resolver(IpAddr);

impl<'de> Deserialize<'de> for Resolver {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de_str(d, EXPECT_RESOLVER, |s| parse_resolver(s).map(Resolver))
    }
}

/// Reads `[[leases]]` entry by entry, so that a path listed twice is reported at the second
/// `path`.
fn de_leases<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<LeaseSource>, D::Error> {
    struct LeasesVisitor;

    impl<'de> Visitor<'de> for LeasesVisitor {
        type Value = Vec<LeaseSource>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array of tables: [[leases]] with format and path")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut leases = Vec::new();
            while let Some(lease) = seq.next_element_seed(NewLease(&leases))? {
                leases.push(lease);
            }
            Ok(leases)
        }
    }

    d.deserialize_seq(LeasesVisitor)
}

/// A `[[leases]]` entry whose path is not among those before it.
struct NewLease<'a>(&'a [LeaseSource]);

impl<'de> DeserializeSeed<'de> for NewLease<'_> {
    type Value = LeaseSource;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<LeaseSource, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for NewLease<'_> {
    type Value = LeaseSource;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(EXPECT_LEASE)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<LeaseSource, A::Error> {
        /// Read as the key itself, so that an unknown one is reported at its own position.
        #[derive(Deserialize)]
        #[serde(field_identifier, rename_all = "lowercase")]
        enum Key {
            Format,
            Path,
        }

        let mut format = None;
        let mut path = None;
        while let Some(key) = map.next_key()? {
            match key {
                Key::Format => format = Some(map.next_value::<LeaseFormat>()?),
                Key::Path => path = Some(map.next_value_seed(NewLeasePath(self.0))?),
            }
        }
        Ok(LeaseSource {
            format: format.ok_or_else(|| de::Error::missing_field("format"))?,
            path: path.ok_or_else(|| de::Error::missing_field("path"))?,
        })
    }
}

/// A lease file's `path`: absolute, and not already read by an earlier entry.
struct NewLeasePath<'a>(&'a [LeaseSource]);

impl<'de> DeserializeSeed<'de> for NewLeasePath<'_> {
    type Value = PathBuf;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<PathBuf, D::Error> {
        de_str(d, EXPECT_LEASE_PATH, |s| {
            let path = check_lease_path(s)?;
            match self.0.iter().position(|lease| lease.path == path) {
                Some(i) => Err(format!(
                    "lease file {s:?} is already listed at leases[{i}]; each file is read once"
                )),
                None => Ok(path),
            }
        })
    }
}

/// An element of `lan`, checked as it is read so the error names `lan[i]`.
#[derive(Debug)]
struct IfaceName(String);

impl<'de> Deserialize<'de> for IfaceName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de_str(d, EXPECT_IFACE, |s| {
            check_iface_name(s).map(|()| IfaceName(s.to_owned()))
        })
    }
}

/// An element of `local_prefixes`, checked as it is read so the error names
/// `local_prefixes[i]`.
#[derive(Debug)]
struct Prefix(IpNet);

impl<'de> Deserialize<'de> for Prefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de_str(d, EXPECT_PREFIX, |s| parse_prefix(s).map(Prefix))
    }
}

/// Reads `[devices]` key by key, so that a bad or repeated MAC address is reported at its key.
fn de_devices<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<MacAddr, DeviceConfig>, D::Error> {
    struct DevicesVisitor;

    impl<'de> Visitor<'de> for DevicesVisitor {
        type Value = BTreeMap<MacAddr, DeviceConfig>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a table of MAC address = device name")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut devices = BTreeMap::new();
            while let Some(mac) = map.next_key_seed(NewDevice(&devices))? {
                let device: DeviceConfig = map.next_value()?;
                devices.insert(mac, device);
            }
            Ok(devices)
        }
    }

    d.deserialize_map(DevicesVisitor)
}

/// A `[devices]` key: a unicast MAC address not already listed in another spelling
/// (`00:16:3E:..` and `00-16-3e-..` are different TOML keys but the same device).
struct NewDevice<'a>(&'a BTreeMap<MacAddr, DeviceConfig>);

impl<'de> DeserializeSeed<'de> for NewDevice<'_> {
    type Value = MacAddr;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<MacAddr, D::Error> {
        let mac = MacAddr::deserialize(d)?;
        if mac.is_multicast() {
            return Err(de::Error::custom(format!(
                "{mac} is a multicast address, which never names a device"
            )));
        }
        if self.0.contains_key(&mac) {
            return Err(de::Error::custom(format!(
                "{mac} is listed twice, under two spellings"
            )));
        }
        Ok(mac)
    }
}

/// Accepts the short form `"mac" = "name"` and the table form
/// `"mac" = { name = "name", group = "group" }`.
impl<'de> Deserialize<'de> for DeviceConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct DeviceTable {
            // Optional here only so that a missing name gets a message saying why it is needed.
            #[serde(default, deserialize_with = "de_device_name")]
            name: Option<String>,
            #[serde(default, deserialize_with = "de_device_group")]
            group: Option<String>,
        }

        fn de_device_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
            de_str(d, "a device name", check_device_name).map(Some)
        }

        fn de_device_group<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
            de_str(d, "a device group", check_device_group).map(Some)
        }

        struct DeviceVisitor;

        impl<'de> Visitor<'de> for DeviceVisitor {
            type Value = DeviceConfig;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(EXPECT_DEVICE)
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<DeviceConfig, E> {
                let name = check_device_name(s).map_err(E::custom)?;
                Ok(DeviceConfig { name, group: None })
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<DeviceConfig, A::Error> {
                let table = DeviceTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                let name = table.name.ok_or_else(|| {
                    de::Error::custom(
                        "missing key `name`: a device needs a name, even in a group, \
                         like { name = \"phone\", group = \"iot\" }",
                    )
                })?;
                Ok(DeviceConfig {
                    name,
                    group: table.group,
                })
            }
        }

        d.deserialize_any(DeviceVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
"#;

    #[test]
    fn defaults_fill_every_missing_key() {
        let expected = Config {
            lan: vec!["br-lan".into()],
            listen: "0.0.0.0:9750".parse().unwrap(),
            poll_interval: Duration::from_secs(1),
            local_prefixes: vec![],
            flow_map_entries: 65_536,
            device_map_entries: 4_096,
            max_destinations_per_device: 1_024,
            attach: AttachPolicy::Auto,
            destination_label: LabelMode::Domain,
            sniff_ring_bytes: 1_048_576,
            names: NamesConfig {
                dns_grace: Duration::from_secs(60),
                tls_ttl: Duration::from_secs(3_600),
                max_names_per_device: 4_096,
                public_resolvers: DEFAULT_PUBLIC_RESOLVERS.to_vec(),
            },
            leases: vec![],
            devices: BTreeMap::new(),
            state_dir: PathBuf::from("/var/lib/egress-monitor"),
            policy: PolicyConfig::default(),
        };
        assert_eq!(
            load_ok("lan = [\"br-lan\"]\n", &Overrides::default()),
            expected
        );
        // No file at all: the flags make the whole configuration.
        let flags = Overrides {
            lan: lan(&["br-lan"]),
            ..Overrides::default()
        };
        assert_eq!(Config::load(None, &flags).unwrap(), expected);
    }

    #[test]
    fn every_key_is_parsed() {
        let config = load_ok(EXAMPLE, &Overrides::default());
        assert_eq!(config.lan, ["br-lan", "wlan0"]);
        assert_eq!(config.listen, "[::]:9100".parse().unwrap());
        assert_eq!(config.poll_interval, Duration::from_millis(2500));
        assert_eq!(config.local_prefixes, [net("10.8.0.0/24"), net("fd00::/8")]);
        assert_eq!(config.flow_map_entries, 1024);
        assert_eq!(config.device_map_entries, 256);
        assert_eq!(config.max_destinations_per_device, 512);
        assert_eq!(config.attach, AttachPolicy::Tcx);
        assert_eq!(config.destination_label, LabelMode::Host);
        assert_eq!(config.sniff_ring_bytes, 4 << 20);
        assert_eq!(
            config.names,
            NamesConfig {
                dns_grace: Duration::from_secs(300),
                tls_ttl: Duration::from_secs(1_800),
                max_names_per_device: 128,
                // In the order given, without the repeated 1.1.1.1.
                public_resolvers: vec![ip("1.1.1.1"), ip("2606:4700:4700::1111"), ip("192.0.2.53")],
            }
        );
        assert_eq!(
            config.leases,
            [
                LeaseSource {
                    format: LeaseFormat::Dnsmasq,
                    path: "/tmp/dhcp.leases".into(),
                },
                LeaseSource {
                    format: LeaseFormat::Odhcpd,
                    path: "/tmp/hosts/odhcpd".into(),
                },
            ]
        );
        let devices: Vec<(String, &str, Option<&str>)> = config
            .devices
            .iter()
            .map(|(mac, device)| {
                (
                    mac.to_string(),
                    device.name.as_str(),
                    device.group.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            devices,
            [
                ("00:16:3e:00:00:01".to_owned(), "phone", None),
                ("00:16:3e:00:00:02".to_owned(), "laptop", None),
                ("00:16:3e:00:00:03".to_owned(), "laptop", Some("family")),
            ]
        );
        assert_eq!(
            config.device_name(&mac("00:16:3e:00:00:02")),
            Some("laptop")
        );
        assert_eq!(config.device_name(&mac("00:16:3e:00:00:09")), None);
    }

    #[test]
    fn policy_sections_are_resolved_to_devices_and_groups() {
        let config = load_ok(EXAMPLE, &Overrides::default());
        let policy = &config.policy;
        assert_eq!(policy.max_unexpected_destinations, 5);
        assert_eq!(
            policy.default.as_ref().unwrap().learn,
            Some(Duration::from_secs(7 * 86_400))
        );
        let family = &policy.groups["family"];
        assert_eq!(
            family
                .deny
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["ads.example", "198.51.100.0/24"]
        );
        // "phone" names one MAC: the section is stored under it.
        let phone = &policy.devices[&mac("00:16:3e:00:00:01")];
        assert_eq!(
            phone
                .allow
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["updates.vendor.example", "192.0.2.7", "2001:db8::/32"]
        );
        assert_eq!(policy.devices.len(), 1);
        assert_eq!(config.state_dir, Path::new("/var/lib/egress-state"));
        // The device's own section wins over its group's and the default.
        assert!(matches!(
            policy.applies(mac("00:16:3e:00:00:01"), None),
            Applies::Device(_)
        ));
        assert!(matches!(
            policy.applies(mac("00:16:3e:00:00:03"), Some("family")),
            Applies::Group("family", _)
        ));
        assert!(matches!(
            policy.applies(mac("00:16:3e:00:00:09"), None),
            Applies::Default(_)
        ));
    }

    #[test]
    fn policy_errors_name_the_line_the_key_and_the_reason() {
        let devices = "lan = [\"br-lan\"]\n[devices]\n\"02:00:00:00:00:01\" = { name = \"cam\", group = \"iot\" }\n\"02:00:00:00:00:02\" = \"cam\"\n";
        let cases = [
            (
                "[policy.devices.camera]\nallow = []\n",
                "5:17: policy.devices.camera: \"camera\" is neither a MAC address nor the name of a device in [devices]",
            ),
            (
                "[policy.groups.iott]\n",
                "5:16: policy.groups.iott: no device in [devices] has group \"iott\" (groups: iot)",
            ),
            (
                "[policy.devices.cam]\nallow = [\"vendor.example\", \"*.evil.example\"]\n",
                "6:28: policy.devices.cam.allow[1]: invalid rule \"*.evil.example\": write \"evil.example\"",
            ),
            (
                "[policy.default]\nlearn = \"7 fortnights\"\n",
                "6:9: policy.default.learn: invalid duration",
            ),
            (
                "[policy.default]\nlearn = \"0s\"\n",
                "6:9: policy.default.learn:",
            ),
            (
                "[policy.default]\nallwo = []\n",
                "6:1: policy.default.allwo: unknown key `allwo`, expected one of `allow`, `deny`, `learn`",
            ),
            (
                "[policy]\nmax_unexpected_destinations = 0\n",
                "6:31: policy.max_unexpected_destinations: 0 is out of range: from 1 to 10000",
            ),
            (
                "[policy.devices.cam]\n[policy.devices.\"02:00:00:00:00:01\"]\n",
                "5:17: policy.devices.cam: 02:00:00:00:00:01 has two policy sections",
            ),
            (
                "[policy.devices.\"01:00:5e:00:00:01\"]\n",
                "multicast address",
            ),
        ];
        for (policy, expected) in cases {
            let src = format!("{devices}{policy}");
            let err =
                Config::from_toml_str(&src, Some(Path::new("/etc/e.toml")), &Overrides::default())
                    .expect_err(policy)
                    .to_string();
            assert!(
                err.contains(expected),
                "{policy:?}:\n{err}\nexpected {expected}"
            );
            assert!(err.starts_with("/etc/e.toml:"), "{err}");
        }
        let err = Config::from_toml_str(
            "lan = [\"br-lan\"]\nstate_dir = \"var/lib\"\n",
            None,
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("state_dir: invalid state directory \"var/lib\": must be absolute"),
            "{err}"
        );
    }

    #[test]
    fn commands_need_no_lan_interface() {
        let config = Config::load_without_lan(None, &Overrides::default()).unwrap();
        assert!(config.lan.is_empty());
        assert_eq!(config.state_dir, Path::new(DEFAULT_STATE_DIR));
    }

    #[test]
    fn flags_override_the_file() {
        let flags = Overrides {
            lan: lan(&["eth1"]),
            listen: Some("127.0.0.1:9750".parse().unwrap()),
            poll_interval: Some(Duration::from_millis(100)),
            local_prefixes: Some(vec![net("192.168.100.0/24")]),
            flow_map_entries: Some(16_777_216),
            attach: Some(AttachPolicy::Clsact),
            destination_label: Some(LabelMode::Address),
            state_dir: Some("/run/egress".into()),
        };
        let config = load_ok(EXAMPLE, &flags);
        assert_eq!(config.state_dir, Path::new("/run/egress"));
        assert_eq!(config.attach, AttachPolicy::Clsact);
        assert_eq!(config.destination_label, LabelMode::Address);
        assert_eq!(config.lan, ["eth1"]);
        assert_eq!(config.listen, "127.0.0.1:9750".parse().unwrap());
        assert_eq!(config.poll_interval, Duration::from_millis(100));
        assert_eq!(config.local_prefixes, [net("192.168.100.0/24")]);
        assert_eq!(config.flow_map_entries, 16_777_216);
        // Keys without a flag keep the file's value.
        assert_eq!(config.device_map_entries, 256);
        assert_eq!(config.sniff_ring_bytes, 4 << 20);
        assert_eq!(config.names.max_names_per_device, 128);
        assert_eq!(config.leases.len(), 2);
        assert_eq!(config.devices.len(), 3);
    }

    #[test]
    fn list_flags_replace_the_files_list() {
        /// (file, --lan, expected lan)
        type Case<'a> = (&'a str, Option<Vec<String>>, &'a [&'a str]);
        let cases: &[Case] = &[
            ("lan = [\"a\", \"b\"]", lan(&["c"]), &["c"]),
            ("lan = [\"a\", \"b\"]", None, &["a", "b"]),
            ("lan = []", lan(&["c"]), &["c"]),
            ("", lan(&["c", "d"]), &["c", "d"]),
            // Duplicates are dropped, keeping the first.
            ("lan = [\"b\", \"a\", \"b\"]", None, &["b", "a"]),
            ("", lan(&["a", "b", "a", "b"]), &["a", "b"]),
        ];
        for (src, lan_flag, expected) in cases {
            let flags = Overrides {
                lan: lan_flag.clone(),
                ..Overrides::default()
            };
            assert_eq!(load_ok(src, &flags).lan, *expected, "{src:?} {lan_flag:?}");
        }

        let flags = Overrides {
            local_prefixes: Some(vec![net("fd01::/16")]),
            ..Overrides::default()
        };
        let config = load_ok(EXAMPLE, &flags);
        assert_eq!(config.local_prefixes, [net("fd01::/16")]);
    }

    #[test]
    fn prefixes_lose_host_bits_and_bare_addresses_are_hosts() {
        let src = "lan = [\"br-lan\"]\nlocal_prefixes = [\"10.8.0.1/24\", \"192.0.2.7\", \"2001:db8::1\"]\n";
        let config = load_ok(src, &Overrides::default());
        assert_eq!(
            config.local_prefixes,
            [
                net("10.8.0.0/24"),
                net("192.0.2.7/32"),
                net("2001:db8::1/128")
            ]
        );
    }

    /// Each bad file gives exactly this one-line message, naming the line, column and key.
    #[test]
    fn file_errors_name_line_and_key() {
        let cases: &[(&str, &str)] = &[
            (
                "lan = [\"br-lan\"]\nlisten = \"0.0.0.0:9750\"\n\npoll_interval = \"fast\"\n",
                r#"/etc/egress-monitor.toml:4:17: poll_interval: invalid duration "fast": expected a number like "1s" or "500ms""#,
            ),
            (
                "lan = [\"br-lan\"]\npoll_interval = \"5 parsecs\"\n",
                r#"/etc/egress-monitor.toml:2:17: poll_interval: invalid duration "5 parsecs": unknown unit "parsecs"; use ms, s, m or h"#,
            ),
            (
                "lan = [\"br-lan\"]\npoll_interval = 5\n",
                r#"/etc/egress-monitor.toml:2:17: poll_interval: invalid type: integer `5`, expected a duration like "1s" or "500ms""#,
            ),
            (
                "lan = [\"br-lan\"]\npoll_interval = \"50ms\"\n",
                "/etc/egress-monitor.toml:2:17: poll_interval: 50ms is out of range: allowed 100ms to 1h",
            ),
            (
                "lan = [\"br-lan\"]\n  poll_interval = \"1h 1s\"\n",
                "/etc/egress-monitor.toml:2:19: poll_interval: 1h 1s is out of range: allowed 100ms to 1h",
            ),
            (
                "lan = [\"br-lan\"]\n\n[devices]\n\"00:16:3e:00:00:01\" = \"phone\"\n\"zz:00\" = \"tv\"\n",
                r#"/etc/egress-monitor.toml:5:1: devices."zz:00": invalid MAC address "zz:00": expected six pairs of hex digits separated by ':' or '-', like "00:16:3e:00:00:01""#,
            ),
            (
                "lan = [\"br-lan\"]\npoll_intervall = \"1s\"\n",
                "/etc/egress-monitor.toml:2:1: poll_intervall: unknown key `poll_intervall`, expected one of `lan`, `listen`, `poll_interval`, `local_prefixes`, `flow_map_entries`, `device_map_entries`, `max_destinations_per_device`, `attach`, `destination_label`, `sniff_ring_bytes`, `names`, `leases`, `devices`, `state_dir`, `policy`",
            ),
            (
                "lan = [\"br-lan\"]\n[devices]\n\"00:16:3e:00:00:01\" = { name = \"tv\", room = \"den\" }\n",
                "/etc/egress-monitor.toml:3:38: devices.\"00:16:3e:00:00:01\".room: unknown key `room`, expected `name` or `group`",
            ),
            (
                "lan = [\"br-lan\"]\nflow_map_entries = 8\n",
                "/etc/egress-monitor.toml:2:20: flow_map_entries: 8 is out of range: allowed 16 to 16777216",
            ),
            (
                "lan = [\"br-lan\"]\nflow_map_entries = 16777217\n",
                "/etc/egress-monitor.toml:2:20: flow_map_entries: 16777217 is out of range: allowed 16 to 16777216",
            ),
            (
                "lan = [\"br-lan\"]\ndevice_map_entries = -1\n",
                "/etc/egress-monitor.toml:2:22: device_map_entries: -1 is out of range: allowed 16 to 1048576",
            ),
            (
                "lan = [\"br-lan\"]\ndevice_map_entries = 1048577\n",
                "/etc/egress-monitor.toml:2:22: device_map_entries: 1048577 is out of range: allowed 16 to 1048576",
            ),
            (
                "lan = [\"br-lan\"]\ndevice_map_entries = \"4k\"\n",
                r#"/etc/egress-monitor.toml:2:22: device_map_entries: invalid type: string "4k", expected a number from 16 to 1048576"#,
            ),
            (
                "lan = [\"br-lan\"]\nlocal_prefixes = [\"10.8.0.0/24\", \"10.0.0.0/33\"]\n",
                r#"/etc/egress-monitor.toml:2:34: local_prefixes[1]: invalid CIDR prefix "10.0.0.0/33": expected ADDRESS/LENGTH like "10.8.0.0/24" or "fd00::/8""#,
            ),
            (
                "lan = [\"br-lan\"]\nlocal_prefixes = \"fd00::/8\"\n",
                r#"/etc/egress-monitor.toml:2:18: local_prefixes: invalid type: string "fd00::/8", expected a list of prefixes like ["10.8.0.0/24"]"#,
            ),
            (
                "lan = [\"br-lan\"]\nlisten = \"localhost:9750\"\n",
                r#"/etc/egress-monitor.toml:2:10: listen: invalid listen address "localhost:9750": expected IP:PORT like "0.0.0.0:9750" or "[::]:9750""#,
            ),
            (
                "lan = [\"br-lan\"]\nlisten = \"0.0.0.0\"\n",
                r#"/etc/egress-monitor.toml:2:10: listen: invalid listen address "0.0.0.0": expected IP:PORT like "0.0.0.0:9750" or "[::]:9750""#,
            ),
            (
                "# no interfaces yet\nlan = []\n",
                "/etc/egress-monitor.toml:2:7: lan: the list is empty; at least one LAN interface is required",
            ),
            (
                "lan = \"br-lan\"\n",
                r#"/etc/egress-monitor.toml:1:7: lan: invalid type: string "br-lan", expected a list of interface names like ["br-lan"]"#,
            ),
            (
                "lan = [\"br-lan\", \"eth0/1\"]\n",
                r#"/etc/egress-monitor.toml:1:18: lan[1]: invalid interface name "eth0/1": must not contain '/', whitespace or NUL"#,
            ),
            (
                "lan = [\"br-lan\"]\n[devices]\n\"00:16:3e:00:00:01\" = \"\"\n",
                r#"/etc/egress-monitor.toml:3:23: devices."00:16:3e:00:00:01": invalid device name "": must not be empty"#,
            ),
            (
                "lan = [\"br-lan\"]\n[devices]\n\"00:16:3e:00:00:01\" = {}\n",
                r#"/etc/egress-monitor.toml:3:23: devices."00:16:3e:00:00:01": missing key `name`: a device needs a name, even in a group, like { name = "phone", group = "iot" }"#,
            ),
            (
                "lan = [\"br-lan\"]\n[devices.\"00:16:3e:00:00:01\"]\nname = 7\n",
                r#"/etc/egress-monitor.toml:3:8: devices."00:16:3e:00:00:01".name: invalid type: integer `7`, expected a device name"#,
            ),
            (
                "lan = [\"br-lan\"]\n[devices]\n\"00:16:3e:00:00:01\" = \"tv\"\n\"00-16-3E-00-00-01\" = \"telly\"\n",
                // Keys are read in sorted order, so the colon spelling is the second one seen.
                r#"/etc/egress-monitor.toml:3:1: devices."00:16:3e:00:00:01": 00:16:3e:00:00:01 is listed twice, under two spellings"#,
            ),
            (
                "lan = [\"br-lan\"]\n[devices]\n\"01:00:5e:00:00:fb\" = \"mdns\"\n",
                r#"/etc/egress-monitor.toml:3:1: devices."01:00:5e:00:00:fb": 01:00:5e:00:00:fb is a multicast address, which never names a device"#,
            ),
            (
                "lan = [\"br-lan\"]\npoll_interval = = \"1s\"\n",
                "/etc/egress-monitor.toml:2:17: invalid TOML: extra `=`, expected nothing",
            ),
            (
                "lan = [\"br-lan\"]\nlan = [\"wlan0\"]\n",
                "/etc/egress-monitor.toml:2:1: invalid TOML: duplicate key",
            ),
        ];
        for (src, expected) in cases {
            let err = load_err(src, &Overrides::default());
            assert_eq!(err.to_string(), *expected, "{src:?}");
            assert!(matches!(err, ConfigError::Invalid { .. }), "{err:?}");
        }
    }

    #[test]
    fn errors_are_matchable() {
        let src = "lan = [\"br-lan\"]\nlisten = \"0.0.0.0:9750\"\n\npoll_interval = \"fast\"\n";
        let err = load_err(src, &Overrides::default());
        let ConfigError::Invalid {
            path,
            line,
            column,
            key,
            message,
        } = err
        else {
            panic!("not Invalid: {err:?}");
        };
        assert_eq!(path.as_deref(), Some(Path::new(FILE)));
        assert_eq!((line, column), (Some(4), Some(17)));
        assert_eq!(key, "poll_interval");
        assert_eq!(
            message,
            r#"invalid duration "fast": expected a number like "1s" or "500ms""#
        );
    }

    #[test]
    fn errors_without_a_file_name_still_give_the_line() {
        let err =
            Config::from_toml_str("lan = [\"br-lan\"]\nfoo = 1\n", None, &Overrides::default())
                .unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 2, column 1: foo: unknown key `foo`, expected one of `lan`, `listen`, \
             `poll_interval`, `local_prefixes`, `flow_map_entries`, `device_map_entries`, `max_destinations_per_device`, `attach`, `destination_label`, `sniff_ring_bytes`, `names`, `leases`, `devices`, `state_dir`, `policy`"
        );
    }

    #[test]
    fn the_shipped_example_configuration_is_valid_and_spells_out_the_defaults() {
        let shipped = include_str!("../../deploy/config/egress-monitor.toml");
        let config = load_ok(shipped, &Overrides::default());
        let defaults = load_ok("lan = [\"br-lan\"]\n", &Overrides::default());
        assert_eq!(config, defaults);
    }

    #[test]
    fn attach_policy_from_file_and_flag() {
        let file = "lan = [\"br-lan\"]\nattach = \"clsact\"\n";
        assert_eq!(
            load_ok(file, &Overrides::default()).attach,
            AttachPolicy::Clsact
        );
        let flag = Overrides {
            attach: Some(AttachPolicy::Tcx),
            ..Overrides::default()
        };
        assert_eq!(load_ok(file, &flag).attach, AttachPolicy::Tcx);
        let err = Config::from_toml_str(
            "lan = [\"br-lan\"]\nattach = \"xdp\"\n",
            Some(Path::new("/etc/egress-monitor.toml")),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("/etc/egress-monitor.toml:2:10: attach: unknown variant `xdp`"),
            "{err}"
        );
    }

    #[test]
    fn columns_count_characters_and_ignore_crlf() {
        let src = "# réseau\r\nlan = [\"br-lan\"] # été\r\n[devices]\r\n\"00:16:3e:00:00:01\" = \"téléphone\"\r\n\"zz\" = \"x\"\r\n";
        let err = load_err(src, &Overrides::default());
        assert!(
            err.to_string()
                .starts_with("/etc/egress-monitor.toml:5:1: devices.zz: "),
            "{err}"
        );
        let src = "lan = [\"é\", \"a b\"]\n";
        let err = load_err(src, &Overrides::default());
        assert!(
            err.to_string()
                .starts_with("/etc/egress-monitor.toml:1:13: lan[1]: "),
            "{err}"
        );
    }

    /// A bad value given as a flag is reported with the flag's name.
    #[test]
    fn flag_errors_name_the_flag() {
        let cases: &[(Overrides, &str)] = &[
            (
                Overrides {
                    poll_interval: Some(Duration::from_millis(50)),
                    ..Overrides::default()
                },
                "--poll-interval: 50ms is out of range: allowed 100ms to 1h",
            ),
            (
                Overrides {
                    poll_interval: Some(Duration::from_secs(7200)),
                    ..Overrides::default()
                },
                "--poll-interval: 2h is out of range: allowed 100ms to 1h",
            ),
            (
                Overrides {
                    flow_map_entries: Some(8),
                    ..Overrides::default()
                },
                "--flow-map-entries: 8 is out of range: allowed 16 to 16777216",
            ),
            (
                Overrides {
                    lan: lan(&["br-lan", "a-very-long-interface"]),
                    ..Overrides::default()
                },
                r#"--lan: invalid interface name "a-very-long-interface": longer than 15 bytes"#,
            ),
            (
                Overrides {
                    lan: lan(&[""]),
                    ..Overrides::default()
                },
                r#"--lan: invalid interface name "": must not be empty"#,
            ),
        ];
        for (flags, expected) in cases {
            // The file is fine; only the flag is wrong.
            let err = load_err("lan = [\"br-lan\"]\n", flags);
            assert_eq!(err.to_string(), *expected, "{flags:?}");
            assert!(
                matches!(&err, ConfigError::Invalid { path: None, line: None, key, .. } if key.starts_with("--")),
                "{err:?}"
            );
        }
    }

    #[test]
    fn no_lan_interface_anywhere_is_its_own_error() {
        for (src, flags) in [
            ("", Overrides::default()),
            ("poll_interval = \"1s\"\n", Overrides::default()),
            (
                "lan = [\"br-lan\"]\n",
                Overrides {
                    lan: Some(vec![]),
                    ..Overrides::default()
                },
            ),
        ] {
            let err = load_err(src, &flags);
            assert!(
                matches!(err, ConfigError::NoLanInterface),
                "{src:?}: {err:?}"
            );
            assert_eq!(
                err.to_string(),
                "no LAN interface to monitor: set lan = [\"br-lan\"] in the configuration file \
                 or pass --lan <IFACE>"
            );
        }
    }

    #[test]
    fn device_name_rules() {
        let longest = "é".repeat(DEVICE_NAME_MAX_CHARS);
        let too_long = "a".repeat(DEVICE_NAME_MAX_CHARS + 1);
        // (name, accepted, end of the error message)
        let cases: &[(&str, bool, &str)] = &[
            ("phone", true, ""),
            ("Anna's phone (2)", true, ""),
            ("x", true, ""),
            ("télé 📺 \"salon\"", true, ""),
            (&longest, true, ""),
            ("", false, "must not be empty"),
            (&too_long, false, "longer than 64 characters"),
            ("tab\there", false, "must not contain control characters"),
            ("line\nbreak", false, "must not contain control characters"),
            ("del\u{7f}", false, "must not contain control characters"),
            ("c1\u{85}", false, "must not contain control characters"),
        ];
        for (name, accepted, why) in cases {
            let quoted = toml::Value::String(name.to_string()).to_string();
            for src in [
                format!("lan = [\"br-lan\"]\n[devices]\n\"00:16:3e:00:00:01\" = {quoted}\n"),
                format!(
                    "lan = [\"br-lan\"]\n[devices]\n\"00:16:3e:00:00:01\" = {{ name = {quoted} }}\n"
                ),
            ] {
                match load(&src, &Overrides::default()) {
                    Ok(config) => {
                        assert!(accepted, "{name:?} was accepted");
                        assert_eq!(config.device_name(&mac("00:16:3e:00:00:01")), Some(*name));
                    }
                    Err(err) => {
                        let err = err.to_string();
                        assert!(!accepted, "{name:?} was rejected: {err}");
                        assert!(err.starts_with("/etc/egress-monitor.toml:3:"), "{err}");
                        assert!(err.ends_with(why), "{name:?}: {err}");
                        assert!(!err.contains('\n'), "{err}");
                    }
                }
            }
        }
        // Two devices may share a name.
        let src = "lan = [\"br-lan\"]\n[devices]\n\"00:16:3e:00:00:01\" = \"laptop\"\n\"00:16:3e:00:00:02\" = \"laptop\"\n";
        assert_eq!(load_ok(src, &Overrides::default()).devices.len(), 2);
    }

    #[test]
    fn interface_name_rules() {
        // (name, accepted, end of the error message)
        let cases: &[(&str, bool, &str)] = &[
            ("br-lan", true, ""),
            ("eth0.100", true, ""),
            ("wlan0:1", true, ""),
            ("fifteen-bytes-x", true, ""),
            ("sixteen-bytes-xx", false, "longer than 15 bytes"),
            ("", false, "must not be empty"),
            ("a/b", false, "must not contain '/', whitespace or NUL"),
            ("a b", false, "must not contain '/', whitespace or NUL"),
            ("a\tb", false, "must not contain '/', whitespace or NUL"),
            ("a\0b", false, "must not contain '/', whitespace or NUL"),
            (".", false, "not a valid interface name"),
            ("..", false, "not a valid interface name"),
        ];
        for (name, accepted, why) in cases {
            let quoted = toml::Value::String(name.to_string()).to_string();
            let from_file = load(&format!("lan = [{quoted}]\n"), &Overrides::default());
            let from_flag = load(
                "",
                &Overrides {
                    lan: lan(&[name]),
                    ..Overrides::default()
                },
            );
            for (result, prefix) in [
                (from_file, "/etc/egress-monitor.toml:1:8: lan[0]: "),
                (from_flag, "--lan: "),
            ] {
                match result {
                    Ok(config) => {
                        assert!(accepted, "{name:?} was accepted");
                        assert_eq!(config.lan, [*name]);
                    }
                    Err(err) => {
                        let err = err.to_string();
                        assert!(!accepted, "{name:?} was rejected: {err}");
                        assert_eq!(
                            err,
                            format!("{prefix}invalid interface name {name:?}: {why}")
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn mac_keys_accept_every_format() {
        let src = "lan = [\"br-lan\"]\n[devices]\n\"00:16:3e:0a:0b:0c\" = \"a\"\n\"00-16-3E-0A-0B-0D\" = \"b\"\n\"00:16:3E:0a:0B:0e\" = \"c\"\n";
        let config = load_ok(src, &Overrides::default());
        for (mac_text, name) in [
            ("00:16:3e:0a:0b:0c", "a"),
            ("00:16:3e:0a:0b:0d", "b"),
            ("00:16:3e:0a:0b:0e", "c"),
        ] {
            assert_eq!(config.device_name(&mac(mac_text)), Some(name), "{mac_text}");
        }
    }

    #[test]
    fn unreadable_file_is_a_read_error_naming_it() {
        let path = Path::new("/nonexistent/egress-monitor.toml");
        let err = Config::load(Some(path), &Overrides::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot read configuration file /nonexistent/egress-monitor.toml: \
             No such file or directory (os error 2)"
        );
        let ConfigError::Read { path: p, source } = &err else {
            panic!("not Read: {err:?}");
        };
        assert_eq!(p, path);
        assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn load_reads_the_file() {
        let dir =
            std::env::temp_dir().join(format!("egress-monitor-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("egress-monitor.toml");
        std::fs::write(&path, "lan = [\"br-lan\"]\npoll_interval = \"fast\"\n").unwrap();
        let err = Config::load(Some(&path), &Overrides::default()).unwrap_err();
        std::fs::write(&path, EXAMPLE).unwrap();
        let config = Config::load(Some(&path), &Overrides::default());
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            err.to_string(),
            format!(
                "{}:2:17: poll_interval: invalid duration \"fast\": expected a number like \"1s\" or \"500ms\"",
                path.display()
            )
        );
        assert_eq!(config.unwrap(), load_ok(EXAMPLE, &Overrides::default()));
    }

    #[test]
    fn to_toml_reads_back_to_the_same_config() {
        let mut config = load_ok(EXAMPLE, &Overrides::default());
        config.devices.insert(
            mac("02:00:00:00:00:01"),
            DeviceConfig {
                name: "Anna's \"phone\" \\ 📱".into(),
                group: Some("kids' \"toys\" \\ 🧸".into()),
            },
        );
        config.leases.push(LeaseSource {
            format: LeaseFormat::KeaCsv,
            path: "/var/lib/kea/kea-leases \"4\".csv".into(),
        });
        let text = config.to_toml();
        assert!(
            text.starts_with("lan = [\"br-lan\", \"wlan0\"]\nlisten = \"[::]:9100\"\n"),
            "{text}"
        );
        assert_eq!(load_ok(&text, &Overrides::default()), config, "{text}");

        let minimal = load_ok("lan = [\"br-lan\"]", &Overrides::default());
        let resolvers: String = WELL_KNOWN_RESOLVERS
            .iter()
            .map(|addr| format!("    \"{addr}\",\n"))
            .collect();
        assert_eq!(
            minimal.to_toml(),
            format!(
                "lan = [\"br-lan\"]\nlisten = \"0.0.0.0:9750\"\npoll_interval = \"1s\"\n\
                 local_prefixes = []\nflow_map_entries = 65536\ndevice_map_entries = 4096\n\
                 max_destinations_per_device = 1024\nattach = \"auto\"\n\
                 destination_label = \"domain\"\nsniff_ring_bytes = 1048576\n\
                 state_dir = \"/var/lib/egress-monitor\"\n\n\
                 [names]\ndns_grace = \"1m\"\ntls_ttl = \"1h\"\nmax_names_per_device = 4096\n\
                 public_resolvers = [\n{resolvers}]\n\n[devices]\n\n\
                 [policy]\nmax_unexpected_destinations = 20\n"
            )
        );

        // The ends of the ranges, and an empty resolver list, read back too.
        let mut edges = minimal;
        edges.destination_label = LabelMode::Address;
        edges.sniff_ring_bytes = *SNIFF_RING_BYTES_RANGE.end();
        edges.names = NamesConfig {
            dns_grace: *DNS_GRACE_RANGE.start(),
            tls_ttl: *TLS_TTL_RANGE.end(),
            max_names_per_device: *MAX_NAMES_PER_DEVICE_RANGE.start(),
            public_resolvers: vec![],
        };
        let text = edges.to_toml();
        assert!(text.contains("\npublic_resolvers = []\n"), "{text}");
        assert_eq!(load_ok(&text, &Overrides::default()), edges, "{text}");
    }

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

    #[test]
    fn default_public_resolvers_are_the_well_known_ones() {
        let listed: Vec<IpAddr> = WELL_KNOWN_RESOLVERS.iter().map(|a| ip(a)).collect();
        assert_eq!(DEFAULT_PUBLIC_RESOLVERS, listed);
        assert_eq!(dedup(listed).len(), DEFAULT_PUBLIC_RESOLVERS.len());
        assert_eq!(
            NamesConfig::default().public_resolvers,
            DEFAULT_PUBLIC_RESOLVERS
        );
    }

    #[test]
    fn destination_label_from_file_and_flag() {
        // (file line, --destination-label, expected)
        let cases: &[(&str, Option<LabelMode>, LabelMode)] = &[
            ("", None, LabelMode::Domain),
            ("destination_label = \"domain\"", None, LabelMode::Domain),
            ("destination_label = \"host\"", None, LabelMode::Host),
            ("destination_label = \"address\"", None, LabelMode::Address),
            ("", Some(LabelMode::Host), LabelMode::Host),
            (
                "destination_label = \"host\"",
                Some(LabelMode::Address),
                LabelMode::Address,
            ),
        ];
        for (line, flag, expected) in cases {
            let src = format!("lan = [\"br-lan\"]\n{line}\n");
            let flags = Overrides {
                destination_label: *flag,
                ..Overrides::default()
            };
            assert_eq!(
                load_ok(&src, &flags).destination_label,
                *expected,
                "{src:?}"
            );
        }

        let bad: &[(&str, &str)] = &[
            (
                "destination_label = \"fqdn\"",
                "/etc/egress-monitor.toml:2:21: destination_label: unknown variant `fqdn`, expected one of `domain`, `host`, `address`",
            ),
            (
                "destination_label = \"Host\"",
                "/etc/egress-monitor.toml:2:21: destination_label: unknown variant `Host`, expected one of `domain`, `host`, `address`",
            ),
        ];
        for (line, expected) in bad {
            let src = format!("lan = [\"br-lan\"]\n{line}\n");
            assert_eq!(load_err(&src, &Overrides::default()).to_string(), *expected);
        }

        // The file, the flag and `as_str` spell each mode the same way.
        for mode in [LabelMode::Domain, LabelMode::Host, LabelMode::Address] {
            let value = clap::ValueEnum::to_possible_value(&mode).unwrap();
            assert_eq!(value.get_name(), mode.as_str());
            let src = format!(
                "lan = [\"br-lan\"]\ndestination_label = \"{}\"\n",
                mode.as_str()
            );
            assert_eq!(load_ok(&src, &Overrides::default()).destination_label, mode);
        }
    }

    #[test]
    fn sniff_ring_bytes_is_a_power_of_two_in_range() {
        const RANGE: &str = "allowed powers of two from 65536 to 268435456";
        // (value as written, the size or the error after "LINE:COL: sniff_ring_bytes: ")
        let cases: &[(&str, Result<u32, String>)] = &[
            ("65536", Ok(65_536)),
            ("131072", Ok(131_072)),
            ("1048576", Ok(1_048_576)),
            ("268435456", Ok(268_435_456)),
            ("32768", Err(format!("32768 is out of range: {RANGE}"))),
            ("536870912", Err(format!("536870912 is out of range: {RANGE}"))),
            ("0", Err(format!("0 is out of range: {RANGE}"))),
            ("-65536", Err(format!("-65536 is out of range: {RANGE}"))),
            (
                "99999999999",
                Err(format!("99999999999 is out of range: {RANGE}")),
            ),
            (
                "1000000",
                Err(format!(
                    "1000000 is not a power of two: use 524288 or 1048576 ({RANGE})"
                )),
            ),
            (
                "65537",
                Err(format!(
                    "65537 is not a power of two: use 65536 or 131072 ({RANGE})"
                )),
            ),
            (
                "268435455",
                Err(format!(
                    "268435455 is not a power of two: use 134217728 or 268435456 ({RANGE})"
                )),
            ),
            (
                "\"1MiB\"",
                Err(
                    "invalid type: string \"1MiB\", expected a power of two from 65536 to 268435456"
                        .to_owned(),
                ),
            ),
        ];
        for (value, expected) in cases {
            let src = format!("lan = [\"br-lan\"]\nsniff_ring_bytes = {value}\n");
            match expected {
                Ok(n) => assert_eq!(load_ok(&src, &Overrides::default()).sniff_ring_bytes, *n),
                Err(message) => assert_eq!(
                    load_err(&src, &Overrides::default()).to_string(),
                    format!("/etc/egress-monitor.toml:2:20: sniff_ring_bytes: {message}")
                ),
            }
        }
    }

    #[test]
    fn names_durations_and_bounds() {
        let defaults = NamesConfig::default();
        let secs = Duration::from_secs;
        // ([names] line, (dns_grace, tls_ttl, max_names_per_device) or the whole error)
        type Case<'a> = (&'a str, Result<(Duration, Duration, u32), &'a str>);
        let cases: &[Case] = &[
            ("", Ok((secs(60), secs(3_600), 4_096))),
            ("dns_grace = \"0s\"", Ok((secs(0), secs(3_600), 4_096))),
            ("dns_grace = \"90s\"", Ok((secs(90), secs(3_600), 4_096))),
            ("dns_grace = \"1d\"", Ok((secs(86_400), secs(3_600), 4_096))),
            ("tls_ttl = \"1s\"", Ok((secs(60), secs(1), 4_096))),
            ("tls_ttl = \"7d\"", Ok((secs(60), secs(604_800), 4_096))),
            ("max_names_per_device = 16", Ok((secs(60), secs(3_600), 16))),
            (
                "max_names_per_device = 1048576",
                Ok((secs(60), secs(3_600), 1_048_576)),
            ),
            (
                "dns_grace = \"1d 1s\"",
                Err(
                    "/etc/egress-monitor.toml:3:13: names.dns_grace: 1day 1s is out of range: allowed 0s to 1day",
                ),
            ),
            (
                "dns_grace = \"soon\"",
                Err(
                    r#"/etc/egress-monitor.toml:3:13: names.dns_grace: invalid duration "soon": expected a number like "1s" or "500ms""#,
                ),
            ),
            (
                "dns_grace = 60",
                Err(
                    r#"/etc/egress-monitor.toml:3:13: names.dns_grace: invalid type: integer `60`, expected a duration like "1s" or "500ms""#,
                ),
            ),
            (
                "tls_ttl = \"500ms\"",
                Err(
                    "/etc/egress-monitor.toml:3:11: names.tls_ttl: 500ms is out of range: allowed 1s to 7days",
                ),
            ),
            (
                "tls_ttl = \"0s\"",
                Err(
                    "/etc/egress-monitor.toml:3:11: names.tls_ttl: 0s is out of range: allowed 1s to 7days",
                ),
            ),
            (
                "tls_ttl = \"8d\"",
                Err(
                    "/etc/egress-monitor.toml:3:11: names.tls_ttl: 8days is out of range: allowed 1s to 7days",
                ),
            ),
            (
                "max_names_per_device = 15",
                Err(
                    "/etc/egress-monitor.toml:3:24: names.max_names_per_device: 15 is out of range: allowed 16 to 1048576",
                ),
            ),
            (
                "max_names_per_device = 1048577",
                Err(
                    "/etc/egress-monitor.toml:3:24: names.max_names_per_device: 1048577 is out of range: allowed 16 to 1048576",
                ),
            ),
            (
                "dns_grase = \"1m\"",
                Err(
                    "/etc/egress-monitor.toml:3:1: names.dns_grase: unknown key `dns_grase`, expected one of `dns_grace`, `tls_ttl`, `max_names_per_device`, `public_resolvers`",
                ),
            ),
        ];
        for (line, expected) in cases {
            let src = format!("lan = [\"br-lan\"]\n[names]\n{line}\n");
            match expected {
                Ok((dns_grace, tls_ttl, max_names_per_device)) => assert_eq!(
                    load_ok(&src, &Overrides::default()).names,
                    NamesConfig {
                        dns_grace: *dns_grace,
                        tls_ttl: *tls_ttl,
                        max_names_per_device: *max_names_per_device,
                        ..defaults.clone()
                    },
                    "{src:?}"
                ),
                Err(message) => {
                    assert_eq!(load_err(&src, &Overrides::default()).to_string(), *message)
                }
            }
        }

        let err = load_err("lan = [\"br-lan\"]\nnames = 5\n", &Overrides::default());
        assert_eq!(
            err.to_string(),
            "/etc/egress-monitor.toml:2:9: names: invalid type: integer `5`, expected a table of naming settings, like [names]"
        );
    }

    #[test]
    fn public_resolvers_are_single_addresses() {
        const PREFIX: &str =
            "a prefix, not an address; list each resolver's address, like \"1.1.1.1\"";
        const PORT: &str =
            "has a port; give the address alone, like \"1.1.1.1\" or \"2606:4700:4700::1111\"";
        const NOT_IP: &str = "expected an IP address like \"1.1.1.1\" or \"2606:4700:4700::1111\"";
        // (value as written, the list read, or the error after "/etc/egress-monitor.toml:")
        let cases: &[(&str, Result<&[&str], String>)] = &[
            ("[]", Ok(&[])),
            ("[\"1.1.1.1\"]", Ok(&["1.1.1.1"])),
            (
                "[\"9.9.9.9\", \"2620:fe::fe\", \"9.9.9.9\", \"2620:FE:0::FE\"]",
                Ok(&["9.9.9.9", "2620:fe::fe"]),
            ),
            // An IPv4-mapped address is the IPv4 address the traffic carries.
            ("[\"::ffff:1.1.1.1\", \"1.1.1.1\"]", Ok(&["1.1.1.1"])),
            (
                "[\"1.1.1.0/24\"]",
                Err(format!(
                    "3:21: names.public_resolvers[0]: invalid resolver address \"1.1.1.0/24\": {PREFIX}"
                )),
            ),
            (
                "[\"1.1.1.1\", \"1.1.1.1/32\"]",
                Err(format!(
                    "3:32: names.public_resolvers[1]: invalid resolver address \"1.1.1.1/32\": {PREFIX}"
                )),
            ),
            (
                "[\"1.1.1.1:53\"]",
                Err(format!(
                    "3:21: names.public_resolvers[0]: invalid resolver address \"1.1.1.1:53\": {PORT}"
                )),
            ),
            (
                "[\"[2606:4700:4700::1111]:443\"]",
                Err(format!(
                    "3:21: names.public_resolvers[0]: invalid resolver address \"[2606:4700:4700::1111]:443\": {PORT}"
                )),
            ),
            (
                "[\"dns.google\"]",
                Err(format!(
                    "3:21: names.public_resolvers[0]: invalid resolver address \"dns.google\": {NOT_IP}"
                )),
            ),
            (
                "[\"1.1.1\"]",
                Err(format!(
                    "3:21: names.public_resolvers[0]: invalid resolver address \"1.1.1\": {NOT_IP}"
                )),
            ),
            (
                "[\"\"]",
                Err(format!(
                    "3:21: names.public_resolvers[0]: invalid resolver address \"\": {NOT_IP}"
                )),
            ),
            (
                "[1]",
                Err(format!(
                    "3:21: names.public_resolvers[0]: invalid type: integer `1`, expected {EXPECT_RESOLVER}"
                )),
            ),
            (
                "\"1.1.1.1\"",
                Err(
                    "3:20: names.public_resolvers: invalid type: string \"1.1.1.1\", expected a list of IP addresses like [\"1.1.1.1\"]"
                        .to_owned(),
                ),
            ),
        ];
        for (value, expected) in cases {
            let src = format!("lan = [\"br-lan\"]\n[names]\npublic_resolvers = {value}\n");
            match expected {
                Ok(addrs) => {
                    let addrs: Vec<IpAddr> = addrs.iter().map(|a| ip(a)).collect();
                    assert_eq!(
                        load_ok(&src, &Overrides::default()).names.public_resolvers,
                        addrs,
                        "{src:?}"
                    );
                }
                Err(message) => assert_eq!(
                    load_err(&src, &Overrides::default()).to_string(),
                    format!("/etc/egress-monitor.toml:{message}")
                ),
            }
        }
    }

    #[test]
    fn lease_files() {
        // Every format, by the name the file uses.
        for format in LeaseFormat::ALL {
            assert_eq!(format.to_string(), format.as_str());
            let src = format!(
                "lan = [\"br-lan\"]\n[[leases]]\nformat = \"{format}\"\npath = \"/var/lib/leases\"\n"
            );
            assert_eq!(
                load_ok(&src, &Overrides::default()).leases,
                [LeaseSource {
                    format,
                    path: "/var/lib/leases".into()
                }]
            );
        }
        let names: Vec<&str> = LeaseFormat::ALL.iter().map(|f| f.as_str()).collect();
        assert_eq!(
            names,
            ["dnsmasq", "odhcpd", "odhcpd-hosts", "isc-dhcpd", "kea-csv"]
        );

        // In the order given; the inline form works too; the file need not exist.
        let src = "lan = [\"br-lan\"]\nleases = [\n  { format = \"kea-csv\", path = \"/nonexistent/kea-leases6.csv\" },\n  { path = \"/tmp/dhcp.leases\", format = \"dnsmasq\" },\n]\n";
        assert_eq!(
            load_ok(src, &Overrides::default()).leases,
            [
                LeaseSource {
                    format: LeaseFormat::KeaCsv,
                    path: "/nonexistent/kea-leases6.csv".into(),
                },
                LeaseSource {
                    format: LeaseFormat::Dnsmasq,
                    path: "/tmp/dhcp.leases".into(),
                },
            ]
        );

        const DNSMASQ: &str = "[[leases]]\nformat = \"dnsmasq\"\npath = \"/tmp/dhcp.leases\"\n";
        // (what follows `lan = [..]` on line 2, the whole error)
        let cases: &[(String, &str)] = &[
            (
                "[[leases]]\nformat = \"udhcpd\"\npath = \"/tmp/udhcpd.leases\"\n".to_owned(),
                "/etc/egress-monitor.toml:3:10: leases[0].format: unknown variant `udhcpd`, expected one of `dnsmasq`, `odhcpd`, `odhcpd-hosts`, `isc-dhcpd`, `kea-csv`",
            ),
            (
                "[[leases]]\nformat = \"dnsmasq\"\npath = \"dhcp.leases\"\n".to_owned(),
                r#"/etc/egress-monitor.toml:4:8: leases[0].path: invalid lease file path "dhcp.leases": must be absolute, like "/tmp/dhcp.leases""#,
            ),
            (
                "[[leases]]\nformat = \"dnsmasq\"\npath = \"\"\n".to_owned(),
                r#"/etc/egress-monitor.toml:4:8: leases[0].path: invalid lease file path "": must be absolute, like "/tmp/dhcp.leases""#,
            ),
            (
                "[[leases]]\nformat = \"dnsmasq\"\npath = 5\n".to_owned(),
                r#"/etc/egress-monitor.toml:4:8: leases[0].path: invalid type: integer `5`, expected an absolute path like "/tmp/dhcp.leases""#,
            ),
            (
                format!("{DNSMASQ}[[leases]]\nformat = \"odhcpd\"\npath = \"/tmp/dhcp.leases\"\n"),
                r#"/etc/egress-monitor.toml:7:8: leases[1].path: lease file "/tmp/dhcp.leases" is already listed at leases[0]; each file is read once"#,
            ),
            (
                // The same file, spelled differently.
                format!(
                    "{DNSMASQ}[[leases]]\nformat = \"dnsmasq\"\npath = \"/tmp//dhcp.leases/\"\n"
                ),
                r#"/etc/egress-monitor.toml:7:8: leases[1].path: lease file "/tmp//dhcp.leases/" is already listed at leases[0]; each file is read once"#,
            ),
            (
                "[[leases]]\nformat = \"dnsmasq\"\n".to_owned(),
                "/etc/egress-monitor.toml:2:1: leases[0]: missing key `path`",
            ),
            (
                "[[leases]]\npath = \"/tmp/dhcp.leases\"\n".to_owned(),
                "/etc/egress-monitor.toml:2:1: leases[0]: missing key `format`",
            ),
            (
                format!("{DNSMASQ}file = \"/tmp/odhcpd\"\n"),
                "/etc/egress-monitor.toml:5:1: leases[0].file: unknown key `file`, expected `format` or `path`",
            ),
            (
                "leases = \"/tmp/dhcp.leases\"\n".to_owned(),
                r#"/etc/egress-monitor.toml:2:10: leases: invalid type: string "/tmp/dhcp.leases", expected an array of tables: [[leases]] with format and path"#,
            ),
            (
                "leases = [\"/tmp/dhcp.leases\"]\n".to_owned(),
                r#"/etc/egress-monitor.toml:2:11: leases[0]: invalid type: string "/tmp/dhcp.leases", expected a lease file table like { format = "dnsmasq", path = "/tmp/dhcp.leases" }"#,
            ),
        ];
        for (rest, expected) in cases {
            let src = format!("lan = [\"br-lan\"]\n{rest}");
            assert_eq!(
                load_err(&src, &Overrides::default()).to_string(),
                *expected,
                "{src:?}"
            );
        }
    }

    #[test]
    fn device_groups() {
        let longest = "é".repeat(DEVICE_NAME_MAX_CHARS);
        let too_long = "a".repeat(DEVICE_NAME_MAX_CHARS + 1);
        // (group as written, the group read, or the error after "devices.\"..\": ")
        let cases: &[(&str, Result<&str, String>)] = &[
            ("\"iot\"", Ok("iot")),
            ("\"Kids' tablets (2)\"", Ok("Kids' tablets (2)")),
            (&format!("\"{longest}\""), Ok(&longest)),
            (
                "\"\"",
                Err(r#"3:47: devices."00:16:3e:00:00:01".group: invalid device group "": must not be empty"#.to_owned()),
            ),
            (
                &format!("\"{too_long}\""),
                Err(format!(r#"3:47: devices."00:16:3e:00:00:01".group: invalid device group "{too_long}": longer than 64 characters"#)),
            ),
            (
                "\"i\\to\"",
                Err(r#"3:47: devices."00:16:3e:00:00:01".group: invalid device group "i\to": must not contain control characters"#.to_owned()),
            ),
            (
                "[\"iot\"]",
                Err(r#"3:47: devices."00:16:3e:00:00:01".group: invalid type: sequence, expected a device group"#.to_owned()),
            ),
        ];
        for (group, expected) in cases {
            let src = format!(
                "lan = [\"br-lan\"]\n[devices]\n\"00:16:3e:00:00:01\" = {{ name = \"cam\", group = {group} }}\n"
            );
            match expected {
                Ok(group) => {
                    let config = load_ok(&src, &Overrides::default());
                    assert_eq!(
                        config.devices[&mac("00:16:3e:00:00:01")],
                        DeviceConfig {
                            name: "cam".into(),
                            group: Some((*group).to_owned()),
                        }
                    );
                }
                Err(message) => assert_eq!(
                    load_err(&src, &Overrides::default()).to_string(),
                    format!("/etc/egress-monitor.toml:{message}")
                ),
            }
        }

        // Without a group, in either form, there is none.
        let src = "lan = [\"br-lan\"]\n[devices]\n\"00:16:3e:00:00:01\" = \"tv\"\n\"00:16:3e:00:00:02\" = { name = \"tv\" }\n";
        let config = load_ok(src, &Overrides::default());
        assert!(config.devices.values().all(|d| d.group.is_none()));

        // A group does not replace the name.
        let src = "lan = [\"br-lan\"]\n[devices]\n\"00:16:3e:00:00:01\" = { group = \"iot\" }\n";
        assert_eq!(
            load_err(src, &Overrides::default()).to_string(),
            r#"/etc/egress-monitor.toml:3:23: devices."00:16:3e:00:00:01": missing key `name`: a device needs a name, even in a group, like { name = "phone", group = "iot" }"#
        );
    }
}
