use super::*;
use crate::enrich::{Asn, Country, Enrichment};

const CAMERA: MacAddr = MacAddr([2, 0, 0, 0, 0, 5]);
const PHONE: MacAddr = MacAddr([2, 0, 0, 0, 0, 6]);

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000 + secs)
}

fn egress(mac: MacAddr) -> DeviceId {
    DeviceId {
        mac,
        direction: Direction::Egress,
    }
}

fn section(allow: &[&str], deny: &[&str], learn: Option<u64>) -> PolicySection {
    PolicySection {
        allow: allow.iter().map(|r| r.parse().unwrap()).collect(),
        deny: deny.iter().map(|r| r.parse().unwrap()).collect(),
        learn: learn.map(Duration::from_secs),
    }
}

/// A started learning period: (since, until).
fn window(status: &DeviceStatus) -> Option<(SystemTime, SystemTime)> {
    let learning = status.learning?;
    Some((learning.since?, learning.until()?))
}

fn name(s: &str) -> Label {
    Label::Name(s.into())
}

fn addr(s: &str) -> Label {
    Label::Addr(s.parse().unwrap())
}

/// Sends `bytes` (and one packet) from `mac` to `label` at `addr`, known by `host`.
fn send(
    policy: &mut Policy,
    mac: MacAddr,
    label: &Label,
    addr: &str,
    host: Option<&str>,
    bytes: u64,
    now: SystemTime,
) {
    let target = Target {
        addr: addr.parse().unwrap(),
        host,
        label,
        enrichment: &Enrichment::default(),
    };
    policy.observe(egress(mac), None, &target, Count::new(bytes, 1), now);
}

/// What a database says: a country and an AS, either unknown.
fn place(country: Option<&str>, asn: Option<u32>) -> Enrichment {
    Enrichment {
        country: country.map(|c| Country::parse(c).unwrap()),
        asn: asn.map(Asn),
        org: None,
    }
}

/// [`send`] to an address the databases place.
fn send_to(
    policy: &mut Policy,
    mac: MacAddr,
    label: &Label,
    addr: &str,
    enrichment: &Enrichment,
    bytes: u64,
    now: SystemTime,
) {
    let target = Target {
        addr: addr.parse().unwrap(),
        host: None,
        label,
        enrichment,
    };
    policy.observe(egress(mac), None, &target, Count::new(bytes, 1), now);
}

fn unexpected(policy: &Policy) -> Vec<(MacAddr, String, &'static str, u64, u64)> {
    policy
        .unexpected()
        .map(|s| {
            (
                s.mac,
                s.destination.map_or(OTHER.to_owned(), |d| d.to_string()),
                s.rule,
                s.count.bytes,
                s.count.packets,
            )
        })
        .collect()
}

fn with_device(mac: MacAddr, s: PolicySection) -> Policy {
    let mut config = PolicyConfig::default();
    config.devices.insert(mac, s);
    Policy::new(config, BTreeMap::new())
}

#[test]
fn allow_list_lets_its_domains_through_and_reports_the_rest_exactly() {
    let mut p = with_device(CAMERA, section(&["updates.vendor.example"], &[], None));
    let vendor = name("vendor.example");
    send(
        &mut p,
        CAMERA,
        &vendor,
        "192.0.2.10",
        Some("updates.vendor.example"),
        500,
        t(0),
    );
    assert!(unexpected(&p).is_empty());
    // Same registrable domain, another host: not allowed.
    send(
        &mut p,
        CAMERA,
        &vendor,
        "192.0.2.20",
        Some("cdn.vendor.example"),
        300,
        t(1),
    );
    let tracker = name("example.co.uk");
    send(
        &mut p,
        CAMERA,
        &tracker,
        "192.0.2.30",
        Some("tracker.ads.example.co.uk"),
        70,
        t(1),
    );
    send(
        &mut p,
        CAMERA,
        &tracker,
        "192.0.2.30",
        Some("tracker.ads.example.co.uk"),
        30,
        t(2),
    );
    assert_eq!(
        unexpected(&p),
        [
            (CAMERA, "example.co.uk".into(), RULE_NOT_ALLOWED, 100, 2),
            (CAMERA, "vendor.example".into(), RULE_NOT_ALLOWED, 300, 1),
        ]
    );
    // A device without a section is only counted.
    send(
        &mut p,
        PHONE,
        &tracker,
        "192.0.2.30",
        Some("tracker.ads.example.co.uk"),
        9,
        t(2),
    );
    assert_eq!(unexpected(&p).len(), 2);
    // Nobody was learning, so every first sight is a new destination.
    assert_eq!(p.new_destinations(CAMERA), 2);
    assert_eq!(p.new_destinations(PHONE), 1);
}

#[test]
fn deny_wins_over_allow_and_learning() {
    let mut p = with_device(
        CAMERA,
        section(
            &["vendor.example"],
            &["ads.vendor.example", "198.51.100.0/24"],
            Some(60),
        ),
    );
    let vendor = name("vendor.example");
    send(
        &mut p,
        CAMERA,
        &vendor,
        "192.0.2.9",
        Some("ads.vendor.example"),
        10,
        t(0),
    );
    send(
        &mut p,
        CAMERA,
        &addr("198.51.100.7"),
        "198.51.100.7",
        None,
        20,
        t(1),
    );
    send(
        &mut p,
        CAMERA,
        &vendor,
        "192.0.2.10",
        Some("updates.vendor.example"),
        40,
        t(1),
    );
    assert_eq!(
        unexpected(&p),
        [
            (CAMERA, "198.51.100.7".into(), RULE_DENY_CIDR, 20, 1),
            (CAMERA, "vendor.example".into(), RULE_DENY_DOMAIN, 10, 1),
        ]
    );
    // Denied destinations never join the baseline.
    assert!(p.record(CAMERA).unwrap().baseline.is_empty());
}

#[test]
fn learning_builds_a_baseline_then_flags_what_is_new() {
    let mut p = with_device(CAMERA, section(&[], &[], Some(60)));
    let vendor = name("vendor.example");
    send(
        &mut p,
        CAMERA,
        &vendor,
        "192.0.2.10",
        Some("updates.vendor.example"),
        5,
        t(0),
    );
    send(
        &mut p,
        CAMERA,
        &addr("203.0.113.5"),
        "203.0.113.5",
        None,
        5,
        t(59),
    );
    assert_eq!(p.new_destinations(CAMERA), 0, "learning");
    assert!(unexpected(&p).is_empty());
    let status = p.status(CAMERA, None);
    assert_eq!(window(&status), Some((t(0), t(60))));
    assert_eq!(status.baseline, 2);
    assert_eq!(status.policy, "device");
    // After learning: the baseline (any host of the learned domain) is fine...
    send(
        &mut p,
        CAMERA,
        &vendor,
        "192.0.2.20",
        Some("cdn.vendor.example"),
        7,
        t(61),
    );
    send(
        &mut p,
        CAMERA,
        &addr("203.0.113.5"),
        "203.0.113.5",
        None,
        7,
        t(61),
    );
    assert!(unexpected(&p).is_empty());
    // ...anything else is new and unexpected.
    let tracker = name("example.co.uk");
    send(
        &mut p,
        CAMERA,
        &tracker,
        "192.0.2.30",
        Some("tracker.ads.example.co.uk"),
        11,
        t(62),
    );
    assert_eq!(
        unexpected(&p),
        [(CAMERA, "example.co.uk".into(), RULE_NOT_IN_BASELINE, 11, 1)]
    );
    assert_eq!(p.new_destinations(CAMERA), 1);
    // Accepting it ends the alerting traffic; the counter keeps what it had.
    assert!(p.accept(CAMERA, "example.co.uk".parse().unwrap()));
    send(
        &mut p,
        CAMERA,
        &tracker,
        "192.0.2.30",
        Some("tracker.ads.example.co.uk"),
        11,
        t(63),
    );
    assert_eq!(unexpected(&p)[0].3, 11);
    // Forgetting the device starts a new learning period at its next bytes.
    assert!(p.forget(CAMERA));
    send(
        &mut p,
        CAMERA,
        &addr("192.0.2.99"),
        "192.0.2.99",
        None,
        1,
        t(100),
    );
    assert_eq!(window(&p.status(CAMERA, None)), Some((t(100), t(160))));
}

#[test]
fn unexpected_destinations_beyond_the_limit_fold_into_other_exactly() {
    let mut config = PolicyConfig {
        max_unexpected_destinations: 3,
        ..PolicyConfig::default()
    };
    config.default = Some(section(&["vendor.example"], &[], None));
    let mut p = Policy::new(config, BTreeMap::new());
    for i in 0..10u64 {
        let a = format!("198.51.100.{i}");
        // Twice each, so a folded destination that comes back stays folded.
        for _ in 0..2 {
            send(&mut p, CAMERA, &addr(&a), &a, None, 100 + i, t(i));
        }
    }
    let series = unexpected(&p);
    assert_eq!(series.len(), 4, "{series:?}");
    let other = series.iter().find(|s| s.1 == OTHER).unwrap();
    assert_eq!(
        (other.3, other.4),
        ((3..10).map(|i| 2 * (100 + i)).sum(), 14)
    );
    let total: u64 = series.iter().map(|s| s.3).sum();
    assert_eq!(total, (0..10).map(|i| 2 * (100 + i)).sum::<u64>());
}

#[test]
fn an_address_keeps_its_name_after_the_name_expires_and_across_a_restart() {
    let mut p = with_device(CAMERA, section(&["updates.vendor.example"], &[], Some(60)));
    let vendor = name("vendor.example");
    send(
        &mut p,
        CAMERA,
        &vendor,
        "192.0.2.10",
        Some("updates.vendor.example"),
        5,
        t(0),
    );
    // Learning is over, the DNS answer expired; the connection goes on under the address: it
    // is still the allowed host, and not a new destination.
    send(
        &mut p,
        CAMERA,
        &addr("192.0.2.10"),
        "192.0.2.10",
        None,
        5,
        t(600),
    );
    assert!(unexpected(&p).is_empty());
    assert_eq!(p.new_destinations(CAMERA), 0);
    // The agent restarts from its state file: the address still has its name.
    let text = store::render(p.records());
    let mut p = Policy::new(p.config().clone(), store::parse(&text).unwrap());
    send(
        &mut p,
        CAMERA,
        &addr("192.0.2.10"),
        "192.0.2.10",
        None,
        5,
        t(700),
    );
    assert!(unexpected(&p).is_empty(), "{text}");
    assert_eq!(p.new_destinations(CAMERA), 0);
    // Another address never had a name.
    send(
        &mut p,
        CAMERA,
        &addr("192.0.2.11"),
        "192.0.2.11",
        None,
        5,
        t(700),
    );
    assert_eq!(
        unexpected(&p),
        [(CAMERA, "192.0.2.11".into(), RULE_NOT_ALLOWED, 5, 1)]
    );
    // A day of silence, and the address is on its own.
    send(
        &mut p,
        CAMERA,
        &addr("192.0.2.10"),
        "192.0.2.10",
        None,
        5,
        t(700 + 86_401),
    );
    assert_eq!(unexpected(&p).len(), 2);
    // A reload judges remembered names by the new rules.
    send(
        &mut p,
        CAMERA,
        &vendor,
        "192.0.2.12",
        Some("updates.vendor.example"),
        5,
        t(90_000),
    );
    p.set_config({
        let mut c = PolicyConfig::default();
        c.devices
            .insert(CAMERA, section(&["other.example"], &[], None));
        c
    });
    send(
        &mut p,
        CAMERA,
        &addr("192.0.2.12"),
        "192.0.2.12",
        None,
        5,
        t(90_001),
    );
    assert!(
        unexpected(&p).contains(&(CAMERA, "vendor.example".into(), RULE_NOT_ALLOWED, 5, 1)),
        "{:?}",
        unexpected(&p)
    );
}

#[test]
fn groups_and_default_apply_when_the_device_has_no_section() {
    let mut config = PolicyConfig::default();
    config
        .groups
        .insert("cameras".into(), section(&["vendor.example"], &[], None));
    config.default = Some(section(&[], &[], Some(3600)));
    config.devices.insert(PHONE, section(&[], &[], None));
    let p = Policy::new(config, BTreeMap::new());
    assert_eq!(p.status(CAMERA, Some("cameras")).policy, "group:cameras");
    assert_eq!(p.status(CAMERA, Some("tvs")).policy, "default");
    assert_eq!(p.status(PHONE, Some("cameras")).policy, "device");
    // Not started before the device's first traffic, but already learning.
    let camera = p.status(CAMERA, None).learning.unwrap();
    assert_eq!(camera.since, None);
    assert!(camera.active(t(0)));
    assert!(p.status(PHONE, None).learning.is_none());
    assert_eq!(Policy::default().status(CAMERA, None).policy, "none");
}

#[test]
fn the_state_is_written_when_due_and_reads_back() {
    let mut p = with_device(CAMERA, section(&[], &[], Some(60)));
    let start = Instant::now();
    let names = |mac: MacAddr| (mac == CAMERA).then(|| "camera".to_owned());
    assert!(
        p.snapshot_if_due(start, false, &names).is_none(),
        "nothing yet"
    );
    send(
        &mut p,
        CAMERA,
        &name("vendor.example"),
        "192.0.2.10",
        None,
        5,
        t(0),
    );
    let text = p
        .snapshot_if_due(start, false, &names)
        .expect("a new destination");
    let back = store::parse(&text).unwrap();
    assert_eq!(back[&CAMERA].name.as_deref(), Some("camera"));
    assert_eq!(back[&CAMERA].learning_since, Some(t(0)));
    assert_eq!(back[&CAMERA].baseline.len(), 1);
    // A new destination within the write interval waits, unless forced.
    send(
        &mut p,
        CAMERA,
        &name("b.example"),
        "192.0.2.11",
        None,
        5,
        t(1),
    );
    assert!(
        p.snapshot_if_due(start + Duration::from_secs(1), false, &names)
            .is_none()
    );
    assert!(
        p.snapshot_if_due(
            start + crate::config::DEFAULT_STATE_WRITE_INTERVAL,
            false,
            &names
        )
        .is_some()
    );
    // A failed write is retried.
    p.wrote(false);
    assert!(
        p.snapshot_if_due(
            start + 2 * crate::config::DEFAULT_STATE_WRITE_INTERVAL,
            false,
            &names
        )
        .is_some()
    );
    // A restart from the written state keeps learning where it was.
    let restarted = Policy::new(p.config().clone(), back);
    assert_eq!(window(&restarted.status(CAMERA, None)), Some((t(0), t(60))));
}

#[test]
fn deny_rules_by_country_and_as_match_what_the_databases_say_and_never_unknown() {
    let mut p = with_device(
        CAMERA,
        section(&["vendor.example"], &["country:CN", "asn:AS4134"], None),
    );
    let vendor = name("vendor.example");
    // Allowed by domain, but in a denied country: deny wins.
    send_to(
        &mut p,
        CAMERA,
        &vendor,
        "192.0.2.10",
        &place(Some("CN"), None),
        10,
        t(0),
    );
    // A denied AS in another country.
    let cdn = addr("198.51.100.7");
    send_to(
        &mut p,
        CAMERA,
        &cdn,
        "198.51.100.7",
        &place(Some("DE"), Some(4134)),
        20,
        t(1),
    );
    // Unknown country and AS: neither deny rule fires; the domain allows it.
    send_to(
        &mut p,
        CAMERA,
        &vendor,
        "192.0.2.11",
        &place(None, None),
        40,
        t(2),
    );
    // Another country and AS: fine by the allow list.
    send_to(
        &mut p,
        CAMERA,
        &vendor,
        "192.0.2.12",
        &place(Some("DE"), Some(64_500)),
        80,
        t(3),
    );
    assert_eq!(
        unexpected(&p),
        [
            (CAMERA, "198.51.100.7".into(), RULE_DENY_ASN, 20, 1),
            (CAMERA, "vendor.example".into(), RULE_DENY_COUNTRY, 10, 1),
        ]
    );
}

#[test]
fn an_allow_list_mixes_domains_prefixes_countries_and_as() {
    let mut p = with_device(
        CAMERA,
        section(
            &[
                "vendor.example",
                "203.0.113.0/24",
                "country:DE",
                "asn:64500",
            ],
            &[],
            None,
        ),
    );
    let other = |a: &str| addr(a);
    // By domain, by prefix, by country, by AS.
    send_to(
        &mut p,
        CAMERA,
        &name("vendor.example"),
        "192.0.2.10",
        &place(Some("US"), None),
        1,
        t(0),
    );
    send_to(
        &mut p,
        CAMERA,
        &other("203.0.113.5"),
        "203.0.113.5",
        &place(None, None),
        2,
        t(0),
    );
    send_to(
        &mut p,
        CAMERA,
        &other("198.51.100.1"),
        "198.51.100.1",
        &place(Some("DE"), None),
        4,
        t(0),
    );
    send_to(
        &mut p,
        CAMERA,
        &other("198.51.100.2"),
        "198.51.100.2",
        &place(Some("FR"), Some(64_500)),
        8,
        t(0),
    );
    assert!(unexpected(&p).is_empty(), "{:?}", unexpected(&p));
    // Neither: another country and AS, or nothing known, is not allowed.
    send_to(
        &mut p,
        CAMERA,
        &other("198.51.100.3"),
        "198.51.100.3",
        &place(Some("FR"), Some(64_501)),
        16,
        t(1),
    );
    send_to(
        &mut p,
        CAMERA,
        &other("198.51.100.4"),
        "198.51.100.4",
        &place(None, None),
        32,
        t(1),
    );
    assert_eq!(
        unexpected(&p),
        [
            (CAMERA, "198.51.100.3".into(), RULE_NOT_ALLOWED, 16, 1),
            (CAMERA, "198.51.100.4".into(), RULE_NOT_ALLOWED, 32, 1),
        ]
    );
}

#[test]
fn an_allow_list_of_countries_only_does_not_allow_an_unknown_country() {
    let mut p = with_device(CAMERA, section(&["country:DE"], &[], None));
    send_to(
        &mut p,
        CAMERA,
        &addr("192.0.2.1"),
        "192.0.2.1",
        &place(Some("DE"), None),
        1,
        t(0),
    );
    send_to(
        &mut p,
        CAMERA,
        &addr("192.0.2.2"),
        "192.0.2.2",
        &place(None, Some(64_500)),
        2,
        t(0),
    );
    assert_eq!(
        unexpected(&p),
        [(CAMERA, "192.0.2.2".into(), RULE_NOT_ALLOWED, 2, 1)]
    );
}

#[test]
fn new_countries_count_once_after_learning_and_never_unknown() {
    let mut p = with_device(CAMERA, section(&[], &[], Some(60)));
    let de = place(Some("DE"), None);
    let cn = place(Some("CN"), Some(4134));
    let unknown = place(None, None);
    // Learning: countries are remembered, not counted.
    send_to(
        &mut p,
        CAMERA,
        &addr("192.0.2.1"),
        "192.0.2.1",
        &de,
        1,
        t(0),
    );
    send_to(
        &mut p,
        CAMERA,
        &addr("192.0.2.2"),
        "192.0.2.2",
        &unknown,
        1,
        t(1),
    );
    assert_eq!(p.new_countries(CAMERA), 0, "learning");
    let countries = |p: &Policy| -> Vec<String> {
        p.record(CAMERA)
            .unwrap()
            .countries
            .keys()
            .map(|c| c.to_string())
            .collect()
    };
    assert_eq!(countries(&p), ["DE"]);
    // After learning: a known country (at a new address) is not new...
    send_to(
        &mut p,
        CAMERA,
        &addr("192.0.2.3"),
        "192.0.2.3",
        &de,
        1,
        t(61),
    );
    assert_eq!(p.new_countries(CAMERA), 0);
    // ...unknown never is...
    send_to(
        &mut p,
        CAMERA,
        &addr("192.0.2.4"),
        "192.0.2.4",
        &unknown,
        1,
        t(62),
    );
    assert_eq!(p.new_countries(CAMERA), 0);
    // ...a new one counts once, however often it comes back.
    for i in 0..3 {
        send_to(
            &mut p,
            CAMERA,
            &addr("198.51.100.9"),
            "198.51.100.9",
            &cn,
            1,
            t(63 + i),
        );
    }
    send_to(
        &mut p,
        CAMERA,
        &addr("198.51.100.10"),
        "198.51.100.10",
        &cn,
        1,
        t(70),
    );
    assert_eq!(p.new_countries(CAMERA), 1);
    assert_eq!(countries(&p), ["CN", "DE"]);
    let cn_seen = p.record(CAMERA).unwrap().countries[&Country::parse("CN").unwrap()];
    assert_eq!((cn_seen.first, cn_seen.last), (t(63), t(70)));
    // A device whose policy does not learn has no history to compare with: its countries are
    // remembered, none counts as new.
    send_to(&mut p, PHONE, &addr("192.0.2.1"), "192.0.2.1", &de, 1, t(0));
    send_to(&mut p, PHONE, &addr("192.0.2.1"), "192.0.2.1", &de, 1, t(1));
    assert_eq!(p.new_countries(PHONE), 0);
    assert!(
        p.record(PHONE)
            .unwrap()
            .countries
            .contains_key(&Country::parse("DE").unwrap())
    );
    assert_eq!(p.new_countries(MacAddr([2, 0, 0, 0, 0, 7])), 0);
}

#[test]
fn countries_seen_are_kept_across_a_restart_and_bounded() {
    let mut p = with_device(CAMERA, section(&[], &[], Some(60)));
    send_to(
        &mut p,
        CAMERA,
        &addr("192.0.2.1"),
        "192.0.2.1",
        &place(Some("DE"), None),
        1,
        t(0),
    );
    let start = Instant::now();
    let text = p
        .snapshot_if_due(start, false, &|_| None)
        .expect("a new country is written");
    assert!(text.contains(".countries]\nDE = { first = "), "{text}");
    // After a restart, past learning: DE is not new, FR is.
    let mut p = Policy::new(p.config().clone(), store::parse(&text).unwrap());
    send_to(
        &mut p,
        CAMERA,
        &addr("192.0.2.1"),
        "192.0.2.1",
        &place(Some("DE"), None),
        1,
        t(100),
    );
    assert_eq!(p.new_countries(CAMERA), 0, "{text}");
    send_to(
        &mut p,
        CAMERA,
        &addr("192.0.2.5"),
        "192.0.2.5",
        &place(Some("FR"), None),
        1,
        t(101),
    );
    assert_eq!(p.new_countries(CAMERA), 1);

    // Beyond the bound the least recently seen is forgotten (and would be new again).
    let mut p = Policy::default();
    let codes: Vec<String> = (b'A'..=b'Z')
        .flat_map(|a| (b'A'..=b'Z').map(move |b| String::from_utf8(vec![a, b]).unwrap()))
        .take(MAX_COUNTRIES_PER_DEVICE + 10)
        .collect();
    for (i, code) in codes.iter().enumerate() {
        send_to(
            &mut p,
            PHONE,
            &addr("192.0.2.1"),
            "192.0.2.1",
            &place(Some(code), None),
            1,
            t(i as u64),
        );
    }
    let record = p.record(PHONE).unwrap();
    assert_eq!(record.countries.len(), MAX_COUNTRIES_PER_DEVICE);
    assert!(
        !record
            .countries
            .contains_key(&Country::parse("AA").unwrap())
    );
    assert!(
        record
            .countries
            .contains_key(&Country::parse(codes.last().unwrap()).unwrap())
    );
    assert_eq!(p.new_countries(PHONE), 0, "no policy learns: none is new");
}
