//! Software flow offload (an nftables flowtable, which OpenWrt's firewall4 turns on with one
//! option): established TCP and UDP flows bypass the forward path, and on a bridged LAN the
//! bridge device too. The agent counts a bridge on its ports, where every packet is still seen;
//! these tests prove it with the flowtable where firewall4 puts it (the bridge's ports and the
//! WAN device) and on the bridge device itself, against the independent counters at the WAN end.
//!
//! The host kernel of the development machines has no `nf_flow_table`, so the flowtable tests
//! are ignored there and run by `cargo xtask vm` (`--include-ignored`) on Debian's kernels,
//! which have it. Inside the VM a missing module is a failure, not a skip. The check for
//! hardware offload runs everywhere.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use egress_lab::{
    LAN_BRIDGE, Lab, ROUTER_WAN_IF, SERVERS_V4, SERVERS_V6, TCP_SINK_PORT, TCP_SOURCE_PORT,
    UDP_SINK_PORT, agent::Agent, exec_ok, exec_ok_stdin, tcp_download, tcp_upload, udp_ip_bytes,
    udp_send,
};

const DEVICES_CONFIG: &str = r#"
[devices]
"00:16:3e:00:00:01" = "phone"
"00:16:3e:00:00:02" = "laptop"
"#;

/// The nftables table the tests add in the router namespace.
const TABLE: &str = "egl_offload";

/// A flowtable on `devices`, as firewall4 writes it, and a forward rule that offloads every
/// TCP and UDP flow; the rule's counter sees only the packets that still take the slow path.
fn add_flowtable(lab: &Lab, devices: &[&str]) {
    let ruleset = format!(
        "table inet {TABLE} {{\n\
           flowtable ft {{ hook ingress priority filter; devices = {{ {} }}; counter; }}\n\
           chain forward {{\n\
             type filter hook forward priority filter; policy accept;\n\
             meta l4proto {{ tcp, udp }} counter flow add @ft\n\
           }}\n\
         }}\n",
        devices.join(", ")
    );
    exec_ok_stdin(lab.router_ns(), "nft", &["-f", "-"], &ruleset);
}

/// Packets the forward chain saw (the slow path), from the offload rule's counter.
fn slow_path_packets(lab: &Lab) -> u64 {
    let out = exec_ok(
        lab.router_ns(),
        "nft",
        &["-j", "list", "chain", "inet", TABLE, "forward"],
    );
    let json: serde_json::Value = serde_json::from_str(&out).expect("nft -j output");
    json["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item.get("rule")?.get("expr")?.as_array().cloned())
        .flatten()
        .filter_map(|expr| expr.get("counter")?.get("packets")?.as_u64())
        .sum()
}

/// Where the flowtable hooks.
#[derive(Clone, Copy)]
enum FlowtableOn {
    /// firewall4's layout: the devices of the zones, i.e. br-lan's ports and the WAN device.
    PortsAndWan,
    /// The bridge device itself and the WAN device.
    BridgeAndWan,
}

/// TCP both ways (IPv4 through NAT, IPv6 routed) and one-way UDP through a flowtable: every
/// byte counted once, as the WAN end saw it, and most packets really offloaded.
fn counts_exactly_through(on: FlowtableOn) {
    let lab = Lab::new();
    let servers = lab.start_servers(2_000_000);
    let devices: Vec<&str> = match on {
        FlowtableOn::PortsAndWan => lab
            .devices()
            .iter()
            .map(|d| d.router_port.as_str())
            .chain([ROUTER_WAN_IF])
            .collect(),
        FlowtableOn::BridgeAndWan => vec![LAN_BRIDGE, ROUTER_WAN_IF],
    };
    add_flowtable(&lab, &devices);
    let agent = Agent::start(&lab, DEVICES_CONFIG, &[]);
    let phone = lab.device("phone");
    let laptop = lab.device("laptop");

    // Each TCP transfer has its whole data phase before FIN: a flowtable hands a flow back to
    // the slow path on FIN, so the data is what crosses the offloaded path.
    let up_v4 = IpAddr::V4(SERVERS_V4[1]);
    let down_v4 = IpAddr::V4(SERVERS_V4[2]);
    let down_v6 = IpAddr::V6(SERVERS_V6[1]);
    tcp_upload(&laptop.ns, SocketAddr::new(up_v4, TCP_SINK_PORT), 1_500_000);
    tcp_download(
        &laptop.ns,
        SocketAddr::new(down_v4, TCP_SOURCE_PORT),
        2_000_000,
    );
    tcp_download(
        &laptop.ns,
        SocketAddr::new(down_v6, TCP_SOURCE_PORT),
        2_000_000,
    );
    // One-way UDP, IPv4 and IPv6: offloaded after its first packets.
    let udp_v4 = IpAddr::V4(SERVERS_V4[0]);
    let udp_v6 = IpAddr::V6(SERVERS_V6[0]);
    udp_send(&phone.ns, SocketAddr::new(udp_v4, UDP_SINK_PORT), 500, 300);
    udp_send(&phone.ns, SocketAddr::new(udp_v6, UDP_SINK_PORT), 400, 200);
    servers.udp(udp_v4).wait_for(300, Duration::from_secs(10));
    servers.udp(udp_v6).wait_for(200, Duration::from_secs(10));

    let s = agent.settled();
    let wan = lab.wan_counters();
    let slow = slow_path_packets(&lab);
    let crossed: u64 = wan.values().map(|w| w.rx_packets + w.tx_packets).sum();
    // Most packets bypass the forward path. (Before 5.13 a flowtable cannot follow a flow
    // through a bridge to its port, so on the ports layout only the WAN-to-LAN direction is
    // offloaded there: the bulk of the downloads, about 70% of the packets.)
    eprintln!("slow path: {slow} of {crossed} packets");
    assert!(
        slow * 2 < crossed,
        "the flowtable offloaded little: {slow} of {crossed} packets took the forward chain"
    );

    for (server, count) in [(udp_v4, 300), (udp_v6, 200)] {
        let payload = if server.is_ipv4() { 500 } else { 400 };
        let sent = (count * udp_ip_bytes(server.is_ipv4(), payload), count);
        assert_eq!(
            s.destination("phone", "egress", &server.to_string()),
            sent,
            "UDP to {server}"
        );
        assert_eq!(
            (wan[&server].rx_bytes, wan[&server].rx_packets),
            sent,
            "the WAN end saw the same UDP to {server}"
        );
    }
    for server in [up_v4, down_v4, down_v6] {
        s.assert_matches_wan("laptop", server, wan[&server]);
    }
    // Nothing twice: the totals are exactly the destinations above.
    let laptop_up: u64 = [up_v4, down_v4, down_v6]
        .iter()
        .map(|&sv| wan[&sv].rx_bytes)
        .sum();
    assert_eq!(s.device_total("laptop", "egress").0, laptop_up);
    let laptop_down: u64 = [up_v4, down_v4, down_v6]
        .iter()
        .map(|&sv| wan[&sv].tx_bytes)
        .sum();
    assert_eq!(s.device_total("laptop", "ingress").0, laptop_down);
    assert_eq!(
        s.sum("egress_monitor_hardware_offload", &[]),
        0,
        "a software flowtable is no hardware offload"
    );
    // The agent read the flowtable from the kernel (an nfnetlink dump) and said so once.
    let log = agent.log();
    assert_eq!(
        log.matches("software flow offload on monitored devices")
            .count(),
        1,
        "{log}"
    );
    assert!(log.contains(&format!("inet {TABLE} ft on ")), "{log}");
}

#[test]
#[ignore = "needs nf_flow_table (absent from the host kernel): run by `cargo xtask vm`"]
fn a_flowtable_on_the_bridge_ports_and_wan_as_firewall4_sets_it_up() {
    counts_exactly_through(FlowtableOn::PortsAndWan);
}

#[test]
#[ignore = "needs nf_flow_table (absent from the host kernel): run by `cargo xtask vm`"]
fn a_flowtable_on_the_bridge_device_and_wan() {
    counts_exactly_through(FlowtableOn::BridgeAndWan);
}

/// `ethtool -k` of `device` in `ns`: feature name -> on.
fn ethtool_features(ns: &str, device: &str) -> Vec<(String, bool)> {
    exec_ok(ns, "ethtool", &["-k", device])
        .lines()
        .filter_map(|line| {
            let (name, state) = line.trim().split_once(": ")?;
            let on = match state.split_whitespace().next()? {
                "on" => true,
                "off" => false,
                _ => return None,
            };
            Some((name.to_owned(), on))
        })
        .collect()
}

/// The agent's hardware offload check reads `hw-tc-offload` with the ethtool ioctl (no Debian
/// kernel ships a virtual device that can turn it on, so the "on" case is the unit tests'):
/// here every feature it can read on a real port agrees with the ethtool tool, also after one
/// is switched.
#[test]
fn the_feature_check_agrees_with_ethtool_on_a_real_port() {
    let lab = Lab::new();
    let r = lab.router_ns();
    let port = lab.devices()[0].router_port.clone();
    let ours = |names: Vec<String>| {
        let port = port.clone();
        egress_lab::run_in(r, move || {
            names
                .into_iter()
                .map(|n| {
                    let v = monitor::kernel::offload::feature_active(&port, &n)
                        .unwrap_or_else(|e| panic!("{n}: {e}"));
                    (n, v)
                })
                .collect::<Vec<_>>()
        })
    };
    let theirs = ethtool_features(r, &port);
    let compared: Vec<(String, bool, bool)> = ours(theirs.iter().map(|(n, _)| n.clone()).collect())
        .into_iter()
        .zip(&theirs)
        .filter_map(|((name, mine), (_, tool))| Some((name, mine?, *tool)))
        .collect();
    assert!(
        compared.iter().any(|(n, _, _)| n == "hw-tc-offload"),
        "hw-tc-offload not read: {compared:?}"
    );
    assert!(compared.len() >= 10, "few features compared: {compared:?}");
    for (name, mine, tool) in &compared {
        assert_eq!(mine, tool, "{port}: {name}");
    }
    // Switch one the veth lets us change, and read it again.
    let before = ours(vec!["rx-gro".into()])[0]
        .1
        .expect("rx-gro is a feature");
    let state = if before { "off" } else { "on" };
    exec_ok(r, "ethtool", &["-K", &port, "gro", state]);
    assert_eq!(ours(vec!["rx-gro".into()])[0].1, Some(!before));
}
