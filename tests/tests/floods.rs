//! Floods cannot blind the monitor: a device contacting 200,000 destinations never makes a
//! scrape list more destination series than the bounds allow, at any moment of the flood, and
//! the sums stay exact.

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use egress_lab::{Lab, agent::Agent, run_in};

const PER_DEVICE: usize = 1024;
const FLOOD: u32 = 200_000;

#[test]
fn a_200k_destination_flood_never_shows_more_series_than_the_bound() {
    let lab = Lab::new();
    let config = format!(
        "max_destinations_per_device = {PER_DEVICE}\nmax_series = 1500\n\
         [devices]\n\"00:16:3e:00:00:01\" = \"phone\"\n"
    );
    let agent = Agent::start_with_poll(&lab, &config, &[], "200ms");
    let phone = lab.device("phone");
    let socket = run_in(&phone.ns, || UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))
        .expect("a socket in the phone's namespace");
    let done = Arc::new(AtomicBool::new(false));
    let flooding = {
        let done = done.clone();
        std::thread::spawn(move || {
            for i in 0..FLOOD {
                // 100.64.0.0/10 and up: 200,000 distinct addresses beyond the uplink.
                let to = Ipv4Addr::from(0x6440_0000u32 + i);
                let _ = socket.send_to(&[0u8; 16], SocketAddr::new(to.into(), 9));
                if i % 512 == 511 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            done.store(true, Ordering::Relaxed);
        })
    };
    // Scrape all through the flood and a few polls after it.
    let mut largest = 0;
    let mut scrapes = 0;
    let mut after = 0;
    while after < 10 {
        let s = agent.scrape();
        let listed = s
            .matching(
                "egress_destination_bytes_total",
                &[("device", "phone"), ("direction", "egress")],
            )
            .filter(|x| x.labels["destination"] != "unattributed")
            .count();
        let all = s
            .matching("egress_destination_bytes_total", &[])
            .filter(|x| x.labels["destination"] != "unattributed")
            .count();
        largest = largest.max(listed);
        scrapes += 1;
        assert!(
            listed <= PER_DEVICE,
            "scrape {scrapes}: {listed} destination series for one device (bound {PER_DEVICE})"
        );
        assert!(
            all <= 1500,
            "scrape {scrapes}: {all} series in all (max_series 1500)"
        );
        s.assert_destinations_add_up();
        if done.load(Ordering::Relaxed) {
            after += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    flooding.join().unwrap();
    let s = agent.settled();
    let (_, packets) = s.device_total("phone", "egress");
    println!(
        "flood of {FLOOD} destinations: largest series count at any of {scrapes} scrapes: \
         {largest} (bound {PER_DEVICE}); {packets} packets counted"
    );
    assert!(
        packets > u64::from(FLOOD) / 2,
        "the flood was counted: {packets} packets"
    );
    s.assert_destinations_add_up();
}

/// Spoofed source MACs: locally administered unicast addresses, all distinct.
fn spoofed_mac(i: u32) -> [u8; 6] {
    let [_, a, b, c] = i.to_be_bytes();
    [0x02, 0xfe, a, b, c, 0x01]
}

fn mac_string(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

const MACS: u32 = 5_000;
/// IP bytes of each spoofed frame: IPv4 and UDP headers and 18 bytes.
const SPOOFED_IP_BYTES: u64 = 46;

#[test]
fn after_a_5000_mac_flood_a_new_device_is_counted_from_its_first_packet_and_totals_carry_on() {
    use egress_lab::{
        DEVICE_IF, SERVERS_V4, UDP_SINK_PORT,
        agent::Mac,
        exec_ok,
        frames::{frame, ipv4_udp, send_raw},
        udp_ip_bytes, udp_send,
    };

    let lab = Lab::new();
    let _servers = lab.start_servers(0);
    // 256 slots (and hash entries) for 5,000 MACs: only recycling makes room.
    let config = "device_map_entries = 256\n[devices]\n\"00:16:3e:00:00:02\" = \"laptop\"\n";
    let agent = Agent::start_with_poll(&lab, config, &[], "200ms");
    let phone = lab.device("phone");
    let router_mac: Vec<u8> = exec_ok(lab.router_ns(), "cat", &["/sys/class/net/br-lan/address"])
        .trim()
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
    let router_mac: [u8; 6] = router_mac.try_into().unwrap();
    let ip = ipv4_udp(phone.ipv4, SERVERS_V4[0], 0, 18);
    assert_eq!(ip.len() as u64, SPOOFED_IP_BYTES);
    let frames: Vec<Vec<u8>> = (0..MACS)
        .map(|i| frame(spoofed_mac(i), router_mac, 0x0800, &ip))
        .collect();
    // One MAC a millisecond: about 1,000 new devices a second, 200 a poll.
    send_raw(&phone.ns, DEVICE_IF, &frames, 1);

    // A device never seen before joins right after the flood: its first packet is counted
    // (not refused as device_map_full), and shown once the ledger has settled it.
    let laptop = lab.device("laptop");
    let to = SocketAddr::new(SERVERS_V4[0].into(), UDP_SINK_PORT);
    let at_end = agent.settled();
    let polls_at_end = at_end.count("egress_monitor_polls_total", &[]);
    let refused_at_end = at_end.count(
        "egress_monitor_kernel_frames_total",
        &[("direction", "egress"), ("result", "device_map_full")],
    );
    let flood_end = std::time::Instant::now();
    udp_send(&laptop.ns, to, 100, 1);
    let mut counted = None;
    let shown = egress_lab::wait_until(Duration::from_secs(20), || {
        let s = agent.scrape();
        if s.device_total("laptop", "egress").1 > 0 {
            counted = Some(s.count("egress_monitor_polls_total", &[]));
        }
        counted.is_some()
    });
    assert!(shown, "the laptop is never counted:\n{}", agent.log());
    let seconds = flood_end.elapsed().as_secs_f64();
    let polls = counted.unwrap() - polls_at_end;
    assert_eq!(
        agent.settled().device_total("laptop", "egress"),
        (udp_ip_bytes(true, 100), 1),
        "the first packet after the flood is counted"
    );
    // Nothing was refused after the flood: the maps had room for the new device at once.
    // (When it shows depends on the poll and the scrape: read at the next poll, settled at the
    // one after, see the ledger.)
    // From then on, exact.
    let before = agent.settled().device_total("laptop", "egress");
    udp_send(&laptop.ns, to, 100, 20);
    assert_eq!(
        agent.settled().device_total("laptop", "egress"),
        (before.0 + 20 * udp_ip_bytes(true, 100), before.1 + 20)
    );

    // Every spoofed device is exact: one frame each, whether its slot was recycled or not.
    let s = agent.settled();
    let kernel_full = s.count(
        "egress_monitor_kernel_frames_total",
        &[("direction", "egress"), ("result", "device_map_full")],
    );
    assert_eq!(
        kernel_full, refused_at_end,
        "no frame refused after the flood"
    );
    let mut listed = 0;
    for i in 0..MACS {
        let mac = mac_string(spoofed_mac(i));
        let total = s.device_total(Mac(&mac), "egress");
        if total != (0, 0) {
            assert_eq!(total, (SPOOFED_IP_BYTES, 1), "{mac}");
            listed += 1;
        }
    }
    assert_eq!(
        listed + kernel_full,
        u64::from(MACS),
        "every frame is counted, or refused as device_map_full"
    );
    // A flood device whose slot went to another comes back: its counters carry on.
    let first = mac_string(spoofed_mac(0));
    let was = s.device_total(Mac(&first), "egress");
    send_raw(&phone.ns, DEVICE_IF, &frames[..1], 0);
    assert_eq!(
        agent.settled().device_total(Mac(&first), "egress"),
        (was.0 + SPOOFED_IP_BYTES, was.1 + 1)
    );
    let recycled = agent
        .log()
        .matches("gave the slots of the longest idle devices")
        .count();
    assert!(recycled > 0, "slots were recycled:\n{}", agent.log());
    println!(
        "flood of {MACS} MACs into 256 device slots: {listed} counted, {kernel_full} refused as \
         device_map_full, {recycled} polls recycled slots; a new device's first packet after \
         the flood was counted, and shown {seconds:.2} s ({polls} polls) after it was sent"
    );
}
