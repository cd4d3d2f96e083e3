//! The agent stays responsive whatever its inputs weigh: scrapes read a snapshot the poller
//! publishes, so their cost does not grow with the lease files, and a lease reader stuck in
//! a read holds up neither `/metrics`, `/healthz`, the polls nor SIGTERM.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use egress_lab::{
    Lab,
    agent::{AGENT_LISTEN, Agent, Mac},
    run_in,
};

/// A dnsmasq lease file of `n` devices, each with a hostname.
fn lease_file(lab: &Lab, n: usize) -> std::path::PathBuf {
    let path = lab.scratch_dir().join(format!("leases-{n}"));
    let mut text = String::with_capacity(n * 64);
    for i in 0..n {
        let (hi, lo) = ((i >> 8) as u8, i as u8);
        text.push_str(&format!(
            "4102444800 02:00:5e:10:{hi:02x}:{lo:02x} 10.{hi}.{lo}.{} host-{i} *\n",
            1 + i % 250
        ));
    }
    std::fs::write(&path, text).expect("write the lease file");
    path
}

fn leases_config(path: &std::path::Path) -> String {
    format!(
        "[[leases]]\nformat = \"dnsmasq\"\npath = \"{}\"\n",
        path.display()
    )
}

/// Times of one GET of `/metrics` in the router's namespace: until the first byte of the
/// answer (the agent's own work: it renders everything but the device table's families,
/// which it shares, before it answers) and until the last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ScrapeTime {
    first_byte: Duration,
    last_byte: Duration,
    bytes: usize,
}

fn timed_scrape(ns: &str) -> ScrapeTime {
    let listen: SocketAddr = AGENT_LISTEN.parse().expect("address");
    run_in(ns, move || {
        let started = Instant::now();
        let mut stream = TcpStream::connect(listen).expect("connect");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n")
            .expect("send the request");
        let mut body = vec![0u8; 1 << 24];
        let mut bytes = 0;
        let mut first_byte = None;
        loop {
            let read = stream.read(&mut body[bytes..]).expect("read the answer");
            first_byte.get_or_insert_with(|| started.elapsed());
            if read == 0 {
                break;
            }
            bytes += read;
        }
        ScrapeTime {
            first_byte: first_byte.expect("read at least once"),
            last_byte: started.elapsed(),
            bytes,
        }
    })
}

/// Waits until the agent has read the lease file and polled since.
fn wait_leases_read(agent: &Agent, leases: &std::path::Path) {
    let path = leases.to_str().expect("UTF-8");
    let read = egress_lab::wait_until(Duration::from_secs(30), || {
        agent
            .scrape()
            .count("egress_monitor_lease_file_reads_total", &[("path", path)])
            >= 1
    });
    assert!(read, "the lease file was not read; log:\n{}", agent.log());
    agent.wait_polls(2);
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

#[test]
fn a_scrape_with_16000_leases_costs_no_more_than_twice_one_with_16() {
    // Two labs at once, scraped in turn, so that whatever else loads the machine weighs on
    // both sides alike.
    let counts = [16, 16_000];
    let labs: Vec<Lab> = counts
        .iter()
        .map(|_| Lab::builder().devices(["phone"]).build())
        .collect();
    let agents: Vec<Agent> = labs
        .iter()
        .zip(counts)
        .map(|(lab, n)| {
            let leases = lease_file(lab, n);
            let agent = Agent::start(lab, &leases_config(&leases), &[]);
            wait_leases_read(&agent, &leases);
            let s = agent.scrape();
            assert_eq!(
                s.sum("egress_device_info", &[("name_source", "lease")]),
                n as u64,
                "every lease names a device"
            );
            agent
        })
        .collect();
    let mut runs: Vec<Vec<ScrapeTime>> = vec![Vec::new(), Vec::new()];
    for _ in 0..31 {
        for (i, lab) in labs.iter().enumerate() {
            runs[i].push(timed_scrape(lab.router_ns()));
        }
    }
    let first: Vec<Duration> = runs
        .iter()
        .map(|r| median(r.iter().map(|t| t.first_byte).collect()))
        .collect();
    for (i, n) in counts.iter().enumerate() {
        let last = median(runs[i].iter().map(|t| t.last_byte).collect());
        eprintln!(
            "{n} leases: median first byte {:?}, last byte {last:?}, {} bytes",
            first[i], runs[i][0].bytes
        );
    }
    for agent in agents {
        assert!(agent.stop().success());
    }
    // The agent's work is what must not grow with the leases; the rest of a scrape is the
    // bytes of 16,000 devices' series crossing the socket.
    assert!(
        first[1] <= first[0] * 2,
        "a scrape with 16,000 leases took {:?} to its first byte, with 16 {:?}",
        first[1],
        first[0]
    );
}

#[test]
fn a_file_watcher_stuck_in_a_read_holds_up_no_scrape_no_poll_and_no_sigterm() {
    // As a read from a stalled network mount would: the file watcher never comes back.
    let lab = Lab::builder().devices(["phone"]).build();
    let leases = lease_file(&lab, 16);
    let agent = Agent::start_with_env(
        &lab,
        &leases_config(&leases),
        &[("EGRESS_MONITOR_TEST_STALL", "files")],
    );
    agent.wait_polls(3);
    let s = agent.scrape();
    assert_eq!(
        s.count(
            "egress_monitor_lease_file_reads_total",
            &[("path", leases.to_str().expect("UTF-8"))]
        ),
        0,
        "the stalled watcher read the lease file"
    );
    assert!(matches!(agent.get("/healthz"), Some((200, _))));
    assert!(matches!(agent.get("/api/devices"), Some((200, _))));
    // Traffic is counted exactly all the same.
    let _servers = lab.start_servers(0);
    let server = std::net::IpAddr::V4(egress_lab::SERVERS_V4[0]);
    let sent = lab.send_to_sink("phone", server, 400, 25);
    agent.wait_polls(3);
    let phone = lab.device("phone").mac_string();
    assert_eq!(agent.scrape().device_total(Mac(&phone), "egress").0, sent);
    let took = agent.terminate_within(Duration::from_secs(5));
    assert!(
        agent.log().contains("a thread did not stop in time"),
        "{}",
        agent.log()
    );
    eprintln!("SIGTERM with the file watcher stuck: exit after {took:?}");
}
