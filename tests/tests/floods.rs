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
