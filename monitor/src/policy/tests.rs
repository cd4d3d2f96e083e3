use super::*;

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
        p.snapshot_if_due(start + WRITE_AFTER_CHANGE, false, &names)
            .is_some()
    );
    // A failed write is retried.
    p.wrote(false);
    assert!(
        p.snapshot_if_due(start + 2 * WRITE_AFTER_CHANGE, false, &names)
            .is_some()
    );
    // A restart from the written state keeps learning where it was.
    let restarted = Policy::new(p.config().clone(), back);
    assert_eq!(window(&restarted.status(CAMERA, None)), Some((t(0), t(60))));
}
