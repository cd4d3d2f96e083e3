//! The smoke suite of a router CPU: what `cargo xtask vm --arch arm64|armhf|s390x` runs in
//! the guests of those architectures (Debian's iproute2 and nftables of that architecture in
//! the initramfs), and the host runs too. The agent of that architecture loads and attaches its
//! programs (bpfel or bpfeb) on the lab's router, counts IPv4 and IPv6 traffic exactly both
//! ways, and holds 5,000 flows in a footprint a 128 MiB router can spare.
//!
//! Nothing here needs a program beyond the lab's own (no promtool, no Prometheus), so that it
//! runs in a guest whose whole userland is its initramfs.

use std::{
    fs,
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    time::Duration,
};

use egress_lab::{
    LAN_BRIDGE, Lab, SERVERS_V4, SERVERS_V6, TCP_SINK_PORT, TCP_SOURCE_PORT, UDP_SINK_PORT,
    agent::{Agent, auto_attach_mode, expected_lan_programs, lan_programs},
    run_in, tcp_download, tcp_upload, udp_ip_bytes, udp_send,
};

const PHONE_CONFIG: &str = r#"
[devices]
"00:16:3e:00:00:01" = "phone"
"00:16:3e:00:00:02" = "laptop"
"#;

/// The flows of the footprint test: one device, this many destinations, each its own series.
const FLOWS: u32 = 5_000;

/// What a 128 MiB router can give the agent beside the rest of OpenWrt (kernel, dnsmasq,
/// hostapd, odhcpd, netifd, LuCI: about 40 MiB in use on a typical 23.05 image).
const RSS_BUDGET_KIB: u64 = 48 * 1024;

#[test]
fn loads_attaches_and_counts_udp_and_tcp_exactly_over_ipv4_and_ipv6() {
    let lab = Lab::new();
    let servers = lab.start_servers(500_000);
    let agent = Agent::start(&lab, PHONE_CONFIG, &[]);
    let phone = lab.device("phone");
    let laptop = lab.device("laptop");

    let v4 = IpAddr::V4(SERVERS_V4[0]);
    let v6 = IpAddr::V6(SERVERS_V6[0]);
    udp_send(&phone.ns, SocketAddr::new(v4, UDP_SINK_PORT), 200, 20);
    udp_send(&phone.ns, SocketAddr::new(v6, UDP_SINK_PORT), 300, 15);
    servers.udp(v4).wait_for(20, Duration::from_secs(10));
    servers.udp(v6).wait_for(15, Duration::from_secs(10));

    // TCP through the router's NAT (IPv4) and routed (IPv6), upload and download: the exact
    // bytes are what crossed the uplink, counted there by nftables.
    let up_v4 = IpAddr::V4(SERVERS_V4[1]);
    let down_v6 = IpAddr::V6(SERVERS_V6[1]);
    tcp_upload(&laptop.ns, SocketAddr::new(up_v4, TCP_SINK_PORT), 400_000);
    tcp_download(
        &laptop.ns,
        SocketAddr::new(down_v6, TCP_SOURCE_PORT),
        500_000,
    );

    let s = agent.settled();
    let wan = lab.wan_counters();
    // Attached where the kernel says so (TCX from 6.6, clsact filters below), and reported so.
    assert_eq!(lan_programs(&lab), expected_lan_programs(&lab));
    for device in lab.devices() {
        assert_eq!(
            s.attached(&device.router_port, LAN_BRIDGE, auto_attach_mode()),
            Some(1.0),
            "{} is attached in {} mode",
            device.router_port,
            auto_attach_mode()
        );
    }
    let expect_v4 = (20 * udp_ip_bytes(true, 200), 20);
    let expect_v6 = (15 * udp_ip_bytes(false, 300), 15);
    assert_eq!(s.destination("phone", "egress", &v4.to_string()), expect_v4);
    assert_eq!(s.destination("phone", "egress", &v6.to_string()), expect_v6);
    assert_eq!(
        s.device_total("phone", "egress"),
        (expect_v4.0 + expect_v6.0, 35)
    );
    assert_eq!((wan[&v4].rx_bytes, wan[&v4].rx_packets), expect_v4);
    assert_eq!((wan[&v6].rx_bytes, wan[&v6].rx_packets), expect_v6);
    for server in [up_v4, down_v6] {
        s.assert_matches_wan("laptop", server, wan[&server]);
    }
    s.assert_destinations_add_up();
}

/// The resident and peak memory of a process, in KiB, from /proc.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[test]
fn holds_5000_flows_exactly_within_a_router_memory_budget() {
    let lab = Lab::new();
    let config = format!(
        "max_destinations_per_device = {}\nflow_map_entries = 8192\n{PHONE_CONFIG}",
        FLOWS + 16
    );
    let agent = Agent::start(&lab, &config, &[]);
    agent.wait_polls(3);
    let pid = agent.child().pid();
    let (idle_rss, _) = memory_kib(pid);

    // One datagram to each of 5,000 addresses beyond the uplink (198.18.0.0/15, the
    // benchmarking range: routed to the WAN, which drops them after its counters).
    let phone = lab.device("phone");
    let socket = run_in(&phone.ns, || UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))
        .expect("a UDP socket in the phone's namespace");
    let payload = [0x5au8; 64];
    for i in 0..FLOWS {
        let to = Ipv4Addr::new(198, 18, (i >> 8) as u8, (i & 0xff) as u8);
        socket
            .send_to(&payload, SocketAddr::new(to.into(), 9))
            .unwrap_or_else(|e| panic!("datagram to {to}: {e}"));
        if i % 64 == 63 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    // Generous: under TCG on a 32-bit guest a scrape of 5,000 series takes seconds.
    agent.wait_polls_within(6, Duration::from_secs(240));
    let s = agent.scrape();
    let (rss, peak) = memory_kib(pid);
    let listed = s
        .matching(
            "egress_destination_packets_total",
            &[("device", "phone"), ("direction", "egress")],
        )
        .filter(|sample| sample.labels["destination"] != "unattributed")
        .count();
    assert_eq!(listed, FLOWS as usize, "every flow is its own series");
    assert_eq!(
        s.device_total("phone", "egress"),
        (
            u64::from(FLOWS) * udp_ip_bytes(true, payload.len()),
            u64::from(FLOWS)
        )
    );
    s.assert_destinations_add_up();
    let arch = std::env::var("EGRESS_VM_ARCH").unwrap_or_else(|_| std::env::consts::ARCH.into());
    println!(
        "footprint on {arch}: VmRSS idle {idle_rss} KiB, with {FLOWS} flows {rss} KiB \
         (peak {peak} KiB), one scrape {} bytes",
        s.text.len()
    );
    assert!(
        peak <= RSS_BUDGET_KIB,
        "the agent peaked at {peak} KiB with {FLOWS} flows; the budget on a 128 MiB router \
         is {RSS_BUDGET_KIB} KiB"
    );
}
