//! The independent byte counter: nftables in the WAN namespace, per server address.
//!
//! This is the cross-check for the agent. It runs in another namespace and another kernel
//! subsystem than the eBPF programs, and counts what actually crossed the uplink. nftables
//! counts `skb->len` from the network header, i.e. IP header plus payload, per packet.
//!
//! For those to be wire packets: the router sends on the uplink with TSO/GSO off (so the WAN
//! receives segments), the WAN's `eth0` has GRO off (so they are not merged again), and the WAN
//! sends with TSO/GSO off and `gso_max_segs 1` (TCP builds GSO packets even when the device has
//! GSO off, and the output hook would see them before segmentation; one segment per packet stops
//! that). GRO on the router's `wan0` ([`crate::Lab::set_router_wan_gro`]) merges only after the
//! WAN has counted. The `oversize` counter catches anything larger than the MTU, which would mean
//! the counts are not per wire packet.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use serde_json::Value;

use crate::netns;

/// The nftables table (family inet) that holds the counters in the WAN namespace.
pub const WAN_TABLE: &str = "egl_wan";

/// The WAN-side interface that faces the router; only traffic through it is counted.
const WAN_IF: &str = "eth0";

/// The uplink MTU: a counted packet longer than this was not a wire packet.
const MTU: u32 = 1500;

/// Traffic between one server address and the router, as seen at the WAN end of the uplink by
/// nftables (input and output hooks of the WAN namespace, only via its `eth0`).
///
/// Bytes are IP-layer bytes (IP header + payload), as the agent counts them, and every count
/// is per wire packet: the router sends with TSO/GSO off, the WAN receives with GRO off and
/// sends with TSO/GSO off and `gso_max_segs 1` (TCP builds GSO packets even when the device has
/// GSO off, and the output hook would see them before segmentation).
/// [`crate::Lab::wan_oversize_packets`] checks that nothing larger than the MTU was counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WanCount {
    /// Bytes received from the router with this server as destination.
    pub rx_bytes: u64,
    /// Packets received from the router with this server as destination.
    pub rx_packets: u64,
    /// Bytes sent to the router with this server as source.
    pub tx_bytes: u64,
    /// Packets sent to the router with this server as source.
    pub tx_packets: u64,
}

impl WanCount {
    /// Whether nothing was counted in either direction.
    pub fn is_zero(&self) -> bool {
        *self == WanCount::default()
    }
}

/// The ruleset for the WAN namespace: a named counter per server and direction (`rx_{i}` and
/// `tx_{i}`, `i` indexing `servers`), plus `oversize`.
pub(crate) fn ruleset(servers: &[IpAddr]) -> String {
    let mut objects = String::new();
    let mut input = String::new();
    let mut output = String::new();
    for (i, addr) in servers.iter().enumerate() {
        let family = match addr {
            IpAddr::V4(_) => "ip",
            IpAddr::V6(_) => "ip6",
        };
        for dir in ["rx", "tx"] {
            writeln!(
                objects,
                "  counter {dir}_{i} {{ comment \"{dir} {addr}\" }}"
            )
            .unwrap();
        }
        writeln!(
            input,
            "    iifname \"{WAN_IF}\" {family} daddr {addr} counter name \"rx_{i}\""
        )
        .unwrap();
        writeln!(
            output,
            "    oifname \"{WAN_IF}\" {family} saddr {addr} counter name \"tx_{i}\""
        )
        .unwrap();
    }
    format!(
        "table inet {WAN_TABLE} {{\n\
         {objects}  counter oversize {{ comment \"packets longer than the MTU\" }}\n\
         \x20 chain input {{\n\
         \x20   type filter hook input priority filter; policy accept;\n\
         \x20   iifname \"{WAN_IF}\" meta length > {MTU} counter name \"oversize\"\n\
         {input}  }}\n\
         \x20 chain output {{\n\
         \x20   type filter hook output priority filter; policy accept;\n\
         \x20   oifname \"{WAN_IF}\" meta length > {MTU} counter name \"oversize\"\n\
         {output}  }}\n\
         }}\n"
    )
}

/// The named counters in `nft -j list counters ...` output, as `name -> (packets, bytes)`.
fn parse_named(json: &str) -> HashMap<String, (u64, u64)> {
    let doc: Value = serde_json::from_str(json)
        .unwrap_or_else(|e| panic!("nft printed invalid JSON ({e}): {json}"));
    let items = doc["nftables"]
        .as_array()
        .unwrap_or_else(|| panic!("no `nftables` array in nft output: {json}"));
    items
        .iter()
        .filter_map(|item| item.get("counter"))
        .filter(|c| c["table"] == WAN_TABLE)
        .map(|c| {
            let field = |k: &str| {
                c[k].as_u64()
                    .unwrap_or_else(|| panic!("counter without `{k}`: {c}"))
            };
            let name = c["name"].as_str().unwrap_or_default().to_owned();
            (name, (field("packets"), field("bytes")))
        })
        .collect()
}

/// Maps named counters back to server addresses; every server appears, even at zero.
pub(crate) fn parse(json: &str, servers: &[IpAddr]) -> HashMap<IpAddr, WanCount> {
    let named = parse_named(json);
    let get = |name: String| {
        named
            .get(&name)
            .copied()
            .unwrap_or_else(|| panic!("nft has no counter {name}"))
    };
    servers
        .iter()
        .enumerate()
        .map(|(i, &addr)| {
            let (rx_packets, rx_bytes) = get(format!("rx_{i}"));
            let (tx_packets, tx_bytes) = get(format!("tx_{i}"));
            let count = WanCount {
                rx_bytes,
                rx_packets,
                tx_bytes,
                tx_packets,
            };
            (addr, count)
        })
        .collect()
}

/// Installs the counters in namespace `ns`.
pub(crate) fn install(ns: &str, servers: &[IpAddr]) {
    netns::exec_ok_stdin(ns, "nft", &["-f", "-"], &ruleset(servers));
}

fn list_json(ns: &str) -> String {
    netns::exec_ok(
        ns,
        "nft",
        &["-j", "list", "counters", "table", "inet", WAN_TABLE],
    )
}

/// Reads the per-server counts in namespace `ns`.
pub(crate) fn read(ns: &str, servers: &[IpAddr]) -> HashMap<IpAddr, WanCount> {
    parse(&list_json(ns), servers)
}

/// Packets longer than the MTU counted in namespace `ns` (should stay 0).
pub(crate) fn read_oversize(ns: &str) -> u64 {
    parse_named(&list_json(ns))
        .get("oversize")
        .map_or(0, |&(packets, _)| packets)
}

/// Sets every counter in namespace `ns` back to zero.
pub(crate) fn reset(ns: &str) {
    netns::exec_ok(
        ns,
        "nft",
        &["reset", "counters", "table", "inet", WAN_TABLE],
    );
}

/// An interface's own counters (`ip -s link`): skbs as the driver saw them, so an aggregate
/// (GSO or GRO) counts as one packet, and bytes include the Ethernet header.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LinkStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
}

/// Reads the counters of interface `dev` in namespace `ns`. Useful to see whether aggregates
/// crossed a link: `tx_bytes / tx_packets` above the MTU means they did.
pub fn link_stats(ns: &str, dev: &str) -> LinkStats {
    let json = netns::exec_ok(ns, "ip", &["-j", "-s", "link", "show", "dev", dev]);
    parse_link_stats(&json)
}

fn parse_link_stats(json: &str) -> LinkStats {
    let doc: Value = serde_json::from_str(json)
        .unwrap_or_else(|e| panic!("ip printed invalid JSON ({e}): {json}"));
    let stats = &doc[0]["stats64"];
    let get = |dir: &str, key: &str| {
        stats[dir][key]
            .as_u64()
            .unwrap_or_else(|| panic!("no stats64.{dir}.{key} in: {json}"))
    };
    LinkStats {
        rx_packets: get("rx", "packets"),
        rx_bytes: get("rx", "bytes"),
        tx_packets: get("tx", "packets"),
        tx_bytes: get("tx", "bytes"),
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    const V4: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
    const V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10));

    #[test]
    fn ruleset_counts_each_server_both_ways() {
        let rules = ruleset(&[V4, V6]);
        assert!(rules.contains("iifname \"eth0\" ip daddr 192.0.2.10 counter name \"rx_0\""));
        assert!(rules.contains("oifname \"eth0\" ip saddr 192.0.2.10 counter name \"tx_0\""));
        assert!(rules.contains("iifname \"eth0\" ip6 daddr 2001:db8:1::10 counter name \"rx_1\""));
        assert!(rules.contains("oifname \"eth0\" ip6 saddr 2001:db8:1::10 counter name \"tx_1\""));
        assert!(rules.contains("counter oversize"));
    }

    #[test]
    fn parses_nft_json() {
        let json = r#"{"nftables": [
            {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
            {"counter": {"family": "inet", "name": "rx_0", "table": "egl_wan", "handle": 1, "packets": 10, "bytes": 1280}},
            {"counter": {"family": "inet", "name": "tx_0", "table": "egl_wan", "handle": 2, "packets": 0, "bytes": 0}},
            {"counter": {"family": "inet", "name": "rx_1", "table": "egl_wan", "handle": 3, "packets": 1, "bytes": 148}},
            {"counter": {"family": "inet", "name": "tx_1", "table": "egl_wan", "handle": 4, "packets": 2, "bytes": 296}},
            {"counter": {"family": "inet", "name": "oversize", "table": "egl_wan", "handle": 5, "packets": 0, "bytes": 0}}
        ]}"#;
        let counts = parse(json, &[V4, V6]);
        assert_eq!(
            counts[&V4],
            WanCount {
                rx_bytes: 1280,
                rx_packets: 10,
                tx_bytes: 0,
                tx_packets: 0
            }
        );
        assert_eq!(
            counts[&V6],
            WanCount {
                rx_bytes: 148,
                rx_packets: 1,
                tx_bytes: 296,
                tx_packets: 2
            }
        );
        assert_eq!(parse_named(json)["oversize"], (0, 0));
    }

    #[test]
    #[should_panic(expected = "nft has no counter tx_0")]
    fn missing_counter_is_an_error() {
        let json = r#"{"nftables": [{"counter": {"family": "inet", "name": "rx_0", "table": "egl_wan", "packets": 0, "bytes": 0}}]}"#;
        parse(json, &[V4, V6]);
    }

    #[test]
    fn parses_link_stats() {
        let json = r#"[{"ifindex":5,"ifname":"lan1","stats64":{"rx":{"bytes":1000,"packets":4,"errors":0},"tx":{"bytes":70000,"packets":2,"errors":0}}}]"#;
        assert_eq!(
            parse_link_stats(json),
            LinkStats {
                rx_packets: 4,
                rx_bytes: 1000,
                tx_packets: 2,
                tx_bytes: 70000
            }
        );
    }
}
