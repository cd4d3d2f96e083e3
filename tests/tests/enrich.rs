//! Countries and autonomous systems on the lab: the tests write their own MMDB files (GeoLite2,
//! DB-IP and IPinfo layouts) placing the lab's documentation prefixes, and the agent's
//! `egress_country_*` and `egress_asn_*` families must sum exactly, per device and direction,
//! to what was sent; a database replaced while the agent runs places new bytes anew, and a
//! corrupt or missing one leaves counting exact with everything `unknown`.

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    time::Duration,
};

use egress_lab::{
    Lab, SERVERS_V4, SERVERS_V6, UDP_SINK_PORT,
    agent::{Agent, Scrape},
    mmdb::{
        self, Network, dbip_asn_lite, dbip_country_lite, geolite2_asn, geolite2_country,
        ipinfo_lite, write_atomic,
    },
    udp_ip_bytes, udp_send,
};

const PHONE: &str = "00:16:3e:00:00:01";

fn config(country_db: &Path, asn_db: &Path) -> String {
    format!(
        "[devices]\n\"{PHONE}\" = \"phone\"\n\n[enrich]\ncountry_db = \"{}\"\nasn_db = \"{}\"\n",
        country_db.display(),
        asn_db.display()
    )
}

fn net(addr: impl Into<IpAddr>, len: u8) -> Network {
    Network::new(addr.into(), len)
}

/// The phone sends `n` datagrams of 100 bytes to each server given.
fn send(lab: &Lab, servers: &[IpAddr], n: u32) {
    let phone = &lab.device("phone").ns;
    for server in servers {
        udp_send(phone, SocketAddr::new(*server, UDP_SINK_PORT), 100, n);
    }
}

fn bytes(server: IpAddr, n: u64) -> u64 {
    n * udp_ip_bytes(server.is_ipv4(), 100)
}

fn country(s: &Scrape, country: &str) -> u64 {
    s.count(
        "egress_country_bytes_total",
        &[
            ("device", "phone"),
            ("direction", "egress"),
            ("country", country),
        ],
    )
}

fn asn(s: &Scrape, asn: &str, org: &str) -> u64 {
    s.count(
        "egress_asn_bytes_total",
        &[
            ("device", "phone"),
            ("direction", "egress"),
            ("asn", asn),
            ("as_org", org),
        ],
    )
}

/// Each family sums to the device total, bytes and packets, for every device and direction.
fn assert_places_add_up(s: &Scrape) {
    for (id, _) in s
        .matching("egress_device_bytes_total", &[])
        .map(|x| (x.labels.clone(), ()))
        .collect::<Vec<_>>()
    {
        let device = [
            ("mac", id["mac"].as_str()),
            ("direction", id["direction"].as_str()),
        ];
        for unit in ["bytes", "packets"] {
            let total = s.count(&format!("egress_device_{unit}_total"), &device);
            for family in ["country", "asn"] {
                let sum = s.sum(&format!("egress_{family}_{unit}_total"), &device);
                assert_eq!(sum, total, "egress_{family}_{unit}_total of {device:?}");
            }
        }
    }
}

#[test]
fn bytes_by_country_and_as_are_exact_and_sum_to_the_device_total() {
    let lab = Lab::new();
    let servers = lab.start_servers(0);
    let dir = lab.scratch_dir();
    let (country_db, asn_db) = (dir.join("country.mmdb"), dir.join("asn.mmdb"));
    // 192.0.2.0/24 is Germany, but 192.0.2.30 (a /32 inside) is China; the v6 /48 is Japan.
    geolite2_country(&[
        (net(SERVERS_V4[0], 24), "DE"),
        (net(SERVERS_V4[2], 32), "CN"),
        (net(SERVERS_V6[0], 48), "JP"),
    ])
    .write(&country_db)
    .unwrap();
    geolite2_asn(&[
        (net(SERVERS_V4[0], 24), 64500, "Vendor Cloud Hosting Ltd"),
        (net(SERVERS_V6[0], 48), 64501, "Example \"Net\" KK"),
    ])
    .write(&asn_db)
    .unwrap();
    let agent = Agent::start(&lab, &config(&country_db, &asn_db), &[]);
    let de = IpAddr::V4(SERVERS_V4[0]);
    let cn = IpAddr::V4(SERVERS_V4[2]);
    let jp = IpAddr::V6(SERVERS_V6[0]);
    let nowhere = IpAddr::V4(SERVERS_V4[3]); // 203.0.113.5: in no database
    send(&lab, &[de, cn, jp, nowhere], 10);
    for server in [de, cn, jp, nowhere] {
        servers.udp(server).wait_for(10, Duration::from_secs(5));
    }
    let s = agent.settled();
    assert_eq!(country(&s, "DE"), bytes(de, 10));
    assert_eq!(country(&s, "CN"), bytes(cn, 10));
    assert_eq!(country(&s, "JP"), bytes(jp, 10));
    assert_eq!(country(&s, "unknown"), bytes(nowhere, 10));
    assert_eq!(
        asn(&s, "64500", "Vendor Cloud Hosting Ltd"),
        bytes(de, 10) + bytes(cn, 10)
    );
    assert_eq!(asn(&s, "64501", "Example \"Net\" KK"), bytes(jp, 10));
    assert_eq!(asn(&s, "unknown", "unknown"), bytes(nowhere, 10));
    assert_places_add_up(&s);
    assert_eq!(
        s.count(
            "egress_monitor_enrich_database_open",
            &[("role", "country")]
        ),
        1
    );
    assert_eq!(
        s.count("egress_monitor_enrich_database_failures_total", &[]),
        0
    );
    s.assert_destinations_add_up();
    s.assert_passes_promtool();

    // The API places each address of a destination, and sums a device's bytes by country.
    let (code, body) = agent
        .get(&format!("/api/devices/{PHONE}/destinations"))
        .expect("the destinations API answers");
    assert_eq!(code, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let places: Vec<&serde_json::Value> = json["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|d| d["places"].as_array().unwrap())
        .collect();
    let at = |addr: IpAddr| {
        places
            .iter()
            .find(|p| p["address"] == addr.to_string())
            .unwrap_or_else(|| panic!("no place of {addr} in {body}"))
    };
    assert_eq!(at(de)["country"], "DE");
    assert_eq!(at(de)["asn"], 64500);
    assert_eq!(at(de)["as_org"], "Vendor Cloud Hosting Ltd");
    assert_eq!(at(cn)["country"], "CN");
    assert_eq!(at(nowhere)["country"], serde_json::Value::Null);
    let (_, body) = agent.get("/api/devices").expect("the devices API answers");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let phone = json["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["mac"] == PHONE)
        .expect("the phone is listed");
    assert_eq!(phone["countries"]["egress"]["JP"]["bytes"], bytes(jp, 10));
    assert_eq!(
        phone["countries"]["egress"]["unknown"]["bytes"],
        bytes(nowhere, 10)
    );

    // The file replaced (atomically, as updaters do): new bytes to the same address go to
    // its new country; what was exported stays where it was.
    dbip_country_lite(&[(net(SERVERS_V4[0], 24), "FR")])
        .write(&country_db)
        .unwrap();
    assert!(
        agent
            .child()
            .wait_for_log("MMDB database opened", Duration::from_secs(5)),
        "the agent re-opened the replaced database:\n{}",
        agent.log()
    );
    agent.wait_polls(2);
    send(&lab, &[de], 5);
    servers.udp(de).wait_for(15, Duration::from_secs(5));
    let s = agent.settled();
    assert_eq!(
        country(&s, "DE"),
        bytes(de, 10),
        "exported bytes never move"
    );
    assert_eq!(country(&s, "FR"), bytes(de, 5));
    // 192.0.2.30 and the v6 server are in no country of the new file.
    assert_places_add_up(&s);
}

#[test]
fn one_ipinfo_file_serves_both_and_a_broken_replacement_keeps_the_last_good_one() {
    let lab = Lab::new();
    let servers = lab.start_servers(0);
    let db = lab.scratch_dir().join("ipinfo_lite.mmdb");
    ipinfo_lite(&[(
        net(SERVERS_V4[1], 24),
        "US",
        "AS64502",
        "Tracker Analytics Inc",
    )])
    .write(&db)
    .unwrap();
    let agent = Agent::start(&lab, &config(&db, &db), &[]);
    let us = IpAddr::V4(SERVERS_V4[1]);
    send(&lab, &[us], 4);
    servers.udp(us).wait_for(4, Duration::from_secs(5));
    let s = agent.settled();
    assert_eq!(country(&s, "US"), bytes(us, 4));
    assert_eq!(asn(&s, "64502", "Tracker Analytics Inc"), bytes(us, 4));
    assert_eq!(
        s.count("egress_monitor_enrich_database_open", &[("role", "asn")]),
        1
    );

    // A corrupt file in its place: logged, counted, and the old database stays in use.
    write_atomic(&db, &mmdb::garbage()).unwrap();
    assert!(
        agent.child().wait_for_log(
            &format!("MMDB database {}", db.display()),
            Duration::from_secs(5)
        ),
        "the broken file is logged:\n{}",
        agent.log()
    );
    send(&lab, &[us], 3);
    servers.udp(us).wait_for(7, Duration::from_secs(5));
    let s = agent.settled();
    assert_eq!(
        s.count("egress_monitor_enrich_database_failures_total", &[]),
        1
    );
    assert_eq!(
        country(&s, "US"),
        bytes(us, 7),
        "the last good database places it"
    );
    assert_places_add_up(&s);
}

#[test]
fn a_missing_database_leaves_every_byte_counted_as_unknown_until_it_appears() {
    let lab = Lab::new();
    let servers = lab.start_servers(0);
    let dir = lab.scratch_dir();
    let (country_db, asn_db) = (dir.join("later.mmdb"), dir.join("asn-later.mmdb"));
    let agent = Agent::start(&lab, &config(&country_db, &asn_db), &[]);
    let v6 = IpAddr::V6(SERVERS_V6[2]);
    send(&lab, &[v6], 6);
    servers.udp(v6).wait_for(6, Duration::from_secs(5));
    let s = agent.settled();
    assert_eq!(country(&s, "unknown"), bytes(v6, 6));
    assert_eq!(asn(&s, "unknown", "unknown"), bytes(v6, 6));
    assert_eq!(
        s.count(
            "egress_monitor_enrich_database_open",
            &[("role", "country")]
        ),
        0
    );
    assert!(s.count("egress_monitor_enrich_database_failures_total", &[]) >= 1);
    assert!(
        agent.log().contains("no such file"),
        "the missing file is logged:\n{}",
        agent.log()
    );

    // It appears: new bytes are placed.
    geolite2_country(&[(net(SERVERS_V6[2], 48), "NL")])
        .write(&country_db)
        .unwrap();
    dbip_asn_lite(&[(net(SERVERS_V6[2], 48), 64510, "Lowlands Transit BV")])
        .write(&asn_db)
        .unwrap();
    assert!(
        agent
            .child()
            .wait_for_log("MMDB database opened", Duration::from_secs(5)),
        "{}",
        agent.log()
    );
    agent.wait_polls(2);
    send(&lab, &[v6], 2);
    servers.udp(v6).wait_for(8, Duration::from_secs(5));
    let s = agent.settled();
    assert_eq!(country(&s, "NL"), bytes(v6, 2));
    assert_eq!(asn(&s, "64510", "Lowlands Transit BV"), bytes(v6, 2));
    assert_eq!(country(&s, "unknown"), bytes(v6, 6));
    assert_places_add_up(&s);
}

#[test]
fn country_and_as_rules_judge_each_device_by_where_its_destinations_are() {
    let lab = Lab::new();
    let servers = lab.start_servers(0);
    let db = lab.scratch_dir().join("ipinfo_lite.mmdb");
    let de = IpAddr::V4(SERVERS_V4[0]);
    let cn = IpAddr::V4(SERVERS_V4[4]);
    let tracker = IpAddr::V4(SERVERS_V4[3]);
    let jp = IpAddr::V6(SERVERS_V6[0]);
    ipinfo_lite(&[
        (net(de, 32), "DE", "AS64500", "Vendor Cloud Hosting Ltd"),
        (net(cn, 32), "CN", "AS64666", "Far Away Cloud"),
        (net(tracker, 32), "NL", "AS64777", "Tracker Ads BV"),
        (net(jp, 48), "JP", "AS64501", "Example Net KK"),
    ])
    .write(&db)
    .unwrap();
    let config = format!(
        "{}\n[policy.devices.phone]\ndeny = [\"country:cn\", \"asn:AS64777\"]\n\n\
         [policy.devices.laptop]\nallow = [\"country:DE\", \"asn:64501\"]\n",
        config(&db, &db).replace(
            "[devices]\n",
            "[devices]\n\"00:16:3e:00:00:02\" = \"laptop\"\n"
        )
    );
    let agent = Agent::start(&lab, &config, &[]);
    send(&lab, &[de, cn, tracker], 3);
    let laptop = &lab.device("laptop").ns;
    for server in [de, jp, cn] {
        udp_send(laptop, SocketAddr::new(server, UDP_SINK_PORT), 100, 2);
    }
    servers.udp(cn).wait_for(5, Duration::from_secs(5));
    servers.udp(de).wait_for(5, Duration::from_secs(5));
    let s = agent.settled();
    let mut phone = s.unexpected("phone", "egress");
    phone.sort();
    let mut expected = vec![
        (cn.to_string(), "deny:country".to_owned(), bytes(cn, 3), 3),
        (
            tracker.to_string(),
            "deny:asn".to_owned(),
            bytes(tracker, 3),
            3,
        ),
    ];
    expected.sort();
    assert_eq!(
        phone, expected,
        "the phone: CN and AS64777 are denied, DE is not"
    );
    assert_eq!(
        s.unexpected("laptop", "egress"),
        [(cn.to_string(), "not-allowed".to_owned(), bytes(cn, 2), 2)],
        "the laptop: DE by country and JP by AS are allowed, CN is not"
    );
    assert_places_add_up(&s);
}
