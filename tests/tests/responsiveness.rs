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

/// The medians of `n` scrapes (first byte, last byte), after the agent read the lease file.
fn median_scrape(lab: &Lab, agent: &Agent, leases: &std::path::Path, n: usize) -> ScrapeTime {
    let path = leases.to_str().expect("UTF-8");
    let read = egress_lab::wait_until(Duration::from_secs(30), || {
        agent
            .scrape()
            .count("egress_monitor_lease_file_reads_total", &[("path", path)])
            >= 1
    });
    assert!(read, "the lease file was not read; log:\n{}", agent.log());
    agent.wait_polls(2);
    let runs: Vec<ScrapeTime> = (0..n).map(|_| timed_scrape(lab.router_ns())).collect();
    let median = |mut d: Vec<Duration>| {
        d.sort();
        d[d.len() / 2]
    };
    ScrapeTime {
        first_byte: median(runs.iter().map(|r| r.first_byte).collect()),
        last_byte: median(runs.iter().map(|r| r.last_byte).collect()),
        bytes: runs[0].bytes,
    }
}

#[test]
fn a_scrape_with_16000_leases_costs_no_more_than_twice_one_with_16() {
    let lab = Lab::builder().devices(["phone"]).build();
    let mut medians = Vec::new();
    for n in [16, 16_000] {
        let leases = lease_file(&lab, n);
        let agent = Agent::start(&lab, &leases_config(&leases), &[]);
        let took = median_scrape(&lab, &agent, &leases, 21);
        let s = agent.scrape();
        assert_eq!(
            s.sum("egress_device_info", &[("name_source", "lease")]),
            n as u64,
            "every lease names a device"
        );
        eprintln!(
            "{n} leases: median first byte {:?}, last byte {:?}, {} bytes",
            took.first_byte, took.last_byte, took.bytes
        );
        medians.push(took);
        assert!(agent.stop().success());
    }
    // The agent's work is what must not grow with the leases; the rest of a scrape is the
    // bytes of 16,000 devices' series crossing the socket.
    assert!(
        medians[1].first_byte <= medians[0].first_byte * 2,
        "a scrape with 16,000 leases took {:?} to its first byte, with 16 {:?}",
        medians[1].first_byte,
        medians[0].first_byte
    );
}
