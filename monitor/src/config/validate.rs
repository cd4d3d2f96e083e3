//! Parsers and checks shared by the file and the flags, so both say the same thing.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use super::defaults::{
    DEVICE_NAME_MAX_CHARS, IFACE_NAME_MAX_BYTES, POLL_INTERVAL_RANGE, SNIFF_RING_BYTES_RANGE,
};

/// Drops repeated items, keeping the first of each.
pub(super) fn dedup<T: PartialEq>(items: Vec<T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(items.len());
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

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
            "invalid listen address {s:?}: expected IP:PORT like \"0.0.0.0:10100\" or \"[::]:10100\""
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
pub(super) fn parse_resolver(s: &str) -> Result<IpAddr, String> {
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
pub(super) fn check_lease_path(s: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(s);
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(format!(
            "invalid lease file path {s:?}: must be absolute, like \"/tmp/dhcp.leases\""
        ))
    }
}
/// An MMDB file's path must be absolute, like a lease file's.
pub(super) fn check_database_path(s: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(s);
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(format!(
            "invalid database path {s:?}: must be absolute, like \"/usr/share/GeoIP/GeoLite2-ASN.mmdb\""
        ))
    }
}

/// A pin directory: absolute, below the mount point (a directory of its own, which `detach`
/// removes whole); "" turns pinning off.
pub(crate) fn check_pin_dir(s: &str) -> Result<Option<PathBuf>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    let path = PathBuf::from(s);
    if !path.is_absolute() || path.components().count() < 3 {
        return Err(format!(
            "invalid pin directory {s:?}: must be an absolute path of its own on bpffs, like \"/sys/fs/bpf/egress-monitor\", or \"\" for no pins"
        ));
    }
    Ok(Some(path))
}

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

pub(super) fn check_poll_interval(interval: Duration) -> Result<Duration, String> {
    check_duration(interval, &POLL_INTERVAL_RANGE)
}

pub(super) fn check_duration(
    d: Duration,
    range: &RangeInclusive<Duration>,
) -> Result<Duration, String> {
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
pub(super) fn check_sniff_ring_bytes(n: i64) -> Result<u32, String> {
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

pub(super) fn check_entries(n: i64, range: &RangeInclusive<u32>) -> Result<u32, String> {
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
pub(super) fn check_iface_name(name: &str) -> Result<(), String> {
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

pub(super) fn check_device_name(name: &str) -> Result<String, String> {
    check_label_value("device name", name)
}

pub(super) fn check_device_group(group: &str) -> Result<String, String> {
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
