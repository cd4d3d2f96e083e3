//! Alerts end to end, with a real Prometheus and a real Alertmanager on the lab's router: a
//! device's traffic outside its policy must reach Alertmanager, and its webhook, as an alert that
//! names the device and the destination, within a bounded time; traffic the policy allows, or a
//! learned baseline covers, must raise nothing. Prometheus evaluates the rules the project ships
//! (`deploy/prometheus/alerts.yml`).
//!
//! Each test prints how long the alert took from the first unexpected packet (run with
//! `--nocapture` to see it).

use std::{
    net::IpAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use egress_lab::{
    Lab, SERVERS_V4,
    agent::{Agent, Scrape},
    alerting::{Alert, Alerting, EVALUATION_INTERVAL, Notification},
    wait_until,
};

/// The alert of the shipped rules that tells of traffic outside a device's policy.
const UNEXPECTED: &str = "EgressUnexpectedDestination";
/// How long an alert may take from the first packet to Alertmanager (on top of the rule's own
/// `for`): the agent's poll, a scrape, an evaluation and the send take a few seconds; the rest
/// is margin for a loaded machine.
const ALERT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the webhook may lag behind Alertmanager's API (group_wait is 0 s).
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(30);
/// Each sending of a device: [`DATAGRAMS`] datagrams of [`PAYLOAD`] bytes, to a server's UDP
/// sink (so no ICMP error comes back: the traffic is egress only).
const PAYLOAD: usize = 600;
const DATAGRAMS: u32 = 5;

/// The alert rules the project ships, which Prometheus must evaluate as they are.
fn shipped_rules() -> PathBuf {
    let path = egress_lab::alerting::shipped_rules();
    assert!(
        path.is_file(),
        "the shipped alert rules {} are missing: these tests check that its {UNEXPECTED} alert \
         fires (and only when it should) against the real agent",
        path.display()
    );
    path
}

/// A lab whose router hands out addresses and answers DNS, with two devices: "camera" (index
/// 1, 00:16:3e:00:00:01) and "tv" (index 2).
fn lab() -> Lab {
    Lab::builder().devices(["camera", "tv"]).dhcp(true).build()
}

/// The `[devices]` section naming both devices, so that policies and alerts can use the names.
fn devices_section(lab: &Lab) -> String {
    format!(
        "[devices]\n\"{}\" = {{ name = \"camera\" }}\n\"{}\" = {{ name = \"tv\" }}\n",
        lab.device("camera").mac_string(),
        lab.device("tv").mac_string()
    )
}

/// Waits until Prometheus has scraped the agent's count of `device`'s egress bytes to
/// `destination` as `settled` shows it (so the rules have the traffic, and a count from before
/// a restart of the agent does not pass for it), then lets a few evaluations pass.
fn wait_evaluated(alerting: &Alerting, settled: &Scrape, device: &str, destination: &str) {
    let (bytes, _) = settled.destination(device, "egress", destination);
    assert!(
        bytes > 0,
        "no traffic of {device} to {destination} to wait for"
    );
    let expr = format!(
        "egress_destination_bytes_total{{device=\"{device}\",destination=\"{destination}\",direction=\"egress\"}} == {bytes}"
    );
    let scraped = alerting.wait_for_query(&expr, Duration::from_secs(30));
    assert!(
        !scraped.is_empty(),
        "Prometheus never scraped {expr}\n{}",
        alerting.diagnostics()
    );
    std::thread::sleep(3 * EVALUATION_INTERVAL);
}

/// (device, destination, rule) of every alert called `alertname` that Alertmanager holds.
fn alerts_named(alerting: &Alerting, alertname: &str) -> Vec<(String, String, String)> {
    let mut found: Vec<_> = alerting
        .alerts_with(&[("alertname", alertname)])
        .iter()
        .map(|a| {
            (
                a.label("device").to_owned(),
                a.label("destination").to_owned(),
                a.label("rule").to_owned(),
            )
        })
        .collect();
    found.sort();
    found
}

/// Waits for the alert with `labels` in Alertmanager and then at the webhook, and prints how
/// long each took after `first_packet`. The rule's `for` is added to the time allowed.
fn wait_alert(
    alerting: &Alerting,
    alertname: &str,
    labels: &[(&str, &str)],
    first_packet: Instant,
) -> (Alert, Notification) {
    let rule = alerting
        .alert_rule(alertname)
        .unwrap_or_else(|| panic!("Prometheus has no alerting rule {alertname}"));
    let mut wanted = vec![("alertname", alertname)];
    wanted.extend_from_slice(labels);
    let (alert, seen) = alerting
        .wait_for_alert(&wanted, ALERT_TIMEOUT + rule.for_duration)
        .unwrap_or_else(|| {
            panic!(
                "no alert {wanted:?} in Alertmanager within {:?} of the first packet; it holds \
                 {:?}; rule {rule:?}\n{}",
                first_packet.elapsed(),
                alerting.alerts(),
                alerting.diagnostics()
            )
        });
    let notification = alerting
        .wait_for_notification(&wanted, WEBHOOK_TIMEOUT)
        .unwrap_or_else(|| {
            panic!(
                "Alertmanager holds {alert:?} but never notified the webhook\n{}",
                alerting.diagnostics()
            )
        });
    println!(
        "{alertname} {labels:?} (rule `for` {:?}): in Alertmanager {} ms, at the webhook {} ms \
         after the first packet",
        rule.for_duration,
        (seen - first_packet).as_millis(),
        notification
            .received
            .saturating_duration_since(first_packet)
            .as_millis()
    );
    (alert, notification)
}

/// The harness itself, on metrics the agent has always exported: a rule of the test's own on
/// `egress_destination_bytes_total` must travel agent -> Prometheus -> Alertmanager -> webhook.
/// When the policy tests below fail, this one tells whether the alert path or the agent is to
/// blame.
#[test]
fn an_alert_on_agent_metrics_reaches_alertmanager_and_its_webhook() {
    let lab = lab();
    let _servers = lab.start_servers(0);
    let rules = lab.scratch_dir().join("plumbing-rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: lab-plumbing\n    rules:\n      - alert: EgressLabPlumbing\n        \
         expr: egress_destination_bytes_total{direction=\"egress\",destination=\"example.co.uk\"} > 0\n",
    )
    .expect("write the rules file");
    let alerting = Alerting::start(&lab, &rules);
    let agent = Agent::start(&lab, &devices_section(&lab), &[]);
    let rule = alerting
        .alert_rule("EgressLabPlumbing")
        .expect("the rule is loaded");
    assert_eq!(rule.for_duration, Duration::ZERO);

    // Traffic the rule does not match raises nothing.
    let updates = lab.resolve("tv", "updates.vendor.example");
    lab.send_to_sink("tv", updates, PAYLOAD, DATAGRAMS);
    wait_evaluated(&alerting, &agent.settled(), "tv", "vendor.example");
    assert_eq!(
        alerting.alert_rule("EgressLabPlumbing").unwrap().health,
        "ok"
    );
    assert_eq!(alerts_named(&alerting, "EgressLabPlumbing"), []);

    let tracker = lab.resolve("camera", "tracker.ads.example.co.uk");
    let first_packet = Instant::now();
    let sent = lab.send_to_sink("camera", tracker, PAYLOAD, DATAGRAMS);
    let (alert, notification) = wait_alert(
        &alerting,
        "EgressLabPlumbing",
        &[("device", "camera"), ("destination", "example.co.uk")],
        first_packet,
    );
    assert_eq!(alert.state, "active");
    assert_eq!(alert.receivers, [egress_lab::alerting::RECEIVER]);
    assert_eq!(
        (alert.label("mac"), alert.label("direction")),
        (lab.device("camera").mac_string().as_str(), "egress")
    );
    assert_eq!(
        (notification.status.as_str(), notification.receiver.as_str()),
        ("firing", egress_lab::alerting::RECEIVER)
    );
    assert_eq!(
        alerts_named(&alerting, "EgressLabPlumbing"),
        [("camera".into(), "example.co.uk".into(), String::new())]
    );
    assert_eq!(
        agent
            .settled()
            .destination("camera", "egress", "example.co.uk")
            .0,
        sent
    );
}

/// A rules file Prometheus cannot load (the shipped one, broken by an edit) makes it exit at
/// once; the error says so and carries its log, which names the file and the reason.
#[test]
fn a_rules_file_prometheus_cannot_load_is_reported_with_its_log() {
    let lab = Lab::builder().devices(["camera"]).build();
    let rules = lab.scratch_dir().join("broken-rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: broken\n    rules:\n      - alert: Broken\n        expr: rate(\n",
    )
    .expect("write the rules file");
    let Err(message) = Alerting::try_start(&lab, &rules) else {
        panic!("Prometheus started with {}", rules.display());
    };
    assert!(message.starts_with("Prometheus exited"), "{message}");
    assert!(message.contains("broken-rules.yml"), "{message}");
}

/// Issue 4: a camera may only talk to its update server. Traffic there, and any traffic of a
/// device without a policy, raises nothing; the camera's first packet to a tracker raises
/// EgressUnexpectedDestination for the camera and the tracker's domain, rule `not-allowed`.
#[test]
fn traffic_outside_a_device_allow_list_raises_an_alert() {
    let rules = shipped_rules();
    let lab = lab();
    let _servers = lab.start_servers(0);
    let alerting = Alerting::start(&lab, &rules);
    let config = format!(
        "{}\n[policy.devices.camera]\nallow = [\"updates.vendor.example\"]\n",
        devices_section(&lab)
    );
    let agent = Agent::start(&lab, &config, &[]);
    let camera_mac = lab.device("camera").mac_string();

    // Allowed: the name the camera resolved is on its list. The tv has no policy: monitored
    // only, whatever it talks to.
    let updates = lab.resolve("camera", "updates.vendor.example");
    lab.send_to_sink("camera", updates, PAYLOAD, DATAGRAMS);
    let tracker = lab.resolve("tv", "tracker.ads.example.co.uk");
    lab.send_to_sink("tv", tracker, PAYLOAD, DATAGRAMS);
    let s = agent.settled();
    assert_eq!(s.unexpected_series(), 0, "nothing is unexpected");
    assert_eq!(
        s.value(
            "egress_device_policy_info",
            &[("device", "camera"), ("policy", "device")]
        ),
        Some(1.0)
    );
    assert_eq!(
        s.value(
            "egress_device_policy_info",
            &[("device", "tv"), ("policy", "none")]
        ),
        Some(1.0)
    );
    wait_evaluated(&alerting, &s, "camera", "vendor.example");
    wait_evaluated(&alerting, &s, "tv", "example.co.uk");
    let rule = alerting.alert_rule(UNEXPECTED).expect("loaded");
    assert_eq!((rule.health.as_str(), rule.last_error.as_str()), ("ok", ""));
    assert_eq!(alerts_named(&alerting, UNEXPECTED), []);

    // Not allowed: the same tracker, from the camera.
    let tracker = lab.resolve("camera", "tracker.ads.example.co.uk");
    let first_packet = Instant::now();
    let sent = lab.send_to_sink("camera", tracker, PAYLOAD, DATAGRAMS);
    let (alert, notification) = wait_alert(
        &alerting,
        UNEXPECTED,
        &[("device", "camera"), ("destination", "example.co.uk")],
        first_packet,
    );
    assert_eq!(
        (
            alert.label("rule"),
            alert.label("mac"),
            alert.label("direction")
        ),
        ("not-allowed", camera_mac.as_str(), "egress")
    );
    assert_eq!(alert.state, "active");
    assert_eq!(notification.status, "firing");
    let s = agent.settled();
    assert_eq!(
        s.unexpected("camera", "egress"),
        [(
            "example.co.uk".into(),
            "not-allowed".into(),
            sent,
            DATAGRAMS.into()
        )]
    );
    assert_eq!(s.unexpected_series(), 1, "the camera's, and nothing else");
    assert_eq!(
        alerts_named(&alerting, UNEXPECTED),
        [(
            "camera".into(),
            "example.co.uk".into(),
            "not-allowed".into()
        )],
        "one alert: the tv's identical traffic is no policy's business"
    );
}

/// Issue 4: the tv learns a baseline for 8 s, which survives a restart of the agent (in the
/// state file); afterwards its learned server raises nothing, and a server it never talked to
/// raises EgressUnexpectedDestination with rule `not-in-baseline`.
#[test]
fn after_learning_and_a_restart_only_a_new_destination_raises_an_alert() {
    let rules = shipped_rules();
    let lab = lab();
    let _servers = lab.start_servers(0);
    let alerting = Alerting::start(&lab, &rules);
    let state_dir = lab.scratch_dir().join("state");
    std::fs::create_dir(&state_dir).expect("create the state directory");
    let config = format!(
        "state_dir = \"{}\"\n\n{}\n[policy.devices.tv]\nlearn = \"8s\"\n",
        state_dir.display(),
        devices_section(&lab)
    );
    let learning = |s: &Scrape| s.value("egress_device_learning", &[("device", "tv")]);
    let baseline = |s: &Scrape| s.value("egress_device_baseline_destinations", &[("device", "tv")]);
    let new_destinations =
        |s: &Scrape| s.count("egress_new_destinations_total", &[("device", "tv")]);

    // Learning: the tv's first traffic, to server A, goes into its baseline.
    let agent = Agent::start(&lab, &config, &[]);
    let server_a = lab.resolve("tv", "updates.vendor.example");
    lab.send_to_sink("tv", server_a, PAYLOAD, DATAGRAMS);
    let s = agent.settled();
    assert_eq!(
        learning(&s),
        Some(1.0),
        "the tv learns for 8 s from its first sight"
    );
    assert_eq!(s.unexpected_series(), 0, "nothing is unexpected");
    let learned = wait_until(Duration::from_secs(30), || {
        learning(&agent.scrape()) == Some(0.0)
    });
    assert!(learned, "the tv still learns 30 s later:\n{}", agent.log());
    let s = agent.scrape();
    assert_eq!(baseline(&s), Some(1.0), "A, and nothing else");
    let status = agent.stop();
    assert!(status.success(), "the agent exited with {status}");
    let state_file = state_dir.join("state.toml");
    let state = std::fs::read_to_string(&state_file)
        .unwrap_or_else(|e| panic!("{}: {e}", state_file.display()));
    assert!(
        state.contains("vendor.example"),
        "A is in the baseline on disk:\n{state}"
    );

    // Restarted: the baseline and the end of learning come back from the state file. Twice the
    // traffic of before, so that Prometheus's count after the restart is told from the one
    // before. The tv does not ask the DNS again (its own cache), so the new agent labels the
    // bytes by address; the policy still knows the address by the name the tv reached it by.
    let agent = Agent::start(&lab, &config, &[]);
    lab.send_to_sink("tv", server_a, PAYLOAD, DATAGRAMS);
    lab.send_to_sink("tv", server_a, PAYLOAD, DATAGRAMS);
    let s = agent.settled();
    assert_eq!(
        (learning(&s), baseline(&s), new_destinations(&s)),
        (Some(0.0), Some(1.0), 0)
    );
    assert_eq!(s.unexpected_series(), 0, "nothing is unexpected");
    wait_evaluated(&alerting, &s, "tv", &server_a.to_string());
    assert_eq!(alerts_named(&alerting, UNEXPECTED), []);

    // Server B, which the tv never talked to, by address: named by its address.
    let server_b = IpAddr::V4(SERVERS_V4[4]);
    let b = server_b.to_string();
    let first_packet = Instant::now();
    let sent = lab.send_to_sink("tv", server_b, PAYLOAD, DATAGRAMS);
    let (alert, notification) = wait_alert(
        &alerting,
        UNEXPECTED,
        &[("device", "tv"), ("destination", &b)],
        first_packet,
    );
    assert_eq!(
        (alert.label("rule"), alert.label("direction")),
        ("not-in-baseline", "egress")
    );
    assert_eq!(notification.status, "firing");
    let s = agent.settled();
    assert_eq!(
        s.unexpected("tv", "egress"),
        [(b.clone(), "not-in-baseline".into(), sent, DATAGRAMS.into())]
    );
    assert_eq!(s.unexpected_series(), 1, "the tv's, and nothing else");
    assert_eq!(new_destinations(&s), 1);
    assert_eq!(
        alerts_named(&alerting, UNEXPECTED),
        [("tv".into(), b, "not-in-baseline".into())],
        "B only: A is in the baseline"
    );
}

#[test]
fn after_learning_the_first_bytes_to_a_new_country_raise_egress_new_country() {
    use egress_lab::mmdb::{Network, geolite2_country};
    let rules = shipped_rules();
    let lab = lab();
    let _servers = lab.start_servers(0);
    let alerting = Alerting::start(&lab, &rules);
    let (de, cn) = (IpAddr::V4(SERVERS_V4[0]), IpAddr::V4(SERVERS_V4[4]));
    let db = lab.scratch_dir().join("countries.mmdb");
    geolite2_country(&[(Network::new(de, 24), "DE"), (Network::new(cn, 24), "CN")])
        .write(&db)
        .expect("write the country database");
    let config = format!(
        "{}\n[enrich]\ncountry_db = \"{}\"\n\n[policy.devices.tv]\nlearn = \"6s\"\n",
        devices_section(&lab),
        db.display()
    );
    let new_countries = |s: &Scrape| s.count("egress_new_countries_total", &[("device", "tv")]);
    let agent = Agent::start(&lab, &config, &[]);
    // Learning: Germany is the tv's country from the start.
    lab.send_to_sink("tv", de, PAYLOAD, DATAGRAMS);
    let learned = wait_until(Duration::from_secs(30), || {
        agent
            .scrape()
            .value("egress_device_learning", &[("device", "tv")])
            == Some(0.0)
    });
    assert!(learned, "the tv still learns 30 s later:\n{}", agent.log());
    // Germany again, after learning: not new.
    lab.send_to_sink("tv", de, PAYLOAD, DATAGRAMS);
    let s = agent.settled();
    assert_eq!(new_countries(&s), 0, "Germany was learned");
    wait_evaluated(&alerting, &s, "tv", &de.to_string());
    assert_eq!(alerts_named(&alerting, "EgressNewCountry"), []);

    // China, for the first time.
    let first_packet = Instant::now();
    lab.send_to_sink("tv", cn, PAYLOAD, DATAGRAMS);
    let (alert, notification) = wait_alert(
        &alerting,
        "EgressNewCountry",
        &[("device", "tv")],
        first_packet,
    );
    assert_eq!(alert.label("mac"), lab.device("tv").mac_string());
    assert_eq!(notification.status, "firing");
    let s = agent.settled();
    assert_eq!(new_countries(&s), 1);
    assert_eq!(
        s.count(
            "egress_country_bytes_total",
            &[("device", "tv"), ("direction", "egress"), ("country", "CN")]
        ),
        u64::from(DATAGRAMS) * egress_lab::udp_ip_bytes(true, PAYLOAD)
    );
}
