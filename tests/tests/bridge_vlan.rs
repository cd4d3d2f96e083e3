//! OpenWrt's layout on DSA boards: `br-lan` with VLAN filtering, its ports untagged members of
//! VLAN 1, and the router's LAN addresses on `br-lan.1`, the LAN interface the user names. The
//! agent counts on the bridge's ports and takes the local prefixes from `br-lan.1`.
//!
//! The host kernel of the development machines has no 802.1Q devices, so this test is ignored
//! there and run by `cargo xtask vm` (`--include-ignored`) on Debian's kernels.

use std::net::{IpAddr, SocketAddr};

use egress_lab::{
    LAN_BRIDGE, LAN_PREFIX_V4, LAN_PREFIX_V6, Lab, ROUTER_LAN_V4, ROUTER_LAN_V6, SERVERS_V4,
    SERVERS_V6, UDP_SINK_PORT,
    agent::{Agent, expected_lan_programs, lan_programs},
    ip_batch, udp_ip_bytes, udp_send,
};

const VLAN_IF: &str = "br-lan.1";

/// Turns the lab's plain bridge into OpenWrt's: VLAN filtering, ports untagged in VLAN 1, the
/// bridge itself a tagged member, and the router's addresses moved to `br-lan.1`.
fn make_vlan_filtering(lab: &Lab) {
    let mut script = format!(
        "link set {LAN_BRIDGE} type bridge vlan_filtering 1\n\
         link add link {LAN_BRIDGE} name {VLAN_IF} type vlan id 1\n\
         addr flush dev {LAN_BRIDGE}\n\
         addr add {ROUTER_LAN_V4}/{LAN_PREFIX_V4} dev {VLAN_IF}\n\
         addr add {ROUTER_LAN_V6}/{LAN_PREFIX_V6} dev {VLAN_IF} nodad\n\
         link set {VLAN_IF} up\n"
    );
    // The bridge's own membership in VLAN 1 becomes tagged, so VLAN 1 reaches br-lan.1.
    script += &format!("link set {LAN_BRIDGE} up\n");
    ip_batch(lab.router_ns(), &script);
    let bridge = |args: &[&str]| egress_lab::exec_ok(lab.router_ns(), "bridge", args);
    bridge(&["vlan", "del", "dev", LAN_BRIDGE, "vid", "1", "self"]);
    bridge(&["vlan", "add", "dev", LAN_BRIDGE, "vid", "1", "self"]);
    for d in lab.devices() {
        bridge(&[
            "vlan",
            "add",
            "dev",
            &d.router_port,
            "vid",
            "1",
            "pvid",
            "untagged",
        ]);
    }
}

#[test]
#[ignore = "needs 802.1Q devices (absent from the host kernel): run by `cargo xtask vm`"]
fn a_vlan_of_a_filtering_bridge_is_counted_on_the_ports_with_its_prefixes() {
    let lab = Lab::new();
    let _servers = lab.start_servers(0);
    make_vlan_filtering(&lab);
    let config = r#"
[devices]
"00:16:3e:00:00:01" = "phone"
"00:16:3e:00:00:02" = "laptop"
"#;
    let agent = Agent::start(&lab, config, &["--lan", VLAN_IF]);
    assert_eq!(lan_programs(&lab), expected_lan_programs(&lab));
    let s = agent.scrape();
    for d in lab.devices() {
        assert_eq!(
            s.attached(&d.router_port, VLAN_IF, "tcx")
                .or_else(|| s.attached(&d.router_port, VLAN_IF, "clsact")),
            Some(1.0),
            "{} is hooked for {VLAN_IF}",
            d.router_port
        );
    }
    let phone = lab.device("phone");
    let laptop = lab.device("laptop");
    // The router (on br-lan.1) and a LAN neighbour: local, from br-lan.1's prefixes.
    udp_send(&phone.ns, SocketAddr::new(ROUTER_LAN_V4.into(), 7), 100, 3);
    udp_send(&phone.ns, SocketAddr::new(laptop.ip(true), 7), 100, 3);
    udp_send(&phone.ns, SocketAddr::new(laptop.ip(false), 7), 100, 3);
    // The world, through the router: exact, both families.
    let v4 = SocketAddr::new(IpAddr::V4(SERVERS_V4[0]), UDP_SINK_PORT);
    let v6 = SocketAddr::new(IpAddr::V6(SERVERS_V6[0]), UDP_SINK_PORT);
    udp_send(&phone.ns, v4, 200, 6);
    udp_send(&phone.ns, v6, 200, 4);
    let s = agent.settled();
    let wan = lab.wan_counters();
    assert_eq!(
        s.device_total("phone", "egress"),
        (
            6 * udp_ip_bytes(true, 200) + 4 * udp_ip_bytes(false, 200),
            10
        )
    );
    assert_eq!(
        (wan[&v4.ip()].rx_packets, wan[&v6.ip()].rx_packets),
        (6, 4),
        "the datagrams crossed the VLAN and the router"
    );
    assert_eq!(s.device_total("laptop", "ingress"), (0, 0));
}
