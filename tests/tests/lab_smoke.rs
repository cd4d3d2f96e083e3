//! Smoke tests of the lab itself: topology, traffic helpers, WAN counters, cleanup.
//!
//! They need root, like every lab test; without it, building a lab panics and they fail.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use egress_lab::{
    Lab, LinkStats, ROUTER_LAN_V4, ROUTER_LAN_V6, SERVERS, SERVERS_V4, SERVERS_V6, TCP_SINK_PORT,
    TCP_SOURCE_PORT, UDP_SINK_PORT, UdpSink, WAN_V4, link_stats, netns, ping, tcp_download,
    tcp_upload, udp_ip_bytes, udp_send,
};

const WAIT: Duration = Duration::from_secs(3);
const MB: u64 = 1_000_000;

fn lab_namespaces_listed(names: &[String]) -> Vec<String> {
    let listed = netns::list();
    names
        .iter()
        .filter(|n| listed.contains(n))
        .cloned()
        .collect()
}

#[test]
fn udp_to_every_server_is_counted_exactly_at_the_wan() {
    let lab = Lab::new();
    let servers = lab.start_servers(0);
    let phone = &lab.device("phone").ns;
    for server in SERVERS {
        udp_send(phone, SocketAddr::new(server, UDP_SINK_PORT), 100, 10);
        let got = servers.udp(server).wait_for(10, WAIT);
        assert_eq!(
            (got.datagrams, got.bytes),
            (10, 1000),
            "UDP sink on {server}"
        );
        let ip_bytes = 10 * udp_ip_bytes(server.is_ipv4(), 100);
        let count = lab.wait_wan_count(server, WAIT, |c| c.rx_packets >= 10);
        assert_eq!(
            (count.rx_packets, count.rx_bytes, count.tx_packets),
            (10, ip_bytes, 0),
            "WAN counters of {server}"
        );
    }
    // Nothing else trickles in afterwards, and nothing was counted twice.
    std::thread::sleep(Duration::from_millis(200));
    for (server, count) in lab.wan_counters() {
        let expected = 10 * udp_ip_bytes(server.is_ipv4(), 100);
        assert_eq!(
            (count.rx_packets, count.rx_bytes),
            (10, expected),
            "{server}"
        );
    }
    lab.reset_wan_counters();
    assert!(lab.wan_counters().values().all(|c| c.is_zero()));
    assert_eq!(lab.wan_oversize_packets(), 0);
}

#[test]
fn tcp_upload_and_download_cross_the_uplink() {
    let lab = Lab::new();
    let servers = lab.start_servers(MB);
    let laptop = &lab.device("laptop").ns;

    let up: IpAddr = SERVERS_V4[1].into();
    tcp_upload(laptop, SocketAddr::new(up, TCP_SINK_PORT), MB);
    let sink = servers.tcp(up).wait_for_connections(1, WAIT);
    assert_eq!((sink.connections, sink.bytes), (1, MB));
    let c = lab.wan_count(up);
    assert!(c.rx_bytes > MB && c.rx_packets >= MB / 1448, "upload {c:?}");
    assert!(c.tx_packets > 0 && c.tx_bytes > 0, "upload ACKs {c:?}");

    let down: IpAddr = SERVERS_V6[1].into();
    tcp_download(laptop, SocketAddr::new(down, TCP_SOURCE_PORT), MB);
    let source = servers.source(down).wait_for_connections(1, WAIT);
    assert_eq!((source.connections, source.bytes), (1, MB));
    let c = lab.wan_count(down);
    // Wire packets: at least one per MSS, none beyond the MTU.
    assert!(
        c.tx_bytes > MB && c.tx_packets >= MB / 1428,
        "download {c:?}"
    );
    assert!(c.tx_bytes <= c.tx_packets * 1500, "download {c:?}");
    assert!(c.rx_packets > 0 && c.rx_bytes > 0, "download ACKs {c:?}");
    assert_eq!(lab.wan_oversize_packets(), 0);

    // Exchanges are complete when the helpers return: the counters no longer move.
    let before = lab.wan_counters();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(before, lab.wan_counters());

    // Without GRO on the uplink, downloads reach the device port as wire packets...
    let port = &lab.device("laptop").router_port;
    let before = link_stats(lab.router_ns(), port);
    tcp_download(laptop, SocketAddr::new(down, TCP_SOURCE_PORT), MB);
    let plain = delta(before, link_stats(lab.router_ns(), port));
    assert!(plain.tx_bytes <= plain.tx_packets * 1514, "{plain:?}");

    // ...with GRO, as aggregates, while the uplink still carries wire packets.
    lab.set_router_wan_gro(true);
    let features = egress_lab::exec_ok(lab.router_ns(), "ethtool", &["-k", "wan0"]);
    assert!(
        features.contains("generic-receive-offload: on"),
        "{features}"
    );
    let before = link_stats(lab.router_ns(), port);
    tcp_download(laptop, SocketAddr::new(down, TCP_SOURCE_PORT), MB);
    let gro = delta(before, link_stats(lab.router_ns(), port));
    assert!(
        gro.tx_bytes > gro.tx_packets * 3000,
        "no aggregates: {gro:?}"
    );
    lab.set_router_wan_gro(false);
    assert_eq!(lab.wan_oversize_packets(), 0);
}

fn delta(before: LinkStats, after: LinkStats) -> LinkStats {
    LinkStats {
        rx_packets: after.rx_packets - before.rx_packets,
        rx_bytes: after.rx_bytes - before.rx_bytes,
        tx_packets: after.tx_packets - before.tx_packets,
        tx_bytes: after.tx_bytes - before.tx_bytes,
    }
}

#[test]
fn devices_reach_each_other_and_the_router_across_the_bridge() {
    let lab = Lab::new();
    let (phone, laptop) = (lab.device("phone"), lab.device("laptop"));
    assert!(ping(&phone.ns, laptop.ipv4.into()), "phone -> laptop IPv4");
    assert!(ping(&phone.ns, laptop.ipv6.into()), "phone -> laptop IPv6");
    assert!(ping(&laptop.ns, ROUTER_LAN_V4.into()), "laptop -> router");
    assert!(
        ping(&laptop.ns, ROUTER_LAN_V6.into()),
        "laptop -> router IPv6"
    );
    assert!(ping(&phone.ns, SERVERS[0]), "phone -> server, through NAT");
    assert!(ping(&phone.ns, SERVERS[7]), "phone -> IPv6 server, routed");
    // The WAN side has no route into the LAN's IPv4 (it sees only the masquerade address).
    assert!(!ping(lab.wan_ns(), phone.ipv4.into()));
    assert!(ping(lab.wan_ns(), phone.ipv6.into()));

    lab.reset_wan_counters();
    let sink = UdpSink::start(&laptop.ns, SocketAddr::new(laptop.ipv6.into(), 9100));
    udp_send(&phone.ns, sink.local_addr(), 1400, 50);
    assert_eq!(sink.wait_for(50, WAIT).bytes, 50 * 1400);
    // LAN-local traffic never reaches the WAN.
    assert!(lab.wan_counters().values().all(|c| c.is_zero()));
    assert_eq!(sink.stop().datagrams, 50);
}

#[test]
fn two_labs_at_once_are_independent_and_cleaned_up() {
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| Lab::builder().devices(["a1", "a2"]).build());
        let b = s.spawn(|| Lab::builder().device_count(5).build());
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_ne!(a.router_ns(), b.router_ns());
    assert_eq!(b.devices().len(), 5);
    assert_eq!(b.devices()[4].name, "dev5");

    let server: IpAddr = SERVERS_V4[2].into();
    let (sa, sb) = (a.start_servers(0), b.start_servers(0));
    udp_send(
        &a.device("a2").ns,
        SocketAddr::new(server, UDP_SINK_PORT),
        200,
        3,
    );
    udp_send(
        &b.device("dev5").ns,
        SocketAddr::new(server, UDP_SINK_PORT),
        200,
        7,
    );
    assert_eq!(sa.udp(server).wait_for(3, WAIT).datagrams, 3);
    assert_eq!(sb.udp(server).wait_for(7, WAIT).datagrams, 7);
    assert_eq!(a.wan_count(server).rx_packets, 3);
    assert_eq!(b.wan_count(server).rx_packets, 7);

    let names: Vec<String> = [a.namespaces(), b.namespaces()].concat();
    assert_eq!(lab_namespaces_listed(&names).len(), names.len());
    drop((sa, sb, a, b));
    assert_eq!(lab_namespaces_listed(&names), Vec::<String>::new());
}

#[test]
fn dropping_the_lab_kills_its_processes_even_on_panic() {
    let mut names = Vec::new();
    let mut untracked = None;
    let mut tracked = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let lab = Lab::new();
        names = lab.namespaces().to_vec();
        let child = lab.spawn_in_router("sh", &["-c", "echo ready; exec sleep 60"]);
        assert!(child.wait_for_log("ready", WAIT), "log: {}", child.log());
        tracked = Some(child);
        untracked = Some(egress_lab::spawn(lab.wan_ns(), "sleep", &["60"]));
        panic!("deliberate");
    }));
    assert!(result.is_err());
    assert_eq!(lab_namespaces_listed(&names), Vec::<String>::new());
    let tracked = tracked.unwrap();
    assert!(!tracked.is_running());
    let status = untracked.unwrap().wait().unwrap();
    assert!(
        !status.success(),
        "the untracked sleep was killed: {status}"
    );
}

#[test]
fn build_and_teardown_times() {
    let start = Instant::now();
    let lab = Lab::new();
    let built = start.elapsed();
    eprintln!("{lab}");
    // The uplink answers at once: no DAD, no waiting for ports.
    assert!(ping(lab.router_ns(), WAN_V4.into()));
    let start = Instant::now();
    drop(lab);
    eprintln!("lab built in {built:?}, torn down in {:?}", start.elapsed());
}

#[test]
fn stale_namespaces_of_dead_processes_are_removed() {
    // No process has a pid above the kernel's maximum (2^22); our pid keeps the name unique
    // when several test binaries run this at once.
    let stale = &format!("egl-4194305-{}-router", std::process::id());
    let out = std::process::Command::new("ip")
        .args(["netns", "add", stale])
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let live = Lab::builder().devices(["only"]).build();
    // Another test binary may run the cleanup first; either way the namespace goes.
    egress_lab::cleanup_stale();
    assert!(!netns::list().iter().any(|n| n == stale));
    assert_eq!(
        lab_namespaces_listed(live.namespaces()).len(),
        3,
        "live labs stay"
    );
}
