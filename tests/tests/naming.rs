//! Naming on the lab's virtual router with real components: dnsmasq hands out leases and answers
//! DNS, devices ask for names and then send traffic, openssl sends real ClientHellos. The agent
//! must label devices from the lease file and destinations from what each device resolved,
//! while every byte stays counted exactly.

use std::{net::IpAddr, time::Duration};

use egress_lab::{
    Lab, OUTSIDE_RESOLVER_V4, ROUTER_LAN_V4, RecordType, SERVERS_V4, SHORT_TTL, SHORT_TTL_NAME,
    agent::{Agent, Mac},
    dns_burst, dns_query, tls_connect,
};

/// The payload of every datagram the devices send.
const PAYLOAD: usize = 700;

/// A lab whose router runs dnsmasq for DHCP and DNS, as a home router does.
fn naming_lab() -> Lab {
    Lab::builder()
        .dhcp(true)
        .hostname("phone", "redmi-note-12")
        .hostname("camera", "ipcam-7f3a")
        .build()
}

#[test]
fn devices_are_named_from_the_real_lease_file_and_renames_are_followed() {
    let lab = naming_lab();
    let config = format!(
        "[[leases]]\nformat = \"dnsmasq\"\npath = \"{}\"\n\n[devices]\n\"00:16:3e:00:00:02\" = {{ name = \"work laptop\", group = \"work\" }}\n",
        lab.lease_file().display()
    );
    // Traffic before the agent starts puts the WAN gateway in the router's neighbour table,
    // which the agent reads at its first poll: it must not become a device.
    lab.send_to_sink("phone", IpAddr::V4(SERVERS_V4[1]), PAYLOAD, 1);
    let agent = Agent::start(&lab, &config, &[]);
    let phone = lab.device("phone");
    let sent = lab.send_to_sink("phone", IpAddr::V4(SERVERS_V4[0]), PAYLOAD, 5);
    let s = agent.settled();
    let info = |mac: &str| {
        s.sample("egress_device_info", &[("mac", mac)])
            .unwrap_or_else(|| panic!("no info series for {mac}"))
            .labels
            .clone()
    };
    let p = info(&phone.mac_string());
    assert_eq!(
        (
            p["device"].as_str(),
            p["name_source"].as_str(),
            p["locally_administered"].as_str()
        ),
        ("redmi-note-12", "lease", "false")
    );
    let l = info(&lab.device("laptop").mac_string());
    assert_eq!(
        (
            l["device"].as_str(),
            l["name_source"].as_str(),
            l["group"].as_str()
        ),
        ("work laptop", "config", "work"),
        "the configuration wins over the lease"
    );
    assert_eq!(
        info(&lab.device("camera").mac_string())["device"],
        "ipcam-7f3a"
    );
    assert_eq!(s.device_total("redmi-note-12", "egress").0, sent);

    // The API knows the device, its addresses and totals.
    let (status, body) = agent.get("/api/devices").expect("GET /api/devices");
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    // Exactly the LAN's devices: not the WAN gateway the router also has as a neighbour.
    let mut listed: Vec<&str> = json["devices"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|d| d["mac"].as_str().expect("a MAC"))
        .collect();
    listed.sort_unstable();
    let lab_macs: Vec<String> = lab.devices().iter().map(|d| d.mac_string()).collect();
    assert_eq!(listed, lab_macs, "{body}");
    let device = json["devices"]
        .as_array()
        .expect("a list")
        .iter()
        .find(|d| d["mac"] == phone.mac_string())
        .expect("the phone is listed")
        .clone();
    assert_eq!(device["name"], "redmi-note-12");
    assert_eq!(device["totals"]["egress"]["bytes"], sent);
    let addrs: Vec<&str> = device["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        addrs.contains(&phone.ipv4.to_string().as_str()),
        "{addrs:?}"
    );

    // The device asks again under a new hostname: dnsmasq rewrites the lease file, the agent
    // reads it again.
    lab.renew_dhcp_as("phone", "redmi-renamed");
    let renamed = egress_lab::wait_until(Duration::from_secs(10), || {
        agent
            .scrape()
            .value(
                "egress_device_info",
                &[("mac", &phone.mac_string()), ("device", "redmi-renamed")],
            )
            .is_some()
    });
    assert!(renamed, "the new hostname never showed:\n{}", agent.log());
    let s = agent.scrape();
    assert!(
        s.count("egress_monitor_lease_file_reads_total", &[]) >= 2,
        "the file was read again"
    );
}

#[test]
fn traffic_to_a_resolved_server_is_counted_under_the_name_exactly() {
    let lab = naming_lab();
    let agent = Agent::start(&lab, "destination_label = \"host\"\n", &[]);
    let mac = lab.device("phone").mac_string();
    // A name with two CNAMEs before its address: the device asked for the first one.
    let cdn = lab.resolve("phone", "cdn.vendor.example");
    assert_eq!(cdn, IpAddr::V4(SERVERS_V4[1]));
    let telemetry = lab.resolve("phone", "telemetry.vendor.example");
    let to_cdn = lab.send_to_sink("phone", cdn, PAYLOAD, 7);
    let to_telemetry = lab.send_to_sink("phone", telemetry, PAYLOAD, 3);
    // An address the device never resolved keeps its address as label.
    let unnamed = IpAddr::V4(SERVERS_V4[4]);
    let to_unnamed = lab.send_to_sink("phone", unnamed, PAYLOAD, 2);
    let s = agent.settled();
    let got = s.destinations(Mac(&mac), "egress");
    let mut want = vec![
        ("cdn.vendor.example".to_owned(), to_cdn),
        ("telemetry.vendor.example".to_owned(), to_telemetry),
        (unnamed.to_string(), to_unnamed),
    ];
    want.sort();
    assert_eq!(
        got, want,
        "exact bytes under each name; DNS to the router is not a destination"
    );
    assert!(
        s.count(
            "egress_monitor_sniff_records_total",
            &[("kind", "dns_response")]
        ) >= 2
    );
    assert_eq!(s.sum("egress_monitor_sniff_parse_errors_total", &[]), 0);
    assert_eq!(
        s.sum("egress_resolver_bypass_total", &[]),
        0,
        "the router's resolver is no bypass"
    );
}

#[test]
fn two_devices_naming_one_server_differently_each_get_their_own_name() {
    let lab = naming_lab();
    // Default label: the registrable domain, public-suffix aware. The servers' sinks take the
    // datagrams, so that no ICMP error comes back.
    let _servers = lab.start_servers(0);
    let agent = Agent::start(&lab, "", &[]);
    let phone_addr = lab.resolve("phone", "tracker.ads.example.co.uk");
    let camera_addr = lab.resolve("camera", "api.camera-cloud.example.com.au");
    assert_eq!(
        phone_addr, camera_addr,
        "the zone gives both names one address"
    );
    let phone_sent = lab.send_to_sink("phone", phone_addr, PAYLOAD, 4);
    let camera_sent = lab.send_to_sink("camera", camera_addr, PAYLOAD, 6);
    let s = agent.settled();
    assert_eq!(
        s.destinations(Mac(&lab.device("phone").mac_string()), "egress"),
        vec![("example.co.uk".to_owned(), phone_sent)]
    );
    assert_eq!(
        s.destinations(Mac(&lab.device("camera").mac_string()), "egress"),
        vec![("example.com.au".to_owned(), camera_sent)]
    );
    // The API lists the destination with its address and both directions.
    let mac = lab.device("camera").mac_string();
    let (status, body) = agent
        .get(&format!("/api/devices/{mac}/destinations"))
        .expect("GET destinations");
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let dest = &json["destinations"][0];
    assert_eq!(dest["name"], "example.com.au");
    assert_eq!(dest["addresses"][0], camera_addr.to_string());
    assert_eq!(dest["egress"]["bytes"], camera_sent);
    assert_eq!(dest["ingress"]["bytes"], 0);
    // A malformed or unknown MAC is a clear error.
    let (status, body) = agent.get("/api/devices/not-a-mac/destinations").unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not-a-mac"), "{body}");
    let (status, _) = agent
        .get("/api/devices/00:16:3e:99:99:99/destinations")
        .unwrap();
    assert_eq!(status, 404);
}

#[test]
fn a_name_is_dropped_after_its_ttl_and_the_grace_period() {
    let lab = naming_lab();
    let agent = Agent::start(&lab, "[names]\ndns_grace = \"1s\"\n", &[]);
    let mac = lab.device("phone").mac_string();
    let addr = lab.resolve("phone", SHORT_TTL_NAME);
    let named = lab.send_to_sink("phone", addr, PAYLOAD, 3);
    let s = agent.settled();
    assert_eq!(
        s.destination(Mac(&mac), "egress", "vendor.example").0,
        named
    );
    // TTL (2 s) + grace (1 s) later, the same address is only an address again.
    std::thread::sleep(Duration::from_secs(u64::from(SHORT_TTL) + 2));
    let unnamed = lab.send_to_sink("phone", addr, PAYLOAD, 5);
    let s = agent.settled();
    assert_eq!(
        s.destination(Mac(&mac), "egress", "vendor.example").0,
        named,
        "no byte moves"
    );
    assert_eq!(
        s.destination(Mac(&mac), "egress", &addr.to_string()).0,
        unnamed
    );
    assert_eq!(s.value("egress_monitor_destination_names", &[]), Some(0.0));
}

#[test]
fn a_server_contacted_by_address_is_named_from_the_client_hello() {
    let lab = naming_lab();
    let agent = Agent::start(&lab, "destination_label = \"host\"\n", &[]);
    let server = IpAddr::V4(SERVERS_V4[4]);
    let _tls = lab.start_tls_server(server, 443);
    lab.reset_wan_counters();
    let outcome = tls_connect(
        &lab.device("phone").ns,
        server,
        443,
        "hidden-tracker.example.net",
        2000,
    );
    assert!(
        outcome.handshake,
        "TLS handshake failed: {}",
        outcome.output
    );
    let wan = lab.wan_count(server);
    let s = agent.settled();
    let mac = lab.device("phone").mac_string();
    assert_eq!(
        s.destinations(Mac(&mac), "egress"),
        vec![("hidden-tracker.example.net".to_owned(), wan.rx_bytes)],
        "every byte of the connection, the handshake before the ClientHello included"
    );
    assert_eq!(
        s.destinations(Mac(&mac), "ingress"),
        vec![("hidden-tracker.example.net".to_owned(), wan.tx_bytes)]
    );
    assert_eq!(
        s.count(
            "egress_monitor_sniff_records_total",
            &[("kind", "tls_client_hello")]
        ),
        1
    );
}

#[test]
fn a_device_that_goes_around_the_router_resolver_is_reported() {
    let lab = naming_lab();
    // The lab's outside resolver plays a public one.
    let config = format!("[names]\npublic_resolvers = [\"{OUTSIDE_RESOLVER_V4}\"]\n");
    let agent = Agent::start(&lab, &config, &["--destination-label", "host"]);
    let phone = lab.device("phone");
    let resolver = IpAddr::V4(OUTSIDE_RESOLVER_V4);
    // Plain DNS to the outside resolver; its answer still names the destination.
    let addr = dns_query(
        &phone.ns,
        resolver,
        "updates.vendor.example",
        RecordType::A,
        false,
    )[0];
    let sent = lab.send_to_sink("phone", addr, PAYLOAD, 2);
    // DNS over TLS, and DNS over HTTPS to a listed resolver.
    let _dot = lab.start_tls_server(resolver, 853);
    let _doh = lab.start_tls_server(resolver, 443);
    assert!(tls_connect(&phone.ns, resolver, 853, "dns.example", 10).handshake);
    assert!(tls_connect(&phone.ns, resolver, 443, "dns.example", 10).handshake);
    // The laptop uses the router's resolver: no bypass.
    lab.resolve("laptop", "updates.vendor.example");
    let s = agent.settled();
    let bypass = |protocol: &str| {
        s.count(
            "egress_resolver_bypass_total",
            &[
                ("mac", &phone.mac_string()),
                ("resolver", &resolver.to_string()),
                ("protocol", protocol),
            ],
        )
    };
    assert_eq!((bypass("dns"), bypass("dot"), bypass("doh")), (1, 1, 1));
    assert_eq!(
        s.sum(
            "egress_resolver_bypass_total",
            &[("mac", &lab.device("laptop").mac_string())]
        ),
        0
    );
    assert_eq!(
        s.destination(Mac(&phone.mac_string()), "egress", "updates.vendor.example")
            .0,
        sent
    );
}

#[test]
fn a_burst_of_dns_answers_overflows_the_ring_but_bytes_stay_exact() {
    let lab = naming_lab();
    // The smallest ring: 64 KiB, about 30 records.
    let agent = Agent::start(&lab, "sniff_ring_bytes = 65536\n", &[]);
    let mac = lab.device("phone").mac_string();
    // The agent stalls (a slow router, a debugger): the kernel goes on counting, and can only
    // drop what does not fit in the ring.
    agent.child().signal(libc::SIGSTOP);
    let answers = dns_burst(
        &lab.device("phone").ns,
        ROUTER_LAN_V4.into(),
        &[
            "telemetry.vendor.example",
            "cdn.vendor.example",
            "tracker.ads.example.co.uk",
        ],
        500,
    );
    let unnamed = lab.send_to_sink("phone", IpAddr::V4(SERVERS_V4[4]), PAYLOAD, 10);
    let named = lab.send_to_sink("phone", IpAddr::V4(SERVERS_V4[0]), PAYLOAD, 10);
    agent.child().signal(libc::SIGCONT);
    let s = agent.settled();
    let dropped = s.count("egress_monitor_sniff_dropped_total", &[]);
    let copied = s.count(
        "egress_monitor_sniff_records_total",
        &[("kind", "dns_response")],
    );
    assert!(answers > 100, "the burst got {answers} answers");
    assert!(
        dropped > 0,
        "a stalled agent with a 64 KiB ring must drop records"
    );
    assert!(
        copied + dropped >= answers as u64,
        "{copied} copied + {dropped} dropped < {answers}"
    );
    assert!(copied > 0 && copied < 40, "{copied} records fit in 64 KiB");
    // Names from the records that made it (the burst resolved telemetry.vendor.example first).
    assert_eq!(
        s.destination(Mac(&mac), "egress", "vendor.example").0,
        named
    );
    assert_eq!(
        s.destination(Mac(&mac), "egress", &SERVERS_V4[4].to_string())
            .0,
        unnamed
    );
    assert_eq!(s.device_total(Mac(&mac), "egress").0, named + unnamed);
}
