//! A LAN bridge is counted on its ports: the user names br-lan, the programs sit on lan1..lanN
//! (where an nftables flowtable still shows every packet), the local prefixes come from the
//! bridge, traffic bridged between two devices is not a destination, and ports that join, leave
//! or are re-created are followed.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use egress_lab::{
    LAN_BRIDGE, Lab, SERVERS_V4, SERVERS_V6, UDP_SINK_PORT,
    agent::{Agent, attached_programs, auto_attach_mode, expected_lan_programs, lan_programs},
    exec_ok, udp_ip_bytes, udp_send, wait_until,
};

const DEVICES_CONFIG: &str = r#"
[devices]
"00:16:3e:00:00:01" = "phone"
"00:16:3e:00:00:02" = "laptop"
"#;

#[test]
fn the_bridge_is_counted_on_its_ports_without_bridged_traffic() {
    let lab = Lab::new();
    let _servers = lab.start_servers(0);
    let agent = Agent::start(&lab, DEVICES_CONFIG, &[]);
    assert_eq!(lan_programs(&lab), expected_lan_programs(&lab));
    let mode = auto_attach_mode();
    let s = agent.scrape();
    for d in lab.devices() {
        assert_eq!(
            s.attached(&d.router_port, LAN_BRIDGE, mode),
            Some(1.0),
            "{}",
            d.router_port
        );
    }
    assert_eq!(
        s.matching(
            "egress_monitor_interface_attached",
            &[("interface", LAN_BRIDGE)]
        )
        .count(),
        0,
        "the bridge device itself carries no programs"
    );

    let phone = lab.device("phone");
    let laptop = lab.device("laptop");
    // Bridged between two ports, both ends on the bridge's prefixes: not a destination.
    for v4 in [true, false] {
        udp_send(&phone.ns, SocketAddr::new(laptop.ip(v4), 7), 300, 5);
    }
    // To the world, through the router: exactly once.
    let v4 = SocketAddr::new(IpAddr::V4(SERVERS_V4[1]), UDP_SINK_PORT);
    let v6 = SocketAddr::new(IpAddr::V6(SERVERS_V6[1]), UDP_SINK_PORT);
    udp_send(&phone.ns, v4, 100, 4);
    udp_send(&phone.ns, v6, 200, 3);
    let s = agent.settled();
    assert_eq!(
        s.device_total("phone", "egress"),
        (
            4 * udp_ip_bytes(true, 100) + 3 * udp_ip_bytes(false, 200),
            7
        ),
        "once each, and nothing of the bridged traffic"
    );
    assert_eq!(
        s.device_total("laptop", "ingress"),
        (0, 0),
        "bridged traffic reaching the laptop is not from the world"
    );
}

#[test]
fn ports_that_leave_join_or_are_recreated_are_followed() {
    let lab = Lab::new();
    let _servers = lab.start_servers(0);
    let agent = Agent::start(&lab, DEVICES_CONFIG, &[]);
    let mode = auto_attach_mode();
    let r = lab.router_ns();
    let phone = lab.device("phone");
    let port = phone.router_port.clone();
    let to = SocketAddr::new(IpAddr::V4(SERVERS_V4[0]), UDP_SINK_PORT);
    udp_send(&phone.ns, to, 100, 2);
    agent.wait_polls(2);

    // The phone's port leaves the bridge: it is no LAN port any more, and is detached.
    exec_ok(r, "ip", &["link", "set", &port, "nomaster"]);
    assert!(
        wait_until(Duration::from_secs(10), || attached_programs(r, &port)
            .is_empty()),
        "{port} kept its programs after leaving the bridge: {:?}",
        attached_programs(r, &port)
    );
    assert_eq!(agent.scrape().attached(&port, LAN_BRIDGE, mode), None);

    // It joins again: attached again, and counting goes on exactly.
    exec_ok(r, "ip", &["link", "set", &port, "master", LAN_BRIDGE]);
    assert!(
        wait_until(Duration::from_secs(10), || attached_programs(r, &port)
            .len()
            == 2),
        "{port} not attached after joining again; agent log:\n{}",
        agent.log()
    );
    udp_send(&phone.ns, to, 100, 3);
    let s = agent.settled();
    assert_eq!(s.device_total("phone", "egress"), (5 * 128, 5));
    assert_eq!(s.attached(&port, LAN_BRIDGE, mode), Some(1.0));

    // A new port (a Wi-Fi interface coming up), deleted and re-created under its name: each
    // incarnation gets the programs.
    for round in 0..2 {
        exec_ok(
            r,
            "ip",
            &[
                "link", "add", "wlan9", "type", "veth", "peer", "name", "wlan9p",
            ],
        );
        exec_ok(
            r,
            "ip",
            &["link", "set", "wlan9", "master", LAN_BRIDGE, "up"],
        );
        assert!(
            wait_until(Duration::from_secs(10), || attached_programs(r, "wlan9")
                .len()
                == 2),
            "round {round}: the new port was not attached; agent log:\n{}",
            agent.log()
        );
        assert_eq!(
            agent.scrape().attached("wlan9", LAN_BRIDGE, mode),
            Some(1.0)
        );
        exec_ok(r, "ip", &["link", "del", "wlan9"]);
        assert!(
            wait_until(Duration::from_secs(10), || agent
                .scrape()
                .attached("wlan9", LAN_BRIDGE, mode)
                .is_none()),
            "round {round}: a deleted port is still reported"
        );
    }
    assert!(agent.stop().success());
    assert_eq!(
        lan_programs(&lab),
        expected_lan_programs(&lab),
        "after SIGTERM the pinned programs count on, on every port there is now"
    );
}
