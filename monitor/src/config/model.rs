//! The typed values of the configuration that are not [`Config`](super::Config) itself: the
//! enums and tables its fields hold, and the command-line [`Overrides`].

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use super::defaults::{
    DEFAULT_DNS_GRACE, DEFAULT_MAX_NAMES_PER_DEVICE, DEFAULT_PUBLIC_RESOLVERS, DEFAULT_TLS_TTL,
};

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
    /// `--pin-dir` ("" for none).
    pub pin_dir: Option<String>,
}
