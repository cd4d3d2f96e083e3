//! Tests of the lab's naming parts: dnsmasq on the router and outside, DHCP leases and
//! hostnames, TLS handshakes, DNS over UDP and TCP, and that all of it is cleaned up.
//!
//! They need root, like every lab test; without it, building a lab panics and they fail.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use egress_lab::{
    DHCP_LEASE_SECS, DnsData, DnsRecord, Lab, OUTSIDE_RESOLVER_V4, OUTSIDE_RESOLVER_V6,
    ROUTER_LAN_V4, ROUTER_LAN_V6, ROUTER_WAN_V4, RecordType, ResponseCode, SERVERS_V4, SERVERS_V6,
    SHORT_TTL, SHORT_TTL_NAME, ZONE, ZONE_TTL, dns_burst, dns_lookup, dns_query, exec_ok, netns,
    ping, tls_connect, zone_addresses, zone_chain,
};

const WAIT: Duration = Duration::from_secs(3);

/// The answer section [`egress_lab::ZONE`] says `name`/`qtype` gets: a CNAME record per alias
/// on the way, then the addresses of the last name, each with its entry's TTL.
fn expected_records(name: &str, qtype: RecordType) -> Vec<DnsRecord> {
    let chain = zone_chain(name);
    let mut records: Vec<DnsRecord> = chain
        .iter()
        .filter_map(|z| {
            z.cname_of.map(|target| DnsRecord {
                name: z.name.into(),
                ttl: z.ttl,
                data: DnsData::Cname(target.into()),
            })
        })
        .collect();
    let last = chain.last().expect("a zone name");
    records.extend(
        zone_addresses(name, qtype)
            .into_iter()
            .map(|addr| DnsRecord {
                name: last.name.into(),
                ttl: last.ttl,
                data: DnsData::Addr(addr),
            }),
    );
    records
}

/// Asks `resolver`, from `ns`, for every zone name (A and AAAA) and checks each answer record
/// by record, TTLs included; and that a name outside the zone is NXDOMAIN (nothing forwarded).
fn check_zone(ns: &str, resolver: IpAddr, tcp: bool) {
    for z in ZONE {
        for qtype in [RecordType::A, RecordType::AAAA] {
            let answer =
                dns_lookup(ns, resolver, z.name, qtype, tcp).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                answer.rcode,
                ResponseCode::NoError,
                "{qtype} {} from {resolver}",
                z.name
            );
            // dnsmasq sets AA on answers from its own data, not on empty (NODATA) ones.
            assert!(
                answer.authoritative || answer.records.is_empty(),
                "{qtype} {} from {resolver}: not from local data",
                z.name
            );
            assert_eq!(
                answer.records,
                expected_records(z.name, qtype),
                "{qtype} {} from {resolver} (tcp: {tcp})",
                z.name
            );
        }
    }
    let unknown = dns_lookup(ns, resolver, "www.example.org", RecordType::A, tcp)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(unknown.rcode, ResponseCode::NXDomain, "{unknown:?}");
}

#[test]
fn router_dnsmasq_answers_the_zone_with_its_ttls_and_cname_chain() {
    let lab = Lab::builder().dnsmasq(true).build();
    let phone = &lab.device("phone").ns;
    check_zone(phone, ROUTER_LAN_V4.into(), false);
    check_zone(phone, ROUTER_LAN_V6.into(), false);

    // Spelled out: the chain of two CNAMEs, then the address of the last name.
    let answer = dns_lookup(
        phone,
        ROUTER_LAN_V4.into(),
        "cdn.vendor.example",
        RecordType::A,
        false,
    )
    .expect("an answer");
    assert_eq!(
        answer.cnames(),
        [
            ("cdn.vendor.example", "edge.cdn-provider.example"),
            ("edge.cdn-provider.example", "node7.cdn-provider.example"),
        ]
    );
    assert_eq!(answer.addresses(), [IpAddr::V4(SERVERS_V4[1])]);
    // Several names, one address; the TTLs are what ZONE says.
    for name in ["telemetry.vendor.example", "updates.vendor.example"] {
        let answer = dns_lookup(phone, ROUTER_LAN_V6.into(), name, RecordType::AAAA, false)
            .expect("an answer");
        assert_eq!(answer.addresses(), [IpAddr::V6(SERVERS_V6[0])], "{name}");
        assert_eq!(answer.records[0].ttl, ZONE_TTL, "{name}");
    }
    let laptop = &lab.device("laptop").ns;
    for name in [
        "tracker.ads.example.co.uk",
        "api.camera-cloud.example.com.au",
    ] {
        assert_eq!(
            dns_query(laptop, ROUTER_LAN_V4.into(), name, RecordType::A, false),
            [IpAddr::V4(SERVERS_V4[2])],
            "{name}"
        );
    }
    // Local records keep their TTL: asked again later, the short one still says 2 s.
    let short = || {
        dns_lookup(
            phone,
            ROUTER_LAN_V4.into(),
            SHORT_TTL_NAME,
            RecordType::A,
            false,
        )
        .expect("an answer")
        .records[0]
            .ttl
    };
    assert_eq!(short(), SHORT_TTL);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(short(), SHORT_TTL);

    let log = lab.dnsmasq_log();
    assert!(
        log.contains("query[A] cdn.vendor.example from 192.168.50.11"),
        "{log}"
    );
    assert!(
        !log.contains("forwarded"),
        "dnsmasq forwarded a query:\n{log}"
    );
}

#[test]
fn the_outside_resolver_answers_the_zone_through_the_router() {
    let lab = Lab::builder().dnsmasq(true).build();
    let camera = &lab.device("camera").ns;
    check_zone(camera, OUTSIDE_RESOLVER_V4.into(), false);
    check_zone(camera, OUTSIDE_RESOLVER_V6.into(), false);
    // IPv4 queries crossed the router's NAT; IPv6 ones came from the device's own address.
    let log = lab.outside_resolver().log();
    let camera_v6 = lab.device("camera").ipv6;
    assert!(log.contains(&format!("from {ROUTER_WAN_V4}")), "{log}");
    assert!(log.contains(&format!("from {camera_v6}")), "{log}");
    // The router's resolver saw none of it.
    assert!(
        !lab.dnsmasq_log().contains("query["),
        "{}",
        lab.dnsmasq_log()
    );
}

#[test]
fn dns_over_tcp_works_with_both_resolvers() {
    let lab = Lab::builder().dnsmasq(true).build();
    let laptop = &lab.device("laptop").ns;
    check_zone(laptop, ROUTER_LAN_V4.into(), true);
    check_zone(laptop, OUTSIDE_RESOLVER_V6.into(), true);
    assert_eq!(
        dns_query(
            laptop,
            ROUTER_LAN_V6.into(),
            "cdn.vendor.example",
            RecordType::AAAA,
            true
        ),
        [IpAddr::V6(SERVERS_V6[1])]
    );
    // Without a resolver there, the lookup fails in bounded time instead of hanging.
    let start = Instant::now();
    let err = dns_lookup(
        laptop,
        SERVERS_V4[4].into(),
        "cdn.vendor.example",
        RecordType::A,
        true,
    )
    .expect_err("nothing listens on port 53 of that server");
    assert!(start.elapsed() < Duration::from_secs(10), "{err}");
}

#[test]
fn a_burst_of_500_queries_is_answered() {
    let lab = Lab::builder().dnsmasq(true).build();
    let phone = &lab.device("phone").ns;
    let names: Vec<&str> = ZONE.iter().map(|z| z.name).collect();
    for resolver in [IpAddr::V4(ROUTER_LAN_V4), IpAddr::V6(OUTSIDE_RESOLVER_V6)] {
        let start = Instant::now();
        let answered = dns_burst(phone, resolver, &names, 500);
        let took = start.elapsed();
        eprintln!("burst to {resolver}: {answered} of 500 answered in {took:?}");
        assert!(
            answered > 0 && answered <= 500,
            "{answered} answers from {resolver}"
        );
        assert!(took < Duration::from_secs(8), "{took:?}");
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// `(expiry, mac, ip, hostname, client-id)` of every line of dnsmasq's lease file.
fn read_leases(lab: &Lab) -> Vec<(u64, String, Ipv4Addr, String, String)> {
    let text = std::fs::read_to_string(lab.lease_file()).expect("the lease file exists");
    text.lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            assert_eq!(fields.len(), 5, "lease line {line:?}");
            (
                fields[0].parse().expect("expiry is a number"),
                fields[1].to_owned(),
                fields[2].parse().expect("an IPv4 address"),
                fields[3].to_owned(),
                fields[4].to_owned(),
            )
        })
        .collect()
}

#[test]
fn dhcp_gives_every_device_its_address_and_the_lease_file_names_it() {
    let start = Instant::now();
    let lab = Lab::builder()
        .device_count(4)
        .dhcp(true)
        .hostname("camera", "IPCAM-7F3A")
        .build();
    let built = start.elapsed();
    eprintln!("DHCP lab with 4 devices built in {built:?}\n{lab}");
    assert!(built < Duration::from_secs(5), "{built:?}");
    let now = unix_now();

    let leases = read_leases(&lab);
    assert_eq!(leases.len(), 4, "{leases:?}");
    for d in lab.devices() {
        let shown = exec_ok(&d.ns, "ip", &["-4", "addr", "show", "dev", "eth0"]);
        assert!(
            shown.contains(&format!("inet {}/24 ", d.ipv4)),
            "{}: {shown}",
            d.name
        );
        let routes = exec_ok(&d.ns, "ip", &["-4", "route", "show", "default"]);
        assert!(
            routes.contains(&format!("default via {ROUTER_LAN_V4}")),
            "{}: {routes}",
            d.name
        );
        assert!(
            ping(&d.ns, SERVERS_V4[0].into()),
            "{} reaches the internet",
            d.name
        );

        let (expiry, _, ip, hostname, client_id) = leases
            .iter()
            .find(|l| l.1 == d.mac_string())
            .unwrap_or_else(|| panic!("no lease for {} in {leases:?}", d.mac_string()));
        assert_eq!(*ip, d.ipv4, "{}", d.name);
        let expected = if d.name == "camera" {
            "IPCAM-7F3A"
        } else {
            d.name.as_str()
        };
        assert_eq!(hostname, expected);
        assert_eq!(lab.dhcp_hostname(&d.name), expected);
        assert_eq!(
            *client_id,
            format!("01:{}", d.mac_string()),
            "udhcpc sends its MAC"
        );
        assert!(
            (now + DHCP_LEASE_SECS - 10..=now + DHCP_LEASE_SECS).contains(expiry),
            "{} expires at {expiry}, now is {now}",
            d.name
        );
    }

    // A renewal under a new name rewrites the device's line, and only that.
    std::thread::sleep(Duration::from_millis(1100));
    lab.renew_dhcp_as("phone", "phone-renamed");
    let after = read_leases(&lab);
    let line = |leases: &[(u64, String, Ipv4Addr, String, String)], name: &str| {
        let mac = lab.device(name).mac_string();
        leases
            .iter()
            .find(|l| l.1 == mac)
            .cloned()
            .expect("a lease")
    };
    let (before, renewed) = (line(&leases, "phone"), line(&after, "phone"));
    assert_eq!(renewed.3, "phone-renamed");
    assert!(renewed.0 > before.0, "{before:?} -> {renewed:?}");
    assert_eq!(line(&after, "laptop"), line(&leases, "laptop"));
    // The address survived the renewal.
    assert!(ping(&lab.device("phone").ns, ROUTER_LAN_V4.into()));
    assert!(
        lab.dnsmasq_log()
            .contains("DHCPACK(br-lan) 192.168.50.11 00:16:3e:00:00:01 phone-renamed")
    );
}

#[test]
fn tls_handshakes_from_a_device_complete_with_the_chosen_server_name() {
    let lab = Lab::new();
    let v4: IpAddr = SERVERS_V4[2].into();
    let v6: IpAddr = SERVERS_V6[0].into();
    let server4 = lab.start_tls_server(v4, 443);
    let server6 = lab.start_tls_server(v6, 8443);
    let dot = lab.start_tls_server(OUTSIDE_RESOLVER_V4.into(), 853);

    // Capture on the LAN, to see that the server name crosses the router in clear.
    let pcap = lab.scratch_dir().join("tls.pcap");
    let pcap_arg = pcap.to_string_lossy();
    let tcpdump = lab.spawn_in_router(
        "tcpdump",
        &[
            "-i",
            "br-lan",
            "-n",
            "--immediate-mode",
            "-U",
            "-w",
            pcap_arg.as_ref(),
            "tcp",
        ],
    );
    assert!(
        tcpdump.wait_for_log("listening on", WAIT),
        "{}",
        tcpdump.log()
    );

    let camera = &lab.device("camera").ns;
    let outcome = tls_connect(camera, v4, 443, "api.camera-cloud.example.com.au", 5000);
    assert!(outcome.handshake, "{outcome:?}");
    assert_eq!(
        outcome.protocol.as_deref(),
        Some("TLSv1.3"),
        "{}",
        outcome.output
    );
    assert!(!outcome.timed_out);
    assert_eq!(server4.wait_for_handshakes(1, WAIT), 1, "{}", server4.log());
    assert!(lab.wan_count(v4).rx_bytes > 5000, "{:?}", lab.wan_count(v4));

    // The server takes one connection after the other.
    let outcome = tls_connect(camera, v4, 443, "tracker.ads.example.co.uk", 100);
    assert!(outcome.handshake, "{outcome:?}");
    assert_eq!(server4.wait_for_handshakes(2, WAIT), 2);
    let phone = &lab.device("phone").ns;
    assert!(tls_connect(phone, v6, 8443, "telemetry.vendor.example", 0).handshake);
    assert_eq!(server6.wait_for_handshakes(1, WAIT), 1);
    assert!(tls_connect(phone, OUTSIDE_RESOLVER_V4.into(), 853, "", 64).handshake);
    assert_eq!(dot.wait_for_handshakes(1, WAIT), 1);

    // Nobody listens: no handshake, and no waiting for the timeout either.
    let refused = tls_connect(phone, v4, 444, "nobody.example", 10);
    assert!(!refused.handshake && !refused.timed_out, "{refused:?}");

    // Immediate mode hands packets over at once; give it a moment for the last ones.
    std::thread::sleep(Duration::from_millis(200));
    tcpdump.terminate(WAIT);
    let captured = std::fs::read(&pcap).expect("tcpdump wrote its capture");
    for name in [
        "api.camera-cloud.example.com.au",
        "tracker.ads.example.co.uk",
        "telemetry.vendor.example",
    ] {
        assert!(
            captured.windows(name.len()).any(|w| w == name.as_bytes()),
            "{name} is not in the {} bytes captured on br-lan; tcpdump: {}",
            captured.len(),
            tcpdump.log()
        );
    }
}

/// Pids of processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let Ok(proc) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    proc.flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline)
                .contains(needle)
                .then_some(pid)
        })
        .collect()
}

#[test]
fn a_dropped_naming_lab_leaves_no_namespace_process_or_directory_even_on_panic() {
    let mut names = Vec::new();
    let mut dir = None;
    let mut children = Vec::new();
    let mut open_connection = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let lab = Lab::builder().devices(["tv"]).dhcp(true).build();
        names = lab.namespaces().to_vec();
        dir = Some(lab.scratch_dir().to_owned());
        let server = lab.start_tls_server(SERVERS_V4[3].into(), 443);
        children = vec![
            lab.dnsmasq().clone(),
            lab.outside_resolver().clone(),
            server.child().clone(),
        ];
        // An open TCP connection makes dnsmasq fork a child for it, which nobody tracks.
        let to = SocketAddr::new(ROUTER_LAN_V4.into(), 53);
        let stream = netns::run_in(&lab.device("tv").ns, || {
            TcpStream::connect_timeout(&to, WAIT)
        })
        .expect("connect to dnsmasq over TCP");
        open_connection = Some(stream);
        let dir = dir
            .as_ref()
            .expect("set above")
            .to_string_lossy()
            .into_owned();
        assert!(
            egress_lab::wait_until(WAIT, || processes_mentioning(&dir).len() >= 4),
            "dnsmasq x2 (+ its TCP child), s_server: {:?}",
            processes_mentioning(&dir)
        );
        std::mem::forget(server); // the lab must stop it on its own
        panic!("deliberate");
    }));
    assert!(result.is_err());
    drop(open_connection);
    let dir = dir.expect("the lab was built");
    let listed = netns::list();
    assert!(names.iter().all(|n| !listed.contains(n)), "{listed:?}");
    assert!(!dir.exists(), "{} remains", dir.display());
    assert_eq!(
        processes_mentioning(&dir.to_string_lossy()),
        Vec::<u32>::new()
    );
    for child in children {
        assert!(!child.is_running(), "{child:?}");
    }
}
