//! The real agent with the real programs on the lab's virtual router: the metrics equal the
//! exact IP-layer bytes and packets the devices sent and received, cross-checked against the
//! nftables counters at the far end of the uplink.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket},
    time::Duration,
};

use egress_lab::{
    Lab, SERVERS_V4, SERVERS_V6, TCP_SINK_PORT, TCP_SOURCE_PORT, UDP_SINK_PORT, agent::Agent,
    run_in, tcp_download, tcp_upload, udp_ip_bytes, udp_send,
};

const DEVICES_CONFIG: &str = r#"
[devices]
"00:16:3e:00:00:01" = "phone"
"00:16:3e:00:00:02" = { name = "laptop" }
"#;

#[test]
fn udp_and_tcp_are_counted_exactly_per_device_destination_and_direction() {
    let lab = Lab::new();
    let servers = lab.start_servers(3_000_000);
    let agent = Agent::start(&lab, DEVICES_CONFIG, &[]);
    let phone = lab.device("phone");
    let laptop = lab.device("laptop");
    let camera = lab.device("camera");

    // UDP: the exact bytes follow from what was sent.
    let v4 = IpAddr::V4(SERVERS_V4[0]);
    let v6 = IpAddr::V6(SERVERS_V6[0]);
    udp_send(&phone.ns, SocketAddr::new(v4, UDP_SINK_PORT), 200, 20);
    udp_send(&phone.ns, SocketAddr::new(v6, UDP_SINK_PORT), 300, 15);
    let camera_udp = IpAddr::V4(SERVERS_V4[2]);
    udp_send(
        &camera.ns,
        SocketAddr::new(camera_udp, UDP_SINK_PORT),
        1000,
        7,
    );
    servers.udp(v4).wait_for(20, Duration::from_secs(5));
    servers.udp(v6).wait_for(15, Duration::from_secs(5));
    servers.udp(camera_udp).wait_for(7, Duration::from_secs(5));

    // TCP both ways, IPv4 (through NAT) and IPv6: the exact bytes are what crossed the uplink,
    // where the router's wan0 (no offloads) put every segment on the wire separately.
    let up_v4 = IpAddr::V4(SERVERS_V4[1]);
    let down_v6 = IpAddr::V6(SERVERS_V6[1]);
    let camera_up_v6 = IpAddr::V6(SERVERS_V6[2]);
    tcp_upload(&laptop.ns, SocketAddr::new(up_v4, TCP_SINK_PORT), 2_000_000);
    tcp_download(
        &laptop.ns,
        SocketAddr::new(down_v6, TCP_SOURCE_PORT),
        3_000_000,
    );
    tcp_upload(
        &camera.ns,
        SocketAddr::new(camera_up_v6, TCP_SINK_PORT),
        1_000_000,
    );

    let s = agent.settled();
    let wan = lab.wan_counters();
    assert_eq!(
        lab.wan_oversize_packets(),
        0,
        "the uplink carried only wire packets"
    );

    let expect_phone_v4 = (20 * udp_ip_bytes(true, 200), 20);
    let expect_phone_v6 = (15 * udp_ip_bytes(false, 300), 15);
    assert_eq!(
        s.destination("phone", "egress", &v4.to_string()),
        expect_phone_v4
    );
    assert_eq!(
        s.destination("phone", "egress", &v6.to_string()),
        expect_phone_v6
    );
    assert_eq!(
        s.device_total("phone", "egress"),
        (expect_phone_v4.0 + expect_phone_v6.0, 35),
        "the phone's total is its two destinations"
    );
    // The camera has no configured name: its MAC is its name.
    let camera_name = camera.mac_string();
    assert_eq!(
        s.destination(&camera_name, "egress", &camera_udp.to_string()),
        (7 * udp_ip_bytes(true, 1000), 7)
    );
    // Independent count: nftables at the WAN end saw the same.
    assert_eq!((wan[&v4].rx_bytes, wan[&v4].rx_packets), expect_phone_v4);
    assert_eq!((wan[&v6].rx_bytes, wan[&v6].rx_packets), expect_phone_v6);

    for (device, server) in [
        ("laptop", up_v4),
        ("laptop", down_v6),
        (camera_name.as_str(), camera_up_v6),
    ] {
        s.assert_matches_wan(device, server, wan[&server]);
    }
    // The uploads left the devices as TSO super-packets: fewer frames than packets, and still
    // exact above, so the GSO arithmetic was exercised for real.
    let frames = s.count(
        "egress_monitor_kernel_frames_total",
        &[("direction", "egress"), ("result", "counted")],
    );
    let packets: u64 = s.sum("egress_device_packets_total", &[("direction", "egress")]);
    assert!(
        frames < packets,
        "expected GSO super-packets on egress: {frames} frames for {packets} packets"
    );
    // Super-packets carry only their headers in the skb's linear part; that is all the
    // programs read, so none had to be pulled in.
    assert_eq!(s.sum("egress_monitor_kernel_header_pulls_total", &[]), 0);
    s.assert_destinations_add_up();
    assert_eq!(
        s.sum(
            "egress_destination_bytes_total",
            &[("destination", "unattributed")]
        ),
        0,
        "nothing is unattributed when the flow map has room"
    );

    // The exposition is clean for promtool, and /healthz is up.
    s.assert_passes_promtool();
    assert_eq!(agent.get("/healthz").map(|(code, _)| code), Some(200));
}

#[test]
fn gro_super_packets_towards_devices_count_every_wire_packet() {
    let lab = Lab::new();
    let servers = lab.start_servers(4_000_000);
    lab.set_router_wan_gro(true);
    let agent = Agent::start(&lab, DEVICES_CONFIG, &[]);
    let laptop = lab.device("laptop");
    let from = IpAddr::V4(SERVERS_V4[3]);
    tcp_download(
        &laptop.ns,
        SocketAddr::new(from, TCP_SOURCE_PORT),
        4_000_000,
    );
    drop(servers);
    let s = agent.settled();
    let w = lab.wan_count(from);
    assert_eq!(
        s.destination("laptop", "ingress", &from.to_string()),
        (w.tx_bytes, w.tx_packets),
        "ingress equals the wire packets the server sent"
    );
    let frames = s.count(
        "egress_monitor_kernel_frames_total",
        &[("direction", "ingress"), ("result", "counted")],
    );
    // GRO on a veth without XDP needs the NAPI mode of Linux 5.13; before it every packet
    // arrives alone, and the exact count above is all there is to check.
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("kernel release");
    if egress_lab::agent::kernel_at_least(&release, (5, 13)) {
        assert!(
            frames < w.tx_packets,
            "GRO merged nothing ({frames} frames for {} packets): the test did not exercise it",
            w.tx_packets
        );
    } else {
        assert_eq!(frames, w.tx_packets, "no GRO on veth before 5.13");
    }
}

/// Sends one UDP datagram from `ns` to `to`; broadcast allowed; link-local scope from eth0.
fn send_one(ns: &str, to: IpAddr) {
    let to = to.to_owned();
    run_in(ns, move || {
        let (bind, target): (SocketAddr, SocketAddr) = match to {
            IpAddr::V4(a) => ((Ipv4Addr::UNSPECIFIED, 0).into(), (a, 9).into()),
            IpAddr::V6(a) => {
                let scope = if a.segments()[0] & 0xff00 == 0xff00 || a.segments()[0] == 0xfe80 {
                    nix_ifindex("eth0")
                } else {
                    0
                };
                (
                    (Ipv6Addr::UNSPECIFIED, 0).into(),
                    SocketAddrV6::new(a, 9, 0, scope).into(),
                )
            }
        };
        let socket = UdpSocket::bind(bind).expect("bind");
        socket.set_broadcast(true).expect("SO_BROADCAST");
        socket.send_to(&[0u8; 64], target).expect("send");
    });
}

fn nix_ifindex(name: &str) -> u32 {
    let name = std::ffi::CString::new(name).unwrap();
    // SAFETY: a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert!(index != 0, "no interface {name:?}");
    index
}

#[test]
fn lan_router_multicast_and_broadcast_traffic_is_not_a_destination() {
    let lab = Lab::new();
    let _servers = lab.start_servers(0);
    let agent = Agent::start(&lab, DEVICES_CONFIG, &[]);
    let phone = lab.device("phone");
    let laptop = lab.device("laptop");
    let before = agent.scrape();
    let local_before = before.count(
        "egress_monitor_kernel_frames_total",
        &[("direction", "egress"), ("result", "local")],
    );
    let locals: [IpAddr; 9] = [
        laptop.ipv4.into(), // another LAN device
        laptop.ipv6.into(),
        egress_lab::ROUTER_LAN_V4.into(), // the router, LAN side
        egress_lab::ROUTER_LAN_V6.into(),
        egress_lab::ROUTER_WAN_V4.into(), // the router's own WAN address
        Ipv4Addr::new(239, 1, 2, 3).into(), // multicast
        "ff02::1".parse::<Ipv6Addr>().unwrap().into(), // all-nodes multicast
        Ipv4Addr::BROADCAST.into(),       // limited broadcast
        Ipv4Addr::new(192, 168, 50, 255).into(), // the LAN's directed broadcast
    ];
    for to in locals {
        for _ in 0..3 {
            send_one(&phone.ns, to);
        }
    }
    // A control datagram to the world proves the agent was counting all along.
    let world = IpAddr::V4(SERVERS_V4[4]);
    udp_send(&phone.ns, SocketAddr::new(world, UDP_SINK_PORT), 100, 1);
    let s = agent.settled();
    let destinations: Vec<String> = s
        .matching("egress_destination_bytes_total", &[("device", "phone")])
        .map(|sample| sample.labels["destination"].clone())
        .collect();
    let mut expected = vec![world.to_string(), "unattributed".to_owned()];
    expected.sort();
    let mut got = destinations.clone();
    got.sort();
    got.dedup();
    assert_eq!(got, expected, "only the world server is a destination");
    assert_eq!(
        s.device_total("phone", "egress"),
        (udp_ip_bytes(true, 100), 1),
        "local traffic is in no device total"
    );
    // Frames to the router, multicast and broadcast reach br-lan's hook and are counted as
    // local; frames between two devices are bridged and never reach it.
    let local_after = s.count(
        "egress_monitor_kernel_frames_total",
        &[("direction", "egress"), ("result", "local")],
    );
    assert!(
        local_after - local_before >= 3 * 7,
        "expected at least 21 local frames, saw {}",
        local_after - local_before
    );
    s.assert_destinations_add_up();
}

#[test]
fn a_tiny_flow_map_keeps_exact_device_totals_and_a_correct_unattributed() {
    let lab = Lab::new();
    let agent = Agent::start(&lab, DEVICES_CONFIG, &["--flow-map-entries", "16"]);
    let phone = lab.device("phone");
    // 80 destinations in the WAN's documentation prefix (no server answers; the WAN drops
    // them), 3 datagrams each, in rounds, while the agent polls: the 16-entry LRU evicts.
    let destinations: Vec<IpAddr> = (10..90)
        .map(|i| IpAddr::V4(Ipv4Addr::new(203, 0, 113, i)))
        .collect();
    let mut scrapes = Vec::new();
    for round in 0..3 {
        for d in &destinations {
            udp_send(&phone.ns, SocketAddr::new(*d, UDP_SINK_PORT), 100, 1);
        }
        let _ = round;
        scrapes.push(agent.scrape());
    }
    let s = agent.settled();
    scrapes.push(s.clone());
    let per_packet = udp_ip_bytes(true, 100);
    assert_eq!(
        s.device_total("phone", "egress"),
        (240 * per_packet, 240),
        "the device total is exact whatever the flow map evicted"
    );
    s.assert_destinations_add_up();
    let (unattributed, _) = s.destination("phone", "egress", "unattributed");
    assert!(
        unattributed > 0,
        "80 destinations in 16 entries: something was evicted"
    );
    assert!(s.count("egress_monitor_map_entries", &[("map", "flows")]) <= 16);
    // No destination ever shows more than was sent to it, and no counter goes backwards.
    for d in &destinations {
        let mut last = 0;
        for scrape in &scrapes {
            let (bytes, _) = scrape.destination("phone", "egress", &d.to_string());
            assert!(bytes >= last, "{d}: counter went backwards");
            assert!(
                bytes <= 3 * per_packet,
                "{d}: counted twice ({bytes} bytes)"
            );
            last = bytes;
        }
    }
    let mut last = 0;
    for scrape in &scrapes {
        let (bytes, _) = scrape.destination("phone", "egress", "unattributed");
        assert!(bytes >= last, "unattributed went backwards");
        last = bytes;
    }
}

/// The programs attached to the router's br-lan and its ports, as `device:program`.
fn attached_programs(lab: &Lab) -> Vec<String> {
    egress_lab::agent::lan_programs(lab)
}

/// Both programs on every port of br-lan, none on the bridge.
fn on_every_port(lab: &Lab) -> Vec<String> {
    egress_lab::agent::expected_lan_programs(lab)
}

#[test]
fn a_restarted_agent_counts_on_and_detach_leaves_nothing_attached() {
    let lab = Lab::new();
    let _servers = lab.start_servers(0);
    let phone = lab.device("phone");
    let to = SocketAddr::new(IpAddr::V4(SERVERS_V4[0]), UDP_SINK_PORT);

    let agent = Agent::start(&lab, DEVICES_CONFIG, &[]);
    assert_eq!(
        attached_programs(&lab),
        on_every_port(&lab),
        "one program on each hook of every port"
    );
    let mode = egress_lab::agent::auto_attach_mode();
    assert_eq!(
        agent
            .scrape()
            .sum("egress_monitor_interface_attached", &[("mode", mode)]),
        lab.devices().len() as u64,
        "auto attaches every port with {mode} on this kernel"
    );
    udp_send(&phone.ns, to, 100, 5);
    let s = agent.settled();
    assert_eq!(s.device_total("phone", "egress"), (5 * 128, 5));
    let status = agent.stop();
    assert!(status.success(), "SIGTERM is a clean exit, got {status}");
    assert_eq!(
        attached_programs(&lab),
        on_every_port(&lab),
        "the pinned programs count on after SIGTERM"
    );

    // While no agent runs, and then with the next one: nothing lost, nothing twice.
    udp_send(&phone.ns, to, 100, 2);
    let agent = Agent::start(&lab, DEVICES_CONFIG, &[]);
    udp_send(&phone.ns, to, 100, 3);
    let s = agent.settled();
    assert_eq!(s.device_total("phone", "egress"), (10 * 128, 10));
    agent.child().kill();
    assert_eq!(
        attached_programs(&lab),
        on_every_port(&lab),
        "and after SIGKILL"
    );

    let out = egress_lab::agent::run_agent_to_exit(
        &lab,
        &["detach", "--lan", "br-lan"],
        Duration::from_secs(10),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let left = attached_programs(&lab);
    assert!(left.is_empty(), "programs left after detach: {left:?}");
}

#[test]
fn without_pins_a_stopped_agent_leaves_nothing_and_the_next_counts_from_zero() {
    let lab = Lab::new();
    let _servers = lab.start_servers(0);
    let phone = lab.device("phone");
    let to = SocketAddr::new(IpAddr::V4(SERVERS_V4[0]), UDP_SINK_PORT);
    let unpinned = ["--pin-dir", ""];

    let agent = Agent::start(&lab, DEVICES_CONFIG, &unpinned);
    udp_send(&phone.ns, to, 100, 5);
    assert_eq!(
        agent.settled().device_total("phone", "egress"),
        (5 * 128, 5)
    );
    assert!(agent.stop().success());
    let left = attached_programs(&lab);
    assert!(
        left.is_empty(),
        "programs left attached after SIGTERM: {left:?}"
    );
    let agent = Agent::start(&lab, DEVICES_CONFIG, &unpinned);
    udp_send(&phone.ns, to, 100, 3);
    assert_eq!(
        agent.settled().device_total("phone", "egress"),
        (3 * 128, 3)
    );
    // TCX links without a pin die with the process, even on SIGKILL. clsact filters (kernels
    // before 6.6) outlive it, and the next agent replaces them (see the clsact test).
    agent.child().kill();
    let left = attached_programs(&lab);
    if egress_lab::agent::auto_attach_mode() == "tcx" {
        assert!(
            left.is_empty(),
            "programs left attached after SIGKILL: {left:?}"
        );
    } else {
        assert_eq!(left, on_every_port(&lab), "clsact filters outlive SIGKILL");
    }
}

#[test]
fn clsact_mode_counts_exactly_and_the_next_agent_takes_over_its_filters() {
    let lab = Lab::new();
    let _servers = lab.start_servers(0);
    let phone = lab.device("phone");
    let to = SocketAddr::new(IpAddr::V6(SERVERS_V6[0]), UDP_SINK_PORT);
    let config = format!("attach = \"clsact\"\n{DEVICES_CONFIG}");

    let agent = Agent::start(&lab, &config, &[]);
    let s = agent.scrape();
    assert_eq!(s.attached("lan1", "br-lan", "clsact"), Some(1.0));
    udp_send(&phone.ns, to, 100, 4);
    let s = agent.settled();
    assert_eq!(
        s.device_total("phone", "egress"),
        (4 * udp_ip_bytes(false, 100), 4)
    );
    agent.child().kill();
    assert_eq!(
        attached_programs(&lab),
        on_every_port(&lab),
        "filters outlive SIGKILL"
    );
    udp_send(&phone.ns, to, 100, 1);

    // The next agent swaps its programs into the same filters instead of counting next to them.
    let agent = Agent::start(&lab, &config, &[]);
    assert_eq!(
        attached_programs(&lab),
        on_every_port(&lab),
        "one filter per hook"
    );
    assert!(
        agent
            .log()
            .contains("took over the filter of an earlier agent"),
        "{}",
        agent.log()
    );
    udp_send(&phone.ns, to, 100, 2);
    let s = agent.settled();
    assert_eq!(
        s.device_total("phone", "egress"),
        (7 * udp_ip_bytes(false, 100), 7),
        "what the killed agent counted, what crossed without an agent, and the new"
    );
    assert!(agent.stop().success());

    // An agent without pins removes a stale filter by name, and removes its own at a stop.
    let agent = Agent::start(&lab, &config, &["--pin-dir", ""]);
    assert_eq!(attached_programs(&lab), on_every_port(&lab));
    udp_send(&phone.ns, to, 100, 2);
    assert_eq!(
        agent.settled().device_total("phone", "egress"),
        (2 * udp_ip_bytes(false, 100), 2),
        "a new map, counted from zero"
    );
    assert!(agent.stop().success());
    assert!(
        attached_programs(&lab).is_empty(),
        "SIGTERM removes the filters of an agent without pins"
    );
}

#[test]
fn a_rebuilt_bridge_is_attached_again_and_counting_goes_on() {
    let lab = Lab::new();
    let _servers = lab.start_servers(0);
    let agent = Agent::start(&lab, DEVICES_CONFIG, &[]);
    let phone = lab.device("phone");
    let to = SocketAddr::new(IpAddr::V4(SERVERS_V4[0]), UDP_SINK_PORT);
    udp_send(&phone.ns, to, 100, 2);
    agent.wait_polls(2);

    // A network restart: br-lan is deleted and created again, its ports enslaved anew.
    lab.rebuild_bridge();
    agent.wait_polls(2);
    assert_eq!(attached_programs(&lab), on_every_port(&lab));
    udp_send(&phone.ns, to, 100, 3);
    let s = agent.settled();
    assert_eq!(
        s.device_total("phone", "egress"),
        (5 * 128, 5),
        "before and after the restart, nothing lost or doubled"
    );
    assert_eq!(
        s.attached("lan1", "br-lan", egress_lab::agent::auto_attach_mode()),
        Some(1.0),
        "auto attaches with TCX from 6.6, clsact below"
    );
}

#[test]
fn a_device_contacting_countless_hosts_keeps_a_bounded_number_of_series() {
    let lab = Lab::new();
    let agent = Agent::start(
        &lab,
        &format!("flow_map_entries = 16\nmax_destinations_per_device = 16\n{DEVICES_CONFIG}"),
        &[],
    );
    let phone = lab.device("phone");
    // A scan: 96 destinations, 8 at a time with a poll in between so the agent reads each
    // before the 16-entry kernel map evicts it.
    let destinations: Vec<IpAddr> = (1..=96)
        .map(|i| IpAddr::V4(Ipv4Addr::new(203, 0, 113, i)))
        .collect();
    for batch in destinations.chunks(8) {
        for d in batch {
            udp_send(&phone.ns, SocketAddr::new(*d, UDP_SINK_PORT), 100, 1);
        }
        agent.wait_polls(1);
    }
    agent.wait_polls(5); // evicted entries must be absent a few polls before they retire
    let s = agent.settled();
    let listed = s
        .matching(
            "egress_destination_bytes_total",
            &[("device", "phone"), ("direction", "egress")],
        )
        .filter(|sample| sample.labels["destination"] != "unattributed")
        .count();
    assert!(
        listed <= 16,
        "{listed} destinations listed, the limit is 16"
    );
    assert_eq!(
        s.device_total("phone", "egress"),
        (96 * udp_ip_bytes(true, 100), 96),
        "the total stays exact"
    );
    assert!(s.destination("phone", "egress", "unattributed").0 >= 80 * 128);
    s.assert_destinations_add_up();
}
