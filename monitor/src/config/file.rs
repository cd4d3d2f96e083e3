//! The file as written ([`FileConfig`]), how it is parsed, and the serde glue that checks each
//! value as it is read, so that an error carries the value's key and position.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};
use std::ops::{Range, RangeInclusive};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::defaults::{
    DEVICE_MAP_ENTRIES_RANGE, DNS_GRACE_RANGE, FLOW_MAP_ENTRIES_RANGE,
    MAX_DESTINATIONS_PER_DEVICE_RANGE, MAX_NAMES_PER_DEVICE_RANGE, SNIFF_RING_BYTES_RANGE,
    TLS_TTL_RANGE,
};
use super::model::{AttachPolicy, DeviceConfig, LabelMode, LeaseFormat, LeaseSource, NamesConfig};
use super::validate::{
    check_device_group, check_device_name, check_duration, check_entries, check_iface_name,
    check_lease_path, check_pin_dir, check_poll_interval, check_sniff_ring_bytes, check_state_dir,
    dedup, parse_duration, parse_listen, parse_prefix, parse_resolver,
};
use super::{enrich, policy};
use crate::types::MacAddr;

/// The file as written, every key optional. Values are checked while they are deserialized, so
/// toml reports each error with the value's own span and `serde_path_to_error` with its key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    #[serde(default, deserialize_with = "de_lan")]
    pub(super) lan: Option<Vec<IfaceName>>,
    #[serde(default, deserialize_with = "de_listen")]
    pub(super) listen: Option<SocketAddr>,
    #[serde(default, deserialize_with = "de_poll_interval")]
    pub(super) poll_interval: Option<Duration>,
    #[serde(default, deserialize_with = "de_local_prefixes")]
    pub(super) local_prefixes: Option<Vec<Prefix>>,
    #[serde(default, deserialize_with = "de_flow_map_entries")]
    pub(super) flow_map_entries: Option<u32>,
    #[serde(default, deserialize_with = "de_device_map_entries")]
    pub(super) device_map_entries: Option<u32>,
    #[serde(default, deserialize_with = "de_max_destinations_per_device")]
    pub(super) max_destinations_per_device: Option<u32>,
    #[serde(default, deserialize_with = "de_max_series")]
    pub(super) max_series: Option<u32>,
    #[serde(default)]
    pub(super) attach: Option<AttachPolicy>,
    #[serde(default)]
    pub(super) destination_label: Option<LabelMode>,
    #[serde(default, deserialize_with = "de_sniff_ring_bytes")]
    pub(super) sniff_ring_bytes: Option<u32>,
    #[serde(default)]
    pub(super) names: FileNames,
    #[serde(default, deserialize_with = "de_leases")]
    pub(super) leases: Vec<LeaseSource>,
    #[serde(default, deserialize_with = "de_devices")]
    pub(super) devices: BTreeMap<MacAddr, DeviceConfig>,
    #[serde(default, deserialize_with = "de_state_dir")]
    pub(super) state_dir: Option<PathBuf>,
    #[serde(default, deserialize_with = "de_pin_dir")]
    pub(super) pin_dir: Option<Option<PathBuf>>,
    #[serde(default, deserialize_with = "de_state_write_interval")]
    pub(super) state_write_interval: Option<Duration>,
    #[serde(default)]
    pub(super) policy: policy::FilePolicy,
    #[serde(default)]
    pub(super) enrich: enrich::FileEnrich,
}

/// The `[names]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table of naming settings, like [names]"
)]
pub(super) struct FileNames {
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
    pub(super) fn into_config(self) -> NamesConfig {
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
pub(super) struct FileError {
    pub(super) key: String,
    pub(super) message: String,
    pub(super) span: Option<Range<usize>>,
}

pub(super) fn parse_file(src: &str) -> Result<FileConfig, FileError> {
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

// Deserialization glue.

pub(super) const EXPECT_DURATION: &str = "a duration like \"1s\" or \"500ms\"";
const EXPECT_LISTEN: &str = "an address like \"0.0.0.0:10100\" or \"[::]:10100\"";
const EXPECT_PREFIX: &str = "a prefix like \"10.8.0.0/24\" or \"fd00::/8\"";
const EXPECT_IFACE: &str = "an interface name like \"br-lan\"";
const EXPECT_DEVICE: &str = "a device name, or a table like { name = \"phone\", group = \"iot\" }";
pub(super) const EXPECT_RESOLVER: &str =
    "an IP address like \"1.1.1.1\" or \"2606:4700:4700::1111\"";
const EXPECT_LEASE_PATH: &str = "an absolute path like \"/tmp/dhcp.leases\"";
const EXPECT_LEASE: &str =
    "a lease file table like { format = \"dnsmasq\", path = \"/tmp/dhcp.leases\" }";
const EXPECT_STATE_DIR: &str = "an absolute path like \"/var/lib/egress-monitor\"";

const EXPECT_PIN_DIR: &str =
    "an absolute path on bpffs like \"/sys/fs/bpf/egress-monitor\", or \"\" for no pins";

fn de_pin_dir<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<PathBuf>>, D::Error> {
    de_str(d, EXPECT_PIN_DIR, check_pin_dir).map(Some)
}

fn de_state_dir<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    de_str(d, EXPECT_STATE_DIR, check_state_dir).map(Some)
}

/// Deserializes a string with `parse`, so its error carries the value's span and key.
pub(super) fn de_str<'de, D, T, P>(
    deserializer: D,
    expecting: &'static str,
    parse: P,
) -> Result<T, D::Error>
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

fn de_state_write_interval<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_str(d, EXPECT_DURATION, |s| {
        parse_duration(s)
            .and_then(|d| check_duration(d, &super::defaults::STATE_WRITE_INTERVAL_RANGE))
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
pub(super) fn de_u32<'de, D, C>(
    deserializer: D,
    expecting: String,
    check: C,
) -> Result<u32, D::Error>
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

fn de_max_series<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    de_entries(d, &super::defaults::MAX_SERIES_RANGE).map(Some)
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
pub(super) struct IfaceName(pub(super) String);

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
pub(super) struct Prefix(pub(super) IpNet);

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
