//! The router namespace: the LAN bridge `br-lan` and its ports, the uplink `wan0`, forwarding,
//! routes and the IPv4 masquerade, and what a test changes on them (GRO, a rebuilt bridge).

use std::net::{Ipv4Addr, Ipv6Addr};

use super::{DEVICE_IF, Lab, WAN_IF, WAN_MAC, WAN_V4, WAN_V6, mac_to_string};
use crate::netns::{exec_ok, exec_ok_stdin, ip_batch, sysctl, sysctls};

/// The LAN bridge in the router namespace; the agent watches its ports.
pub const LAN_BRIDGE: &str = "br-lan";
/// The router's uplink, towards the WAN namespace.
pub const ROUTER_WAN_IF: &str = "wan0";

/// The router's LAN address (gateway of the devices).
pub const ROUTER_LAN_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 1);
/// The router's LAN IPv6 address (gateway of the devices).
pub const ROUTER_LAN_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x50, 0, 0, 0, 0, 1);
/// The LAN prefix lengths, IPv4 and IPv6.
pub const LAN_PREFIX_V4: u8 = 24;
pub const LAN_PREFIX_V6: u8 = 64;
/// The MAC address of `br-lan`, fixed so that "to the router" is recognisable in captures.
pub const ROUTER_LAN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x50, 0x01];
/// The router's uplink addresses (the IPv4 one is the masquerade source).
pub const ROUTER_WAN_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const ROUTER_WAN_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 1);
/// MAC addresses of the uplink ends (router side, WAN side).
pub const ROUTER_WAN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xff, 0x01];

impl Lab {
    /// Turns GRO on the router's `wan0` on or off (it starts off).
    ///
    /// With GRO on, downloads arrive at the router as aggregated super-packets and leave towards
    /// the devices as such, which is what a real router with a GRO-capable NIC does; the WAN
    /// counters still see wire packets.
    ///
    /// The WAN side sends one segment per packet (see [`crate::WanCount`]), and a veth runs its
    /// receive poll after each one, so GRO alone would find nothing to merge. Like a NIC's
    /// interrupt coalescing, a `gro_flush_timeout` of 200 µs holds packets across polls so that
    /// consecutive segments are merged (into up to 64 KB).
    pub fn set_router_wan_gro(&self, on: bool) {
        let (state, flush_timeout_ns) = if on { ("on", "200000") } else { ("off", "0") };
        exec_ok(
            &self.router,
            "ethtool",
            &["-K", ROUTER_WAN_IF, "gro", state],
        );
        // /sys shows the namespace's devices only under `ip netns exec`, which remounts it.
        let path = format!("/sys/class/net/{ROUTER_WAN_IF}/gro_flush_timeout");
        exec_ok_stdin(&self.router, "tee", &[path.as_str()], flush_timeout_ns);
    }

    /// Deletes `br-lan` and builds it again with the same name, MAC, addresses and ports, as a
    /// router's network restart does: the new bridge has a new interface index.
    pub fn rebuild_bridge(&self) {
        let mut script = format!(
            "link del {LAN_BRIDGE}\n\
             link add {LAN_BRIDGE} address {lan_mac} type bridge\n\
             addr add {ROUTER_LAN_V4}/{LAN_PREFIX_V4} dev {LAN_BRIDGE}\n\
             addr add {ROUTER_LAN_V6}/{LAN_PREFIX_V6} dev {LAN_BRIDGE} nodad\n",
            lan_mac = mac_to_string(ROUTER_LAN_MAC),
        );
        for d in &self.devices {
            script += &format!("link set {} master {LAN_BRIDGE} up\n", d.router_port);
        }
        script += &format!("link set {LAN_BRIDGE} up\n");
        ip_batch(&self.router, &script);
    }

    /// The router: bridge, uplink, routes, NAT. Configured with one `ip -batch` per step,
    /// because each `ip` process costs a few milliseconds.
    pub(super) fn setup_router(&self) {
        let (r, w) = (self.router.as_str(), self.wan.as_str());
        sysctls(
            r,
            &[
                ("net/ipv4/ip_forward".into(), "1".into()),
                ("net/ipv6/conf/all/forwarding".into(), "1".into()),
            ],
        );
        ip_batch(
            r,
            &format!(
                "link set lo up\n\
                 link add {LAN_BRIDGE} address {lan_mac} type bridge\n\
                 addr add {ROUTER_LAN_V4}/{LAN_PREFIX_V4} dev {LAN_BRIDGE}\n\
                 addr add {ROUTER_LAN_V6}/{LAN_PREFIX_V6} dev {LAN_BRIDGE} nodad\n\
                 link set {LAN_BRIDGE} up\n\
                 link add {ROUTER_WAN_IF} address {wan_mac} type veth \
                   peer name {WAN_IF} address {peer_mac} netns {w}\n\
                 addr add {ROUTER_WAN_V4}/24 dev {ROUTER_WAN_IF}\n\
                 addr add {ROUTER_WAN_V6}/64 dev {ROUTER_WAN_IF} nodad\n\
                 link set {ROUTER_WAN_IF} up\n\
                 route add default via {WAN_V4}\n\
                 route add ::/0 via {WAN_V6}\n",
                lan_mac = mac_to_string(ROUTER_LAN_MAC),
                wan_mac = mac_to_string(ROUTER_WAN_MAC),
                peer_mac = mac_to_string(WAN_MAC),
            ),
        );
        // Wire-size packets on the uplink, so that the WAN counters count real packets.
        exec_ok(
            r,
            "ethtool",
            &[
                "-K",
                ROUTER_WAN_IF,
                "tso",
                "off",
                "gso",
                "off",
                "gro",
                "off",
            ],
        );
        exec_ok_stdin(r, "nft", &["-f", "-"], &router_ruleset());
    }

    /// The devices' links, as ports of `br-lan`.
    pub(super) fn setup_ports(&self) {
        let r = self.router.as_str();
        // Ports need no addresses. Without IPv6 they send no MLD reports of their own, which
        // would look like router-to-device traffic; `br-lan` and `wan0` exist already and keep
        // theirs, the ports created here inherit this.
        sysctl(r, "net/ipv6/conf/default/disable_ipv6", "1");
        let mut script = String::new();
        for d in &self.devices {
            let port_mac = mac_to_string([0x02, 0, 0, 0x01, 0, d.index]);
            script += &format!(
                "link add {port} address {port_mac} type veth \
                   peer name {DEVICE_IF} address {mac} netns {ns}\n\
                 link set {port} master {LAN_BRIDGE} up\n",
                port = d.router_port,
                mac = d.mac_string(),
                ns = d.ns,
            );
        }
        ip_batch(r, &script);
        sysctl(r, "net/ipv6/conf/default/disable_ipv6", "0");
    }
}

/// `192.168.50.0`, the LAN's IPv4 network.
pub(crate) fn lan_v4_network() -> Ipv4Addr {
    let o = ROUTER_LAN_V4.octets();
    Ipv4Addr::new(o[0], o[1], o[2], 0)
}

/// `2001:db8:50::`, the LAN's IPv6 prefix.
pub(super) fn lan_v6_prefix() -> Ipv6Addr {
    let s = ROUTER_LAN_V6.segments();
    Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0)
}

/// IPv4 masquerade on the uplink; IPv6 is routed as is.
fn router_ruleset() -> String {
    format!(
        "table ip nat {{\n\
         \x20 chain postrouting {{\n\
         \x20   type nat hook postrouting priority srcnat; policy accept;\n\
         \x20   oifname \"{ROUTER_WAN_IF}\" masquerade\n\
         \x20 }}\n\
         }}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn router_addresses() {
        assert_eq!(mac_to_string(ROUTER_LAN_MAC), "02:00:00:00:50:01");
        assert_eq!(lan_v6_prefix().to_string(), "2001:db8:50::");
        assert_eq!(lan_v4_network().to_string(), "192.168.50.0");
    }
}
