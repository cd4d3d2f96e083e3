//! The demo behind `cargo xtask lab`: the agent on the lab router, three simulated devices that
//! get their addresses and hostnames by DHCP and resolve names through the router's dnsmasq, a
//! per-device table every few seconds (devices and destinations by name), and the metrics relayed
//! to a loopback port of the host.
//!
//! The camera has a policy: it may only talk to its cloud. Its firmware also phones home to the
//! vendor's telemetry server, so Prometheus and Alertmanager, running on the router with the
//! shipped alert rules ([`alerting::shipped_rules`]), raise `EgressUnexpectedDestination`; the
//! demo prints each alert as it reaches Alertmanager. Without them installed it runs the rest.
//!
//! The lab has its own address database (an IPinfo Lite MMDB file the demo writes): the
//! vendor's servers are in China, in an AS of the vendor's hosting company. The phone learns
//! its baseline for its first seconds, talking to a CDN in Germany; then it phones home, and
//! the shipped `EgressNewCountry` alert tells that it talked to a country it never had. The
//! table shows each device's top country and network.
//!
//! The relay is the only thing in the host's namespace: a TCP listener on loopback whose
//! connections are re-made from inside the router namespace. No link joins the namespaces.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{self, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::{
    Lab, OUTSIDE_RESOLVER_V4, ROUTER_LAN_V4, RecordType, SERVERS_V4, SERVERS_V6, TCP_SINK_PORT,
    TCP_SOURCE_PORT, UDP_SINK_PORT,
    agent::{AGENT_LISTEN, Agent, Mac, Scrape},
    alerting::{self, Alerting},
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

/// The name the phone, and the camera's firmware, phone home to.
pub const TELEMETRY: &str = "telemetry.vendor.example";
/// The camera's cloud, the only name its policy allows.
pub const CAMERA_CLOUD: &str = "api.camera-cloud.example.com.au";
/// The alert of the shipped rules for traffic outside a device's policy.
const UNEXPECTED_ALERT: &str = "EgressUnexpectedDestination";
/// How long the phone learns its baseline, and when it starts to phone home (after learning).
const PHONE_LEARNS: Duration = Duration::from_secs(12);
const PHONE_HOME_AFTER: Duration = Duration::from_secs(18);
/// How often the demo asks Alertmanager for new alerts.
const ALERT_POLL: Duration = Duration::from_millis(500);

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
    let places = lab.scratch_dir().join("ipinfo_lite.mmdb");
    write_places(&places)?;
    // The phone and the camera are named from the DHCP lease file, the laptop by the config.
    // The camera may talk to its cloud only (the name it resolves is a subdomain of the rule).
    let config = format!(
        "[[leases]]\nformat = \"dnsmasq\"\npath = \"{}\"\n\n[devices]\n\"{}\" = {{ name = \"work-laptop\", group = \"work\" }}\n\n\
         [enrich]\ncountry_db = \"{places}\"\nasn_db = \"{places}\"\n\n\
         [policy.devices.\"{}\"]\nallow = [\"camera-cloud.example.com.au\"]\n\n\
         [policy.devices.\"{}\"]\nlearn = \"{}s\"\n",
        lab.lease_file().display(),
        lab.device("laptop").mac_string(),
        lab.device("camera").mac_string(),
        lab.device("phone").mac_string(),
        PHONE_LEARNS.as_secs(),
        places = places.display(),
    );
    let alerts = start_alerting(&lab);
    let agent = Agent::start_with_poll(&lab, &config, &[], "1s");
    let relay = start_relay(relay_listener, lab.router_ns().to_owned(), stop.clone());
    println!(
        "agent running in namespace {} on br-lan\nmetrics: http://{}/metrics   (relayed into the router namespace; try curl)\n",
        lab.router_ns(),
        options.listen
    );
    let first_phone_home = Arc::new(OnceLock::new());
    let drivers = start_devices(&lab, stop.clone(), first_phone_home.clone());
    let mut watch = alerts.map(|alerting| AlertWatch {
        alerting,
        seen: BTreeSet::new(),
        first_phone_home,
    });

    let started = Instant::now();
    let mut next_table = started + options.table_every;
    let mut next_alert_poll = started;
    while !stop.load(Ordering::Relaxed) {
        if options.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        if Instant::now() >= next_table {
            print_table(&lab, &agent.scrape(), started.elapsed());
            next_table += options.table_every;
        }
        if let Some(watch) = &mut watch
            && Instant::now() >= next_alert_poll
        {
            watch.print_new();
            next_alert_poll = Instant::now() + ALERT_POLL;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("stopping: devices, agent, alerting, lab...");
    stop.store(true, Ordering::Relaxed);
    for driver in drivers {
        let _ = driver.join();
    }
    let _ = relay.join();
    let status = agent.stop();
    drop(watch);
    drop(servers);
    drop(lab);
    println!("agent exited with {status}; every namespace of the lab is removed");
    Ok(())
}

/// The lab's address database: where the servers of the lab's zone are, and whose networks.
fn write_places(path: &std::path::Path) -> io::Result<()> {
    use crate::mmdb::{Network, ipinfo_lite};
    let vendor = ("CN", "AS64666", "Vendor Cloud Hosting Ltd");
    let cdn = ("DE", "AS64500", "Example CDN GmbH");
    let cloud = ("AU", "AS64510", "Camera Cloud Pty Ltd");
    let rows = [
        (IpAddr::V4(SERVERS_V4[0]), 32, vendor),
        (IpAddr::V6(SERVERS_V6[0]), 128, vendor),
        (IpAddr::V4(SERVERS_V4[1]), 32, cdn),
        (IpAddr::V6(SERVERS_V6[1]), 128, cdn),
        (IpAddr::V4(SERVERS_V4[2]), 32, cloud),
    ];
    let networks: Vec<(Network, &str, &str, &str)> = rows
        .iter()
        .map(|(addr, len, (country, asn, org))| (Network::new(*addr, *len), *country, *asn, *org))
        .collect();
    ipinfo_lite(&networks).write(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot write the lab's address database {}: {e}",
                path.display()
            ),
        )
    })
}

/// Resolves `name` through the router from namespace `ns`, as the device's stub resolver would.
fn resolve(ns: &str, name: &str, qtype: RecordType) -> Option<IpAddr> {
    dns_lookup(ns, IpAddr::V4(ROUTER_LAN_V4), name, qtype, false)
        .ok()?
        .addresses()
        .first()
        .copied()
}

/// Prometheus and Alertmanager on the router with the shipped rules; None, after saying why,
/// when they cannot run (the demo goes on without alerts).
fn start_alerting(lab: &Lab) -> Option<Alerting> {
    let missing = alerting::missing_binaries();
    if !missing.is_empty() {
        println!(
            "alerts: off: {} not installed; run `cargo xtask setup` to install Prometheus and \
             Alertmanager",
            missing.join(" and ")
        );
        return None;
    }
    let rules = alerting::shipped_rules();
    match Alerting::try_start(lab, &rules) {
        Ok(alerting) => {
            println!(
                "alerts: Prometheus ({}) and Alertmanager ({}) in the router namespace, rules {}; \
                 the camera may only talk to its cloud, and phones home",
                alerting::PROMETHEUS_LISTEN,
                alerting::ALERTMANAGER_LISTEN,
                rules.display()
            );
            Some(alerting)
        }
        Err(message) => {
            println!("alerts: off: {message}");
            None
        }
    }
}

/// Prints each alert once, when it first shows in Alertmanager.
struct AlertWatch {
    alerting: Alerting,
    /// Label sets already printed.
    seen: BTreeSet<BTreeMap<String, String>>,
    /// When the camera first sent to its phone-home server.
    first_phone_home: Arc<OnceLock<Instant>>,
}

impl AlertWatch {
    fn print_new(&mut self) {
        let alerts = match self.alerting.try_alerts() {
            Ok(alerts) => alerts,
            Err(message) => {
                println!("alerts: cannot ask Alertmanager: {message}");
                return;
            }
        };
        for alert in alerts {
            if !self.seen.insert(alert.labels.clone()) {
                continue;
            }
            let after = match self.first_phone_home.get() {
                Some(first) if alert.label("alertname") == UNEXPECTED_ALERT => format!(
                    ", {:.1} s after the camera's first phone-home packet",
                    first.elapsed().as_secs_f64()
                ),
                _ => String::new(),
            };
            // What the alert is about: its labels, without the routing ones.
            let about: Vec<String> = alert
                .labels
                .iter()
                .filter(|(k, _)| {
                    !matches!(
                        k.as_str(),
                        "alertname" | "job" | "instance" | "severity" | "mac"
                    )
                })
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            println!(
                "ALERT {}: {}{after}",
                alert.label("alertname"),
                about.join(", ")
            );
        }
        let _ = io::stdout().flush();
    }
}

/// The devices, each in its own thread, each loop bounded by `stop`. The camera's firmware
/// records when it first phoned home in `first_phone_home`.
fn start_devices(
    lab: &Lab,
    stop: Arc<AtomicBool>,
    first_phone_home: Arc<OnceLock<Instant>>,
) -> Vec<JoinHandle<()>> {
    let phone = lab.device("phone").ns.clone();
    let laptop = lab.device("laptop").ns.clone();
    let camera = lab.device("camera").ns.clone();
    let firmware = camera.clone();
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
    let online = Instant::now();
    vec![
        // The phone learns first, fetching from a CDN in Germany; then it phones home: a burst
        // to its telemetry server (in China) every 5 s, after asking an outside resolver behind
        // the router's back (reported as resolver bypass).
        every(
            Duration::from_secs(5),
            stop.clone(),
            Box::new(move || {
                if online.elapsed() < PHONE_HOME_AFTER {
                    if let Some(from) = resolve(&phone, "cdn.vendor.example", RecordType::A) {
                        tcp_download(&phone, SocketAddr::new(from, TCP_SOURCE_PORT), 2_000_000);
                    }
                    return;
                }
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
            stop.clone(),
            Box::new(move || {
                if let Some(to) = resolve(&camera, CAMERA_CLOUD, RecordType::A) {
                    tcp_upload(&camera, SocketAddr::new(to, TCP_SINK_PORT), 256 * 1024);
                }
            }),
        ),
        // Its firmware phones home to the vendor, which its policy does not allow.
        every(
            Duration::from_secs(10),
            stop,
            Box::new(move || {
                let Some(to) = resolve(&firmware, TELEMETRY, RecordType::A) else {
                    return;
                };
                first_phone_home.get_or_init(Instant::now);
                udp_send(&firmware, SocketAddr::new(to, UDP_SINK_PORT), 300, 3);
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
        "{:<14} {:<18} {:>10} {:>10}  {:<44} {}\n",
        "device", "mac", "egress", "ingress", "top destination (egress)", "top country, network"
    ));
    for d in lab.devices() {
        let mac = d.mac_string();
        let total = |direction: &str| s.device_total(Mac(&mac), direction).0;
        let top = s
            .destinations(Mac(&mac), "egress")
            .into_iter()
            .max_by_key(|(_, bytes)| *bytes)
            .map(|(dest, bytes)| format!("{dest} ({})", human(bytes)))
            .unwrap_or_default();
        let name = s
            .matching("egress_device_info", &[("mac", &mac)])
            .next()
            .map_or(d.name.clone(), |info| info.labels["device"].clone());
        let bypass = s.sum("egress_resolver_bypass_total", &[("mac", &mac)]);
        let top = if bypass > 0 {
            format!("{top}; bypassed the router's resolver {bypass}x")
        } else {
            top
        };
        out.push_str(&format!(
            "{:<14} {:<18} {:>10} {:>10}  {:<44} {}\n",
            name,
            mac,
            human(total("egress")),
            human(total("ingress")),
            top,
            top_place(s, &mac)
        ));
    }
    print!("{out}");
    let _ = io::stdout().flush();
}

/// A device's top country and AS by egress bytes: `CN, Vendor Cloud Hosting Ltd (AS64666)`.
fn top_place(s: &Scrape, mac: &str) -> String {
    let top = |family: &str| {
        s.matching(family, &[("mac", mac), ("direction", "egress")])
            .max_by(|a, b| a.value.total_cmp(&b.value))
            .map(|sample| sample.labels.clone())
    };
    let country = top("egress_country_bytes_total").map(|l| l["country"].clone());
    let network = top("egress_asn_bytes_total").map(|l| match l["asn"].as_str() {
        "unknown" | "other" => l["asn"].clone(),
        asn => format!("{} (AS{asn})", l["as_org"]),
    });
    match (country, network) {
        (Some(c), Some(n)) => format!("{c}, {n}"),
        (Some(c), None) => c,
        _ => String::new(),
    }
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
