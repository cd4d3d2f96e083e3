//! Local is local from the first packet: the agent writes the local prefixes before it attaches
//! its programs, and when a prefix becomes local later (an address added to a LAN interface),
//! the flows to it stop counting as destinations. Both fail without the fix: a known flow is
//! never checked against the local prefixes again.

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use egress_lab::{
    Lab, ROUTER_LAN_V4, SERVERS_V4, UDP_SINK_PORT,
    agent::{Agent, Scrape},
    exec_ok, run_in, udp_ip_bytes, udp_send, wait_until,
};

const DEVICES_CONFIG: &str = r#"
[devices]
"00:16:3e:00:00:01" = "phone"
"#;

/// Datagrams from the phone to `to`, one a millisecond, until `stop` or `limit` (bounded in
/// count and time whatever the test does); the number sent is in `sent`.
fn paced_sender(
    ns: &str,
    to: SocketAddr,
    limit: u64,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    let socket = run_in(ns, || UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))).expect("bind");
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        while sent.load(Ordering::Relaxed) < limit
            && !stop.load(Ordering::Relaxed)
            && Instant::now() < deadline
        {
            socket.send_to(&[0u8; 200], to).expect("send");
            sent.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(1));
        }
    })
}

#[test]
fn traffic_to_the_router_while_the_agent_starts_is_never_a_destination() {
    let lab = Lab::new();
    let _servers = lab.start_servers(0);
    let phone = lab.device("phone");
    // DNS-like traffic to the router, flowing before, while and after the agent attaches.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let router = SocketAddr::new(ROUTER_LAN_V4.into(), 5353);
    let sender = paced_sender(&phone.ns, router, 20_000, stop.clone(), sent.clone());
    assert!(
        wait_until(Duration::from_secs(5), || sent.load(Ordering::Relaxed) > 50),
        "the sender did not start"
    );
    let agent = Agent::start(&lab, DEVICES_CONFIG, &[]);
    agent.wait_polls(2);
    stop.store(true, Ordering::Relaxed);
    sender.join().expect("sender thread");
    // A control datagram proves the agent was counting the phone all along.
    let world = SERVERS_V4[0];
    udp_send(
        &phone.ns,
        SocketAddr::new(world.into(), UDP_SINK_PORT),
        100,
        1,
    );
    let s = agent.settled();
    assert_eq!(
        s.destination("phone", "egress", &ROUTER_LAN_V4.to_string()),
        (0, 0),
        "traffic to the router counted as a destination ({} datagrams sent while the agent started)",
        sent.load(Ordering::Relaxed)
    );
    assert_eq!(
        s.device_total("phone", "egress"),
        (udp_ip_bytes(true, 100), 1),
        "only the control datagram leaves the network"
    );
    assert_eq!(
        s.destination("phone", "egress", &world.to_string()),
        (128, 1)
    );
}

#[test]
fn a_prefix_that_becomes_local_stops_counting_as_a_destination() {
    let lab = Lab::new();
    let agent = Agent::start(&lab, DEVICES_CONFIG, &[]);
    let phone = lab.device("phone");
    // An address in the WAN's documentation range that no server holds (the WAN drops it),
    // off the servers' addresses, in a /26 that will become a LAN subnet.
    let target = Ipv4Addr::new(203, 0, 113, 77);
    let to = SocketAddr::new(target.into(), 9);
    let first = udp_ip_bytes(true, 100) * 10;
    udp_send(&phone.ns, to, 100, 10);
    let s = agent.settled();
    assert_eq!(
        s.destination("phone", "egress", &target.to_string()),
        (first, 10)
    );
    let v4_prefixes =
        |s: &Scrape| s.exported("egress_monitor_local_prefixes", &[("family", "ipv4")]);
    let prefixes_before = v4_prefixes(&s);

    // The router gets a second LAN subnet that holds the target.
    exec_ok(
        lab.router_ns(),
        "ip",
        &[
            "addr",
            "add",
            "203.0.113.65/26",
            "dev",
            egress_lab::LAN_BRIDGE,
        ],
    );
    assert!(
        wait_until(Duration::from_secs(10), || v4_prefixes(&agent.scrape())
            > prefixes_before),
        "the agent did not pick up the new LAN prefix; its log:\n{}",
        agent.log()
    );
    udp_send(&phone.ns, to, 100, 10);
    let s = agent.settled();
    assert_eq!(
        s.destination("phone", "egress", &target.to_string()),
        (first, 10),
        "datagrams to a now-local address still counted as a destination"
    );
    assert_eq!(
        s.device_total("phone", "egress"),
        (first, 10),
        "the device total holds exactly what left the network"
    );
}
