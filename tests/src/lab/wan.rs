//! The WAN namespace, "the internet": the far end of the router's uplink, the servers' addresses
//! and the nftables counters that count, per server, what crossed the uplink.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use super::{LAN_PREFIX_V6, Lab, ROUTER_WAN_V6, router::lan_v6_prefix};
use crate::counters::{self, WanCount};
use crate::dns::{OUTSIDE_RESOLVER_V4, OUTSIDE_RESOLVER_V6};
use crate::netns::{exec_ok, ip_batch};
use crate::traffic::wait_until;

/// The WAN namespace's interface towards the router.
pub const WAN_IF: &str = "eth0";
/// The WAN namespace's uplink addresses (the router's default gateways).
pub const WAN_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
pub const WAN_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 2);
/// The MAC address of the WAN end of the uplink.
pub const WAN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xff, 0x02];

/// IPv4 servers in the WAN namespace, kept off the uplink subnet so that "traffic to a server"
/// is never confused with traffic to the gateway.
pub const SERVERS_V4: [Ipv4Addr; 5] = [
    Ipv4Addr::new(192, 0, 2, 10),
    Ipv4Addr::new(192, 0, 2, 20),
    Ipv4Addr::new(192, 0, 2, 30),
    Ipv4Addr::new(203, 0, 113, 5),
    Ipv4Addr::new(203, 0, 113, 6),
];
/// IPv6 servers in the WAN namespace.
pub const SERVERS_V6: [Ipv6Addr; 3] = [
    Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10),
    Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x20),
    Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x5),
];
/// All servers, IPv4 first, in the order of [`SERVERS_V4`] then [`SERVERS_V6`].
pub const SERVERS: [IpAddr; 8] = [
    IpAddr::V4(SERVERS_V4[0]),
    IpAddr::V4(SERVERS_V4[1]),
    IpAddr::V4(SERVERS_V4[2]),
    IpAddr::V4(SERVERS_V4[3]),
    IpAddr::V4(SERVERS_V4[4]),
    IpAddr::V6(SERVERS_V6[0]),
    IpAddr::V6(SERVERS_V6[1]),
    IpAddr::V6(SERVERS_V6[2]),
];

impl Lab {
    /// Per-server traffic counted at the WAN end of the uplink, for every server in [`SERVERS`].
    pub fn wan_counters(&self) -> HashMap<IpAddr, WanCount> {
        counters::read(&self.wan, &SERVERS)
    }

    /// The WAN counters of one server; panics if `server` is not in [`SERVERS`].
    pub fn wan_count(&self, server: IpAddr) -> WanCount {
        *self
            .wan_counters()
            .get(&server)
            .unwrap_or_else(|| panic!("{server} is not a lab server"))
    }

    /// Polls the WAN counters of `server` until `done` accepts them or `timeout` passes, and
    /// returns the last reading. Packets cross the veths asynchronously, so exact comparisons
    /// should wait for the expected value first.
    pub fn wait_wan_count(
        &self,
        server: IpAddr,
        timeout: Duration,
        mut done: impl FnMut(&WanCount) -> bool,
    ) -> WanCount {
        let mut last = WanCount::default();
        wait_until(timeout, || {
            last = self.wan_count(server);
            done(&last)
        });
        last
    }

    /// Sets all WAN counters back to zero.
    pub fn reset_wan_counters(&self) {
        counters::reset(&self.wan);
    }

    /// Packets longer than the MTU seen on the WAN end of the uplink. Anything but 0 means the
    /// counters saw aggregates, not wire packets, and byte-exact comparisons are off.
    pub fn wan_oversize_packets(&self) -> u64 {
        counters::read_oversize(&self.wan)
    }

    /// Sends `count` datagrams of `payload` bytes from `device` to the UDP sink of `to` (a
    /// sink, so no ICMP error comes back); the IP-layer bytes sent.
    pub fn send_to_sink(&self, device: &str, to: IpAddr, payload: usize, count: u32) -> u64 {
        crate::udp_send(
            &self.device(device).ns,
            SocketAddr::new(to, crate::UDP_SINK_PORT),
            payload,
            count,
        );
        u64::from(count) * crate::udp_ip_bytes(to.is_ipv4(), payload)
    }

    /// The internet: uplink, the route back to the LAN's IPv6 prefix, servers, counters.
    pub(super) fn setup_wan(&self) {
        let w = self.wan.as_str();
        let mut script = format!(
            "link set lo up\n\
             addr add {WAN_V4}/24 dev {WAN_IF}\n\
             addr add {WAN_V6}/64 dev {WAN_IF} nodad\n\
             link set {WAN_IF} gso_max_segs 1\n\
             link set {WAN_IF} up\n\
             route add {lan6}/{LAN_PREFIX_V6} via {ROUTER_WAN_V6}\n",
            lan6 = lan_v6_prefix(),
        );
        // The outside resolver's addresses exist in every lab, so that a test can point traffic
        // (a DNS-over-TLS look-alike, say) at them with or without dnsmasq.
        let outside: [IpAddr; 2] = [OUTSIDE_RESOLVER_V4.into(), OUTSIDE_RESOLVER_V6.into()];
        for server in SERVERS.into_iter().chain(outside) {
            match server {
                IpAddr::V4(a) => script += &format!("addr add {a}/32 dev lo\n"),
                IpAddr::V6(a) => script += &format!("addr add {a}/128 dev lo nodad\n"),
            }
        }
        // `gso_max_segs 1`: TCP builds GSO packets even when the device has GSO off, and the
        // output hook would count them before segmentation; one segment per packet keeps the
        // counts per wire packet.
        ip_batch(w, &script);
        exec_ok(
            w,
            "ethtool",
            &["-K", WAN_IF, "tso", "off", "gso", "off", "gro", "off"],
        );
        counters::install(w, &SERVERS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ROUTER_LAN_V4;

    #[test]
    fn servers_are_off_the_uplink_and_lan() {
        for s in SERVERS_V4 {
            assert_ne!(s.octets()[..3], WAN_V4.octets()[..3]);
            assert_ne!(s.octets()[..3], ROUTER_LAN_V4.octets()[..3]);
        }
        assert_eq!(SERVERS[5], IpAddr::V6(SERVERS_V6[0]));
        assert_eq!(SERVERS_V6[0].to_string(), "2001:db8:1::10");
    }
}
