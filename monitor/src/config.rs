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
//! [devices]                        # names for MAC addresses
//! "00:16:3e:00:00:01" = "phone"
//! "00:16:3e:00:00:02" = { name = "laptop" }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::mac::MacAddr;

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
/// Longest device name, in characters: names become Prometheus label values, which should stay
/// short.
pub const DEVICE_NAME_MAX_CHARS: usize = 64;
/// Longest interface name the kernel accepts (`IFNAMSIZ` less the NUL).
pub const IFACE_NAME_MAX_BYTES: usize = 15;

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
    /// Names the user gave to devices, by MAC address; never a multicast address.
    pub devices: BTreeMap<MacAddr, DeviceConfig>,
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
        if lan.is_empty() {
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
            devices: file.devices,
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

        let mut lines = vec![
            format!("lan = {}", list(&self.lan)),
            format!("listen = {}", quoted(&self.listen.to_string())),
            format!(
                "poll_interval = {}",
                quoted(&humantime::format_duration(self.poll_interval).to_string())
            ),
            format!("local_prefixes = {}", list(&self.local_prefixes)),
            format!("flow_map_entries = {}", self.flow_map_entries),
            format!("device_map_entries = {}", self.device_map_entries),
            format!(
                "max_destinations_per_device = {}",
                self.max_destinations_per_device
            ),
            format!("attach = {}", quoted(self.attach.as_str())),
            String::new(),
            "[devices]".to_owned(),
        ];
        lines.extend(
            self.devices
                .iter()
                .map(|(mac, device)| format!("\"{mac}\" = {{ name = {} }}", quoted(&device.name))),
        );
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
    #[serde(default, deserialize_with = "de_devices")]
    devices: BTreeMap<MacAddr, DeviceConfig>,
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

fn dedup(names: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for name in names {
        if !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

// Parsers and checks shared by the file and the flags, so both say the same thing.

const EXPECT_DURATION: &str = "a duration like \"1s\" or \"500ms\"";
const EXPECT_LISTEN: &str = "an address like \"0.0.0.0:9750\" or \"[::]:9750\"";
const EXPECT_PREFIX: &str = "a prefix like \"10.8.0.0/24\" or \"fd00::/8\"";
const EXPECT_IFACE: &str = "an interface name like \"br-lan\"";
const EXPECT_DEVICE: &str = "a device name, or a table like { name = \"phone\" }";

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

fn check_poll_interval(interval: Duration) -> Result<Duration, String> {
    if POLL_INTERVAL_RANGE.contains(&interval) {
        Ok(interval)
    } else {
        Err(format!(
            "{} is out of range: allowed {} to {}",
            humantime::format_duration(interval),
            humantime::format_duration(*POLL_INTERVAL_RANGE.start()),
            humantime::format_duration(*POLL_INTERVAL_RANGE.end()),
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
    let why = if name.is_empty() {
        "must not be empty".to_owned()
    } else if name.chars().count() > DEVICE_NAME_MAX_CHARS {
        format!("longer than {DEVICE_NAME_MAX_CHARS} characters")
    } else if name.chars().any(char::is_control) {
        "must not contain control characters".to_owned()
    } else {
        return Ok(name.to_owned());
    };
    Err(format!("invalid device name {name:?}: {why}"))
}

// Deserialization glue.

/// Deserializes a string with `parse`, so its error carries the value's span and key.
fn de_str<'de, D, T>(
    deserializer: D,
    expecting: &'static str,
    parse: fn(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct StrVisitor<T> {
        expecting: &'static str,
        parse: fn(&str) -> Result<T, String>,
    }

    impl<T> Visitor<'_> for StrVisitor<T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }

        fn visit_str<E: de::Error>(self, s: &str) -> Result<T, E> {
            (self.parse)(s).map_err(E::custom)
        }
    }

    deserializer.deserialize_str(StrVisitor { expecting, parse })
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

fn de_entries<'de, D: Deserializer<'de>>(
    deserializer: D,
    range: &'static RangeInclusive<u32>,
) -> Result<u32, D::Error> {
    struct EntriesVisitor(&'static RangeInclusive<u32>);

    impl Visitor<'_> for EntriesVisitor {
        type Value = u32;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a number from {} to {}", self.0.start(), self.0.end())
        }

        fn visit_i64<E: de::Error>(self, n: i64) -> Result<u32, E> {
            check_entries(n, self.0).map_err(E::custom)
        }

        fn visit_u64<E: de::Error>(self, n: u64) -> Result<u32, E> {
            self.visit_i64(i64::try_from(n).unwrap_or(i64::MAX))
        }
    }

    deserializer.deserialize_u32(EntriesVisitor(range))
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

/// Accepts the short form `"mac" = "name"` and the table form `"mac" = { name = "name" }`.
impl<'de> Deserialize<'de> for DeviceConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct DeviceTable {
            #[serde(deserialize_with = "de_device_name")]
            name: String,
        }

        fn de_device_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
            de_str(d, "a device name", check_device_name)
        }

        struct DeviceVisitor;

        impl<'de> Visitor<'de> for DeviceVisitor {
            type Value = DeviceConfig;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(EXPECT_DEVICE)
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<DeviceConfig, E> {
                let name = check_device_name(s).map_err(E::custom)?;
                Ok(DeviceConfig { name })
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<DeviceConfig, A::Error> {
                let table = DeviceTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(DeviceConfig { name: table.name })
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

    const EXAMPLE: &str = r#"# every key
lan = ["br-lan", "wlan0"]
listen = "[::]:9100"
poll_interval = "2s 500ms"
local_prefixes = ["10.8.0.0/24", "fd00::/8"]
flow_map_entries = 1024
device_map_entries = 256

[devices]
"00:16:3e:00:00:01" = "phone"
"00-16-3E-00-00-02" = { name = "laptop" }

[devices."00:16:3e:00:00:03"]
name = "laptop"
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
            devices: BTreeMap::new(),
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
        let devices: Vec<(String, &str)> = config
            .devices
            .iter()
            .map(|(mac, device)| (mac.to_string(), device.name.as_str()))
            .collect();
        assert_eq!(
            devices,
            [
                ("00:16:3e:00:00:01".to_owned(), "phone"),
                ("00:16:3e:00:00:02".to_owned(), "laptop"),
                ("00:16:3e:00:00:03".to_owned(), "laptop"),
            ]
        );
        assert_eq!(
            config.device_name(&mac("00:16:3e:00:00:02")),
            Some("laptop")
        );
        assert_eq!(config.device_name(&mac("00:16:3e:00:00:09")), None);
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
        };
        let config = load_ok(EXAMPLE, &flags);
        assert_eq!(config.attach, AttachPolicy::Clsact);
        assert_eq!(config.lan, ["eth1"]);
        assert_eq!(config.listen, "127.0.0.1:9750".parse().unwrap());
        assert_eq!(config.poll_interval, Duration::from_millis(100));
        assert_eq!(config.local_prefixes, [net("192.168.100.0/24")]);
        assert_eq!(config.flow_map_entries, 16_777_216);
        // Keys without a flag keep the file's value.
        assert_eq!(config.device_map_entries, 256);
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
                "/etc/egress-monitor.toml:2:1: poll_intervall: unknown key `poll_intervall`, expected one of `lan`, `listen`, `poll_interval`, `local_prefixes`, `flow_map_entries`, `device_map_entries`, `max_destinations_per_device`, `attach`, `devices`",
            ),
            (
                "lan = [\"br-lan\"]\n[devices]\n\"00:16:3e:00:00:01\" = { name = \"tv\", group = \"media\" }\n",
                "/etc/egress-monitor.toml:3:38: devices.\"00:16:3e:00:00:01\".group: unknown key `group`, expected `name`",
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
                r#"/etc/egress-monitor.toml:3:23: devices."00:16:3e:00:00:01": missing key `name`"#,
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
             `poll_interval`, `local_prefixes`, `flow_map_entries`, `device_map_entries`, `max_destinations_per_device`, `attach`, `devices`"
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
            },
        );
        let text = config.to_toml();
        assert!(
            text.starts_with("lan = [\"br-lan\", \"wlan0\"]\nlisten = \"[::]:9100\"\n"),
            "{text}"
        );
        assert_eq!(load_ok(&text, &Overrides::default()), config, "{text}");

        let minimal = load_ok("lan = [\"br-lan\"]", &Overrides::default());
        assert_eq!(
            minimal.to_toml(),
            "lan = [\"br-lan\"]\nlisten = \"0.0.0.0:9750\"\npoll_interval = \"1s\"\n\
             local_prefixes = []\nflow_map_entries = 65536\ndevice_map_entries = 4096\nmax_destinations_per_device = 1024\nattach = \"auto\"\n\n[devices]\n"
        );
    }
}
