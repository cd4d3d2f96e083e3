//! The demo behind `cargo xtask lab`: the agent on the lab router, three simulated devices that
//! get their addresses and hostnames by DHCP and resolve names through the router's dnsmasq, a
//! per-device table every few seconds (devices and destinations by name), and the metrics relayed
//! to a loopback port of the host.
//!
//! The relay is the only thing in the host's namespace: a TCP listener on loopback whose
//! connections are re-made from inside the router namespace. No link joins the namespaces.

use std::{
    collections::BTreeMap,
    io::{self, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::{
    Lab, OUTSIDE_RESOLVER_V4, ROUTER_LAN_V4, RecordType, TCP_SINK_PORT, TCP_SOURCE_PORT,
    UDP_SINK_PORT,
    agent::{AGENT_LISTEN, Agent, Scrape},
    dns_lookup, netns, tcp_download, tcp_upload, udp_send,
};

/// What the demo does.
pub struct DemoOptions {
    /// Loopback address of the host where `/metrics` is relayed.
    pub listen: SocketAddr,
    /// Stop by itself after this long; None runs until `stop` is set.
    pub duration: Option<Duration>,
    /// How often the table is printed.
    pub table_every: Duration,
}

/// The name the phone phones home to.
pub const TELEMETRY: &str = "telemetry.vendor.example";

/// Runs the demo until `stop` is set or the duration passes; removes everything it made.
pub fn run(options: &DemoOptions, stop: Arc<AtomicBool>) -> io::Result<()> {
    if !options.listen.ip().is_loopback() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is not a loopback address: the demo only relays to this machine",
                options.listen
            ),
        ));
    }
    let relay_listener = TcpListener::bind(options.listen).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot listen on {}: {e}", options.listen),
        )
    })?;
    println!("creating the lab (router with dnsmasq, WAN, phone, laptop, camera)...");
    let lab = Lab::builder()
        .dhcp(true)
        .hostname("phone", "redmi-note-12")
        .hostname("camera", "ipcam-7f3a")
        .build();
    let servers = lab.start_servers(2_000_000);
    // The phone and the camera are named from the DHCP lease file, the laptop by the config.
    let config = format!(
        "[[leases]]\nformat = \"dnsmasq\"\npath = \"{}\"\n\n[devices]\n\"{}\" = {{ name = \"work-laptop\", group = \"work\" }}\n",
        lab.lease_file().display(),
        lab.device("laptop").mac_string()
    );
    let agent = Agent::start_with_poll(&lab, &config, &[], "1s");
    let relay = start_relay(relay_listener, lab.router_ns().to_owned(), stop.clone());
    println!(
        "agent running in namespace {} on br-lan\nmetrics: http://{}/metrics   (relayed into the router namespace; try curl)\n",
        lab.router_ns(),
        options.listen
    );
    let drivers = start_devices(&lab, stop.clone());

    let started = Instant::now();
    let mut next_table = started + options.table_every;
    while !stop.load(Ordering::Relaxed) {
        if options.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        if Instant::now() >= next_table {
            print_table(&lab, &agent.scrape(), started.elapsed());
            next_table += options.table_every;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("stopping: devices, agent, lab...");
    stop.store(true, Ordering::Relaxed);
    for driver in drivers {
        let _ = driver.join();
    }
    let _ = relay.join();
    let status = agent.stop();
    drop(servers);
    drop(lab);
    println!("agent exited with {status}; every namespace of the lab is removed");
    Ok(())
}

/// Resolves `name` through the router from namespace `ns`, as the device's stub resolver would.
fn resolve(ns: &str, name: &str, qtype: RecordType) -> Option<IpAddr> {
    dns_lookup(ns, IpAddr::V4(ROUTER_LAN_V4), name, qtype, false)
        .ok()?
        .addresses()
        .first()
        .copied()
}

/// Three devices, each in its own thread, each loop bounded by `stop`.
fn start_devices(lab: &Lab, stop: Arc<AtomicBool>) -> Vec<JoinHandle<()>> {
    let phone = lab.device("phone").ns.clone();
    let laptop = lab.device("laptop").ns.clone();
    let camera = lab.device("camera").ns.clone();
    let every = |period: Duration, stop: Arc<AtomicBool>, mut work: Box<dyn FnMut() + Send>| {
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let began = Instant::now();
                work();
                while began.elapsed() < period && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        })
    };
    vec![
        // The phone phones home: a burst to its telemetry server every 5 s, after asking an
        // outside resolver behind the router's back (reported as resolver bypass).
        every(
            Duration::from_secs(5),
            stop.clone(),
            Box::new(move || {
                let outside = IpAddr::V4(OUTSIDE_RESOLVER_V4);
                let _ = dns_lookup(
                    &phone,
                    outside,
                    "updates.vendor.example",
                    RecordType::A,
                    false,
                );
                let Some(to) = resolve(&phone, TELEMETRY, RecordType::A) else {
                    return;
                };
                udp_send(&phone, SocketAddr::new(to, UDP_SINK_PORT), 1200, 40);
                tcp_upload(&phone, SocketAddr::new(to, TCP_SINK_PORT), 64 * 1024);
            }),
        ),
        // The laptop downloads, over IPv4 and IPv6 in turn.
        every(
            Duration::from_secs(3),
            stop.clone(),
            Box::new({
                let mut v6 = false;
                move || {
                    let qtype = if v6 { RecordType::AAAA } else { RecordType::A };
                    v6 = !v6;
                    // A name behind two CNAMEs.
                    if let Some(from) = resolve(&laptop, "cdn.vendor.example", qtype) {
                        tcp_download(&laptop, SocketAddr::new(from, TCP_SOURCE_PORT), 2_000_000);
                    }
                }
            }),
        ),
        // The camera uploads steadily, to its cloud under a multi-label public suffix.
        every(
            Duration::from_secs(1),
            stop,
            Box::new(move || {
                let cloud = "api.camera-cloud.example.com.au";
                if let Some(to) = resolve(&camera, cloud, RecordType::A) {
                    tcp_upload(&camera, SocketAddr::new(to, TCP_SINK_PORT), 256 * 1024);
                }
            }),
        ),
    ]
}

fn print_table(lab: &Lab, s: &Scrape, elapsed: Duration) {
    let mut out = String::new();
    out.push_str(&format!(
        "--- after {:>4}s ---------------------------------------------------------------\n",
        elapsed.as_secs()
    ));
    out.push_str(&format!(
        "{:<14} {:<18} {:>10} {:>10}  {}\n",
        "device", "mac", "egress", "ingress", "top destination (egress)"
    ));
    for d in lab.devices() {
        let mac = d.mac_string();
        let total = |direction: &str| {
            s.count(
                "egress_device_bytes_total",
                &[("mac", &mac), ("direction", direction)],
            )
        };
        let mut destinations: BTreeMap<u64, String> = BTreeMap::new();
        for sample in s.matching(
            "egress_destination_bytes_total",
            &[("mac", &mac), ("direction", "egress")],
        ) {
            destinations.insert(sample.value as u64, sample.labels["destination"].clone());
        }
        let top = destinations
            .iter()
            .next_back()
            .filter(|(bytes, _)| **bytes > 0)
            .map(|(bytes, dest)| format!("{dest} ({})", human(*bytes)))
            .unwrap_or_default();
        let name = s
            .matching("egress_device_info", &[("mac", &mac)])
            .next()
            .map_or(d.name.clone(), |info| info.labels["device"].clone());
        let bypass: u64 = s
            .matching("egress_resolver_bypass_total", &[("mac", &mac)])
            .map(|m| m.value as u64)
            .sum();
        let top = if bypass > 0 {
            format!("{top}; bypassed the router's resolver {bypass}x")
        } else {
            top
        };
        out.push_str(&format!(
            "{:<14} {:<18} {:>10} {:>10}  {}\n",
            name,
            mac,
            human(total("egress")),
            human(total("ingress")),
            top
        ));
    }
    print!("{out}");
    let _ = io::stdout().flush();
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "kB", "MB", "GB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Accepts on the host's loopback and re-makes each connection inside the router namespace.
fn start_relay(listener: TcpListener, router_ns: String, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((client, _)) => {
                    let ns = router_ns.clone();
                    std::thread::spawn(move || relay_one(client, &ns));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    })
}

fn relay_one(client: TcpStream, router_ns: &str) {
    let agent: SocketAddr = AGENT_LISTEN.parse().expect("valid address");
    let Some(upstream) = netns::run_in(router_ns, move || {
        TcpStream::connect_timeout(&agent, Duration::from_secs(2)).ok()
    }) else {
        return;
    };
    let _ = client.set_nonblocking(false);
    for s in [&client, &upstream] {
        let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    }
    let (Ok(mut client_read), Ok(mut upstream_write)) = (client.try_clone(), upstream.try_clone())
    else {
        return;
    };
    let up = std::thread::spawn(move || {
        let _ = io::copy(&mut client_read, &mut upstream_write);
        let _ = upstream_write.shutdown(std::net::Shutdown::Write);
    });
    let (mut upstream_read, mut client_write) = (upstream, client);
    let _ = io::copy(&mut upstream_read, &mut client_write);
    let _ = client_write.shutdown(std::net::Shutdown::Write);
    let _ = up.join();
}
