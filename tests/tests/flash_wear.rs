//! The state file lives on flash on a router: however fast a device adds destinations, the
//! agent writes it at most once per `state_write_interval` (plus shutdown and commands).

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use egress_lab::{Lab, agent::Agent, run_in};

const INTERVAL_SECS: u64 = 3;

#[test]
fn a_scanning_device_rewrites_the_state_file_at_most_once_per_interval() {
    let lab = Lab::new();
    let state_dir = lab.scratch_dir().join("state");
    let config = format!(
        "state_dir = \"{}\"\nstate_write_interval = \"{INTERVAL_SECS}s\"\n\
         max_destinations_per_device = 4096\n",
        state_dir.display()
    );
    let agent = Agent::start(&lab, &config, &[]);
    let writes = |agent: &Agent| {
        agent.scrape().count(
            "egress_monitor_state_writes_total",
            &[("result", "success")],
        )
    };
    let before = writes(&agent);
    // A scan: 3,000 new destinations over about 12 s, a new one every poll and more.
    let phone = lab.device("phone");
    let socket = run_in(&phone.ns, || UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))
        .expect("a socket in the phone's namespace");
    let started = Instant::now();
    for i in 0..3000u32 {
        let to = Ipv4Addr::new(198, 18, (i >> 8) as u8, i as u8);
        socket
            .send_to(&[0u8; 32], SocketAddr::new(to.into(), 9))
            .expect("a datagram");
        std::thread::sleep(Duration::from_millis(4));
    }
    agent.wait_polls(3);
    let elapsed = started.elapsed();
    let written = writes(&agent) - before;
    let bound = elapsed.as_secs().div_ceil(INTERVAL_SECS) + 1;
    println!(
        "state file writes while a device scanned 3000 addresses for {:.1} s: {written} \
         (interval {INTERVAL_SECS} s, bound {bound}); at the default 5m interval the bound is 12 \
         writes an hour, whatever the scan",
        elapsed.as_secs_f64()
    );
    assert!(written >= 2, "the changes were written: {written} writes");
    assert!(
        written <= bound,
        "{written} writes in {elapsed:?} with a {INTERVAL_SECS} s interval (at most {bound})"
    );
    // The shutdown writes what is left.
    let status = agent.stop();
    assert!(status.success(), "{status}");
    let text = std::fs::read_to_string(state_dir.join("state.toml")).expect("the state file");
    assert!(
        text.contains("198.18.11.183"),
        "the last destination is on disk"
    );
}
