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
    agent::{AGENT_LISTEN, Agent},
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

/// One whole GET of `/metrics` in the router's namespace, from connect to the last byte.
fn timed_scrape(ns: &str) -> (Duration, usize) {
    let listen: SocketAddr = AGENT_LISTEN.parse().expect("address");
    run_in(ns, move || {
        let started = Instant::now();
        let mut stream = TcpStream::connect(listen).expect("connect");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n")
            .expect("send the request");
        let mut body = Vec::with_capacity(1 << 20);
        stream.read_to_end(&mut body).expect("read the answer");
        (started.elapsed(), body.len())
    })
}

/// The median of `n` scrapes, after the agent has read the lease file.
fn median_scrape(
    lab: &Lab,
    agent: &Agent,
    leases: &std::path::Path,
    n: usize,
) -> (Duration, usize) {
    let path = leases.to_str().expect("UTF-8");
    let read = egress_lab::wait_until(Duration::from_secs(30), || {
        agent
            .scrape()
            .count("egress_monitor_lease_file_reads_total", &[("path", path)])
            >= 1
    });
    assert!(read, "the lease file was not read; log:\n{}", agent.log());
    agent.wait_polls(2);
    let mut runs: Vec<(Duration, usize)> = (0..n).map(|_| timed_scrape(lab.router_ns())).collect();
    runs.sort();
    runs[n / 2]
}

#[test]
fn a_scrape_with_16000_leases_costs_no_more_than_twice_one_with_16() {
    let lab = Lab::builder().devices(["phone"]).build();
    let mut medians = Vec::new();
    for n in [16, 16_000] {
        let leases = lease_file(&lab, n);
        let agent = Agent::start(&lab, &leases_config(&leases), &[]);
        let (took, bytes) = median_scrape(&lab, &agent, &leases, 15);
        let s = agent.scrape();
        assert_eq!(
            s.sum("egress_device_info", &[("name_source", "lease")]),
            n as u64,
            "every lease names a device"
        );
        eprintln!("{n} leases: median scrape {took:?}, {bytes} bytes");
        medians.push(took);
        assert!(agent.stop().success());
    }
    assert!(
        medians[1] <= medians[0] * 2,
        "a scrape with 16,000 leases took {:?}, with 16 {:?}",
        medians[1],
        medians[0]
    );
}
