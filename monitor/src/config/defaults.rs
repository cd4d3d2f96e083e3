//! Default values and allowed ranges of the configuration keys, and the limits on names.
//! Where the eBPF object has the same default, it is taken from `monitor-common`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::Duration;

/// Where `/metrics` and `/healthz` are served unless configured: every address, so Prometheus
/// on another host can scrape the router.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 10100);
/// How often the agent reads the kernel maps unless configured.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Default `state_write_interval`: at most one write of the state file per this long (plus one
/// at shutdown and one per `baseline` command). On a router the state file is on flash: a
/// device scanning thousands of addresses must not rewrite it every few seconds.
pub const DEFAULT_STATE_WRITE_INTERVAL: Duration = Duration::from_secs(300);
/// Allowed `state_write_interval`.
pub const STATE_WRITE_INTERVAL_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(24 * 3600);
/// Allowed `poll_interval`: faster wastes CPU on a small router; slower than an hour risks
/// missing LRU entries evicted between two reads.
pub const POLL_INTERVAL_RANGE: RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(3600);
/// Default capacity of the (device, destination) map; the same as the eBPF object's own.
pub const DEFAULT_FLOW_MAP_ENTRIES: u32 = monitor_common::DEFAULT_FLOW_ENTRIES;
/// Allowed `flow_map_entries`: at 16M entries the map already takes about 1 GiB per CPU.
pub const FLOW_MAP_ENTRIES_RANGE: RangeInclusive<u32> = 16..=16_777_216;
/// Default capacity of the per-device totals map; the same as the eBPF object's own.
pub const DEFAULT_DEVICE_MAP_ENTRIES: u32 = monitor_common::DEFAULT_DEVICE_ENTRIES;
/// Allowed `device_map_entries`.
pub const DEVICE_MAP_ENTRIES_RANGE: RangeInclusive<u32> = 16..=1_048_576;
/// Default `max_destinations_per_device`.
pub const DEFAULT_MAX_DESTINATIONS_PER_DEVICE: u32 = 1_024;
/// Default `max_series`: destination series across all devices and directions. Without it,
/// `device_map_entries` times `max_destinations_per_device` would be millions.
pub const DEFAULT_MAX_SERIES: u32 = 100_000;
/// Allowed `max_series`.
pub const MAX_SERIES_RANGE: RangeInclusive<u32> = 16..=16_777_216;
/// Allowed `max_destinations_per_device`.
pub const MAX_DESTINATIONS_PER_DEVICE_RANGE: RangeInclusive<u32> = 16..=1_048_576;
/// Default `sniff_ring_bytes`: 1 MiB, room for about a thousand 1 KiB records between two
/// reads by the agent; the same as the eBPF object's own.
pub const DEFAULT_SNIFF_RING_BYTES: u32 = monitor_common::DEFAULT_SNIFF_RING_BYTES;
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
/// Default `enrich.cache_entries`: a home network's devices talk to some thousands of
/// addresses a day; at about 60 bytes an entry this is 4 MiB at most.
pub const DEFAULT_ENRICH_CACHE_ENTRIES: u32 = 65_536;
/// Allowed `enrich.cache_entries`.
pub const ENRICH_CACHE_ENTRIES_RANGE: RangeInclusive<u32> = 16..=16_777_216;
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

/// Where the agent keeps its state unless told otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/egress-monitor";
/// Default `pin_dir`: where the counter maps and links are pinned, so counting survives a
/// restart.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/egress-monitor";

/// Default `enrich.max_as_per_device`: AS series kept per device and direction; the rest are
/// `asn="other"`. A home device talks to a few dozen networks.
pub const DEFAULT_MAX_AS_PER_DEVICE: u32 = 32;

/// Allowed `enrich.max_as_per_device`.
pub const MAX_AS_PER_DEVICE_RANGE: std::ops::RangeInclusive<u32> = 1..=1024;
